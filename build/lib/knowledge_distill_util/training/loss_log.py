"""The per-step loss log of a training stage: a CSV file (one row per step) and its plot (PNG)."""
import csv
import os
from typing import Dict, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display: once, at import
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["LossLog", "plot_losses"]

#: Columns every log has before the loss terms.
BOOKKEEPING = ("step", "epoch", "lr", "seconds")


class LossLog:
    """``step, epoch, lr, seconds, <terms...>`` rows in ``path``, flushed after every row.

    ``keep_until``: on resume, the rows of steps ``<= keep_until`` of an existing log are kept (the steps
    after the checkpoint are trained again); ``None`` starts a new log.
    """

    def __init__(self, path: str, terms: Sequence[str], keep_until: Optional[int] = None):
        self.path = path
        self.columns = BOOKKEEPING + tuple(terms)
        rows = []
        if keep_until is not None and os.path.isfile(path):
            with open(path, newline="", encoding="utf-8") as stream:
                rows = [r for r in csv.DictReader(stream) if int(r["step"]) <= keep_until]
        self._stream = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._stream, fieldnames=list(self.columns))
        self._writer.writeheader()
        for row in rows:
            self._writer.writerow({k: row.get(k, "") for k in self.columns})
        self._stream.flush()

    def write(self, step: int, epoch: int, lr: float, seconds: float, terms: Dict[str, float]) -> None:
        self._writer.writerow(dict(step=step, epoch=epoch, lr=f"{lr:.6g}", seconds=f"{seconds:.2f}",
                                   **{k: f"{v:.6g}" for k, v in terms.items()}))
        self._stream.flush()

    def close(self) -> None:
        self._stream.close()


def plot_losses(log_path: str, png_path: str, title: str = "") -> Optional[str]:
    """Plot every loss column of the CSV ``log_path`` against the step into ``png_path``."""
    with open(log_path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    if not rows:
        return None
    terms = [k for k in rows[0] if k not in BOOKKEEPING]
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(len(terms), 1, figsize=(7, 1.8 * len(terms) + 0.6), sharex=True, squeeze=False)
    for axis, term in zip(axes[:, 0], terms):
        axis.plot(steps, [float(r[term]) for r in rows], linewidth=1)
        axis.set_ylabel(term)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.suptitle(title or os.path.basename(log_path))
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)
    return png_path
