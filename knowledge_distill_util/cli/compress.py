"""``kdu-compress`` (``python -m knowledge_distill_util compress``): its command line, on jsonargparse as
``kdu-train``'s, and the exit statuses; the run itself is :mod:`knowledge_distill_util.training.compression`.

:func:`parse_args` checks every flag before any work: a wrong value, an unknown flag or two flags that
contradict each other raise :class:`~knowledge_distill_util.config.schema.ConfigError` with one sentence
naming the flag, the value and the fix (the flags' rules are the types of :mod:`..config.fields`, the same as
``kdu-train``'s ``--seed``, ``--log_level`` and ``--progress_every``). :func:`main` prints that sentence and
exits 2; see its docstring for the other statuses.

>>> args = parse_args(["--quick", "--jobs", "1", "--progress_every", "0"])
>>> args.quick, args.jobs, args.progress_every, args.result_dir, args.seed
(True, 1, 0.0, 'output/compression', 0)
>>> parse_args(["--jobs", "0"])
Traceback (most recent call last):
...
knowledge_distill_util._errors.ConfigError: --jobs must be at least 1 (the student trainings run at once), got 0; pass e.g. --jobs 2
"""
import argparse
import difflib
import re
import sys
import time
from typing import List, Optional, Sequence

from jsonargparse import ArgumentParser, Namespace

from .._errors import ConfigError
from ..config.fields import LogLevel, Seconds, Seed, Timeout, check_resume_overwrite, wanted

__all__ = ["build_parser", "parse_args", "main"]

PROG = "kdu-compress"
#: The flags whose type carries a rule of :mod:`..config.fields` (kdu-train's fields of the same names).
_TYPED = {"--seed": Seed, "--log_level": LogLevel, "--progress_every": Seconds, "--job_timeout": Timeout}


def build_parser() -> ArgumentParser:
    """kdu-compress's flags, defaults and help texts (jsonargparse; an error raises ``argparse.ArgumentError``;
    ``--help`` in argparse's plain layout, as before the move to jsonargparse)."""
    parser = ArgumentParser(prog=PROG, allow_abbrev=False, exit_on_error=False,
                            formatter_class=argparse.HelpFormatter,
                            description="Run the whole default compression and print the summary table.")
    parser.add_argument("--data_dir", default=None, help="GLUE-format TSV directory (default: prepare the built-in task)")
    parser.add_argument("--task_name", default=None, help="task of --data_dir")
    parser.add_argument("--result_dir", default="output/compression")
    parser.add_argument("--plan", default=None, help="run plan JSON (default: the packaged default_run.json)")
    parser.add_argument("--teacher_model", default=None,
                        help="override the plan's teacher ('auto', 'minilm', 'scratch' or a checkpoint)")
    parser.add_argument("--seed", type=_TYPED["--seed"], default=0)
    parser.add_argument("--jobs", type=int, default=2, help="student trainings run in parallel (default 2)")
    parser.add_argument("--use_graph", action="store_true")
    parser.add_argument("--quick", action="store_true", help="tiny data and models: a smoke run")
    parser.add_argument("--job_timeout", type=_TYPED["--job_timeout"], default=3600.0,
                        help="seconds a job may run before it is stopped (default 3600)")
    parser.add_argument("--resume", action="store_true", help="continue the jobs of an interrupted run in --result_dir")
    parser.add_argument("--overwrite", action="store_true", help="replace the run in --result_dir")
    parser.add_argument("--log_level", type=_TYPED["--log_level"], default="INFO")
    parser.add_argument("--progress_every", type=_TYPED["--progress_every"], default=30.0,
                        help="log each running job's stage, step/total, loss and ETA every N seconds (0: never); "
                             "also each job's own --progress_every in its run.log")
    return parser


def _flags(parser: ArgumentParser) -> List[str]:
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def _given(argv: Sequence[str], flag: str) -> Optional[str]:
    """The last value typed after ``flag`` (``--flag V`` or ``--flag=V``), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def _sentence(error: BaseException, argv: Sequence[str], flags: Sequence[str]) -> str:
    """jsonargparse's message as one sentence naming the flag, the value and what it must be."""
    text = " ".join(str(error).split())
    unknown = re.search(r"unrecognized arguments: (\S+)", text)
    if unknown:
        name = unknown.group(1).split("=")[0]
        if not name.startswith("-"):
            return f"unexpected argument {name!r}; {PROG} takes --flags only ({PROG} --help lists them)"
        close = difflib.get_close_matches(name, flags, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        return f"unknown flag {name}; {hint}{PROG} --help lists the flags"
    missing = re.search(r"argument (--\w+): expected one argument", text)
    if missing:
        return f"{missing.group(1)} needs a value"
    ruled = re.search(r'Parser key "(\w+)": Not of type \w+: (must be .*)$', text)
    if ruled:  # a number type of config.fields: its own sentence
        return f"--{ruled.group(1)} {ruled.group(2)}"
    typed = re.search(r'Parser key "(\w+)": Expected a <class \'(int|float)\'>\. Got value: (.*)$', text)
    if typed:
        what = "an integer" if typed.group(2) == "int" else "a number"
        return f"--{typed.group(1)} must be {what}, got {typed.group(3).strip()!r}"
    choice = re.search(r'Parser key "(\w+)": Expected a typing\.Literal\[.*\]\. Got value: (.*)$', text)
    if choice:
        flag = f"--{choice.group(1)}"
        return f"{flag} must be {wanted(_TYPED[flag])}, got {_given(argv, flag) or choice.group(2).strip()!r}"
    return text.rstrip(".")


def parse_args(argv: Optional[Sequence[str]] = None) -> Namespace:
    """kdu-compress's flags from ``argv`` (default ``sys.argv[1:]``), every one checked; ``--help`` prints the
    help and exits 0; :class:`ConfigError` (one sentence) for a wrong one."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except argparse.ArgumentError as error:
        raise ConfigError(_sentence(error, argv, _flags(parser))) from None
    args.seed, args.progress_every = int(args.seed), float(args.progress_every)  # plain values (the types subclass them)
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1 (the student trainings run at once), got {args.jobs}; "
                          f"pass e.g. --jobs 2")
    check_resume_overwrite(args.resume, args.overwrite)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``kdu-compress``: every job, then the summary table (printed and written as Markdown and JSON).

    Exit status 0; 2 after one line for a wrong flag, plan or directory, or a full disk; 1 when a job
    failed (the line names its log, followed by the log's last lines); 130 / 143 after one line when
    stopped by SIGINT / SIGTERM (:mod:`knowledge_distill_util.training.compression`)."""
    from .._io import DISK_FULL, write_error_message
    from ..training import compression, interrupt
    from .train import setup_logging

    began, lock = time.time(), None
    compression.reset_jobs()
    restore = interrupt.install()
    try:
        try:
            args = parse_args(argv)
            setup_logging(args.log_level)
            jobs, task_name, result_dir, lock = compression.prepare(args)
        except (ConfigError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 2
        compression.execute(args, jobs, task_name, result_dir, began)
        return 0
    except KeyboardInterrupt as error:  # SIGINT or SIGTERM (training.interrupt)
        stopped = compression.stop_jobs(interrupt.exit_status(error) - 128)
        detail = f"stopped the running job(s) {', '.join(stopped)}" if stopped else ""
        print(interrupt.sentence(PROG, error, detail), file=sys.stderr, flush=True)
        return interrupt.exit_status(error)
    except compression.JobFailed as error:  # its message names the job and its log, with the log's last lines
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 1
    except OSError as error:
        if error.errno not in DISK_FULL:
            raise
        compression.stop_jobs()
        print(f"error: {write_error_message(error)}", file=sys.stderr, flush=True)
        return 2
    finally:
        if lock is not None:
            lock.release()
        restore()
