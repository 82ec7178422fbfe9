"""The steps of kdu-compress that are not training runs (training/steps.py): the augment step."""
import json

from knowledge_distill_util.training import steps


def _config(tmp_path, **changes):
    config = dict(steps.STEPS["augment"].defaults, data_dir=str(tmp_path / "data"), task_name="fortunes", seed=0,
                  result_dir=str(tmp_path / "augment"), resume=False, overwrite=False)
    config.update(changes)
    path = tmp_path / "job_config.json"
    path.write_text(json.dumps(config))
    return str(path)


def test_a_run_data_directory_without_train_tsv_is_one_sentence_and_nothing_is_augmented(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    assert steps.main(["augment", _config(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: step augment: {tmp_path}/data/train.tsv does not exist; the run's data_dir must hold "
                   f"train.tsv and dev.tsv")
    assert not (tmp_path / "augment" / steps.RESULTS_FILE).exists()


def test_a_bad_option_is_refused_before_any_work(tmp_path, capsys):
    assert steps.main(["augment", _config(tmp_path, M=0)]) == 2
    assert capsys.readouterr().err.strip() == "error: step augment: M=0 must be a count >= 1"
    assert not (tmp_path / "augment").exists()


def test_a_finished_step_is_not_run_again_on_resume(tmp_path):
    (tmp_path / "augment").mkdir()
    (tmp_path / "augment" / steps.RESULTS_FILE).write_text(json.dumps({"step": "augment", "rows": 7}))
    assert steps.main(["augment", _config(tmp_path, resume=True)]) == 0   # no data, no model: nothing was run


def test_an_unknown_step_prints_the_usage(capsys):
    assert steps.main(["augmentation", "x.json"]) == 2
    assert "usage: python -m knowledge_distill_util.training.steps {augment} CONFIG_JSON" in capsys.readouterr().err
