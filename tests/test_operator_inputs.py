"""What the (args, student, teacher) operators accept as ``args``, the temperature floor, empty inputs,
one-class logits and strings where layer lists belong (issue 9, "silent wrong numbers")."""
import argparse
import logging
import re
import types

import numpy as np
import oneflow as flow
import pytest

import reference as ref
from knowledge_distill_util import att_distill, distill, layer_distill, mseloss, pred_distill, soft_cross_entropy
from knowledge_distill_util._checks import MIN_TEMPERATURE

RTOL, ATOL = 1.3e-6, 1e-5


def logits(seed=0, shape=(4, 5), scale=3.0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * scale


def loss_of(args, s, t):
    return pred_distill(args, flow.tensor(s), flow.tensor(t)).item()


# --- args -----------------------------------------------------------------------------------------
class Config:
    """A config object whose temperature is a class-level property, not an instance attribute."""

    unrelated = "x"

    @property
    def temperature(self):
        return 3.0


@pytest.mark.parametrize("args, t_s, t_t", [
    ({"temperature": 4.0}, 4.0, 4.0),
    ({"temperature": 4.0, "teacher_temperature": 2.0}, 4.0, 2.0),
    (types.MappingProxyType({"student_temperature": 0.5}), 0.5, 1.0),
    ({}, 1.0, 1.0),
    ({"kd_alpha": 0.5, 3: "a non-string key"}, 1.0, 1.0),
    (Config(), 3.0, 3.0),
    (object(), 1.0, 1.0),                                   # nothing to read: the original default
    (argparse.Namespace(kd_alpha=0.2, temperatures_note="x"), 1.0, 1.0),  # unrelated names are ignored
])
def test_mappings_and_namespace_like_objects_are_read(args, t_s, t_t):
    s, t = logits(1), logits(2)
    np.testing.assert_allclose(loss_of(args, s, t), ref.pred_distill(s, t, t_s, t_t), rtol=RTOL, atol=ATOL)
    assert distill.resolve_temperatures(args) == (t_s, t_t)


def test_a_dict_gives_what_a_namespace_gives():
    s, t = logits(3), logits(4)
    assert loss_of({"temperature": 4.0}, s, t) == loss_of(argparse.Namespace(temperature=4.0), s, t)
    assert loss_of({"temperature": 4.0}, s, t) != loss_of(None, s, t)


@pytest.mark.parametrize("args, message", [
    (argparse.Namespace(temprature=4.0),
     r"args has an attribute 'temprature' but no 'temperature': is it a misspelling\? pred_distill reads "
     r"'temperature' only, so the value would be ignored; rename it to temperature \(args.temperature = \.\.\., "
     r"or the --temperature flag\)"),
    (argparse.Namespace(temperature=2.0, teacher_temprature=3.0),
     r"args has an attribute 'teacher_temprature' but no 'teacher_temperature'"),
    (argparse.Namespace(student_temperatur=3.0), r"an attribute 'student_temperatur' but no 'student_temperature'"),
    (argparse.Namespace(Temperature=4.0), r"an attribute 'Temperature' but no 'temperature'"),
    ({"temprature": 4.0}, r"args has a key 'temprature' but no 'temperature': .* rename the key to 'temperature'"),
])
def test_misspelt_temperatures_are_refused(args, message):
    with pytest.raises(ValueError, match=message):
        pred_distill(args, flow.zeros(2, 3), flow.zeros(2, 3))
    with pytest.raises(ValueError, match=message.replace("pred_distill", "resolve_temperatures")):
        distill.resolve_temperatures(args)


def test_a_misspelling_next_to_the_correct_name_is_allowed():
    args = argparse.Namespace(temperature=2.0, temprature=9.0, teacher_temperature=None, student_temperature=None)
    assert distill.resolve_temperatures(args) == (2.0, 2.0)


@pytest.mark.parametrize("args, shown", [(4.0, "float 4.0"), (4, "int 4"), (True, "bool True"),
                                         ("temperature=4", "str 'temperature=4'"), (b"x", "bytes b'x'"),
                                         (flow.zeros(2, 3), r"a tensor of shape \(2, 3\)")])
def test_numbers_strings_and_tensors_as_args_are_refused(args, shown):
    message = (rf"args must be an argparse.Namespace-like object \(or a dict, or None\) carrying the temperatures, "
               rf"got {shown}")
    with pytest.raises(TypeError, match=message + r".*call pred_distill\(args, student, teacher\)"):
        pred_distill(args, flow.zeros(2, 3), flow.zeros(2, 3))
    reps = [flow.zeros(1, 2, 3)] * 3
    with pytest.raises(TypeError, match=message + r".*call layer_distill\(args"):
        layer_distill(args, reps, reps)
    with pytest.raises(TypeError, match=message + r".*call att_distill\(args"):
        att_distill(args, reps, reps)


def test_layer_and_att_distill_ignore_temperature_names():
    reps = [flow.ones(1, 2, 3)] * 3
    assert layer_distill(argparse.Namespace(temprature=1.0), reps, reps).item() == 0.0
    assert att_distill({"temprature": 1.0}, reps, reps).item() == 0.0


# --- temperature floor ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [1e-300, 1e-30, 9.99e-5])
def test_temperatures_below_the_floor_are_refused(value):
    message = (rf"args.temperature is {value!r}, below the smallest supported temperature 0.0001 \(smaller ones "
               r"overflow float32 when the logits are divided by them\); use a temperature >= 0.0001")
    with pytest.raises(ValueError, match=message):
        pred_distill(argparse.Namespace(temperature=value), flow.zeros(2, 3), flow.zeros(2, 3))
    with pytest.raises(ValueError, match=r"args.teacher_temperature is 1e-300, below the smallest"):
        pred_distill({"teacher_temperature": 1e-300}, flow.zeros(2, 3), flow.zeros(2, 3))
    with pytest.raises(ValueError, match=r"student_temperature is 1e-300, below the smallest supported"):
        soft_cross_entropy(flow.zeros(2, 3), flow.zeros(2, 3), student_temperature=1e-300)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_the_floor_temperature_gives_finite_correct_values_for_extreme_logits(scale):
    assert MIN_TEMPERATURE == 1e-4
    s, t = logits(5, (3, 6), 1.0) * scale, logits(6, (3, 6), 1.0) * scale
    s_t = flow.tensor(s, requires_grad=True)
    loss = pred_distill(argparse.Namespace(temperature=MIN_TEMPERATURE), s_t, flow.tensor(t))
    loss.backward()
    expected = ref.pred_distill(s, t, MIN_TEMPERATURE, MIN_TEMPERATURE)
    assert np.isfinite(loss.item()) and np.isfinite(s_t.grad.numpy()).all()
    np.testing.assert_allclose(loss.item(), expected, rtol=RTOL, atol=ATOL)
    grad = ref.soft_cross_entropy_grad(s, t, MIN_TEMPERATURE, MIN_TEMPERATURE)
    np.testing.assert_allclose(s_t.grad.numpy(), grad, rtol=RTOL, atol=ATOL * np.abs(grad).max())


# --- empty inputs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (0,)])
def test_empty_logits_are_refused(shape):
    shown = re.escape(str(shape))
    with pytest.raises(ValueError, match=rf"student_logits is empty \(shape {shown}\): a loss over zero elements "
                                         r"is undefined; skip empty batches"):
        pred_distill(None, flow.zeros(*shape), flow.zeros(*shape))
    with pytest.raises(ValueError, match=r"predicts is empty"):
        soft_cross_entropy(flow.zeros(*shape), flow.zeros(*shape))


def test_empty_hidden_states_and_attentions_are_refused():
    empty = [flow.zeros(0, 2, 3)] * 3
    with pytest.raises(ValueError, match=r"student_reps\[0\] is empty \(shape \(0, 2, 3\)\)"):
        layer_distill(None, empty, empty)
    with pytest.raises(ValueError, match=r"student_atts\[0\] is empty \(shape \(0, 2, 3\)\)"):
        att_distill(None, empty, empty)
    with pytest.raises(ValueError, match=r"rep1 is empty \(shape \(2, 0\)\)"):
        mseloss(flow.zeros(2, 0), flow.zeros(2, 0))


# --- one class ------------------------------------------------------------------------------------
def test_one_class_logits_give_zero_loss_and_gradient_with_one_warning(caplog, monkeypatch):
    monkeypatch.setattr(distill, "_warned_single_class", False)
    s = flow.tensor(logits(7, (4, 1)), requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="knowledge_distill_util.distill"):
        loss = pred_distill(argparse.Namespace(temperature=2.0), s, flow.tensor(logits(8, (4, 1))))
        pred_distill(None, flow.zeros(3, 1), flow.zeros(3, 1))
    loss.backward()
    assert abs(loss.item()) < ATOL and np.all(s.grad.numpy() == 0.0)  # constant: 0 up to float32 rounding
    messages = [r.getMessage() for r in caplog.records if r.name == "knowledge_distill_util.distill"]
    assert len(messages) == 1, messages
    assert "logits with one class (shape (4, 1))" in messages[0]
    assert "the loss is constant (0) with zero gradient" in messages[0]
    assert "mseloss(student_logits, teacher_logits)" in messages[0]


def test_two_class_logits_do_not_warn(caplog, monkeypatch):
    monkeypatch.setattr(distill, "_warned_single_class", False)
    with caplog.at_level(logging.WARNING, logger="knowledge_distill_util.distill"):
        pred_distill(None, flow.zeros(3, 2), flow.zeros(3, 2))
    assert not caplog.records


# --- strings where a list of tensors belongs ------------------------------------------------------
@pytest.mark.parametrize("call, message", [
    (lambda: layer_distill(None, "abc", "abcdef"), r"student_reps must be a list or tuple of tensors \(one per "
                                                   r"layer\), got str"),
    (lambda: layer_distill(None, [flow.zeros(1, 2)] * 2, "abcdef"), r"teacher_reps must be a list or tuple of "
                                                                    r"tensors \(one per layer\), got str"),
    (lambda: att_distill(None, b"ab", b"abcd"), r"student_atts must be a list or tuple of tensors .* got bytes"),
])
def test_strings_are_not_layer_lists(call, message):
    with pytest.raises(TypeError, match=message):
        call()
