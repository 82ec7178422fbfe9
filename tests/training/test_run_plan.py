"""The run plan of kdu-compress: job sections with seeds, after lists, {job} references and steps, each
mistake one sentence (training/run_plan.py)."""
import pytest

from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training.run_plan import plan_jobs, read_plan, row_order, seed_jobs

RUN = dict(data_dir="/d", task_name="fortunes", seed=0, result_dir="/r", use_graph=False)
SKIP = ["lstm", "minilm", "minilm_v2", "distilbert", "pkd_patience", "multi_teacher_kd", "custom",
        "tinybert_general", "distilbert_mlm", "bilstm", "bert_pkd", "tinybert", "theseus"]


def _plan(**jobs):
    return {"skip": list(SKIP), "jobs": jobs}


def test_seeds_make_one_job_per_seed_offset_in_its_own_folder():
    plan = _plan(baseline={"seeds": [0, 2, 1]}, kd={"seeds": [0, 1, 2]})
    jobs = plan_jobs(plan, dict(RUN, seed=5), quick=False)
    assert list(jobs) == ["teacher", "baseline", "baseline.seed6", "baseline.seed7", "kd", "kd.seed6", "kd.seed7"]
    assert [jobs[name].config["seed"] for name in seed_jobs(jobs, "kd")] == [5, 6, 7]
    assert jobs["kd"].config["result_dir"] == "/r/kd"                       # the run's seed keeps its folder
    assert jobs["kd.seed7"].config["result_dir"] == "/r/kd.seed7"
    assert jobs["kd.seed7"].config["model_save_dir"] == "/r/kd.seed7/model"
    assert jobs["kd.seed7"].seed_of == "kd" and jobs["kd.seed7"].after == ("teacher",)
    assert row_order(jobs) == ["teacher", "baseline", "kd"]                # one row per job, not per seed
    assert list(plan_jobs(plan, RUN, quick=True)) == ["teacher", "baseline", "kd"]   # --quick: the run's seed only


@pytest.mark.parametrize("seeds", [[1, 2], [0, 0, 1], [0, 1.5], "0,1", [], [0, -1]])
def test_bad_seeds_are_one_sentence(seeds):
    with pytest.raises(ConfigError, match=r"^plan \[jobs.kd\]: seeds .* must be a list of distinct seed offsets "
                                          r">= 0 holding 0 \(the run's --seed\), e\.g\. \[0, 1, 2\]; fix the plan$"):
        plan_jobs(_plan(kd={"seeds": seeds}), RUN, quick=False)


def test_a_row_with_seeds_needs_its_reference_with_the_same_seeds():
    with pytest.raises(ConfigError, match=r"^plan \[jobs.kd\]: seeds \[0, 1, 2\] but its labels-only reference "
                                          r"'baseline' has seeds \[0\]; give both the same seeds"):
        plan_jobs(_plan(kd={"seeds": [0, 1, 2]}), RUN, quick=False)


def test_after_and_job_references_point_at_the_other_jobs_folder():
    plan = _plan(augment={"step": "augment", "N": 1}, general={"recipe": "tinybert_general", "teacher_model": "auto"},
                 aug_kd={"recipe": "tinybert", "title": "TinyBERT (general + augmented)", "after": ["general", "augment"],
                         "student_model": "{general}/model", "data_dir": "{augment}/data", "aug_train": True})
    jobs = plan_jobs(plan, RUN, quick=False)
    assert jobs["aug_kd"].after == ("general", "augment", "teacher")
    assert jobs["aug_kd"].config["student_model"] == "/r/general/model"
    assert jobs["aug_kd"].config["data_dir"] == "/r/augment/data"           # not the run's /d: it reads augment's
    assert jobs["aug_kd"].config["teacher_model"] == "/r/teacher/model"
    assert jobs["general"].after == () and jobs["general"].config["teacher_model"] == "auto"  # starts at once
    assert jobs["augment"].after == () and jobs["augment"].step == "augment"
    assert jobs["augment"].config["result_dir"] == "/r/augment" and jobs["augment"].config["data_dir"] == "/d"
    assert row_order(jobs) == ["teacher", "baseline", "kd", "aug_kd"]       # no row for a step or a general student
    quick = plan_jobs(plan, RUN, quick=True)                                 # no pretrained weights: the run's teacher
    assert quick["general"].after == ("teacher",) and quick["general"].config["teacher_model"] == "/r/teacher/model"
    assert quick["augment"].after == ("teacher",) and quick["augment"].config["model_load_dir"] == "/r/teacher/model"


def test_a_second_run_of_a_recipe_follows_its_row():
    plan = _plan(tinybert_aug={"recipe": "tinybert"}, tinybert={})
    plan["skip"].remove("tinybert")
    plan["skip"].remove("theseus")
    assert row_order(plan_jobs(plan, RUN, quick=False)) == ["teacher", "baseline", "kd", "tinybert", "tinybert_aug",
                                                            "theseus"]


@pytest.mark.parametrize("jobs, message", [
    ({"x": {"recipe": "kd", "student_model": "{general}/model"}},
     r"^plan \[jobs.x\]: student_model '\{general\}/model' reads job 'general', which is not in its after list "
     r"\['teacher'\]; add 'general' to after \(or fix the name\)$"),
    ({"x": {"recipe": "kd", "after": ["nothing"]}},
     r"^plan \[jobs.x\]: after names 'nothing', no job of this plan \(skipped, or misspelt\); name jobs"),
    ({"x": {"recipe": "kd", "after": ["x"]}}, r"^plan \[jobs.x\]: after names 'x', itself;"),
    ({"x": {"recipe": "kd", "after": "kd"}}, r"^plan \[jobs.x\]: after 'kd' must be a list of job names"),
    ({"x": {"recipe": "kd", "after": ["y"]}, "y": {"recipe": "kd", "after": ["x"]}},
     r"^the plan's after lists form a cycle x -> y -> x; no job of it could start: remove one of these after"),
    ({"x": {"recipe": "kd", "after": ["kd"]}, "kd": {"seeds": [0, 1]}, "baseline": {"seeds": [0, 1]}},
     r"^plan \[jobs.x\]: after names 'kd', which has seeds \[0, 1\]; a job that others read from runs once"),
    ({"a": {"step": "augmentation"}}, r"^plan \[jobs.a\]: step 'augmentation' is not a step of kdu-compress; known "
                                      r"steps: augment$"),
    ({"a": {"step": "augment", "recipe": "kd"}}, r"^plan \[jobs.a\]: step 'augment' is not a step of kdu-compress; "
                                                 r"give a job either 'recipe' or 'step', not both$"),
    ({"a": {"step": "augment", "title": "A"}}, r"^plan \[jobs.a\]: a step has no summary row, so no 'title'; remove"),
    ({"a": {"step": "augment", "learning_rate": 1.0}}, r"^plan \[jobs.a\]: unknown configuration key\(s\) "
                                                       r"\['learning_rate'\]; known keys: model_load_dir, "),
    ({"a": {"step": "augment", "N": -1}}, r"^step augment: N=-1 must be a count >= 0$"),
    ({"a": {"step": "augment", "p": 2}}, r"^step augment: p=2 must be a probability in \[0, 1\]$"),
    ({"kd": {"step": "augment"}}, r"^plan \[jobs.kd\]: 'kd' is a recipe's job, so it cannot be a step"),
    ({"x": ["kd"]}, r"job section 'x' must be an object of keys, got list; fix the file"),
    ({"x": {"recipe": "baseline", "teacher_model": "auto"}},
     r"^plan \[jobs.x\]: teacher_model 'auto' is not a directory, and recipe 'baseline' reads a teacher written by "
     r"this package; remove the key \(the run's fine-tuned teacher\) or name such a directory$"),
])
def test_plan_mistakes_are_one_sentence(jobs, message, tmp_path):
    import json

    path = tmp_path / "plan.json"
    path.write_text(json.dumps(_plan(**jobs)))
    with pytest.raises(ConfigError, match=message) as caught:
        plan_jobs(read_plan(str(path)), RUN, quick=False)
    assert "\n" not in str(caught.value)


def test_the_default_plan_runs_the_new_rows_and_their_seeds():
    jobs = plan_jobs(read_plan(), RUN, quick=False)
    assert row_order(jobs) == ["teacher", "baseline", "kd", "bilstm_baseline", "bilstm", "bert_pkd", "tinybert",
                               "tinybert_aug", "theseus", "minilm_baseline", "minilm", "distilbert"]
    assert jobs["minilm"].compared_with == "minilm_baseline" and jobs["minilm"].config["student_hidden_size"] == 192
    assert jobs["minilm_baseline"].config["student_hidden_size"] == 192
    for name in ("bert_pkd", "minilm", "distilbert"):  # two epochs reading teacher layers: the exact float32 cache
        assert (jobs[name].config["cache_teacher_outputs"], jobs[name].config["cache_teacher_dtype"]) == (
            "memory", "float32")
    assert not [job for job in jobs if "." in job]          # no seed repeats: they do not fit the time budget
    assert jobs["tinybert_aug"].title == "TinyBERT (general + augmented)"
    assert set(jobs["tinybert_aug"].after) == {"tinybert_general", "augment", "teacher"}
    for name in ("tinybert_general", "augment"):                                    # start while the teacher trains
        assert "teacher" not in jobs[name].after
