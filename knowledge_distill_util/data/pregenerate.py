"""TinyBERT's general-distillation corpus: sentence-pair instances pregenerated from a text corpus.

The algorithm and file formats of the original toolkit's ``examples/tinybert/pregenerate_training_data.py``
(itself Google BERT's ``create_pretraining_data``), in this package's own code:

- **Corpus**: UTF-8 text, one sentence per line, documents separated by blank lines. Each line is split into
  WordPiece tokens (no special tokens). A corpus needs at least two documents (a "random next" segment is
  drawn from another document) and one document of two sentences or more.
- **Instances** (per document, :func:`instances_from_document`): sentences are gathered into chunks of about
  ``max_seq_len - 3`` tokens (with probability ``short_seq_prob`` a random shorter target in
  ``[2, max_seq_len - 3]``); a chunk is split at a random sentence into A and B, and B is replaced by text from
  another document (sampled proportionally to its sentence count) when the chunk has one sentence or with
  probability 0.5 (``is_random_next``; never with ``oneseq``, where the pair is always A then the real next
  sentences). The pair is truncated to ``max_seq_len - 3`` tokens (from the longer side, front or back at
  random), then ``[CLS] A [SEP] B [SEP]`` with segment ids 0 up to the first ``[SEP]`` and 1 after.
- **Masking** (:func:`mask_tokens`): ``n = min(max_predictions_per_seq, max(1, round(len(tokens) *
  masked_lm_prob)))`` positions (whole words with ``whole_word_mask``; never ``[CLS]``/``[SEP]``), each
  replaced by ``[MASK]`` (80 %), kept (10 %) or a random vocabulary token (10 %). As in the original, at
  least one position is masked even at the default ``masked_lm_prob`` 0.
- **Output**: ``epoch_<k>.json``, one JSON object a line (``tokens``, ``segment_ids``, ``is_random_next``,
  ``masked_lm_positions``, ``masked_lm_labels``), and ``epoch_<k>_metrics.json``
  (``{"num_training_examples": N, "max_seq_len": L}``), for ``k < epochs_to_generate``; each file written
  atomically (a killed run leaves no partial epoch).

Streaming: the corpus is read once, line by line, and its tokenised documents are written to a temporary
JSON-lines file beside the output (one document a line) with an in-memory index of byte offsets and sentence
counts (16 bytes a document); a random document is read back by seeking. Memory holds the index, a batch of
about 2,048 lines being tokenised and the longest document, whatever the corpus size; no pickle, no ``shelve``.

Determinism: epoch ``k`` draws from ``random.Random`` seeded with ``(seed, k)`` alone, so a file does not
depend on the other epochs, on ``num_workers`` or on the run that wrote it.
"""
import json
import logging
import os
import random
import shutil
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .._checks import check_int
from .._io import atomic_write_file, atomic_write_json

__all__ = ["PregenerateConfig", "CorpusError", "TokenizedCorpus", "truncate_pair", "mask_tokens",
           "instances_from_document", "write_epoch", "pregenerate", "epoch_file", "metrics_file",
           "split_sentences"]

logger = logging.getLogger(__name__)

_SPECIAL = ("[CLS]", "[SEP]")
#: Corpus lines tokenised in one batch (the tokenizer's per-call cost dominates short documents).
_BATCH_LINES = 2048


class CorpusError(ValueError):
    """A corpus that cannot give instances (empty, one document, no sentence breaks): one sentence."""


def epoch_file(directory: str, epoch: int) -> str:
    """``<directory>/epoch_<epoch>.json``, the instances of one epoch."""
    return os.path.join(directory, f"epoch_{epoch}.json")


def metrics_file(directory: str, epoch: int) -> str:
    """``<directory>/epoch_<epoch>_metrics.json``: ``num_training_examples`` and ``max_seq_len``."""
    return os.path.join(directory, f"epoch_{epoch}_metrics.json")


@dataclass(frozen=True)
class PregenerateConfig:
    """The generation settings; defaults are the original script's (``--masked_lm_prob`` 0.0: its corpus holds
    no ``[MASK]``; one position is still masked, see the module doc)."""

    max_seq_len: int = 128
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.0
    max_predictions_per_seq: int = 20
    whole_word_mask: bool = False
    oneseq: bool = False
    epochs_to_generate: int = 3
    seed: int = 0

    def __post_init__(self):
        check_int("--max_seq_len", self.max_seq_len, minimum=5,
                  qualifier=" ([CLS] A [SEP] B [SEP] with at least two tokens)")
        check_int("--max_predictions_per_seq", self.max_predictions_per_seq)
        check_int("--epochs_to_generate", self.epochs_to_generate)
        check_int("--seed", self.seed, minimum=0)
        for name in ("short_seq_prob", "masked_lm_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name} must be a probability in [0, 1], got {value!r}")


def _epoch_rng(seed: int, epoch: int) -> random.Random:
    return random.Random(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


# --------------------------------------------------------------------------------------------- corpus
class TokenizedCorpus:
    """The corpus's tokenised documents on disk (one JSON list of sentences a line) with their byte offsets
    and sentence counts in memory; a context manager that removes its temporary file.

    ``tokenize(lines) -> list of token lists`` splits a batch of lines (those of several documents, up to
    about 2,048, tokenised at once for speed)."""

    def __init__(self, corpus: str, tokenize, work_dir: Optional[str] = None):
        if not os.path.isfile(corpus):
            raise CorpusError(f"--train_corpus {corpus} does not exist or is not a file; pass a text file with one "
                              f"sentence per line and blank lines between documents")
        self.corpus = corpus
        self._dir = tempfile.mkdtemp(prefix=".kdu-corpus-", dir=work_dir)
        self.path = os.path.join(self._dir, "documents.jsonl")
        self.offsets = array("q")
        self.lengths = array("q")
        self.lines = 0
        self._handle = None
        try:
            self._build(tokenize)
        except BaseException:
            self.close()
            raise
        self._cumsum = np.cumsum(np.frombuffer(self.lengths, dtype=np.int64))

    def _build(self, tokenize) -> None:
        multi = False
        pending: List[List[str]] = []  # documents awaiting one batched tokenisation (bounded: _BATCH_LINES)

        def flush(out) -> None:
            lines = [line for document in pending for line in document]
            tokens = iter(tokenize(lines)) if lines else iter(())
            for document in pending:
                self.offsets.append(out.tell())
                self.lengths.append(len(document))
                out.write(json.dumps([next(tokens) for _ in document], ensure_ascii=False).encode("utf-8") + b"\n")
            pending.clear()

        with open(self.corpus, "r", encoding="utf-8") as source, open(self.path, "wb") as out:
            document: List[str] = []
            queued = 0
            try:
                for line in source:
                    self.lines += 1
                    line = line.strip()
                    if line:
                        document.append(line)
                        continue
                    if document:
                        multi = multi or len(document) > 1
                        pending.append(document)
                        queued += len(document)
                        document = []
                        if queued >= _BATCH_LINES:
                            flush(out)
                            queued = 0
            except UnicodeDecodeError as error:
                raise CorpusError(f"--train_corpus {self.corpus} is not UTF-8 text (line {self.lines + 1}, byte "
                                  f"{error.start}); convert it to UTF-8") from None
            if document:
                multi = multi or len(document) > 1
                pending.append(document)
            flush(out)
        if not self.lengths:
            raise CorpusError(f"--train_corpus {self.corpus} holds no text ({self.lines} blank line(s)); pass a "
                              f"corpus with one sentence per line and blank lines between documents")
        if len(self.lengths) < 2:
            raise CorpusError(f"--train_corpus {self.corpus} has no document breaks (one document of "
                              f"{self.lengths[0]} line(s)); put a blank line between documents (any natural "
                              f"boundary: chapters, sections, paragraphs): a random next segment must come from "
                              f"another document")
        if not multi:
            raise CorpusError(f"--train_corpus {self.corpus} has no sentence breaks: each of its {len(self.lengths)} "
                              f"documents is a single line; put one sentence per line, blank lines only between "
                              f"documents")

    def __len__(self) -> int:
        return len(self.lengths)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def __getitem__(self, index: int) -> List[List[str]]:
        if self._handle is None:
            self._handle = open(self.path, "rb")
        self._handle.seek(self.offsets[index])
        return json.loads(self._handle.readline())

    def documents(self) -> Iterator[List[List[str]]]:
        """Every document in order (a sequential read)."""
        with open(self.path, "rb") as stream:
            for line in stream:
                yield json.loads(line)

    def sample_other(self, index: int, rng: random.Random) -> List[List[str]]:
        """A document other than ``index``, drawn with probability proportional to its sentence count."""
        total = int(self._cumsum[-1])
        start = int(self._cumsum[index])
        sentence = rng.randrange(start, start + total - self.lengths[index]) % total
        return self[int(np.searchsorted(self._cumsum, sentence, side="right"))]


def split_sentences(text: str) -> List[str]:
    """``text`` cut after ``.``, ``!`` or ``?`` followed by a space (a simple sentence splitter).

    >>> split_sentences("One. Two? Three")
    ['One.', 'Two?', 'Three']
    """
    sentences, current = [], []
    words = text.split()
    for position, word in enumerate(words):
        current.append(word)
        if word[-1:] in ".!?" or position == len(words) - 1:
            sentences.append(" ".join(current))
            current = []
    return sentences



# ------------------------------------------------------------------------------------------ instances
def truncate_pair(tokens_a: List[str], tokens_b: List[str], max_num_tokens: int, rng: random.Random) -> None:
    """Drop tokens in place from the longer list (``b`` on a tie), at its front or back at random, until
    ``len(a) + len(b) <= max_num_tokens`` (BERT's ``truncate_seq_pair``)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _shuffled(items: List, rng: random.Random) -> Iterator:
    """``items`` in a uniformly random order, drawn lazily (Fisher-Yates from the front): a caller that stops
    after ``k`` items pays ``k`` draws, not ``len(items)``. Reorders ``items`` in place."""
    for i in range(len(items)):
        j = rng.randrange(i, len(items))
        items[i], items[j] = items[j], items[i]
        yield items[i]


def mask_tokens(tokens: List[str], masked_lm_prob: float, max_predictions_per_seq: int, whole_word_mask: bool,
                vocab_list: Sequence[str], rng: random.Random) -> Tuple[List[str], List[int], List[str]]:
    """Mask ``tokens`` in place (see the module doc); returns ``(tokens, sorted positions, original tokens)``."""
    candidates: List[List[int]] = []
    for i, token in enumerate(tokens):
        if token in _SPECIAL:
            continue
        if whole_word_mask and candidates and token.startswith("##"):
            candidates[-1].append(i)
        else:
            candidates.append([i])
    budget = min(max_predictions_per_seq, max(1, int(round(len(tokens) * masked_lm_prob))))
    masked: List[Tuple[int, str]] = []
    for group in _shuffled(candidates, rng):
        if len(masked) >= budget:
            break
        if len(masked) + len(group) > budget:
            continue
        for index in group:
            if rng.random() < 0.8:
                replacement = "[MASK]"
            elif rng.random() < 0.5:
                replacement = tokens[index]
            else:
                replacement = vocab_list[rng.randrange(len(vocab_list))]
            masked.append((index, tokens[index]))
            tokens[index] = replacement
    masked.sort()
    return tokens, [i for i, _ in masked], [label for _, label in masked]


def instances_from_document(corpus: TokenizedCorpus, doc_index: int, document: List[List[str]],
                            cfg: PregenerateConfig, vocab_list: Sequence[str], rng: random.Random) -> List[Dict]:
    """The instances of one document (see the module doc)."""
    max_num_tokens = cfg.max_seq_len - 3
    target = max_num_tokens
    if rng.random() < cfg.short_seq_prob:
        target = rng.randint(2, max_num_tokens)
    instances, chunk, length, i = [], [], 0, 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            a_end = rng.randrange(1, len(chunk)) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            tokens_b: List[str] = []
            is_random_next = not cfg.oneseq and (len(chunk) == 1 or rng.random() < 0.5)
            if is_random_next:
                other = corpus.sample_other(doc_index, rng)
                for sentence in other[rng.randrange(len(other)):]:
                    tokens_b.extend(sentence)
                    if len(tokens_b) >= target - len(tokens_a):
                        break
                i -= len(chunk) - a_end  # the unused sentences start the next chunk
            else:
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
            tokens_a, tokens_b = tokens_a or ["."], tokens_b or ["."]
            truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
            tokens = ["[CLS]"] + tokens_a + ["[SEP]"] + tokens_b + ["[SEP]"]
            segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
            tokens, positions, labels = mask_tokens(tokens, cfg.masked_lm_prob, cfg.max_predictions_per_seq,
                                                    cfg.whole_word_mask, vocab_list, rng)
            instances.append({"tokens": tokens, "segment_ids": segment_ids, "is_random_next": is_random_next,
                              "masked_lm_positions": positions, "masked_lm_labels": labels})
            chunk, length = [], 0
        i += 1
    return instances


def write_epoch(corpus: TokenizedCorpus, output_dir: str, epoch: int, cfg: PregenerateConfig,
                vocab_list: Sequence[str]) -> int:
    """Write ``epoch_<epoch>.json`` and its metrics file atomically; returns the number of instances."""
    rng = _epoch_rng(cfg.seed, epoch)
    count = 0

    def write(stream) -> None:
        nonlocal count
        for index, document in enumerate(corpus.documents()):
            for instance in instances_from_document(corpus, index, document, cfg, vocab_list, rng):
                stream.write(json.dumps(instance, ensure_ascii=False).encode("utf-8") + b"\n")
                count += 1

    atomic_write_file(epoch_file(output_dir, epoch), write)
    atomic_write_json(metrics_file(output_dir, epoch),
                      {"num_training_examples": count, "max_seq_len": cfg.max_seq_len}, indent=None)
    return count


#: The workers' shared arguments: set before the pool forks, so that only epoch numbers cross processes.
_SHARED: Dict[str, object] = {}


def _worker(epoch: int) -> Tuple[int, int]:
    return epoch, write_epoch(_SHARED["corpus"], _SHARED["output_dir"], epoch, _SHARED["cfg"], _SHARED["vocab"])


def pregenerate(corpus_path: str, output_dir: str, tokenizer, cfg: PregenerateConfig,
                num_workers: int = 1) -> Dict:
    """Tokenise ``corpus_path`` with ``tokenizer`` (this package's :func:`~.features.load_tokenizer`) and write
    ``cfg.epochs_to_generate`` epochs to ``output_dir``; returns ``{"documents", "instances", "seconds",
    "instances_per_second", ...}``. Raises :class:`CorpusError` for a corpus that cannot give instances
    (nothing is written then but the created ``output_dir``)."""
    check_int("--num_workers", num_workers)
    vocab = tokenizer.get_vocab()
    vocab_list = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]

    def tokenize(lines: List[str]) -> List[List[str]]:
        return [encoding.tokens for encoding in tokenizer.encode_batch(lines, add_special_tokens=False)]

    os.makedirs(output_dir, exist_ok=True)
    began = time.monotonic()
    with TokenizedCorpus(corpus_path, tokenize, work_dir=output_dir) as corpus:
        tokenized = time.monotonic() - began
        logger.info("%s: %d lines, %d documents tokenised in %.1f s", corpus_path, corpus.lines, len(corpus),
                    tokenized)
        _SHARED.update(corpus=corpus, output_dir=output_dir, cfg=cfg, vocab=vocab_list)
        epochs, counts = range(cfg.epochs_to_generate), {}
        try:
            if num_workers > 1 and len(epochs) > 1:
                import multiprocessing

                with multiprocessing.get_context("fork").Pool(min(num_workers, len(epochs))) as pool:
                    results = list(pool.imap_unordered(_worker, epochs))
            else:
                results = (_worker(epoch) for epoch in epochs)
            for epoch, count in results:
                counts[epoch] = count
                logger.info("epoch %d: %d instances -> %s", epoch, count, epoch_file(output_dir, epoch))
        finally:
            _SHARED.clear()
        documents = len(corpus)
    seconds = time.monotonic() - began
    total = sum(counts.values())
    generated = seconds - tokenized
    return dict(documents=documents, instances=total, epochs=cfg.epochs_to_generate, seconds=round(seconds, 3),
                tokenize_seconds=round(tokenized, 3),
                instances_per_second=round(total / generated, 1) if generated > 0 else None, config=asdict(cfg))
