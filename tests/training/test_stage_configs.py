"""The recipes' objectives as DistillationConfigs (:mod:`knowledge_distill_util.training.stage_configs`): a stage
trained through its configuration ends with the very weights (bit for bit) that its objective's formula gives,
eager and graph, with the teacher online or its logits computed beforehand, classification and regression."""
import argparse
import dataclasses

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.data import Features
from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training import objectives as O
from knowledge_distill_util.training.trainer import LossStep, TrainerConfig, stage_config, train_stage
from training.conftest import tiny_bert

ARGS = argparse.Namespace(kd_alpha=0.3, kd_beta=2.0, temperature=2.0, student_temperature=None,
                          teacher_temperature=None, logit_weight=0.6, hard_label_weight=0.3, hidden_weight=1.5,
                          pkd_strategy="skip", student_num_attention_heads=2, num_relation_heads=4,
                          minilm_teacher_layer=2)
CONFIGURED = [O.LABELS, O.KD, O.BILSTM, O.TINYBERT_PRED, O.BERT_PKD, O.TINYBERT_INTERMEDIATE, O.TINYBERT_COMBINED,
              O.DISTILBERT, O.PKD_PATIENCE, O.MINILM, O.MINILM_V2]


def _features(regression, n=24, length=6, seed=0):
    """Rows with padding (so that the attention masks matter): ``length - k`` tokens, ``k`` in 0..2."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(length)[None, :] < length - rng.integers(0, 3, (n, 1))).astype(np.int64)
    labels = rng.standard_normal(n).astype(np.float32) if regression else rng.integers(0, 3, n)
    return Features(rng.integers(1, 40, (n, length)) * mask, mask, np.zeros((n, length), np.int64), labels)


def _train(tmp_path, objective, regression, graph=False, logits=False, cache="off", dtype="float16", args=ARGS):
    classes = 1 if regression else 3
    teacher, student = tiny_bert(4, seed=1, label_num=classes), tiny_bert(2, seed=2, label_num=classes)
    teacher.eval()
    features = _features(regression)
    cached = None
    if logits:
        with flow.no_grad():
            cached = teacher(*[flow.tensor(a) for a in (features.input_ids, features.input_mask,
                                                        features.segment_ids)])[0].numpy()
    tcfg = TrainerConfig(num_epochs=2, learning_rate=1e-2, batch_size=8, checkpoint_every=100, use_graph=graph)
    result = train_stage(LossStep(student, teacher, objective, args), features, tcfg, work_dir=str(tmp_path),
                         stage="s", checkpoint_dir=str(tmp_path / "checkpoints"), progress=False,
                         teacher_logits=cached, cache_teacher_outputs=cache, cache_teacher_dtype=dtype)
    return student, result


def _same_weights(a, b):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=name)


@pytest.mark.parametrize("objective, regression", [(o, False) for o in CONFIGURED] + [
    (o, True) for o in (O.LABELS, O.KD, O.TINYBERT_COMBINED, O.DISTILBERT, O.PKD_PATIENCE)],  # each regression path: the hard MSE, the soft MSE
    ids=lambda value: getattr(value, "name", "regression" if value else "classes"))
def test_a_configured_stage_trains_exactly_as_its_objective(tmp_path, objective, regression):
    assert stage_config(LossStep(tiny_bert(2), tiny_bert(4), objective, ARGS), _features(regression)) is not None
    logits = objective.can_cache_teacher_logits
    configured, result = _train(tmp_path / "config", objective, regression, logits=logits)
    formula, reference = _train(tmp_path / "formula", dataclasses.replace(objective, config=None), regression,
                                logits=logits)
    _same_weights(configured, formula)
    assert _moved(configured)
    assert result.last_terms["loss"] == pytest.approx(reference.last_terms["loss"], rel=1e-6)


def _moved(student):
    return any(float(np.abs(p.numpy() - q.numpy()).max()) > 0 for p, q in zip(student.parameters(),
                                                                               tiny_bert(2, seed=2).parameters()))


@pytest.mark.slow
@pytest.mark.graph
def test_graph_mode_too(tmp_path):
    """KD with the teacher's logits computed beforehand: the compiled step gets them as inputs."""
    configured, _ = _train(tmp_path / "config", O.KD, False, graph=True, logits=True)
    formula, _ = _train(tmp_path / "formula", dataclasses.replace(O.KD, config=None), False, graph=True, logits=True)
    for p, q in zip(configured.parameters(), formula.parameters()):
        assert float(np.abs(p.numpy() - q.numpy()).max()) < 1e-6


@pytest.mark.parametrize("objective, cache, dtype", [(O.DISTILBERT, "memory", "float16"),
                                                     (O.PKD_PATIENCE, "memory", "float32"),
                                                     (O.TINYBERT_INTERMEDIATE, "auto", "float32"),
                                                     (O.TINYBERT_INTERMEDIATE, "disk", "float16"),
                                                     (O.MINILM, "memory", "float32")],
                         ids=["distilbert-memory-float16", "pkd_patience-memory-float32", "tinybert-auto-float32",
                              "tinybert-disk-float16", "minilm-memory-float32"])
def test_the_teacher_layer_cache_gives_what_the_objectives_cache_gives(tmp_path, objective, cache, dtype):
    """--cache_teacher_outputs: the Distiller's cache (the layers paired, every batch reading the stored values)
    trains exactly as the objectives' own (:mod:`~knowledge_distill_util.training.teacher_outputs`)."""
    configured, _ = _train(tmp_path / "config", objective, False, cache=cache, dtype=dtype)
    formula, _ = _train(tmp_path / "formula", dataclasses.replace(objective, config=None), False, cache=cache,
                        dtype=dtype)
    _same_weights(configured, formula)
    assert not list((tmp_path / "config").rglob("*.npy"))  # the disk cache is deleted at the end


@pytest.mark.parametrize("objective, schedules", [
    (O.KD, dict(logit_weight_schedule="linear_decay", temperature_schedule="cwsm")),
    (O.BERT_PKD, dict(logit_weight_schedule="linear_growth", hidden_weight_schedule="linear_decay")),
    (O.TINYBERT_INTERMEDIATE, dict(hidden_weight_schedule="linear_growth")),
    (O.MINILM_V2, dict(hidden_weight_schedule="linear_decay")),
], ids=["kd", "bert_pkd", "tinybert", "minilm_v2"])
def test_weight_and_temperature_schedules_too(tmp_path, objective, schedules):
    args = argparse.Namespace(**dict(vars(ARGS), **schedules))
    configured, _ = _train(tmp_path / "config", objective, False, args=args)
    formula, _ = _train(tmp_path / "formula", dataclasses.replace(objective, config=None), False, args=args)
    _same_weights(configured, formula)


CUSTOM_ARGS = dict(logit_terms=[{"loss": "kl_div", "weight": 0.7, "temperature": 2.0, "temperature_scaling": True},
                                {"loss": "soft_cross_entropy", "weight": 0.4, "temperature": 3.0}],
                   intermediate_matches=[
                       {"layer_S": -1, "layer_T": 3, "feature": "hidden", "loss": "hidden_mse", "weight": 2.0,
                        "proj": ["linear", 8, 8]},
                       {"layer_S": 0, "layer_T": 1, "feature": "attention", "loss": "attention_mse", "weight": 0.5},
                       {"layer_S": 1, "layer_T": -1, "feature": "value", "loss": "relation_kl",
                        "options": {"num_relation_heads": 2}}])


def _custom_run(tmp_path, configured: bool, regression: bool, schedules):
    """The custom stage trained through its configuration, or through its formula on a
    :class:`~knowledge_distill_util.training.custom.CustomStudent` (the projections drawn from the same seed)."""
    from knowledge_distill_util.training.custom import CUSTOM, CustomStudent, check_logit_terms, resolve_matches

    args = argparse.Namespace(**dict(vars(ARGS), **CUSTOM_ARGS, **schedules))
    classes = 1 if regression else 3
    teacher, student = tiny_bert(4, seed=1, label_num=classes), tiny_bert(2, seed=2, label_num=classes)
    teacher.eval()
    flow.manual_seed(5)
    model = student if configured else CustomStudent(
        student, resolve_matches(args.intermediate_matches, student.config, teacher.config),
        check_logit_terms(args.logit_terms, args.temperature))
    objective = CUSTOM if configured else dataclasses.replace(CUSTOM, config=None)
    tcfg = TrainerConfig(num_epochs=2, learning_rate=1e-2, batch_size=8, checkpoint_every=100)
    train_stage(LossStep(model, teacher, objective, args), _features(regression), tcfg, work_dir=str(tmp_path),
                stage="s", checkpoint_dir=str(tmp_path / "checkpoints"), progress=False)
    return student


@pytest.mark.parametrize("regression, schedules", [(False, {}), (True, {}), (False, dict(
    hidden_weight_schedule="linear_decay", temperature_schedule="flsw"))], ids=["classes", "regression", "schedules"])
def test_the_custom_stage_trains_exactly_as_its_formula(tmp_path, regression, schedules):
    """Two logit terms, the hard labels and three matches (a projected hidden state, attention maps, value
    relations): the configured stage ends with the weights of :func:`~.custom.custom_loss`."""
    configured = _custom_run(tmp_path / "config", True, regression, schedules)
    _same_weights(configured, _custom_run(tmp_path / "formula", False, regression, schedules))
    assert _moved(configured)


def test_the_configurations_say_the_formulas():
    kd = O.KD.config(ARGS, False)
    assert (kd.logit_loss, kd.logit_weight, kd.hard_label_weight, kd.temperatures) == (
        "soft_cross_entropy", pytest.approx(0.7), 0.3, (2.0, 2.0))
    pkd = O.BERT_PKD.config(ARGS, True)
    assert (pkd.logit_loss, pkd.logit_weight, pkd.hard_label_weight) == ("hidden_mse", 0.3, pytest.approx(0.7))
    assert pkd.intermediate_matches == [{"layer_S": "all", "layer_T": "all", "feature": "hidden",
                                         "loss": "layer_distill_loss", "weight": 2.0}]
    combined = O.TINYBERT_COMBINED.config(ARGS, True)
    assert (combined.logit_weight, combined.hard_label_weight, len(combined.intermediate_matches)) == (0.0, 1.0, 2)


def test_a_refusal_before_the_first_step_is_one_sentence(tmp_path, monkeypatch):
    """The Distiller's checks (here: a disk cache without the room) stop the stage with a ConfigError, which the CLI
    prints as one line and exit status 2, before anything is written."""
    monkeypatch.setattr("knowledge_distill_util.engine.teacher_cache._free_bytes", lambda path: 1000)
    with pytest.raises(ConfigError, match=r"^stage s: the teacher-output cache needs 0 MB on disk for the data's 24 "
                                          r"rows but .* has 0 MB free; free some space"):
        _train(tmp_path, O.BERT_PKD, False, cache="disk")
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "s_losses.csv").exists()
