"""What TinyBERT's data augmentation (:mod:`.augmentation`) reads: GloVe word vectors (:func:`read_glove`), the
substitute neighbours of a word-piece embedding table (:func:`embedding_neighbours`), both as
:class:`WordVectors` (cosine neighbours of unit rows ``[n, D]``), and the pretrained BERT with its masked-LM
head when it has one (:func:`load_augmentation_model`). Bad input raises :class:`AugmentationError` with one
sentence.
"""
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["AugmentationError", "MaskedLM", "GLOVE_VOCAB_SIZE", "WHOLE_WORD", "WordVectors", "read_glove",
           "embedding_neighbours", "AugmentationModel", "load_augmentation_model"]

logger = logging.getLogger(__name__)

#: GloVe lines read by default: the original's ``prepare_embedding_retrieval(vocab_size=100000)``.
GLOVE_VOCAB_SIZE = 100000
#: A whole word: lower-case letters only (candidates of the augmentation, rows of the substitute).
WHOLE_WORD = re.compile(r"[a-z]+")

#: ``masked_lm(input_ids [B, L], input_mask [B, L], segment_ids [B, L], positions [B]) -> logits [B, V]`` (numpy).
MaskedLM = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


class AugmentationError(ValueError):
    """Bad input to the augmentation (one sentence naming the file, line or value and the fix)."""


# ----------------------------------------------------------------------------------------- neighbours


@dataclass
class WordVectors:
    """Words and their unit-length vectors ``[n, D]`` (float32); :meth:`neighbours` by cosine."""

    words: List[str]
    unit: np.ndarray
    index: Dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.index = {word: i for i, word in enumerate(self.words)}
        self._cache: Dict[Tuple, List[str]] = {}

    def neighbours(self, word: str, count: int, query: Optional[np.ndarray] = None) -> List[str]:
        """The ``count`` words nearest ``word`` (or the vector ``query``), ``word`` excluded, nearest first (ties:
        the earlier word). ``[]`` for an unknown word without ``query``."""
        return self.neighbours_batch([word], count, None if query is None else query[None])[0]

    def neighbours_batch(self, words: Sequence[str], count: int, queries: Optional[np.ndarray] = None
                         ) -> List[List[str]]:
        """:meth:`neighbours` of several words at once (``queries`` ``[n, D]`` or ``None``), one matrix product;
        answers are cached by word (and by whether a query vector was given)."""
        answers: List[Optional[List[str]]] = []
        todo, vectors = [], []
        for row, word in enumerate(words):
            key = (word, count, queries is None)
            if key in self._cache:
                answers.append(self._cache[key])
            elif queries is None and word not in self.index:
                answers.append([])
            else:
                answers.append(None)
                todo.append(row)
                vectors.append(self.unit[self.index[word]] if queries is None else queries[row])
        if todo and len(self.words):
            matrix = np.asarray(vectors, dtype=np.float32)
            scores = _unit_rows(matrix) @ self.unit.T  # [n, W] cosines
            take = min(count, len(self.words))
            for k, row in enumerate(todo):
                word, line = words[row], scores[k]
                if word in self.index:
                    line[self.index[word]] = -np.inf
                top = np.argpartition(-line, take - 1)[:take] if take < len(self.words) else np.arange(len(self.words))
                order = top[np.lexsort((top, -line[top]))]
                answers[row] = self._cache[(word, count, queries is None)] = [
                    self.words[i] for i in order if np.isfinite(line[i])]
        return [answer if answer is not None else [] for answer in answers]


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def read_glove(path: str, vocabulary: Iterable[str], max_words: int = GLOVE_VOCAB_SIZE) -> WordVectors:
    """The GloVe vectors of the words of ``vocabulary`` in the text file ``path`` (streamed), unit length.

    Reads the first ``max_words`` lines (0: all). The dimension ``D`` is that of line 1; a line with fewer
    than ``D`` values, or a kept word with a value that is not a finite number, raises
    :class:`AugmentationError` naming the line. A line with more fields is a word holding spaces (840B has a
    few). Logs how many of the words were found.
    """
    wanted = {word.encode("utf-8") for word in vocabulary}
    if not os.path.isfile(path):
        raise AugmentationError(f"GloVe file {path} does not exist; pass --glove_embs with a GloVe text file "
                                f"(e.g. glove.840B.300d.txt) or leave it out to use the word-embedding substitute")
    dim, words, rows, lineno, kept = None, [], [], 0, set()
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if max_words and lineno > max_words:
                lineno -= 1
                break
            parts = raw.rstrip(b"\r\n").split(b" ")
            if dim is None:
                dim = len(parts) - 1
                if dim < 2:
                    raise AugmentationError(f"{path}, line 1: {dim} value(s) after the word; GloVe's text format is "
                                            f"'word v1 ... vD' with D >= 2 (remove a word2vec 'count dim' header line)")
            if len(parts) - 1 < dim:
                raise AugmentationError(f"{path}, line {lineno}: {len(parts) - 1} values but line 1 has {dim}; the "
                                        f"file is truncated or not GloVe text: fix or remove line {lineno}")
            word = b" ".join(parts[:len(parts) - dim])
            if word not in wanted or word in kept:
                continue
            try:
                vector = np.array([float(v) for v in parts[-dim:]], dtype=np.float32)
            except ValueError:
                vector = None
            if vector is None or not np.isfinite(vector).all():
                raise AugmentationError(f"{path}, line {lineno}: the vector of {word.decode('utf-8')!r} holds a value "
                                        f"that is not a finite number; fix or remove line {lineno}")
            kept.add(word)
            words.append(word.decode("utf-8"))
            rows.append(vector)
    if dim is None:
        raise AugmentationError(f"GloVe file {path} is empty; pass a GloVe text file")
    logger.info("GloVe %s: read %d lines (dimension %d); found %d of the task's %d candidate words", path, lineno, dim,
                len(words), len(wanted))
    matrix = np.stack(rows) if rows else np.zeros((0, dim), np.float32)
    return WordVectors(words, _unit_rows(matrix))


def embedding_neighbours(table: np.ndarray, tokens: Sequence[str]) -> WordVectors:
    """The substitute: the whole-word rows of a word-piece embedding table ``[V, H]`` (``tokens[i]`` names row
    ``i``; kept when it is lower-case letters), unit length, as :class:`WordVectors`."""
    keep = [i for i, token in enumerate(tokens) if WHOLE_WORD.fullmatch(token)]
    return WordVectors([tokens[i] for i in keep], _unit_rows(np.asarray(table, dtype=np.float32)[keep]))


# ----------------------------------------------------------------------------------------- the model


@dataclass
class AugmentationModel:
    """What :func:`load_augmentation_model` found: the masked LM (``None`` without a head), the word-embedding
    table ``[V, H]`` (numpy) and a description for the log."""

    masked_lm: Optional[MaskedLM]
    table: np.ndarray
    description: str

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[0])


def _masked_lm_function(model, device) -> MaskedLM:
    import oneflow as flow

    model.eval().to(device)

    def run(ids, mask, segments, positions):
        with flow.no_grad():
            out = model(*(flow.tensor(a, device=device) for a in (ids, mask, segments, positions)))
        return out.cpu().numpy()

    return run


def load_augmentation_model(path: str, num_attention_heads: Optional[int] = None,
                            device: Optional[str] = None) -> AugmentationModel:
    """The BERT in ``path``: a Hugging Face directory (``config.json`` + ``model.safetensors``), an original
    snapshot, or a model directory written by this package (``kdu-train``: no masked-LM head). A checkpoint
    without a head gives ``masked_lm=None`` (the substitute is used) and one log line saying so. The masked LM
    runs on ``device`` (``cpu``, ``cuda``, ``cuda:N``; default CUDA when present: the encoder's forward passes are
    most of the time). :class:`AugmentationError` when ``path`` is none of these or cannot be read."""
    from .._device import resolve_device
    from ..models.bert import BertForSequenceClassification
    from ..models.mlm import BertForMaskedLM, NoMaskedLMHead
    from ..models.snapshot import build_from_snapshot, list_snapshot_variables

    def table_of(bert) -> np.ndarray:
        return bert.word_embedding_table().detach().cpu().numpy()

    try:
        device = resolve_device(device)
    except (TypeError, ValueError) as error:
        raise AugmentationError(f"--device: {error}") from None

    if not path or not os.path.isdir(path):
        raise AugmentationError(f"--model_load_dir {path!r} is not a directory; pass the pretrained BERT (a Hugging "
                                f"Face directory, the original's snapshot, or a model written by kdu-train)")
    try:
        if os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "model.safetensors")):
            try:
                model = BertForMaskedLM.from_pretrained(path, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
                return AugmentationModel(_masked_lm_function(model, device), table_of(model.bert),
                                         f"Hugging Face BERT {path} with its masked-LM head")
            except NoMaskedLMHead as error:
                logger.info("%s", error)
                bert = BertForSequenceClassification.from_pretrained(path)
                return AugmentationModel(None, table_of(bert), f"Hugging Face BERT {path} (no masked-LM head)")
        if os.path.isfile(os.path.join(path, "model_config.json")):
            from ..models.artifacts import load_trained

            bert, _ = load_trained(path, "model")
            if not hasattr(bert, "word_embedding_table"):
                raise AugmentationError(f"--model_load_dir {path} holds an LSTM; pass a BERT")
            return AugmentationModel(None, table_of(bert), f"model {path} written by kdu-train (no masked-LM head)")
        list_snapshot_variables(path)  # a one-sentence error when it is not a snapshot either
        try:
            model = BertForMaskedLM.from_snapshot(path, num_attention_heads)
            return AugmentationModel(_masked_lm_function(model, device), table_of(model.bert),
                                     f"original snapshot {path} with its masked-LM head")
        except NoMaskedLMHead as error:
            logger.info("%s", error)
            bert, _ = build_from_snapshot(path, "teacher", num_attention_heads=num_attention_heads)
            return AugmentationModel(None, table_of(bert), f"original snapshot {path} (no masked-LM head)")
    except AugmentationError:
        raise
    except (ValueError, TypeError, FileNotFoundError) as error:
        raise AugmentationError(f"--model_load_dir {path} cannot be read: {error}") from None
