"""Read a pregenerated general-distillation corpus (:mod:`.pregenerate`'s ``epoch_<k>.json`` files) as
fixed-length rows.

:class:`PregeneratedCorpus` indexes every line of ``epoch_0.json``, ``epoch_1.json``, ... (consecutive, each
with its ``epoch_<k>_metrics.json``) by byte offset and checks each one before any training step: a JSON
object whose ``tokens`` (strings, all in the vocabulary) and ``segment_ids`` (0 or 1) have one length of at
most ``seq_length``, and the metrics' ``num_training_examples`` equal to the file's line count. A row is read
back by seeking, so the corpus need not fit in memory (16 bytes a row are kept). Row ``i``:
``input_ids``, ``input_mask``, ``token_type_ids``, each ``[seq_length]`` int64, padded with ``[PAD]``/0 on the
right. The instances keep their masked tokens (``[MASK]`` in the input), as the original's general
distillation reads them; the masked-LM labels are not used, unless ``masked_lm=True`` (masked-LM distillation,
recipe ``distilbert_mlm``): then each instance's ``masked_lm_positions`` (distinct, inside its tokens) and
``masked_lm_labels`` (vocabulary tokens, one per position) are checked too, and row ``i`` also holds
``masked_lm_labels`` ``[seq_length]`` int64: the label's id at each masked position, :data:`IGNORE_LABEL`
(-100) elsewhere.
"""
import json
import os
from array import array
from typing import Dict, List, Mapping

import numpy as np

from .pregenerate import epoch_file, metrics_file

__all__ = ["PregeneratedCorpus", "epoch_files", "IGNORE_LABEL"]

#: ``masked_lm_labels`` of the positions that are not masked (PyTorch's ``ignore_index``).
IGNORE_LABEL = -100


def epoch_files(directory: str) -> List[str]:
    """``epoch_0.json``, ``epoch_1.json``, ... of ``directory`` up to the first missing one;
    ``ValueError`` naming the fix when there is none, or a metrics file is missing or wrong."""
    if not os.path.isdir(directory):
        raise ValueError(f"--corpus_dir {directory} is not a directory; pass the --output_dir of "
                         f"scripts/pregenerate_training_data.py")
    files = []
    while os.path.isfile(epoch_file(directory, len(files))):
        files.append(epoch_file(directory, len(files)))
    if not files:
        raise ValueError(f"--corpus_dir {directory} holds no epoch_0.json; write it with "
                         f"scripts/pregenerate_training_data.py --train_corpus FILE --output_dir {directory}")
    return files


def _metrics(directory: str, epoch: int) -> Dict:
    path = metrics_file(directory, epoch)
    try:
        with open(path, encoding="utf-8") as stream:
            metrics = json.load(stream)
        count, length = int(metrics["num_training_examples"]), int(metrics["max_seq_len"])
    except FileNotFoundError:
        raise ValueError(f"{path} is missing: epoch {epoch} was not written completely; pregenerate the corpus "
                         f"again") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a metrics file of pregenerate_training_data.py ({error}); pregenerate "
                         f"the corpus again") from None
    return {"num_training_examples": count, "max_seq_len": length}


class PregeneratedCorpus:
    """The rows of a pregenerated corpus (see the module doc); ``max_rows`` > 0 keeps the first ones;
    ``masked_lm``: check and return the masked-LM labels."""

    def __init__(self, directory: str, vocab: Mapping[str, int], seq_length: int, max_rows: int = 0,
                 masked_lm: bool = False):
        self.directory, self.masked_lm = directory, masked_lm
        self.files = epoch_files(directory)
        self.vocab, self.seq_length = vocab, seq_length
        self.pad_id = vocab.get("[PAD]", 0)
        self._file_index, self._offsets = array("q"), array("q")
        for number, path in enumerate(self.files):
            metrics = _metrics(directory, number)
            if metrics["max_seq_len"] > seq_length:
                raise ValueError(f"{path} was pregenerated with max_seq_len {metrics['max_seq_len']}, longer than "
                                 f"--seq_length {seq_length}; pass --seq_length {metrics['max_seq_len']} or "
                                 f"pregenerate with --max_seq_len {seq_length}")
            rows = self._index(number, path)
            if rows != metrics["num_training_examples"]:
                raise ValueError(f"{path} holds {rows} instances but {metrics_file(directory, number)} says "
                                 f"{metrics['num_training_examples']}; pregenerate the corpus again")
            if max_rows and len(self._offsets) >= max_rows:
                break
        if max_rows:
            del self._file_index[max_rows:], self._offsets[max_rows:]
        if not self._offsets:
            raise ValueError(f"--corpus_dir {directory} holds no instances; pregenerate it from a larger corpus")
        self._handles: Dict[int, object] = {}

    def _index(self, number: int, path: str) -> int:
        rows = 0
        with open(path, "rb") as stream:
            offset = 0
            for line_number, line in enumerate(stream, 1):
                self._check(self._parse(line, path, line_number), path, line_number)
                self._file_index.append(number)
                self._offsets.append(offset)
                offset += len(line)
                rows += 1
        return rows

    @staticmethod
    def _parse(line: bytes, path: str, line_number: int) -> Dict:
        try:
            instance = json.loads(line)
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} line {line_number} is not JSON ({error}); pregenerate the corpus again") \
                from None
        if not isinstance(instance, dict):
            raise ValueError(f"{path} line {line_number} is not a JSON object; pregenerate the corpus again")
        return instance

    def _check(self, instance: Dict, path: str, line_number: int) -> None:
        tokens, segments = instance.get("tokens"), instance.get("segment_ids")
        where = f"{path} line {line_number}"
        if not isinstance(tokens, list) or not isinstance(segments, list) or len(tokens) != len(segments):
            raise ValueError(f"{where} needs 'tokens' and 'segment_ids' lists of one length; pregenerate the "
                             f"corpus again")
        if not tokens or len(tokens) > self.seq_length:
            raise ValueError(f"{where} holds {len(tokens)} tokens; an instance holds 1 to --seq_length "
                             f"{self.seq_length}: pregenerate with --max_seq_len {self.seq_length}")
        unknown = next((t for t in tokens if t not in self.vocab), None)
        if unknown is not None:
            raise ValueError(f"{where}: token {unknown!r} is not in the vocabulary ({len(self.vocab)} tokens); "
                             f"pregenerate the corpus with the teacher's vocabulary (--vocab_file)")
        if any(s not in (0, 1) or isinstance(s, bool) for s in segments):
            raise ValueError(f"{where}: segment_ids must be 0 or 1; pregenerate the corpus again")
        if self.masked_lm:
            self._check_masked(instance, len(tokens), where)

    def _check_masked(self, instance: Dict, length: int, where: str) -> None:
        positions, labels = instance.get("masked_lm_positions"), instance.get("masked_lm_labels")
        if not isinstance(positions, list) or not isinstance(labels, list) or len(positions) != len(labels) \
                or not positions:
            raise ValueError(f"{where} needs 'masked_lm_positions' and 'masked_lm_labels' lists of one non-zero "
                             f"length (masked-LM distillation reads them); pregenerate the corpus again")
        if any(isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < length for p in positions) \
                or len(set(positions)) != len(positions):
            raise ValueError(f"{where}: masked_lm_positions must be distinct token indices in [0, {length}); "
                             f"pregenerate the corpus again")
        unknown = next((t for t in labels if t not in self.vocab), None)
        if unknown is not None:
            raise ValueError(f"{where}: masked-LM label {unknown!r} is not in the vocabulary ({len(self.vocab)} "
                             f"tokens); pregenerate the corpus with the teacher's vocabulary (--vocab_file)")

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        number = self._file_index[index]
        handle = self._handles.get(number)
        if handle is None:
            handle = self._handles[number] = open(self.files[number], "rb")
        handle.seek(self._offsets[index])
        instance = json.loads(handle.readline())
        length = len(instance["tokens"])
        ids = np.full(self.seq_length, self.pad_id, dtype=np.int64)
        ids[:length] = [self.vocab[t] for t in instance["tokens"]]
        mask = np.zeros(self.seq_length, dtype=np.int64)
        mask[:length] = 1
        segments = np.zeros(self.seq_length, dtype=np.int64)
        segments[:length] = instance["segment_ids"]
        row = {"input_ids": ids, "input_mask": mask, "token_type_ids": segments}
        if self.masked_lm:
            labels = np.full(self.seq_length, IGNORE_LABEL, dtype=np.int64)
            labels[instance["masked_lm_positions"]] = [self.vocab[t] for t in instance["masked_lm_labels"]]
            row["masked_lm_labels"] = labels
        return row

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    @staticmethod
    def collate(rows: List[Dict[str, np.ndarray]]) -> Dict[str, np.ndarray]:
        """Stack rows into ``[B, seq_length]`` arrays (a ``DataLoader``'s ``collate_fn``)."""
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}
