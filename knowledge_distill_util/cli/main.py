"""``python -m knowledge_distill_util train ...`` (= ``kdu-train``), ``... compress ...`` (= ``kdu-compress``) and
``... convert-checkpoint DIR --trust`` (models and checkpoints of earlier versions, OneFlow's pickle layout, to
safetensors: :mod:`knowledge_distill_util.convert`). ``knowledge_distill_util/__main__.py`` calls :func:`main`;
:func:`train_cli` and :func:`compress_cli` are the console scripts (``pyproject.toml``). ``train`` with ``--nproc``
above 1 (``auto``, the default, when that pays) runs the same command again under OneFlow's launcher
(:func:`_train`, :mod:`knowledge_distill_util.engine.launch`)."""
import os
import sys
from typing import List, Optional, Tuple

USAGE = ("usage: python -m knowledge_distill_util {train,compress,convert-checkpoint} [options]\n"
         "  train               train one registered recipe (kdu-train; --help lists the options)\n"
         "  compress            the whole default compression and its summary table (kdu-compress)\n"
         "  convert-checkpoint  DIR [--trust]: convert a model or checkpoint of an earlier version (OneFlow's\n"
         "                      pickle layout, pickled_data) to safetensors once, in place")
COMMANDS = ("train", "compress", "convert-checkpoint")
TRAIN_DESCRIPTION = "Train one registered compression recipe."


def _full_usage() -> str:
    """:data:`USAGE` and the registered recipes, one line each (what ``train --recipe NAME`` runs)."""
    from ..config.schema import recipe_lines
    from ..training.recipes import RECIPES

    return (f"{USAGE}\n\nrecipes of train --recipe NAME (train --recipe NAME --help shows its options):\n"
            f"{recipe_lines(RECIPES)}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    os.environ.setdefault("GLOG_minloglevel", "3")
    if argv and argv[0] in ("-h", "--help"):
        print(_full_usage())
        return 0
    if not argv or argv[0] not in COMMANDS:
        print(USAGE, file=sys.stderr)
        return 2
    if argv[0] == "train":
        return _train(argv[1:])
    if argv[0] == "convert-checkpoint":
        from ..convert import main as convert

        return convert(argv[1:])
    from .compress import main as compress

    return compress(argv[1:])


def _train(argv: List[str]) -> int:
    """``train``: with ``--nproc`` above 1 (``auto``: when that pays), the same command again on several
    processes under OneFlow's launcher (:mod:`knowledge_distill_util.engine.launch`), its exit status returned; else one process
    (:func:`.train.main`). A bad ``--nproc`` prints one sentence and returns 2 before any work."""
    from ..engine import launch
    from .train import main as train, run_launcher

    def one_process() -> int:
        return train(rest, prog="kdu-train", description=TRAIN_DESCRIPTION)

    try:
        rest, raw = launch.split_nproc(argv)
        nproc = launch.default_nproc() if raw is None else launch.parse_nproc(raw)
        if launch.under_launcher() and raw is not None:
            raise ValueError(f"{launch.FLAG} is read outside OneFlow's launcher only (its --nproc_per_node sets "
                             f"the processes here); drop {launch.FLAG}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    if nproc == 1 or launch.under_launcher() or any(a in ("-h", "--help", "--print_config") for a in rest):
        return one_process()
    try:
        decided = _processes(rest, nproc, explicit=raw is not None)
        if decided is None or decided[0] == 1:  # one process (None: it refuses the configuration, with its sentence)
            return one_process()
        count, batch = decided
        command = launch.launch_command({"gpu_num_per_node": str(count)}, rest, ["-m", "knowledge_distill_util", "train"],
                                        batch=batch)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return run_launcher(command, "kdu-train", f"starting {count} processes, {batch // count} rows each of every "
                                              f"batch of {batch} ({launch.FLAG} {nproc})")


def _processes(argv: List[str], nproc, explicit: bool) -> Optional[Tuple[int, int]]:
    """``(processes, batch)`` for ``--nproc nproc`` and the configuration ``argv`` resolves to (parsed here,
    before anything starts); None when ``argv`` does not parse or names an unknown device (the one-process
    run then says why). ``ValueError`` (one sentence) for a number of processes that cannot run. ``auto`` on
    ``--resume`` takes the processes the run was started with (its ``run_config.json``'s batch per process)."""
    import oneflow as flow

    from .. import _device
    from ..data.loading import task_source
    from ..engine import distributed, launch
    from ..config.schema import ConfigError, parse_config
    from ..training.general import GENERAL_RECIPE
    from ..training.masked_lm import MLM_RECIPE
    from ..training.recipes import RECIPES
    from ..training.validation import validate_config

    try:  # a value the run refuses is said once, by the one-process run, not by every rank
        original_flags = distributed.split_launch_flags(argv)[1]
        cfg = None if original_flags else validate_config(parse_config(argv, recipes=RECIPES), check_directories=False)
        corpus = cfg is not None and cfg.recipe in (GENERAL_RECIPE, MLM_RECIPE)  # run in one process, read no task
        if cfg is not None and not corpus and not (cfg.train_data_dir or cfg.eval_data_dir):
            task_source(cfg.data_dir, cfg.task_name)  # no task, no data directory: said before any process starts
    except (ConfigError, ValueError):
        return None
    if original_flags:  # the original --gpu_num_per_node / --num_nodes start the launcher themselves
        if explicit:
            raise ValueError(f"{launch.FLAG} and the original --{'/--'.join(original_flags)} both set the processes; "
                             f"pass one of them")
        return None
    kind = _device.device_type(cfg.device)
    if kind == "invalid":
        return None
    alone = None
    if corpus:
        alone = f"recipe {cfg.recipe!r} runs in one process"
    elif kind == "cuda" and ":" in str(cfg.device):
        alone = f"--device {cfg.device} puts every process on that one GPU; pass --device cuda (one GPU per process)"
    available = launch.usable_cpus() if kind == "cpu" else (flow.cuda.device_count() if flow.cuda.is_available() else 0)
    batch = cfg.batch_size_per_device
    if nproc == launch.AUTO and cfg.resume and not alone:
        nproc = _started_with(cfg) or nproc
    return launch.processes(nproc, batch, kind, available, trains=cfg.do_train, one_process=alone), batch


def _started_with(cfg) -> Optional[int]:
    """The processes the run in ``cfg.model_save_dir`` was started with (its ``run_config.json``'s batch per
    process divides ``cfg.batch_size_per_device``), or None when that cannot be told."""
    import json

    from ..training.run_dir import RUN_CONFIG

    try:
        with open(os.path.join(cfg.model_save_dir, RUN_CONFIG), encoding="utf-8") as stream:
            per_process = json.load(stream).get("batch_size_per_device")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(per_process, int) or per_process < 1 or cfg.batch_size_per_device % per_process:
        return None
    return cfg.batch_size_per_device // per_process


def train_cli() -> None:
    """The ``kdu-train`` console script."""
    sys.exit(main(["train"] + sys.argv[1:]))


def compress_cli() -> None:
    """The ``kdu-compress`` console script."""
    sys.exit(main(["compress"] + sys.argv[1:]))
