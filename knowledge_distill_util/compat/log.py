"""The original scripts' training log: ``<log_dir>/summary.csv`` and the progress line every
``--loss_print_every_n_iter`` steps, as the original's ``src/util.py`` ``Summary`` and ``Metric`` write them.

The original (``Summary(args.log_dir, args)``, ``Metric(desc='finetune', print_steps=n, keys=['loss'])``,
one ``Metric`` per epoch) writes ``summary.csv`` with pandas, columns ``legend,value,iter,epoch``: a first
row ``cfg,<the configuration>`` and, every ``n`` steps of an epoch (step ``s`` counted from 0 within the
epoch, a row when ``(s + 1) % n == 0``), a row ``finetune_throughput,<examples/s>,<s>,`` (examples of the
window over its wall time) followed by ``finetune_loss,<loss>,<s>,<epoch>`` (the loss summed over the
window's examples divided by their number: the mean of the window's per-step mean losses here). ``iter``
and ``epoch`` are floats (the ``cfg`` row leaves them empty, so pandas stores them as float64) and empty
cells are empty strings, as ``DataFrame.to_csv`` writes them. The file is rewritten whole (atomically) at
every row pair, as the original rewrites it at every row.

Here: the configuration is this package's (``repr`` of the
:class:`~knowledge_distill_util.config.schema.TrainConfig`, where the original wrote its argparse ``Namespace``); a resumed run appends its rows after those of the killed run (the steps
after the last checkpoint then appear twice).
"""
import csv
import io
import logging
import os
import time
from typing import Dict, List, Optional

from .._io import atomic_write_text

__all__ = ["SUMMARY_FILE", "SUMMARY_COLUMNS", "OriginalSummary"]

logger = logging.getLogger(__name__)
SUMMARY_FILE = "summary.csv"
SUMMARY_COLUMNS = ("legend", "value", "iter", "epoch")


class OriginalSummary:
    """``on_step(step, total, terms)`` callback (rank 0) writing ``<log_dir>/summary.csv`` (see the module doc).

    ``steps_per_epoch``: the trainer's steps per epoch; ``print_steps``: ``--loss_print_every_n_iter``;
    ``batch_size``: examples per step (all ranks); ``config``: the text of the ``cfg`` row; ``resume``: keep
    the rows of an existing ``summary.csv`` (a fresh run replaces it, as the original).

    >>> import tempfile
    >>> directory = tempfile.mkdtemp()
    >>> summary = OriginalSummary(directory, "cfg text", steps_per_epoch=3, print_steps=2, batch_size=4)
    >>> for step in range(1, 7):
    ...     summary(step, 6, {"loss": float(step)})
    >>> rows = open(os.path.join(directory, "summary.csv")).read().splitlines()
    >>> rows[0], rows[1], [r for r in rows if r.startswith("finetune_loss")]
    ('legend,value,iter,epoch', 'cfg,cfg text,,', ['finetune_loss,1.5,1.0,0.0', 'finetune_loss,4.5,1.0,1.0'])
    """

    def __init__(self, log_dir: str, config: str, steps_per_epoch: int, print_steps: int, batch_size: int,
                 resume: bool = False, desc: str = "finetune"):
        if not isinstance(print_steps, int) or isinstance(print_steps, bool) or print_steps < 1:
            raise ValueError(f"loss_print_every_n_iter must be a positive int, got {print_steps!r}; pass e.g. "
                             f"--loss_print_every_n_iter 10")
        if steps_per_epoch < 1 or batch_size < 1:
            raise ValueError(f"steps_per_epoch ({steps_per_epoch}) and batch_size ({batch_size}) must be positive")
        self.path = os.path.join(log_dir, SUMMARY_FILE)
        self.config, self.desc = config, desc
        self.steps_per_epoch, self.print_steps, self.batch_size = steps_per_epoch, print_steps, batch_size
        self.resume = resume
        self.rows: Optional[List[List[str]]] = None
        self.loss_sum, self.samples, self.split = 0.0, 0, time.time()
        self.previous: Optional[float] = None

    def _start(self) -> None:
        """The rows so far: a resumed run keeps the existing file's rows, a fresh one starts with ``cfg``."""
        self.rows = [["cfg", self.config, "", ""]]
        if self.resume and os.path.isfile(self.path):
            try:
                with open(self.path, encoding="utf-8", newline="") as stream:
                    found = list(csv.reader(stream))
                if found and tuple(found[0]) == SUMMARY_COLUMNS and len(found) > 1:
                    self.rows = found[1:]
            except (OSError, csv.Error, UnicodeDecodeError) as error:
                logger.warning("%s is unreadable (%s); writing it anew", self.path, error)

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(SUMMARY_COLUMNS)
        writer.writerows(self.rows)
        try:
            atomic_write_text(self.path, buffer.getvalue())
        except OSError as error:
            logger.warning("cannot write %s (%s); the training goes on", self.path, error)

    def __call__(self, step: int, total: int, terms: Dict[str, float]) -> None:
        now = time.time()
        if self.rows is None:  # the first step of this process (a resumed run: the first step after its checkpoint)
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self._start()
            self._write()
        within, epoch = (step - 1) % self.steps_per_epoch, (step - 1) // self.steps_per_epoch
        if within == 0:  # the original's Metric of a new epoch: a new window and a new timer
            self.loss_sum, self.samples = 0.0, 0
            self.split = self.previous if self.previous is not None else self.split
        self.previous = now  # the end of this step: the start of the next one
        self.loss_sum += float(terms["loss"]) * self.batch_size
        self.samples += self.batch_size
        if (within + 1) % self.print_steps or not self.samples:
            return
        throughput = self.samples / max(now - self.split, 1e-9)
        loss = self.loss_sum / self.samples
        self.split, self.loss_sum, self.samples = now, 0.0, 0
        self.rows.append([f"{self.desc}_throughput", repr(throughput), repr(float(within)), ""])
        self.rows.append([f"{self.desc}_loss", repr(loss), repr(float(within)), repr(float(epoch))])
        self._write()
        logger.info("%s step: %d, loss: %.3f, throughput: %.3f, epoch: %d", self.desc, within, loss, throughput,
                    epoch)
