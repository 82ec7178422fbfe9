"""GLUE-format tasks: the TSV layout of each task and a strict reader.

Every task is described by a :class:`TaskSpec` (which columns hold the text and the label, whether the
file has a header line, the label set, the main metric). :func:`read_examples` reads
``<data_dir>/<split>.tsv`` and validates the *whole* file before returning, so a training script stops
with one clear sentence (file, line number, fix) before any training starts.

Files are read as in the reference GLUE processors (``csv.reader`` on a file opened in text mode):
UTF-8 (a byte-order mark is skipped), one example per line, columns separated by tabs, no quoting; a
line ends at ``\r\n``, ``\n`` or a lone ``\r`` (universal newlines, so files saved with old Mac
CR-only line endings read correctly).
"""
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .._io import atomic_write_text

__all__ = [
    "TaskSpec",
    "Example",
    "GLUE_TASKS",
    "get_task",
    "task_file",
    "read_examples",
    "write_examples",
]


@dataclass(frozen=True)
class TaskSpec:
    """How a task's TSV files are laid out and scored.

    Attributes:
        name: lower-case task name, e.g. ``"sst-2"``.
        labels: the label strings exactly as written in the TSV (their index is the class id), or
            ``None`` for a regression task.
        output_mode: ``"classification"`` or ``"regression"``.
        text_columns: column index of the first text, or of both texts of a sentence pair.
        label_column: column index of the label (negative counts from the end of the line).
        has_header: whether the first line of each file is a header to skip.
        main_metric: the metric the task is ranked by (``"accuracy"``, ``"mcc"``, ``"f1"``, ``"pearson"``).
        split_files: file names that differ from ``<split>.tsv`` (MNLI's ``dev`` is ``dev_matched.tsv``).
    """

    name: str
    labels: Optional[Tuple[str, ...]]
    output_mode: str
    text_columns: Tuple[int, ...]
    label_column: int
    has_header: bool
    main_metric: str
    split_files: Dict[str, str] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        """Number of classifier outputs: the number of labels, or 1 for regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_pair(self) -> bool:
        """True when each example is a sentence pair (two text columns)."""
        return len(self.text_columns) == 2

    @property
    def min_columns(self) -> int:
        """The fewest tab-separated columns a line must have to hold every field of this task."""
        needed = [c + 1 for c in self.text_columns]
        needed.append(self.label_column + 1 if self.label_column >= 0 else -self.label_column)
        return max(needed)


@dataclass(frozen=True)
class Example:
    """One example: ``text_b`` is ``None`` for single-sentence tasks; ``label`` is the label string
    (classification) or the score as a float (regression)."""

    text_a: str
    text_b: Optional[str]
    label: Union[str, float]


_BINARY = ("0", "1")
_ENTAIL = ("entailment", "not_entailment")


def _spec(name, labels, text_columns, label_column, has_header, main_metric, split_files=None):
    return TaskSpec(
        name=name,
        labels=None if labels is None else tuple(labels),
        output_mode="regression" if labels is None else "classification",
        text_columns=tuple(text_columns),
        label_column=label_column,
        has_header=has_header,
        main_metric=main_metric,
        split_files=dict(split_files or {}),
    )


#: Every known task, by lower-case name. The layouts are those of the GLUE distribution
#: (the same columns the reference BERT processors read), plus the built-in default tasks.
GLUE_TASKS: Dict[str, TaskSpec] = {
    # CoLA: no header; source, label, original label, sentence.
    "cola": _spec("cola", _BINARY, (3,), 1, False, "mcc"),
    # SST-2: header "sentence\tlabel".
    "sst-2": _spec("sst-2", _BINARY, (0,), 1, True, "accuracy"),
    # MRPC: header "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String".
    "mrpc": _spec("mrpc", _BINARY, (3, 4), 0, True, "f1"),
    # QQP: header "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate".
    "qqp": _spec("qqp", _BINARY, (3, 4), 5, True, "f1"),
    # STS-B: header, 10 columns; sentence1, sentence2 in 7, 8; the score (0-5) last.
    "sts-b": _spec("sts-b", None, (7, 8), -1, True, "pearson"),
    # MNLI: header; sentence1, sentence2 in 8, 9; gold_label last (train has 12 columns, dev 16).
    "mnli": _spec(
        "mnli", ("contradiction", "entailment", "neutral"), (8, 9), -1, True, "accuracy",
        {"dev": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv"},
    ),
    # QNLI: header "index\tquestion\tsentence\tlabel".
    "qnli": _spec("qnli", _ENTAIL, (1, 2), 3, True, "accuracy"),
    # RTE: header "index\tsentence1\tsentence2\tlabel".
    "rte": _spec("rte", _ENTAIL, (1, 2), 3, True, "accuracy"),
    # WNLI: header "index\tsentence1\tsentence2\tlabel".
    "wnli": _spec("wnli", _BINARY, (1, 2), 3, True, "accuracy"),
    # Built-in default (see knowledge_distill_util.data.default_data): header "sentence\tlabel",
    # the label is the Debian fortune file the quote comes from.
    "fortunes": _spec("fortunes", ("computers", "politics", "science", "work"), (0,), 1, True, "accuracy"),
    # Generated fallback when the fortunes package is absent: same layout.
    "synthetic": _spec("synthetic", ("sports", "food", "weather", "music"), (0,), 1, True, "accuracy"),
}


def get_task(name: Union[str, TaskSpec]) -> TaskSpec:
    """Return the :class:`TaskSpec` of ``name`` (case-insensitive; ``"SST-2"``, ``"sst2"`` both work).

    >>> get_task("SST-2").labels
    ('0', '1')
    >>> get_task("sts-b").output_mode
    'regression'
    """
    if isinstance(name, TaskSpec):
        return name
    if not isinstance(name, str):
        raise TypeError(f"task_name must be a string such as 'sst-2', got {type(name).__name__}")
    key = name.strip().lower().replace("_", "-")
    aliases = {"sst2": "sst-2", "stsb": "sts-b"}
    key = aliases.get(key, key)
    if key not in GLUE_TASKS:
        raise ValueError(
            f"unknown task_name {name!r}; known tasks: {', '.join(sorted(GLUE_TASKS))}"
        )
    return GLUE_TASKS[key]


def task_file(data_dir: str, task_name: Union[str, TaskSpec], split: str) -> str:
    """Path of the TSV file of ``split`` (``"train"``, ``"dev"``, ...) of a task inside ``data_dir``."""
    spec = get_task(task_name)
    return os.path.join(data_dir, spec.split_files.get(split, f"{split}.tsv"))


_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def _lines(handle) -> Iterator[bytes]:
    """The lines of a binary file without their line ends: ``\r\n``, ``\n`` and a lone ``\r`` each end
    a line (Python's universal newlines). Reads one ``\n``-terminated chunk at a time; a ``\r\n``
    pair is never split across chunks because chunks end right after ``\n``."""
    for chunk in handle:
        if chunk.endswith(b"\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith((b"\n", b"\r")):
            chunk = chunk[:-1]
        if b"\r" in chunk:
            yield from _LINE_BREAK.split(chunk)
        else:
            yield chunk


def _decode(raw: bytes, path: str, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path}, line {lineno}: not valid UTF-8 ({err.reason} at byte {err.start}); "
            f"re-save the file as UTF-8"
        ) from None


def _parse_label(spec: TaskSpec, value: str, path: str, lineno: int) -> Union[str, float]:
    value = value.strip()
    if spec.labels is None:
        try:
            score = float(value)
        except ValueError:
            score = math.nan
        if not math.isfinite(score):
            raise ValueError(
                f"{path}, line {lineno}: the score {value!r} in column {spec.label_column} is not a finite "
                f"number; task {spec.name!r} is a regression task and needs a numeric score there"
            )
        return score
    if value not in spec.labels:
        raise ValueError(
            f"{path}, line {lineno}: unknown label {value!r} in column {spec.label_column}; task "
            f"{spec.name!r} accepts only {', '.join(repr(l) for l in spec.labels)} "
            f"(check --task_name or fix the line)"
        )
    return value


def _check_columns(spec: TaskSpec, n_cols: int, expected: int, path: str, lineno: int, first: bool):
    if n_cols != expected:
        where = "the header" if spec.has_header else "the first line"
        raise ValueError(
            f"{path}, line {lineno}: expected {expected} tab-separated columns (as in {where}), found "
            f"{n_cols}; fix the line (a stray tab or a line break inside a text?)"
        )
    if first and n_cols < spec.min_columns:
        raise ValueError(
            f"{path}, line {lineno}: task {spec.name!r} needs at least {spec.min_columns} tab-separated "
            f"columns, found {n_cols}; check --task_name or the file's layout"
        )


def _check_header(spec: TaskSpec, cols: List[str], path: str) -> None:
    """The first line of a task with a header is not an example: its label column does not hold a label (or, for
    a regression task, a number); else ``ValueError`` (skipping it would drop that example silently)."""
    try:
        _parse_label(spec, cols[spec.label_column], path, 1)
    except ValueError:
        return
    raise ValueError(
        f"{path}, line 1: task {spec.name!r} files start with a header line, but this line reads as an example "
        f"(label {cols[spec.label_column].strip()!r} in column {spec.label_column}); add the header line (the column "
        f"names, as in the GLUE files) or check --task_name"
    )


def read_examples(data_dir: str, task_name: Union[str, TaskSpec], split: str) -> List[Example]:
    """Read and validate ``<data_dir>/<split>.tsv`` of a GLUE-format task.

    Every line is checked before anything is returned: the column count (equal to the header's, or to
    the first line's when the file has no header), the label (one of ``TaskSpec.labels``) or the score
    (a finite number, regression). Blank lines are skipped.

    Raises:
        FileNotFoundError: ``data_dir`` or the file is missing.
        NotADirectoryError, IsADirectoryError: ``data_dir`` is a file, or the TSV path a directory.
        ValueError: a malformed line (the message names the file and line number), or no examples.
    """
    spec = get_task(task_name)
    path = _tsv_path(data_dir, spec, split)
    examples: List[Example] = []
    expected: Optional[int] = None
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(_lines(handle), start=1):
            line = _decode(raw, path, lineno)
            if lineno == 1:
                line = line.lstrip("\ufeff")  # a UTF-8 byte-order mark
            if not line.strip():
                continue
            cols = line.split("\t")
            first = expected is None
            if first:
                expected = len(cols)
            _check_columns(spec, len(cols), expected, path, lineno, first)
            if first and spec.has_header:
                _check_header(spec, cols, path)
                continue
            texts = [cols[c].strip() for c in spec.text_columns]
            label = _parse_label(spec, cols[spec.label_column], path, lineno)
            examples.append(Example(texts[0], texts[1] if spec.is_pair else None, label))
    if not examples:
        raise ValueError(
            f"{path} holds no examples; it must contain "
            f"{'a header line and ' if spec.has_header else ''}at least one example line"
        )
    return examples


def _tsv_path(data_dir: str, spec: TaskSpec, split: str) -> str:
    """The TSV file of ``split`` in ``data_dir``, checked to exist (the errors of :func:`read_examples`)."""
    if os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise NotADirectoryError(
            f"data directory {data_dir!r} is a file, expected a directory; pass --data_dir pointing at the "
            f"folder that holds {spec.split_files.get('train', 'train.tsv')}"
        )
    if not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data directory {data_dir!r} does not exist; pass --data_dir pointing at a folder with "
            f"{spec.split_files.get('train', 'train.tsv')} and "
            f"{spec.split_files.get('dev', 'dev.tsv')} (or prepare the default data with "
            f"scripts/prepare_default_data.py)"
        )
    path = task_file(data_dir, spec, split)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{path} is a directory, expected a TSV file; put the {split!r} split of task {spec.name!r} "
            f"there as a tab-separated text file"
        )
    if not os.path.isfile(path):
        present = sorted(f for f in os.listdir(data_dir) if f.endswith(".tsv"))
        raise FileNotFoundError(
            f"{path} does not exist (TSV files present: {', '.join(present) or 'none'}); "
            f"put the {split!r} split of task {spec.name!r} there"
        )
    return path


def write_examples(path: str, rows: Sequence[Tuple[str, str]], header: Tuple[str, str] = ("sentence", "label")):
    """Write ``(text, label)`` rows as a single-sentence GLUE TSV (SST-2 layout) with a header line.

    Tabs and line breaks inside texts are replaced by spaces, so the file always parses back. The file
    is replaced atomically (:func:`~knowledge_distill_util._io.atomic_write_text`).
    """
    lines = ["\t".join(header)]
    lines += [" ".join(str(text).split()) + "\t" + str(label) for text, label in rows]
    atomic_write_text(path, "\n".join(lines) + "\n")
