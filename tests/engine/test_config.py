"""DistillationConfig / TrainingConfig values, and the Distiller's own checks, each one sentence."""
import oneflow as flow
import pytest

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig

from .conftest import pair, random_data, tuple_loader


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(max_steps=0), ValueError, "TrainingConfig.max_steps must be a positive integer or None, got 0"),
    (dict(max_steps=None), ValueError, "TrainingConfig needs max_steps or num_epochs"),
    (dict(max_steps=1.5), TypeError, "TrainingConfig.max_steps must be a positive integer or None, got 1.5"),
    (dict(log_every=0), ValueError, "TrainingConfig.log_every must be a positive integer, got 0"),
    (dict(checkpoint_every=-1), ValueError, "TrainingConfig.checkpoint_every must be a positive integer"),
    (dict(seed=-1), ValueError, "TrainingConfig.seed must be an integer >= 0, got -1"),
    (dict(resume="yes"), TypeError, "TrainingConfig.resume must be True or False, got 'yes'"),
    (dict(max_grad_norm=0), ValueError, "TrainingConfig.max_grad_norm must be a finite number > 0, got 0.0"),
    (dict(learning_rate=float("nan")), ValueError, "TrainingConfig.learning_rate must be a finite number > 0"),
    (dict(lr_schedule="cosine"), ValueError, "TrainingConfig.lr_schedule must be one of 'constant', 'linear'"),
    (dict(label_key=""), TypeError, "TrainingConfig.label_key must be a non-empty string"),
    (dict(output_dir=""), TypeError, "TrainingConfig.output_dir must be a non-empty path string"),
])
def test_bad_training_config_values(kwargs, error, message):
    values = dict(output_dir="out", max_steps=10)
    values.update(kwargs)
    with pytest.raises(error, match=message.replace("(", "\\(").replace(")", "\\)")):
        TrainingConfig(**values)


@pytest.mark.parametrize("terms, error, message", [
    ({"loss": "kl_div"}, TypeError, "logit_terms must be a list of dicts \\(one per logit loss\\), got dict"),
    (["kl_div"], TypeError, "logit_terms\\[0\\] must be a dict such as \\{'loss': 'kl_div', 'weight': 1.0\\}, got str"),
    ([{"weight": 1.0}], ValueError, "logit_terms\\[0\\] names no loss; add 'loss': a registered logit loss"),
    ([{"loss": "kl_div", "temp": 2}], ValueError, "logit_terms\\[0\\] has unknown key\\(s\\) \\['temp'\\]; the keys of a "
                                                  "logit term: loss, weight, weight_schedule, temperature"),
    ([{"loss": "kl_div"}, {"loss": "kl"}], ValueError, "logit_terms\\[1\\]\\['loss'\\]: unknown loss 'kl'"),
    ([{"loss": "kl_div", "weight": -1}], ValueError, "logit_terms\\[0\\]\\['weight'\\] must be a finite number >= 0"),
    ([{"loss": "kl_div", "temperature": 0}], ValueError, "logit_terms\\[0\\]\\['temperature'\\] must be a finite number "
                                                         ">= 0.0001"),
    ([{"loss": "kl_div", "weight_schedule": "cosine"}], ValueError, "logit_terms\\[0\\]\\['weight_schedule'\\] must be "
                                                                    "one of 'constant'"),
    ([{"loss": "kl_div", "temperature_scheduler": "flat"}], ValueError, "logit_terms\\[0\\]\\['temperature_scheduler'\\] "
                                                                        "must be one of 'none', 'flsw', 'cwsm'"),
    ([{"loss": "kl_div", "temperature_scaling": 1}], TypeError, "logit_terms\\[0\\]\\['temperature_scaling'\\] must be "
                                                                "True or False, got 1"),
    ([{"loss": "js_divergence", "options": {"alpha": 0.5}}], ValueError, "logit_terms\\[0\\]\\['options'\\] has 'alpha', "
                                                                         "which js_divergence does not take"),
])
def test_bad_logit_terms(terms, error, message):
    with pytest.raises(error, match=message):
        DistillationConfig(logit_terms=terms)


def test_logit_terms_get_their_defaults_and_names():
    config = DistillationConfig(temperature=3.0, logit_weight=0.0, logit_terms=[
        {"loss": "kl_div"}, {"loss": "tv_distance", "weight": 0.0}, {"loss": "js_divergence", "teacher_temperature": 1.0,
                                                                     "options": {"beta": 0.1}}])
    first, _, third = config.logit_terms
    assert (first.weight, first.student_temperature, first.teacher_temperature, first.weight_schedule,
            first.temperature_scheduler, first.temperature_scaling, first.options) == (1.0, 3.0, 3.0, "constant", "none",
                                                                                       False, {})
    assert (third.student_temperature, third.teacher_temperature, third.options) == (3.0, 1.0, {"beta": 0.1})
    assert [(name, index) for name, _, index in config.weighted_logit_terms()] == [("logit0_kl_div", 3),
                                                                                  ("logit2_js_divergence", 5)]
    assert config.reads_logits and not DistillationConfig(logit_weight=0.0, logit_terms=[
        {"loss": "kl_div", "weight": 0.0}]).reads_logits
    assert config.weight_schedules()[3:] == [(1.0, "constant"), (0.0, "constant"), (1.0, "constant")]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(temperature=0), ValueError, "temperature must be a finite number >= 0.0001"),
    (dict(teacher_temperature="2"), TypeError, "teacher_temperature must be a number >= 0.0001"),
    (dict(logit_loss="kl"), ValueError, "unknown loss 'kl'; known losses: "),
    (dict(hard_label_weight=-1), ValueError, "hard_label_weight must be a finite number >= 0"),
    (dict(logit_weight_schedule="cosine"), ValueError, "logit_weight_schedule must be one of 'constant'"),
    (dict(temperature_scheduler="flat"), ValueError, "temperature_scheduler must be one of 'none', 'flsw', 'cwsm'"),
    (dict(intermediate_matches={"layer_S": 0}), TypeError, "intermediate_matches must be a list of dicts"),
    (dict(teacher_weights=1.0), TypeError, "teacher_weights must be a list of numbers"),
    (dict(teacher_weights=[0.0, 0]), ValueError, "teacher_weights are all 0 \\(\\[0.0, 0.0\\]\\); give at least one teacher"),
    (dict(forward_kwargs=["output_qkv"]), TypeError, "forward_kwargs must be a dict of keyword arguments of the models' "
                                                     "forward, got list"),
    (dict(forward_kwargs={"output qkv": True}), ValueError, "forward_kwargs keys must be argument names of the models' "
                                                            "forward \\(such as 'output_hidden_states'\\), got 'output qkv'"),
])
def test_bad_distillation_config_values(kwargs, error, message):
    with pytest.raises(error, match=message):
        DistillationConfig(**kwargs)


def test_temperatures():
    assert DistillationConfig(temperature=4.0).temperatures == (4.0, 4.0)
    assert DistillationConfig(temperature=4.0, teacher_temperature=2.0).temperatures == (4.0, 2.0)


def test_a_student_without_trainable_parameters(tmp_path):
    teacher, student = pair()
    for p in student.parameters():
        p.requires_grad = False
    with pytest.raises(ValueError, match="the student has no trainable parameters"):
        Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path / "out"), max_steps=1))
    with pytest.raises(ValueError, match="the student has no trainable parameters"):
        Distiller(teacher, flow.nn.ReLU(), DistillationConfig(), TrainingConfig(str(tmp_path / "out"), max_steps=1))
    assert not (tmp_path / "out").exists()


def test_wrong_types_of_models_and_configs():
    teacher, student = pair()
    with pytest.raises(TypeError, match="student must be a oneflow.nn.Module, got function"):
        Distiller(teacher, lambda x: x, DistillationConfig(), TrainingConfig("x", max_steps=1))
    with pytest.raises(TypeError, match="teacher\\[1\\] must be a oneflow.nn.Module, got str"):
        Distiller([teacher, "t2"], student, DistillationConfig(), TrainingConfig("x", max_steps=1))
    with pytest.raises(ValueError, match="teacher is an empty list"):
        Distiller([], student, DistillationConfig(), TrainingConfig("x", max_steps=1))
    with pytest.raises(TypeError, match="training_config must be a TrainingConfig, got dict"):
        Distiller(teacher, student, DistillationConfig(), {"output_dir": "x"})
    with pytest.raises(ValueError, match="teacher_weights has 1 entries but there are 2 teachers"):
        Distiller([teacher, teacher], student, DistillationConfig(teacher_weights=[1.0]),
                  TrainingConfig("x", max_steps=1))


def test_an_optimizer_without_the_projections(tmp_path):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    config = DistillationConfig(intermediate_matches=[
        {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse", "proj": ["linear", 32, 128]}])
    distiller = Distiller(teacher, student, config, TrainingConfig(str(tmp_path / "out"), max_steps=1))
    with pytest.raises(ValueError, match="the optimizer does not hold 2 trainable parameter\\(s\\), e.g. "
                                         "'matches.0.inner.projections.0.linear.weight'; build it from "
                                         "distiller.parameters\\(\\)"):
        distiller.train(tuple_loader(x, y), optimizer=flow.optim.SGD(student.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="optimizer must be a oneflow.optim.Optimizer, got list"):
        distiller.train(tuple_loader(x, y), optimizer=[])
    assert not (tmp_path / "out").exists()


def test_num_epochs_needs_a_sized_data(tmp_path):
    class Batches:
        def __iter__(self):
            yield flow.ones(2, 8), flow.zeros(2, dtype=flow.int64)

    teacher, student = pair(inputs=8, classes=3)
    distiller = Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path / "out"), num_epochs=1))
    with pytest.raises(ValueError, match="TrainingConfig.num_epochs needs data with a len\\(\\), got Batches"):
        distiller.train(Batches())
