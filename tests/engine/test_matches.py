"""Intermediate matches: module paths and layer indices, projections, shapes, loss names."""
import numpy as np
import pytest

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
from knowledge_distill_util.engine.matches import Match

from .conftest import pair, random_data, tuple_loader
from .test_adaptors import bert_batches, tiny_bert


def _entry(**changes):
    entry = {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse"}
    entry.update(changes)
    return entry


def test_shapes_that_differ_without_a_projection_name_both_and_suggest_proj(tmp_path):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    distiller = Distiller(teacher, student, DistillationConfig(intermediate_matches=[_entry()]),
                          TrainingConfig(str(tmp_path / "out"), max_steps=1))
    with pytest.raises(ValueError) as error:
        distiller.train(tuple_loader(x, y))
    assert str(error.value) == (
        "intermediate_matches[0] (hidden_mse): the student's 'body.1' has shape (16, 32) but the teacher's 'body.3' "
        "has shape (16, 128); add \"proj\": [\"linear\", 32, 128] to map the student's width to the teacher's")
    assert not (tmp_path / "out").exists()


def test_unknown_loss_names_give_the_registry_error():
    with pytest.raises(ValueError, match="intermediate_matches\\[0\\]\\['loss'\\] must be one of .*got 'hidden_mae'"):
        Match(0, _entry(loss="hidden_mae"))
    with pytest.raises(ValueError, match="unknown loss 'kl'; known losses: "):
        DistillationConfig(logit_loss="kl")


@pytest.mark.parametrize("changes, error, message", [
    (dict(feature="hiddens"), ValueError, "intermediate_matches\\[3\\]\\['feature'\\] must be one of"),
    (dict(layer_T=2), ValueError, "intermediate_matches\\[3\\]\\['layer_T'\\] = 2 indexes the adaptor's feature lists"),
    (dict(layer_S=1.0, feature="hidden"), TypeError, "must be a module path \\(str\\) or a layer index \\(int; -1 the "
                                                    "last\\), got 1.0"),
    (dict(layer_S=["a", "b", "c"]), ValueError, "must be a module path, a layer index or a pair of them"),
    (dict(weight="1"), ValueError, "intermediate_matches\\[3\\]\\['weight'\\] must be a finite number"),
    (dict(proj=["linear", 32]), ValueError, "intermediate_matches\\[3\\]\\['proj'\\] must be \\[\"linear\""),
    (dict(extra=1), ValueError, "intermediate_matches\\[3\\] has unknown key\\(s\\) 'extra'"),
])
def test_bad_entries(changes, error, message):
    with pytest.raises(error, match=message):
        Match(3, _entry(**changes))


def test_an_entry_that_is_not_a_dict():
    with pytest.raises(TypeError, match="intermediate_matches\\[0\\] must be a dict"):
        Match(0, ["body.1", "body.3"])


def test_pair_losses_take_pairs_of_paths_or_indices(tmp_path):
    teacher, student = tiny_bert(4), tiny_bert(2, seed=1)
    config = DistillationConfig(intermediate_matches=[
        {"layer_S": ["encoder.layer.0", "encoder.layer.1"], "layer_T": ["encoder.layer.1", "encoder.layer.3"],
         "feature": "output", "loss": "mmd_loss"},
        {"layer_S": [0, 2], "layer_T": [0, 4], "feature": "hidden", "loss": "fsp_loss"}])
    history = Distiller(teacher, student, config, TrainingConfig(str(tmp_path), max_steps=2)).train(bert_batches())
    assert np.isfinite(history["match0_mmd_loss"]).all() and np.isfinite(history["match1_fsp_loss"]).all()


def test_matches_with_several_teachers_are_refused():
    teacher, student = pair()
    other, _ = pair(seed=1)
    with pytest.raises(ValueError, match="intermediate_matches need one teacher, got 2"):
        Distiller([teacher, other], student, DistillationConfig(intermediate_matches=[_entry()]),
                  TrainingConfig("x", max_steps=1))


def test_a_projection_of_the_wrong_width_names_the_student_width_and_the_fix(tmp_path):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    config = DistillationConfig(intermediate_matches=[_entry(proj=["linear", 16, 128])])
    with pytest.raises(ValueError) as error:
        Distiller(teacher, student, config, TrainingConfig(str(tmp_path / "out"), max_steps=1)).train(tuple_loader(x, y))
    assert str(error.value) == ("intermediate_matches[0]['proj'] maps 16 features to 128, but the student's tensor has "
                                "32 (shape (16, 32)); use [\"linear\", 32, 128]")
    assert not (tmp_path / "out").exists()
