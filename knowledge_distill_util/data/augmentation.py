"""TinyBERT's data augmentation of a task's training set: ``train.tsv`` -> ``train_aug.tsv`` (the original's algorithm).

The original (yejinlei/Dubhe ``examples/tinybert/data_augmentation.py``, after the TinyBERT paper): every
sentence is split into words (BERT's basic tokenizer: lower-cased, punctuation apart); every word of lower-case
letters outside the stop-word list (:data:`STOP_WORDS`) gets up to ``M`` candidate replacements:

- a word that is one word piece: the ``M`` most likely tokens of the pretrained BERT's masked-LM head at that
  position, for the input ``[CLS] sentence-with-[MASK] [SEP] sentence [SEP]`` (segments 0 then 1), without
  ``##`` pieces (and, here, without ``[...]`` special tokens);
- a word of several pieces: its ``M`` nearest GloVe words by cosine (itself excluded); none when unknown.

A word with no candidate keeps itself. Then ``N`` times: each candidate word is replaced by a uniformly chosen
candidate with probability ``p`` (``rng.choice`` then ``rng.random() < p``, in word order, one
``random.Random(seed)`` for the whole file); the sentence (words joined by spaces) is kept when new. Every
training line becomes its original line then one line per new sentence, each text column in turn
(:attr:`~.glue.TaskSpec.text_columns`, the original's ``augment_ids``); a header line is copied once.
Defaults as the original: ``M = 15``, ``p = 0.4``, ``N`` per task (:data:`DEFAULT_COPIES`, else 30).

Substitute (no GloVe file, or a model without a masked-LM head): nearest neighbours by cosine in the model's
word-piece embedding table, among whole-word tokens (lower-case letters, no ``##``); a word of several pieces
is queried with the mean of its pieces' rows. One log line says when it is used.

GloVe (:func:`read_glove`): the standard text format, ``word v1 ... vD`` per line, streamed; only the task's
candidate words are kept (they are also the neighbour pool), and only the first ``max_words`` lines are read
(the original's 100,000 most frequent words; 0: the whole file).

Differences from the original, on purpose: the other text column of a sentence pair keeps its own text (the
original left the last augmented sentence of the first column in it); ``N`` given explicitly is used (the
original overwrote it with the task default); masked-LM inputs are batched (``batch_size``), padded to the
longest in the batch and cut at ``max_length`` tokens; ``[...]`` tokens are never candidates.

What the augmentation reads (GloVe, the embedding substitute, the pretrained BERT) is in
:mod:`.augmentation_inputs` (re-exported here); this module holds the algorithm and the file it writes.
"""
import logging
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np

from .._io import atomic_write_file
from .augmentation_inputs import (GLOVE_VOCAB_SIZE, WHOLE_WORD, AugmentationError, AugmentationModel, MaskedLM,
                                  WordVectors, embedding_neighbours, load_augmentation_model, read_glove)
from .glue import TaskSpec, _decode, _lines, get_task, read_examples

__all__ = ["STOP_WORDS", "DEFAULT_COPIES", "DEFAULT_M", "DEFAULT_P", "GLOVE_VOCAB_SIZE", "AUGMENTED_FILE",
           "AugmentationError", "WordVectors", "read_glove", "embedding_neighbours", "default_copies",
           "is_candidate", "Augmentor", "augment_sentence", "augment_task", "task_directory", "task_words",
           "basic_words", "MaskedLM", "AugmentationModel", "load_augmentation_model"]

logger = logging.getLogger(__name__)

#: The original's ``StopWordsList`` (NLTK's English stop words plus ``'s``, ``'re``).
STOP_WORDS = frozenset([
    'i', 'me', 'my', 'myself', 'we', 'our', 'ours', 'ourselves', 'you', "you're", "you've", "you'll", "you'd", 'your',
    'yours', 'yourself', 'yourselves', 'he', 'him', 'his', 'himself', 'she', "she's", 'her', 'hers', 'herself', 'it',
    "it's", 'its', 'itself', 'they', 'them', 'their', 'theirs', 'themselves', 'this', 'that', "that'll", 'these',
    'those', 'am', 'is', 'are', 'was', 'were', 'be', 'been', 'being', 'have', 'has', 'had', 'having', 'do', 'does',
    'did', 'doing', 'a', 'an', 'the', 'and', 'but', 'if', 'or', 'because', 'as', 'until', 'while', 'of', 'at', 'by',
    'for', 'with', 'about', 'against', 'between', 'into', 'through', 'during', 'before', 'after', 'above', 'below',
    'to', 'from', 'up', 'down', 'in', 'out', 'on', 'off', 'over', 'under', 'again', 'further', 'then', 'once', 'here',
    'there', 'all', 'any', 'both', 'each', 'few', 'more', 'most', 'other', 'some', 'such', 'no', 'nor', 'not', 'only',
    'own', 'same', 'so', 'than', 'too', 'very', 's', 't', 'can', 'will', 'just', 'don', "don't", 'should', "should've",
    'now', 'd', 'll', 'm', 'o', 're', 've', 'y', 'ain', 'aren', "aren't", 'couldn', "couldn't", 'didn', "didn't",
    'doesn', "doesn't", 'hadn', "hadn't", 'hasn', "hasn't", 'haven', "haven't", 'isn', "isn't", 'ma', 'mightn',
    "mightn't", 'mustn', "mustn't", 'needn', "needn't", 'shan', "shan't", 'shouldn', "shouldn't", 'wasn', "wasn't",
    'weren', "weren't", 'won', "won't", 'wouldn', "wouldn't", "'s", "'re"])
#: The original's ``N`` per task (its ``default_params``; its "STS-b" key never matched, so STS-B got 30 too).
DEFAULT_COPIES = {"cola": 30, "mnli": 10, "mrpc": 30, "sst-2": 20, "sts-b": 30, "qqp": 10, "qnli": 20, "rte": 30}
DEFAULT_N, DEFAULT_M, DEFAULT_P = 30, 15, 0.4
AUGMENTED_FILE = "train_aug.tsv"
_WORD = WHOLE_WORD
_SPECIAL = re.compile(r"\[.*\]")


def default_copies(task_name: str) -> int:
    """The original's ``N`` for ``task_name`` (30 for a task it does not list)."""
    return DEFAULT_COPIES.get(get_task(task_name).name, DEFAULT_N)


def is_candidate(word: str) -> bool:
    """Whether ``word`` is augmented: lower-case letters only and not a stop word (the original's ``_is_valid``)."""
    return bool(_WORD.fullmatch(word)) and word not in STOP_WORDS


# ----------------------------------------------------------------------------------------- augmentation


def basic_words(tokenizer, text: str) -> List[str]:
    """BERT's basic tokenisation of ``text``: the tokenizer's normaliser, then its pre-tokenizer.

    >>> from knowledge_distill_util.data.features import default_vocab_file, load_tokenizer
    >>> basic_words(load_tokenizer(default_vocab_file()), "Héllo, World!")
    ['hello', ',', 'world', '!']
    """
    normal = tokenizer.normalizer.normalize_str(text) if tokenizer.normalizer else text
    return [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normal)]


@dataclass
class _Sentence:
    """One text to augment: its words, and per candidate word index its candidates (filled in two passes)."""

    text: str
    words: List[str]
    candidates: Dict[int, List[str]] = field(default_factory=dict)
    #: word index -> masked-LM input: (token ids, the [MASK] position, where segment 1 starts)
    queries: Dict[int, Tuple[Tuple[int, ...], int, int]] = field(default_factory=dict)


class Augmentor:
    """Candidates for every word of a batch of sentences (masked LM, GloVe, or the embedding substitute).

    ``tokenizer``: this package's WordPiece tokenizer (:func:`~.features.load_tokenizer`). ``masked_lm``: a
    :data:`MaskedLM` or ``None``; ``glove``: :class:`WordVectors` or ``None``; ``substitute``: the embedding
    table's :class:`WordVectors` (:func:`embedding_neighbours`) and its rows ``table`` ``[V, H]``, needed when
    either of the other two is missing. ``max_length``: tokens of a masked-LM input (longer ones are cut; a
    mask past the cut falls back to the substitute or the word itself).
    """

    def __init__(self, tokenizer, masked_lm: Optional[MaskedLM], glove: Optional[WordVectors], M: int = DEFAULT_M,
                 substitute: Optional[WordVectors] = None, table: Optional[np.ndarray] = None, batch_size: int = 64,
                 max_length: int = 512):
        if (masked_lm is None or glove is None) and (substitute is None or table is None):
            raise ValueError("without a masked LM or GloVe vectors the substitute (embedding_neighbours and its table) "
                             "is needed")
        self.tokenizer, self.masked_lm, self.glove, self.M = tokenizer, masked_lm, glove, M
        self.substitute, self.table = substitute, table
        self.batch_size, self.max_length = batch_size, max_length
        self.ids = {name: tokenizer.token_to_id(name) for name in ("[CLS]", "[SEP]", "[MASK]", "[PAD]")}
        missing = [name for name, i in self.ids.items() if i is None]
        if missing:
            raise AugmentationError(f"the vocabulary lacks {', '.join(missing)}; use a BERT WordPiece vocabulary")
        self.counts = {"masked_lm": 0, "glove": 0, "substitute": 0}

    def words(self, text: str) -> List[str]:
        return basic_words(self.tokenizer, text)

    def _fill_substitute(self, wanted: Dict[Tuple[str, Tuple[int, ...]], List[List[str]]]) -> None:
        """Fill each candidate list of ``{(word, piece ids): [lists]}`` from the embedding table (one product);
        without a substitute (a masked LM and GloVe were given) the lists stay empty: the word keeps itself."""
        if not wanted or self.substitute is None:
            return
        keys = sorted(wanted)
        queries = np.stack([np.asarray(self.table[list(pieces)], dtype=np.float32).mean(axis=0) for _, pieces in keys])
        for (word, _), found in zip(keys, self.substitute.neighbours_batch([w for w, _ in keys], self.M, queries)):
            for target in wanted[(word, _)]:
                self.counts["substitute"] += 1
                target.extend(found)

    def plan(self, texts: Sequence[str]) -> List[_Sentence]:
        """Split ``texts`` and find every candidate word's candidates; masked-LM ones in batches."""
        sentences = [_Sentence(text, self.words(text)) for text in texts]
        encodings = self.tokenizer.encode_batch([s.words for s in sentences], is_pretokenized=True,
                                                add_special_tokens=False) if sentences else []
        cls, sep, mask = self.ids["[CLS]"], self.ids["[SEP]"], self.ids["[MASK]"]
        substitutes: Dict[Tuple[str, Tuple[int, ...]], List[List[str]]] = {}
        for sentence, encoding in zip(sentences, encodings):
            ids, word_ids = list(encoding.ids), encoding.word_ids
            for index, word in enumerate(sentence.words):
                if not is_candidate(word):
                    continue
                pieces = [i for i, w in enumerate(word_ids) if w == index]
                if len(pieces) == 1 and self.masked_lm is not None and pieces[0] + 1 < self.max_length - 1:
                    masked = ids[:pieces[0]] + [mask] + ids[pieces[0] + 1:]
                    tokens = ([cls] + masked + [sep] + ids + [sep])[:self.max_length]
                    sentence.queries[index] = (tuple(tokens), pieces[0] + 1, len(masked) + 2)
                    sentence.candidates[index] = []
                elif len(pieces) > 1 and self.glove is not None:
                    self.counts["glove"] += 1
                    sentence.candidates[index] = self.glove.neighbours(word, self.M)
                else:
                    sentence.candidates[index] = []
                    if pieces:
                        substitutes.setdefault((word, tuple(ids[i] for i in pieces)), []).append(
                            sentence.candidates[index])
        self._fill_substitute(substitutes)
        self._fill_masked_lm(sentences)
        for sentence in sentences:
            for index, found in sentence.candidates.items():
                if not found:
                    found.append(sentence.words[index])
        return sentences

    def _fill_masked_lm(self, sentences: List[_Sentence]) -> None:
        """Run every masked-LM query of ``sentences`` (each distinct input once), longest first, in batches."""
        queries = {}
        for sentence in sentences:
            for index, query in sentence.queries.items():
                queries.setdefault(query, []).append((sentence, index))
        inputs = sorted(queries, key=lambda q: (-len(q[0]), q))
        pad = self.ids["[PAD]"]
        for start in range(0, len(inputs), self.batch_size):
            batch = inputs[start:start + self.batch_size]
            length = max(len(q[0]) for q in batch)
            ids = np.full((len(batch), length), pad, np.int64)
            mask = np.zeros((len(batch), length), np.int64)
            segments = np.zeros((len(batch), length), np.int64)
            for row, (tokens, _, first_segment) in enumerate(batch):
                ids[row, :len(tokens)] = tokens
                mask[row, :len(tokens)] = 1
                segments[row, first_segment:len(tokens)] = 1
            positions = np.array([q[1] for q in batch], np.int64)
            logits = np.asarray(self.masked_lm(ids, mask, segments, positions), dtype=np.float32)
            take = min(self.M, logits.shape[1])
            top = np.argpartition(-logits, take - 1, axis=1)[:, :take]
            for row, query in enumerate(batch):
                order = top[row][np.lexsort((top[row], -logits[row, top[row]]))]
                tokens = [self.tokenizer.id_to_token(int(i)) for i in order]
                found = [t for t in tokens if not t.startswith("##") and not _SPECIAL.fullmatch(t)]
                for sentence, index in queries[query]:
                    self.counts["masked_lm"] += 1
                    sentence.candidates[index] = list(found)


def augment_sentence(sentence: _Sentence, copies: int, p: float, rng: random.Random) -> List[str]:
    """The original's ``augment``: ``sentence.text``, then up to ``copies`` new sentences (see the module doc)."""
    found = [sentence.text]
    seen = {sentence.text}
    for _ in range(copies):
        words = list(sentence.words)
        for index in sorted(sentence.candidates):
            choice = rng.choice(sentence.candidates[index])
            if rng.random() < p:
                words[index] = choice
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            found.append(text)
    return found


def task_directory(glue_dir: str, task_name: str) -> str:
    """``<glue_dir>/<task_name>`` when it is a directory (the original's layout), else ``glue_dir`` itself; it
    must hold ``train.tsv`` (:class:`AugmentationError` otherwise)."""
    nested = os.path.join(glue_dir, task_name)
    directory = nested if os.path.isdir(nested) else glue_dir
    if not os.path.isfile(os.path.join(directory, "train.tsv")):
        raise AugmentationError(f"task directory {directory} has no train.tsv; pass --glue_dir with the folder holding "
                                f"<task_name>/train.tsv (or train.tsv itself)")
    return directory


def _raw_rows(path: str) -> Iterator[List[str]]:
    """The non-blank lines of a TSV file (already validated by :func:`~.glue.read_examples`) as column lists."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(_lines(handle), start=1):
            line = _decode(raw, path, lineno)
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if line.strip():
                yield line.split("\t")


def task_words(path: str, spec: TaskSpec, tokenizer) -> Set[str]:
    """Every candidate word of the text columns of the TSV ``path`` (the GloVe words to keep)."""
    found: Set[str] = set()
    for number, row in enumerate(_raw_rows(path)):
        if number == 0 and spec.has_header:
            continue
        for column in spec.text_columns:
            found.update(w for w in basic_words(tokenizer, row[column]) if is_candidate(w))
    return found


class _Progress:
    """A tqdm bar on a terminal, else a log line every ``every`` seconds: rows done, rows/s, ETA."""

    def __init__(self, total: int, every: float = 30.0):
        from tqdm import tqdm

        self.total, self.every, self.done = total, every, 0
        self.bar = tqdm(total=total, desc="augment", unit="row", disable=not sys.stderr.isatty(), mininterval=1.0)
        self.began = self.last = time.monotonic()

    def update(self, rows: int) -> None:
        self.done += rows
        self.bar.update(rows)
        now = time.monotonic()
        if self.bar.disable and self.every > 0 and now - self.last >= self.every:
            self.last = now
            rate = self.done / max(now - self.began, 1e-9)
            logger.info("augment: %d/%d rows (%d%%), %.1f rows/s, ETA %.0fs", self.done, self.total,
                        100 * self.done // max(self.total, 1), rate, (self.total - self.done) / max(rate, 1e-9))

    def close(self) -> float:
        self.bar.close()
        return time.monotonic() - self.began


def _chunks(source: str, has_header: bool, chunk_rows: int) -> Iterator[List[List[str]]]:
    """The rows of the TSV file ``source`` in lists of ``chunk_rows`` (the header, when there is one, alone first)."""
    chunk: List[List[str]] = []
    for number, row in enumerate(_raw_rows(source)):
        if number == 0 and has_header:
            yield [row]  # the header, alone
            continue
        chunk.append(row)
        if len(chunk) == chunk_rows:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def augment_task(task_dir: str, task_name: str, augmentor: Augmentor, copies: Optional[int] = None,
                 p: float = DEFAULT_P, seed: int = 0, chunk_rows: int = 256, overwrite: bool = False) -> Dict:
    """Write ``<task_dir>/train_aug.tsv`` from ``<task_dir>/train.tsv`` (module doc), atomically.

    ``copies``: ``N`` (default :func:`default_copies`). ``train.tsv`` is validated first (column counts, labels:
    :func:`~.glue.read_examples`); an existing ``train_aug.tsv`` is replaced only with ``overwrite``. Rows are
    processed ``chunk_rows`` at a time (the masked-LM inputs of a chunk are batched together); the random draws
    do not depend on the chunking. Returns ``{"rows", "written", "seconds", "rows_per_second", "output"}``.
    """
    spec = get_task(task_name)
    copies = default_copies(spec.name) if copies is None else copies
    source, output = os.path.join(task_dir, "train.tsv"), os.path.join(task_dir, AUGMENTED_FILE)
    if os.path.exists(output) and not overwrite:
        raise AugmentationError(f"{output} exists; pass --overwrite to replace it (or move it away first)")
    try:
        total = len(read_examples(task_dir, spec, "train"))
    except (ValueError, OSError) as error:
        raise AugmentationError(str(error)) from None
    rng = random.Random(seed)
    stats = {"rows": total, "written": 0}
    progress = _Progress(total)

    def write(stream) -> None:
        header_pending = spec.has_header
        for chunk in _chunks(source, spec.has_header, chunk_rows):
            if header_pending:
                stream.write(("\t".join(chunk[0]) + "\n").encode("utf-8"))
                stats["written"] += 1
                header_pending = False
                continue
            sentences = iter(augmentor.plan([row[c] for row in chunk for c in spec.text_columns]))
            for row in chunk:
                for column in spec.text_columns:
                    for text in augment_sentence(next(sentences), copies, p, rng):
                        out = list(row)
                        out[column] = text
                        stream.write(("\t".join(out) + "\n").encode("utf-8"))
                        stats["written"] += 1
            progress.update(len(chunk))

    try:
        atomic_write_file(output, write)
    finally:
        seconds = progress.close()
    stats.update(seconds=seconds, rows_per_second=total / max(seconds, 1e-9), output=output,
                 candidates=dict(augmentor.counts))
    logger.info("wrote %s: %d lines from %d training rows in %.1fs (%.1f rows/s); candidates: %s", output,
                stats["written"], total, seconds, stats["rows_per_second"], augmentor.counts)
    return stats
