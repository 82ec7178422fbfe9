"""``kdu-train``'s entry point (and the original script names', :mod:`.original`): the command line to a
configuration, the run (:func:`knowledge_distill_util.training.run.run`), the exit statuses; and the start
of OneFlow's launcher for the original ``--gpu_num_per_node`` / ``--num_nodes`` / ``--node_ips``
(:func:`relaunch`) and for ``kdu-train --nproc`` (:mod:`.main`), both through :func:`run_launcher`.

A custom recipe runs through it as a built-in one does (docs/recipes.md, "A new recipe")::

    from knowledge_distill_util.cli.train import main
    sys.exit(main(recipe="ce_layers", prog="my_recipe.py"))
"""
import dataclasses
import json
import logging
import os
import sys
from typing import Callable, List, Optional, Sequence, Tuple

from .._errors import ConfigError
from ..engine import distributed
from ..config.schema import TrainConfig, parse_config
from ..config.fields import LogLevel, check_field

__all__ = ["main", "run_entry", "relaunch", "run_launcher", "setup_logging"]

logger = logging.getLogger("knowledge_distill_util.training.run")  # the run's own lines, as before the move


def setup_logging(level: str = "INFO") -> None:
    """Log ``[name] message`` lines of this package at ``level`` to stderr; ``level`` is one of
    :data:`~knowledge_distill_util.config.fields.LogLevel` (the rule of ``--log_level``, kdu-train's and
    kdu-compress's), else :class:`ConfigError` with that rule's sentence."""
    try:
        check_field("log_level", level, LogLevel)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    logging.basicConfig(format="[%(name)s] %(message)s", stream=sys.stderr, force=True)
    logging.getLogger("knowledge_distill_util").setLevel(level)


def _entry_point() -> List[str]:
    """What the launcher runs to start this entry point again: this script, or the package's ``train``."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if script.endswith(".py") and os.path.basename(script) != "__main__.py" and os.path.isfile(script):
        return [script]
    return ["--module", "knowledge_distill_util", "train"]


def run_launcher(command: Sequence[str], prog: str, heading: str = "starting") -> int:
    """Print ``heading: command``, run OneFlow's launcher ``command`` (SIGINT/SIGTERM reach it, and it stops
    its ranks: :func:`~knowledge_distill_util.training.interrupt.run_forwarding`) and return the job's exit
    status; its output goes through :class:`~knowledge_distill_util.engine.launch.LauncherOutput` (a rank's
    one-sentence refusal is the job's one sentence and exit status 2, without the launcher's banner and
    traceback)."""
    from ..engine.launch import LauncherOutput
    from ..training.interrupt import run_forwarding

    print(f"{heading}: " + " ".join(command), file=sys.stderr, flush=True)
    output = LauncherOutput(stream=sys.stderr)  # this moment's stderr (the default is the one at import)
    return output.status(run_forwarding(command, prog, output_line=output))


def relaunch(argv: Sequence[str], entry: Sequence[str]) -> Tuple[List[str], Optional[int]]:
    """The original's ``--gpu_num_per_node`` / ``--num_nodes`` / ``--node_ips``: above one process, run
    ``entry`` (and the remaining ``argv``) again under OneFlow's launcher (:func:`run_launcher`). Returns
    ``(argv without those flags, None)`` for one process, else ``(.., exit status)``: the job's, or 2 after
    one line naming a bad flag."""
    try:
        argv, launch_flags = distributed.split_launch_flags(argv)
        command = distributed.launch_command(launch_flags, argv, entry)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return list(argv), 2
    if command is None:
        return argv, None
    return argv, run_launcher(command, _prog())


def run_entry(make_config: Callable[[], TrainConfig]) -> int:
    """Build the configuration with ``make_config`` and :func:`~knowledge_distill_util.training.run.run` it,
    as every entry point does: a :class:`ConfigError` prints one line and exits 2; with several processes, a
    failing rank ends the others at once (:func:`~knowledge_distill_util.engine.distributed.fail`) instead of
    leaving them waiting in a collective. In one process, SIGINT and SIGTERM stop the run cleanly
    (:mod:`knowledge_distill_util.training.interrupt`: locks released, the checkpoints kept), print one line and
    exit 130 / 143 (under the launcher, :mod:`~knowledge_distill_util.engine.distributed` handles SIGTERM). A
    full disk (``ENOSPC``/``EDQUOT``) prints one sentence naming the path and the bytes and exits 2."""
    from .._io import DISK_FULL, write_error_message
    from ..training import interrupt
    from ..training.run import run

    restore = (lambda: None) if distributed.is_distributed() else interrupt.install()
    try:
        cfg = make_config()
        setup_logging(cfg.log_level if distributed.is_writer() else "WARNING")
        logger.debug("configuration: %s", json.dumps(dataclasses.asdict(cfg), sort_keys=True))
        run(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        distributed.fail(str(error), code=2)  # several processes: tell the others, end at once
        return 2
    except SystemExit as done:  # --help, --print_config: every rank exits the same way
        if done.code not in (None, 0):
            distributed.fail(f"exit status {done.code}", code=done.code if isinstance(done.code, int) else 2)
        raise
    except BaseException as error:  # noqa: BLE001 - several processes: a rank must not hang at exit
        if isinstance(error, KeyboardInterrupt) and not distributed.is_distributed():
            print(interrupt.sentence(_prog(), error), file=sys.stderr, flush=True)
            return interrupt.exit_status(error)
        if isinstance(error, OSError) and error.errno in DISK_FULL:
            sentence = write_error_message(error)
            print(f"error: {sentence}", file=sys.stderr, flush=True)
            distributed.fail(sentence, code=2)
            return 2
        if distributed.is_distributed():
            logger.exception("rank %d failed", distributed.rank())
            distributed.fail(f"{type(error).__name__}: {error}")
        raise
    finally:
        restore()
    distributed.stop_watchdog()
    return 0


def _prog() -> str:
    """The command's name for its one line: an original script's file name, else ``kdu-train``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.endswith(".py") and name != "__main__.py" else "kdu-train"


def main(argv: Optional[Sequence[str]] = None, recipe: Optional[str] = None, prog: Optional[str] = None,
         description: str = "") -> int:
    """Entry point: resolve the configuration, run; a configuration error exits with status 2 and one line."""
    from ..training.recipes import RECIPES

    argv = sys.argv[1:] if argv is None else list(argv)
    entry = _entry_point()
    if recipe and entry[0] == "--module":  # the package's ``train`` needs the recipe a caller's main(recipe=...) implies
        entry += ["--recipe", recipe]
    argv, status = relaunch(argv, entry)
    if status is not None:
        return status
    return run_entry(lambda: parse_config(argv, recipe=recipe, prog=prog, description=description,
                                          recipes=RECIPES))
