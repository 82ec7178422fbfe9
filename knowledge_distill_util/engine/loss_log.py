"""The per-step loss log of a training stage: a CSV file (one row per step) and its plot (PNG).

Both are written atomically (``_io``). The CSV is never appended to in place: :class:`LossLog` keeps the
rows in memory and rewrites the whole file (header and every row, ``atomic_write_text``) when it starts,
at least every :data:`SYNC_SECONDS` seconds while rows arrive, at every checkpoint (the trainer calls
:meth:`LossLog.sync` right before it saves one) and on :meth:`LossLog.close`. So at every instant the file
is a complete CSV, and once a checkpoint of step ``s`` exists the file holds every row up to ``s`` (rows of
later steps may follow: a run resumed from ``s`` drops them and trains those steps again). Rewriting a few
hundred kilobytes every few seconds costs far less than a training step.
"""
import csv
import io
import os
import time
from typing import Dict, List, Optional, Sequence

from .._io import atomic_write_file, atomic_write_text

__all__ = ["LossLog", "plot_losses", "SYNC_SECONDS"]

#: Columns every log has before the loss terms.
BOOKKEEPING = ("step", "epoch", "lr", "seconds")
#: The longest time rows stay only in memory while a stage trains (checkpoints and the end write at once).
SYNC_SECONDS = 10.0
#: The loss plot's margins in inches (left for the tick labels and the term's name, top for the title):
#: fixed, so the figure is drawn once (``tight_layout`` draws it a second time to measure the labels).
MARGINS_IN = {"left": 1.0, "right": 0.2, "bottom": 0.5, "top": 0.45}
PANEL_IN = 1.8


def _kept_rows(path: str, keep_until: int) -> List[Dict[str, str]]:
    """The rows of steps ``<= keep_until`` of the CSV ``path`` (rows without a readable step are dropped)."""
    kept = []
    with open(path, newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            try:
                step = int(row["step"])
            except (KeyError, TypeError, ValueError):
                continue
            if step <= keep_until:
                kept.append(row)
    return kept


class LossLog:
    """``step, epoch, lr, seconds, <terms...>`` rows in ``path``, rewritten atomically (see the module doc).

    ``keep_until``: on resume, the rows of steps ``<= keep_until`` of an existing log are kept (the steps
    after the checkpoint are trained again); ``None`` starts a new log. ``path`` ``os.devnull`` (the ranks
    that do not write) keeps nothing and writes nothing.
    """

    def __init__(self, path: str, terms: Sequence[str], keep_until: Optional[int] = None):
        self.path = path
        self.columns = BOOKKEEPING + tuple(terms)
        self._enabled = os.path.abspath(path) != os.path.abspath(os.devnull)
        rows = []
        if self._enabled and keep_until is not None and os.path.isfile(path):
            rows = _kept_rows(path, keep_until)
        self._lines: List[str] = [self._line({k: row.get(k, "") for k in self.columns}) for row in rows]
        self._written = -1  # rows in the file (-1: not written yet)
        self.sync()

    def _line(self, row: Dict) -> str:
        buffer = io.StringIO()
        csv.DictWriter(buffer, fieldnames=list(self.columns)).writerow(row)
        return buffer.getvalue()

    def write(self, step: int, epoch: int, lr: float, seconds: float, terms: Dict[str, float]) -> None:
        """Add the row of ``step``; the file is rewritten when the last rewrite is older than SYNC_SECONDS."""
        if not self._enabled:
            return
        self._lines.append(self._line(dict(step=step, epoch=epoch, lr=f"{lr:.6g}", seconds=f"{seconds:.2f}",
                                           **{k: f"{v:.6g}" for k, v in terms.items()})))
        if time.monotonic() - self._synced >= SYNC_SECONDS:
            self.sync()

    def sync(self) -> None:
        """Rewrite the file with every row so far (atomically); nothing to do when it holds them already."""
        self._synced = time.monotonic()
        if not self._enabled or self._written == len(self._lines):
            return
        header = self._line(dict(zip(self.columns, self.columns)))
        atomic_write_text(self.path, header + "".join(self._lines))
        self._written = len(self._lines)

    def close(self) -> None:
        self.sync()


def plot_losses(log_path: str, png_path: str, title: str = "") -> Optional[str]:
    """Plot every loss column of the CSV ``log_path`` against the step into ``png_path``: one panel per
    term, sharing the step axis. The PNG is drawn in memory (a ``matplotlib`` ``Figure``, no ``pyplot``
    state), then written with ``_io.atomic_write_file``; None when the log has no row."""
    from matplotlib.figure import Figure  # imported by the processes that plot only

    with open(log_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return None
    terms = [k for k in rows[0] if k not in BOOKKEEPING]
    steps = [int(r["step"]) for r in rows]
    width, height = 7.0, PANEL_IN * len(terms) + MARGINS_IN["bottom"] + MARGINS_IN["top"]
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=MARGINS_IN["left"] / width, right=1 - MARGINS_IN["right"] / width,
                        bottom=MARGINS_IN["bottom"] / height, top=1 - MARGINS_IN["top"] / height, hspace=0.2)
    axes = fig.subplots(len(terms), 1, sharex=True, squeeze=False)
    for axis, term in zip(axes[:, 0], terms):
        axis.plot(steps, [float(r[term]) for r in rows], linewidth=1)
        axis.set_ylabel(term)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title or os.path.basename(log_path))
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=90)
    data = image.getvalue()
    atomic_write_file(png_path, lambda stream: stream.write(data), size=len(data))
    return png_path
