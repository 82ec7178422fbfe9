"""The built-in default dataset: GLUE-format TSV that needs no user data and no download.

Primary source: the topic files of Debian's ``fortunes`` package (``/usr/share/games/fortunes/<topic>``,
entries separated by lines holding only ``%``). The label of a quote is the file it comes from; four
topics with distinct vocabulary and several hundred short entries each are used (task ``"fortunes"``).
The off-colour topics (``off/``) are never read.

Fallback, when those files are absent: a generated task (``"synthetic"``) whose sentences mix topic words
of their own class with words of other classes and neutral filler, so that it is learnable but not
trivial.

Both are written in the SST-2 layout (header ``sentence\\tlabel``), classes balanced, split into train and
dev per class (stratified), deterministic given ``seed``; a text never appears twice (so never in both).
"""
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._checks import check_int
from .._io import atomic_write_json
from .glue import GLUE_TASKS, write_examples

__all__ = [
    "FORTUNES_DIR",
    "SOURCES",
    "read_fortunes",
    "fortunes_available",
    "synthetic_texts",
    "prepare_default_data",
]

FORTUNES_DIR = "/usr/share/games/fortunes"
SOURCES = ("auto", "fortunes", "synthetic")
_MIN_PER_CLASS = 5

# Filler shared by every class of the synthetic task, and the topic words of each class.
_FILLER = (
    "the a my our their this that today yesterday again really very quite just then later "
    "people everyone friends family we they someone after before during about with for"
).split()
_TOPIC_WORDS: Dict[str, List[str]] = {
    "sports": (
        "football soccer tennis goal match team coach league score referee stadium player season "
        "basketball baseball golf race champion tournament penalty striker keeper athletes training fans"
    ).split(),
    "food": (
        "bread cheese pizza soup salad kitchen recipe dinner lunch breakfast chef oven garlic pasta "
        "rice butter sugar spicy dessert bakery tomato onion chicken vegetables flavor restaurant"
    ).split(),
    "weather": (
        "rain snow storm wind cloud sunny forecast thunder temperature cold hot humid fog frost "
        "hurricane breeze lightning drought flood umbrella winter summer weather degrees ice"
    ).split(),
    "music": (
        "song guitar piano drums concert band singer album melody rhythm orchestra violin jazz "
        "chorus lyrics tune opera rock stage playlist bass composer symphony radio dance"
    ).split(),
}
_VERBS = "talked about loved watched discussed noticed enjoyed mentioned remembered planned".split()


def fortunes_available(fortunes_dir: str = FORTUNES_DIR) -> bool:
    """True when every topic file of the ``"fortunes"`` task exists in ``fortunes_dir``."""
    return all(os.path.isfile(os.path.join(fortunes_dir, t)) for t in GLUE_TASKS["fortunes"].labels)


def _keep(text: str, min_chars: int, max_chars: int) -> bool:
    letters = sum(c.isalpha() for c in text)
    return (
        min_chars <= len(text) <= max_chars
        and "\ufffd" not in text
        and len(text.split()) >= 3
        and letters >= 0.5 * len(text)  # drops ASCII art and tables
    )


def read_fortunes(path: str, min_chars: int = 20, max_chars: int = 250) -> List[str]:
    """Entries of one fortune file, whitespace collapsed to single spaces, keeping entries of
    ``min_chars..max_chars`` characters that are mostly letters (no ASCII art)."""
    with open(path, "r", encoding="utf-8", errors="replace") as handle:
        entries, current = [], []
        for line in handle:
            if line.rstrip("\r\n") == "%":
                entries.append(" ".join(" ".join(current).split()))
                current = []
            else:
                current.append(line)
        entries.append(" ".join(" ".join(current).split()))
    return [e for e in entries if _keep(e, min_chars, max_chars)]


def synthetic_texts(label: str, count: int, rng: np.random.Generator, own_prob: float = 0.6) -> List[str]:
    """``count`` distinct generated sentences of class ``label``: 3-5 topic words, each of class
    ``label`` with probability ``own_prob`` and of another class otherwise, among neutral filler."""
    labels = list(_TOPIC_WORDS)
    others = [l for l in labels if l != label]
    texts: List[str] = []
    seen = set()
    for _ in range(count * 50):
        if len(texts) == count:
            break
        words = []
        for _ in range(int(rng.integers(3, 6))):
            cls = label if rng.random() < own_prob else others[int(rng.integers(len(others)))]
            words.append(_TOPIC_WORDS[cls][int(rng.integers(len(_TOPIC_WORDS[cls])))])
        filler = [_FILLER[int(i)] for i in rng.integers(len(_FILLER), size=int(rng.integers(2, 5)))]
        subject = filler.pop(0)
        verb = _VERBS[int(rng.integers(len(_VERBS)))]
        body = words + filler
        rng.shuffle(body)
        text = f"{subject} {verb} " + " ".join(body[:-1]) + f" and {body[-1]}"
        if text not in seen:
            seen.add(text)
            texts.append(text)
    return texts


def _split_balanced(
    by_label: Dict[str, Sequence[str]],
    rng: np.random.Generator,
    max_per_class: int,
    dev_fraction: float,
    max_train: Optional[int],
    max_dev: Optional[int],
) -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """Stratified, balanced train/dev rows ``(text, label)``, each split shuffled."""
    labels = list(by_label)
    per_class = min(max_per_class, min(len(v) for v in by_label.values()))
    n_dev = int(round(per_class * dev_fraction))
    n_train = per_class - n_dev
    if max_train is not None:
        n_train = min(n_train, max_train // len(labels))
    if max_dev is not None:
        n_dev = min(n_dev, max_dev // len(labels))
    if n_train < 1 or n_dev < 1:
        raise ValueError(
            f"{per_class} examples per class leave {n_train} train / {n_dev} dev examples per class for "
            f"{len(labels)} classes; raise max_per_class, max_train or max_dev (at least {len(labels)} each)"
        )
    train, dev = [], []
    for label in labels:
        texts = sorted(by_label[label])
        order = rng.permutation(len(texts))[:per_class]
        chosen = [texts[i] for i in order]
        dev += [(t, label) for t in chosen[:n_dev]]
        train += [(t, label) for t in chosen[n_dev : n_dev + n_train]]
    return [train[i] for i in rng.permutation(len(train))], [dev[i] for i in rng.permutation(len(dev))]


def _unique_by_label(by_label: Dict[str, List[str]]) -> Dict[str, List[str]]:
    """Drop duplicates, and every text found under more than one label (its label is ambiguous)."""
    owners: Dict[str, set] = {}
    for label, texts in by_label.items():
        for text in texts:
            owners.setdefault(text, set()).add(label)
    return {
        label: sorted({t for t in texts if len(owners[t]) == 1}) for label, texts in by_label.items()
    }


def _collect(source: str, fortunes_dir: str, rng, max_per_class: int, min_chars: int, max_chars: int):
    if source == "fortunes":
        topics = GLUE_TASKS["fortunes"].labels
        texts = {t: read_fortunes(os.path.join(fortunes_dir, t), min_chars, max_chars) for t in topics}
        origin = f"the Debian fortunes topics {', '.join(topics)} ({fortunes_dir})"
    else:
        texts = {label: synthetic_texts(label, max_per_class, rng) for label in GLUE_TASKS["synthetic"].labels}
        origin = "generated sentences (topic words of each class mixed with other classes' words and filler)"
    texts = _unique_by_label(texts)
    short = {label: len(v) for label, v in texts.items() if len(v) < _MIN_PER_CLASS}
    if short:
        raise ValueError(
            f"too few usable texts per class in {origin}: {short}; widen min_chars/max_chars or use "
            f"source='synthetic'"
        )
    return texts, origin


def _resolve_source(source: str, fortunes_dir: str) -> Tuple[str, str]:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    have = fortunes_available(fortunes_dir)
    if source == "fortunes" and not have:
        raise FileNotFoundError(
            f"the fortune topic files {', '.join(GLUE_TASKS['fortunes'].labels)} are not all in "
            f"{fortunes_dir}; install them with `apt-get install fortunes` or use source='synthetic'"
        )
    if source == "auto":
        if have:
            return "fortunes", ""
        return "synthetic", f" (fallback: the fortunes topic files are absent from {fortunes_dir})"
    return source, ""


def prepare_default_data(
    out_dir: str,
    seed: int = 0,
    max_per_class: int = 500,
    source: str = "auto",
    max_train: Optional[int] = None,
    max_dev: Optional[int] = None,
    dev_fraction: float = 0.2,
    fortunes_dir: str = FORTUNES_DIR,
    min_chars: int = 20,
    max_chars: int = 250,
) -> Tuple[str, str]:
    """Write the default task as ``out_dir/train.tsv`` and ``out_dir/dev.tsv`` (plus ``data_info.json``).

    Args:
        out_dir: directory to create or fill.
        seed: seeds the sampling, the split and (synthetic) the generation.
        max_per_class: examples per class before the split (all classes get the same number, the
            smallest class's count if lower).
        source: ``"auto"`` (fortunes when present, else synthetic), ``"fortunes"`` or ``"synthetic"``.
        max_train, max_dev: optional caps on the split sizes (kept balanced: ``cap // classes`` per class).
        dev_fraction: share of each class that goes to dev.
        fortunes_dir: where the fortune topic files are.
        min_chars, max_chars: length range of the fortune entries kept.

    Returns:
        ``(task_name, description)``: ``"fortunes"`` or ``"synthetic"``, and one sentence saying what was
        written and from which source.
    """
    check_int("max_per_class", max_per_class)
    check_int("max_train", max_train, allow_none=True)
    check_int("max_dev", max_dev, allow_none=True)
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be between 0 and 1 (exclusive), got {dev_fraction!r}")
    task, why = _resolve_source(source, fortunes_dir)
    rng = np.random.default_rng(seed)
    texts, origin = _collect(task, fortunes_dir, rng, max_per_class, min_chars, max_chars)
    train, dev = _split_balanced(texts, rng, max_per_class, dev_fraction, max_train, max_dev)
    os.makedirs(out_dir, exist_ok=True)
    write_examples(os.path.join(out_dir, "train.tsv"), train)
    write_examples(os.path.join(out_dir, "dev.tsv"), dev)
    description = (
        f"task {task!r}: {len(train)} train / {len(dev)} dev examples, {len(texts)} balanced classes, "
        f"from {origin}{why}; written to {out_dir}"
    )
    info = {
        "task_name": task,
        "source": task,
        "description": description,
        "labels": list(texts),
        "num_train": len(train),
        "num_dev": len(dev),
        "seed": seed,
    }
    atomic_write_json(os.path.join(out_dir, "data_info.json"), info)
    return task, description
