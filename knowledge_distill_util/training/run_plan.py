"""The run plan of ``kdu-compress`` (package data ``configs/default_run.json``, or ``--plan FILE``): read,
checked and turned into :class:`Job` s, each with the jobs it waits for.

Sections: ``data`` (arguments of :func:`~knowledge_distill_util.data.prepare_default_data`), ``common``
(configuration keys of every training job), ``jobs`` (a section per job), ``launch_first``, ``skip``
(registered recipes the run leaves out) and ``quick`` (every training job under ``--quick``). Every registered
recipe not skipped is a job; a ``jobs`` section overrides that recipe's defaults, or adds a job:

* ``"recipe": R``: an extra job of the registered recipe ``R`` (e.g. the labels-only BiLSTM);
* ``"step": S``: a job that is not a training run but a step of :data:`~.steps.STEPS` (``augment``: TinyBERT's
  data augmentation), with that step's own keys; it has no summary row;
* ``"title"``: its row's name; ``"compared_with"``: the job of its labels-only reference row;
* ``"after": [names]``: the jobs whose outputs it reads; it starts once they finished. A string value of its
  configuration may hold ``{name}``, which becomes that job's directory ``<result_dir>/<name>`` (``name``
  must be in its ``after`` list), e.g. ``"student_model": "{tinybert_general}/model"``;
* ``"seeds": [0, 1, 2]``: seed offsets; the job runs once per offset with seed ``--seed + offset``, the offset
  0 (which the list must hold) in ``<result_dir>/<name>`` as without ``seeds``, each other one in
  ``<result_dir>/<name>.seed<seed>``; its row shows the mean and spread over the seeds (:mod:`.summary`).
  A job compared with a labels-only reference needs the same ``seeds`` there (the differences are paired by
  seed); a job that others wait for has one seed. Under ``--quick`` only offset 0 runs.

A training job of a recipe that reads a teacher reads the run's fine-tuned teacher
(``<result_dir>/teacher/model``) and waits for it, unless its section names its own ``teacher_model``
(``"auto"``, the pretrained all-MiniLM-L6-v2, for ``tinybert_general``; a directory written by this package for
a recipe that trains a task student): such a job starts while the teacher trains. Under ``--quick``
(no pretrained weights) every job reads the run's teacher. A job's configuration is the recipe's defaults <
``common`` < its section < (``quick`` and :data:`~knowledge_distill_util.config.schema.QUICK` under ``--quick``) < the run's own settings
(data, seed, directories), except a value reading another job's output (``{name}``, e.g. a ``data_dir``).
Every key is checked before anything is written; a mistake is one sentence
naming the section, the key and the fix (:class:`~knowledge_distill_util.config.schema.ConfigError`).
"""
import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..config.schema import QUICK, ConfigError, known_keys
from .recipes import RECIPES

__all__ = ["Job", "JOB_NAME", "PLAN_KEYS", "read_plan", "plan_jobs", "row_order", "seed_jobs", "job_needs"]

SECTIONS = {"_comment", "data", "common", "jobs", "launch_first", "skip", "quick"}
#: A job section's keys that are not configuration keys (module doc).
PLAN_KEYS = ("recipe", "step", "title", "compared_with", "after", "seeds")
#: A job's name: letters, digits, ``_``, ``-``, ``.`` (not ``.`` or ``..``): a folder under ``--result_dir``.
JOB_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: ``{name}`` in a configuration string: the directory of job ``name``.
_REFERENCE = re.compile(r"\{([^{}]*)\}")


@dataclass
class Job:
    """One job of the compression: a training run of ``recipe`` (or, with ``step``, the step of that name),
    its summary row's title and reference row, its configuration, the jobs it waits for (``after``) and,
    for a repeat with another seed, the job whose row it joins (``seed_of``)."""

    name: str
    recipe: str
    title: str
    compared_with: Optional[str]
    config: Dict[str, Any]
    after: Tuple[str, ...] = ()
    step: Optional[str] = None
    seed_of: Optional[str] = None
    #: False for a job with no summary row: a step, or a recipe that runs itself without evaluating a
    #: task model (``tinybert_general``: its general student is read by other jobs)
    row: bool = True


def read_plan(path: Optional[str] = None) -> Dict:
    """The run plan at ``path``, or the packaged default; unknown sections raise :class:`ConfigError`."""
    if path is None:
        text = resources.files("knowledge_distill_util").joinpath("configs", "default_run.json").read_text("utf-8")
        source = "the packaged default_run.json"
    elif not os.path.isfile(path):
        raise ConfigError(f"run plan {path!r} does not exist; pass --plan with an existing JSON file")
    else:
        with open(path, encoding="utf-8") as stream:
            text, source = stream.read(), path
    try:
        plan = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"run plan {source} is not valid JSON ({error}); fix the file") from None
    if not isinstance(plan, dict):
        raise ConfigError(f"run plan {source} must be a JSON object of sections, got {type(plan).__name__}; fix the file")
    unknown = sorted(set(plan) - SECTIONS)
    if unknown:
        raise ConfigError(f"{source}: unknown section(s) {unknown}; known sections: {sorted(SECTIONS - {'_comment'})}")
    jobs = plan.get("jobs", {})
    if not isinstance(jobs, dict):
        raise ConfigError(f"{source}: section 'jobs' must be an object of job sections, got {type(jobs).__name__}")
    for name, section in jobs.items():
        _check_job_name(name, source)
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: job section {name!r} must be an object of keys, got "
                              f"{type(section).__name__}; fix the file")
    return plan


def _check_job_name(name: str, source: str) -> None:
    """Refuse a job name that is not a plain folder name (it becomes ``<result_dir>/<name>``)."""
    if not JOB_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(f"{source}: job name {name!r} is not a plain name (letters, digits, '_', '-', '.', "
                          f"not '.' or '..'): it names the job's folder under --result_dir; rename it in the plan")


def _checked(values: Dict, source: str, keys: Sequence[str] = ()) -> Dict:
    known = list(keys) or known_keys()
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown configuration key(s) {unknown}; known keys: {', '.join(known)}")
    return values


def _names(plan: Dict) -> List[str]:
    """The jobs of ``plan`` in launch order: the teacher, ``launch_first``, then the registry's and the
    sections' order."""
    sections, skipped = plan.get("jobs", {}), set(plan.get("skip", []))
    names = [name for name in RECIPES.names() if name not in skipped]
    names += [job for job, section in sections.items() if ("recipe" in section or "step" in section)
              and job not in names]
    first = [job for job in plan.get("launch_first", []) if job in names]
    return ["teacher"] + first + [job for job in names if job not in first and job != "teacher"]


def _seeds(section: Dict, where: str) -> List[int]:
    """The section's ``seeds`` (module doc): distinct integer offsets >= 0 holding 0; default ``[0]``."""
    seeds = section.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or any(type(s) is not int or s < 0 for s in seeds)
            or len(set(seeds)) != len(seeds) or 0 not in seeds):
        raise ConfigError(f"{where}: seeds {seeds!r} must be a list of distinct seed offsets >= 0 holding 0 (the "
                          f"run's --seed), e.g. [0, 1, 2]; fix the plan")
    return [0] + sorted(s for s in seeds if s != 0)


def _after(section: Dict, where: str, names: Sequence[str], job: str) -> List[str]:
    """The section's ``after`` list, each a job of the plan other than ``job``."""
    after = section.get("after", [])
    if not isinstance(after, list) or any(not isinstance(name, str) for name in after):
        raise ConfigError(f"{where}: after {after!r} must be a list of job names, e.g. [\"augment\"]; fix the plan")
    for name in after:
        if name == job or name not in names:
            reason = "itself" if name == job else "no job of this plan (skipped, or misspelt)"
            raise ConfigError(f"{where}: after names {name!r}, {reason}; name jobs of the plan it reads from")
    return list(after)


def _expand(values: Dict, after: Sequence[str], result_dir: str, where: str) -> Dict:
    """Replace each ``{name}`` in a string value by ``<result_dir>/<name>``; ``name`` must be in ``after``."""
    expanded = {}
    for key, value in values.items():
        if isinstance(value, str):
            for name in _REFERENCE.findall(value):
                if name not in after:
                    raise ConfigError(f"{where}: {key} {value!r} reads job {name!r}, which is not in its after list "
                                      f"{list(after)}; add {name!r} to after (or fix the name)")
            value = _REFERENCE.sub(lambda match: os.path.join(result_dir, match.group(1)), value)
        expanded[key] = value
    return expanded


def _training_job(job: str, section: Dict, plan: Dict, run: Dict, quick: bool, after: List[str]) -> Job:
    """A job of a registered recipe (module doc): its merged configuration and the jobs it waits for."""
    where = f"plan [jobs.{job}]"
    recipe = RECIPES.get(section.pop("recipe", job))
    title = section.pop("title", recipe.title)
    compared_with = section.pop("compared_with", recipe.compared_with)
    values = dict(recipe.defaults, recipe=recipe.name)
    values.update(_checked(plan.get("common", {}), "plan [common]"))
    values.update(_checked(section, where))
    if quick:
        values.update(_checked(plan.get("quick", {}), "plan [quick]"), **QUICK)
    values.update(run, model_save_dir=os.path.join(run["result_dir"], job, "model"),
                  result_dir=os.path.join(run["result_dir"], job))
    values.update({key: value for key, value in section.items() if _reads_job(value)})  # e.g. {augment}/data
    own = section.get("teacher_model")
    if job != "teacher" and recipe.run is None and own is not None and not quick and not os.path.isdir(own):
        raise ConfigError(f"{where}: teacher_model {own!r} is not a directory, and recipe {recipe.name!r} reads a "
                          f"teacher written by this package; remove the key (the run's fine-tuned teacher) or name "
                          f"such a directory")
    if job != "teacher" and recipe.needs_teacher and (quick or "teacher_model" not in section):
        values["teacher_model"] = os.path.join(run["result_dir"], "teacher", "model")
        after = after + ["teacher"] if "teacher" not in after else after
    values = _expand(values, after, run["result_dir"], where)
    return Job(job, recipe.name, title, compared_with, values, tuple(after), row=recipe.run is None)


def _reads_job(value) -> bool:
    """Whether ``value`` is a string naming another job's directory (``{name}``)."""
    return isinstance(value, str) and bool(_REFERENCE.search(value))


def _step_job(job: str, section: Dict, run: Dict, quick: bool, after: List[str]) -> Job:
    """A job of a step (module doc): the step's defaults < its section < the run's data, seed and directory."""
    from .steps import STEPS

    where = f"plan [jobs.{job}]"
    name = section.pop("step")
    if name not in STEPS or "recipe" in section:
        fix = "give a job either 'recipe' or 'step', not both" if "recipe" in section else \
            f"known steps: {', '.join(sorted(STEPS))}"
        raise ConfigError(f"{where}: step {name!r} is not a step of kdu-compress; {fix}")
    step = STEPS[name]
    for key in ("title", "compared_with"):
        if key in section:
            raise ConfigError(f"{where}: a step has no summary row, so no {key!r}; remove it")
    values = dict(step.defaults)
    values.update(_checked(section, where, step.defaults))
    values.update(data_dir=run["data_dir"], task_name=run["task_name"], seed=run["seed"],
                  result_dir=os.path.join(run["result_dir"], job), resume=bool(run.get("resume")),
                  overwrite=bool(run.get("overwrite")))
    if quick:  # no pretrained weights: the run's (tiny) teacher
        values[step.model_key] = os.path.join(run["result_dir"], "teacher", "model")
        after = after + ["teacher"] if "teacher" not in after else after
    values = _expand(values, after, run["result_dir"], where)
    step.check(values)
    return Job(job, name, name, None, values, tuple(after), step=name, row=False)


def plan_jobs(plan: Dict, run: Dict, quick: bool) -> Dict[str, Job]:
    """Every job of ``plan`` with its merged configuration, in launch order (the teacher first), each seed
    repeat (:func:`seed_jobs`) right after its job; checked as the module doc says."""
    sections = plan.get("jobs", {})
    names = _names(plan)
    jobs: Dict[str, Job] = {}
    seeds_of: Dict[str, List[int]] = {}
    for job in names:
        section, where = dict(sections.get(job, {})), f"plan [jobs.{job}]"
        seeds_of[job] = _seeds(section, where)
        after = _after(section, where, names, job)
        section = {key: value for key, value in section.items() if key not in ("after", "seeds")}
        if "step" in section:
            if job in RECIPES.names():
                raise ConfigError(f"{where}: {job!r} is a recipe's job, so it cannot be a step; name the step job "
                                  f"otherwise")
            jobs[job] = _step_job(job, section, run, quick, after)
        else:
            jobs[job] = _training_job(job, section, plan, run, quick, after)
    _check_graph(jobs, seeds_of)
    ordered: Dict[str, Job] = {}
    for job in names:
        ordered[job] = jobs[job]
        for offset in ([] if quick else seeds_of[job][1:]):
            repeat = seed_job(jobs[job], run["seed"] + offset, run["result_dir"])
            ordered[repeat.name] = repeat
    return ordered


def seed_job(job: Job, seed: int, result_dir: str) -> Job:
    """``job`` again with ``seed``, in ``<result_dir>/<job>.seed<seed>``; its row is ``job``'s."""
    name = f"{job.name}.seed{seed}"
    config = dict(job.config, seed=seed, result_dir=os.path.join(result_dir, name))
    if "model_save_dir" in config:
        config["model_save_dir"] = os.path.join(result_dir, name, "model")
    return Job(name, job.recipe, job.title, job.compared_with, config, job.after, job.step, seed_of=job.name,
               row=job.row)


def seed_jobs(jobs: Dict[str, Job], job: str) -> List[str]:
    """``job`` and its seed repeats, the run's seed first."""
    return [job] + [name for name, each in jobs.items() if each.seed_of == job]


def _check_graph(jobs: Dict[str, Job], seeds_of: Dict[str, List[int]]) -> None:
    """No cycle among the ``after`` lists; a job waited for has one seed; a job with seeds and its
    labels-only reference have the same seeds."""
    for name, job in jobs.items():
        for other in job.after:
            if len(seeds_of.get(other, [0])) > 1:
                raise ConfigError(f"plan [jobs.{name}]: after names {other!r}, which has seeds "
                                  f"{seeds_of[other]}; a job that others read from runs once: remove its seeds")
        reference = job.compared_with
        if reference in jobs and job.step is None and seeds_of[name] != seeds_of[reference] and len(seeds_of[name]) > 1:
            raise ConfigError(f"plan [jobs.{name}]: seeds {seeds_of[name]} but its labels-only reference "
                              f"{reference!r} has seeds {seeds_of[reference]}; give both the same seeds (the "
                              f"differences are paired by seed)")
    state: Dict[str, int] = {}

    def visit(name: str, path: List[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = path[path.index(name):] + [name]
            raise ConfigError(f"the plan's after lists form a cycle {' -> '.join(cycle)}; no job of it could "
                              f"start: remove one of these after entries")
        state[name] = 1
        for other in jobs[name].after:
            visit(other, path + [name])
        state[name] = 2

    for name in jobs:
        visit(name, [])


def job_needs(jobs: Dict[str, Job], name: str) -> List[str]:
    """Every job ``name`` waits for, directly or through others."""
    found: List[str] = []
    stack = list(jobs[name].after)
    while stack:
        other = stack.pop()
        if other not in found:
            found.append(other)
            stack.extend(jobs[other].after)
    return found


def row_order(jobs: Dict[str, Job]) -> List[str]:
    """Summary rows: the registry's order, each extra job right before the first row compared with it, else
    right after its recipe's row (e.g. a second TinyBERT after TinyBERT), else last; steps and seed repeats
    have no row of their own."""
    rowed = [job for job, each in jobs.items() if each.row and each.seed_of is None]
    registered = [job for job in RECIPES.names() if job in rowed]
    extras = [job for job in rowed if job not in registered]
    references = {jobs[job].compared_with for job in rowed}
    rows: List[str] = []
    for job in registered:
        rows += [extra for extra in extras if extra not in rows and jobs[job].compared_with == extra]
        rows.append(job)
        rows += [extra for extra in extras if extra not in rows and extra not in references
                 and jobs[extra].recipe == job]
    return rows + [extra for extra in extras if extra not in rows]
