"""The steps of ``kdu-compress`` that are not training runs (a plan's ``"step"`` jobs, :mod:`.run_plan`), each
run as ``python -m knowledge_distill_util.training.steps NAME CONFIG_JSON`` in the job's own process.

``augment``: TinyBERT's data augmentation of the run's task set. It copies ``train.tsv`` and ``dev.tsv`` of
``data_dir`` into ``<result_dir>/data`` (the run's data stays as it is) and writes ``train_aug.tsv`` beside
them (:func:`~..data.augment_run.augment_directory`); a training job reads it with
``"data_dir": "{augment}/data"`` and ``"aug_train": true``. Its keys are the flags of
``scripts/data_augmentation.py`` (:class:`~..data.augment_run.AugmentOptions`; ``N`` copies per sentence,
``M`` candidates per word, ``p`` the replacement probability). ``<result_dir>/results_step.json`` holds the
rows, lines written, seconds and rows/s; with ``resume`` a finished step is not run again.

Exit status 0; 2 after one sentence for bad input.
"""
import dataclasses
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict

from .._io import atomic_write_file, atomic_write_json, read_json
from ..data.augment_run import AugmentOptions, augment_directory, check_options
from ..data.augmentation import AugmentationError
from ..config.schema import ConfigError

__all__ = ["Step", "STEPS", "RESULTS_FILE", "run_step", "main"]

logger = logging.getLogger(__name__)
#: What a finished step writes into its ``result_dir``.
RESULTS_FILE = "results_step.json"
#: The run's keys every step receives (:func:`~.run_plan.plan_jobs`).
RUN_KEYS = ("data_dir", "task_name", "seed", "result_dir", "resume", "overwrite")


@dataclass
class Step:
    """A step: its own keys with their defaults, the key naming the model it reads (the run's teacher under
    ``--quick``), a check of its values (:class:`ConfigError`) and its runner (config -> results)."""

    defaults: Dict[str, Any]
    model_key: str
    check: Callable[[Dict], None]
    run: Callable[[Dict], Dict]


def _options(config: Dict) -> AugmentOptions:
    keys = {field.name for field in dataclasses.fields(AugmentOptions)}
    return AugmentOptions(**{key: value for key, value in config.items() if key in keys})


def _check_augment(config: Dict) -> None:
    try:
        check_options(_options(config), config["task_name"])
    except AugmentationError as error:
        raise ConfigError(f"step augment: {str(error).lstrip('-')}") from None


def _copy_task_files(source: str, target: str) -> None:
    """``train.tsv`` and ``dev.tsv`` of ``source`` into ``target``, each written atomically."""
    os.makedirs(target, exist_ok=True)
    for name in ("train.tsv", "dev.tsv"):
        path = os.path.join(source, name)
        if not os.path.isfile(path):
            raise ConfigError(f"step augment: {path} does not exist; the run's data_dir must hold train.tsv and dev.tsv")
        with open(path, "rb") as stream:
            atomic_write_file(os.path.join(target, name), lambda out, s=stream: shutil.copyfileobj(s, out))


def _run_augment(config: Dict) -> Dict:
    options = _options(config)
    target = os.path.join(config["result_dir"], "data")
    _copy_task_files(config["data_dir"], target)
    try:
        stats = augment_directory(target, config["task_name"], options, overwrite=True)
    except AugmentationError as error:
        raise ConfigError(f"step augment: {error}") from None
    return dict(stats, data_dir=target, copies=options.N, p=options.p, M=options.M)


#: The steps a plan may name (``"step": NAME``).
STEPS: Dict[str, Step] = {
    "augment": Step({field.name: field.default for field in dataclasses.fields(AugmentOptions) if field.name != "seed"},
                    "model_load_dir", _check_augment, _run_augment),
}


def run_step(name: str, config: Dict) -> Dict:
    """Run step ``name`` with ``config`` (its keys and :data:`RUN_KEYS`), writing ``results_step.json``; a
    finished step with ``resume`` returns its stored results."""
    step = STEPS[name]
    results_path = os.path.join(config["result_dir"], RESULTS_FILE)
    if config.get("resume") and os.path.isfile(results_path):
        logger.info("step %s: finished before (%s); not run again", name, results_path)
        return read_json(results_path, "step results")
    step.check(config)
    os.makedirs(config["result_dir"], exist_ok=True)
    results = dict(step.run(config), step=name)
    atomic_write_json(results_path, results)
    return results


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s [%(name)s] %(message)s")
    if len(argv) != 2 or argv[0] not in STEPS:
        print(f"usage: python -m knowledge_distill_util.training.steps {{{','.join(sorted(STEPS))}}} CONFIG_JSON",
              file=sys.stderr)
        return 2
    try:
        config = read_json(argv[1], "step configuration")
        run_step(argv[0], config)
    except (ConfigError, ValueError, OSError) as error:  # OSError: a file that cannot be read or written
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
