"""The original toolkit's script names (``scripts/task_*.py``, ``scripts/run_classifier.py``): their command
line mapped by :mod:`knowledge_distill_util.compat.flags`, then run as ``kdu-train`` runs a configuration.

>>> cfg = parse_original(["--task_name=SST-2", "--kd_alpha=0.8", "--do_train='True'", "--do_eval='False'",
...                       "--model=Glue_SST-2"], "task_student_kd")
>>> cfg.recipe, cfg.kd_alpha, cfg.do_eval, cfg.learning_rate, cfg.task_name, cfg.results_format
('kd', 0.8, False, 0.0001, 'SST-2', 'original')
"""
import os
import sys
from typing import Optional, Sequence

from ..compat.flags import SCRIPTS, build_original_parser, original_argv
from ..config.schema import TrainConfig, parse_config
from ..training.recipes import RECIPES

__all__ = ["parse_original", "main"]


def parse_original(argv: Sequence[str], script: str, prog: Optional[str] = None) -> TrainConfig:
    """The :class:`TrainConfig` of an original command line of ``script`` (a :data:`SCRIPTS` name).

    Raises :class:`~knowledge_distill_util.config.schema.ConfigError` (one sentence) for a bad value or an
    unknown flag.
    """
    return parse_config(original_argv(argv, script, prog), recipe=SCRIPTS[script].recipe, prog=prog,
                        recipes=RECIPES)


def main(script: str, argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    """Entry point of an original script name: map, then run as ``kdu-train`` does (exit 2 and one line on a
    configuration error; ``--print_config`` prints the resolved configuration and exits 0)."""
    from .train import relaunch, run_entry, setup_logging

    argv, status = relaunch(sys.argv[1:] if argv is None else list(argv), [os.path.abspath(sys.argv[0])])
    if status is not None:
        return status
    if "--help" in argv or "-h" in argv:
        build_original_parser(SCRIPTS[script], prog).print_help()
        print("\nThis package's own configuration keys are accepted as well (kdu-train --help lists them).")
        return 0
    setup_logging("INFO")  # the mapping's notes (flags without effect) are logged while parsing
    return run_entry(lambda: parse_original(argv, script, prog))
