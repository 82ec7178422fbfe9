"""Progress of a run as a log line every few seconds, for logs and CI where no tqdm bar is drawn."""
import logging
import time

__all__ = ["ProgressLog", "format_duration"]

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    """``seconds`` as ``1h02m``, ``3m12s`` or ``45s``."""
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressLog:
    """One INFO log line every ``every`` seconds (0: never):
    ``stage kd: step 120/675 (18%), loss 0.4123, 52.3 samples/s, ETA 3m12s``.

    Samples/s = (steps since ``start``) x ``batch_size`` / seconds since construction; ETA = the remaining
    steps at that rate. Called after each step with the loss already read for the loss log (no device sync).
    """

    def __init__(self, stage: str, total: int, start: int, batch_size: int, every: float, clock=time.monotonic):
        self.stage, self.total, self.start, self.batch_size, self.every = stage, total, start, batch_size, every
        self.clock = clock
        self.began = self.last = clock()

    def __call__(self, step: int, loss: float) -> None:
        now = self.clock()
        if self.every <= 0 or now - self.last < self.every:
            return
        self.last = now
        logger.info("%s", self.line(step, loss, now))

    def line(self, step: int, loss: float, now: float) -> str:
        elapsed, done = max(now - self.began, 1e-9), step - self.start
        rate = done * self.batch_size / elapsed
        eta = format_duration((self.total - step) * elapsed / done) if done > 0 else "?"
        return (f"stage {self.stage}: step {step}/{self.total} ({100 * step // max(self.total, 1)}%), "
                f"loss {loss:.4f}, {rate:.1f} samples/s, ETA {eta}")
