"""The five public operators against the numpy float64 reference: values, gradients, extreme inputs."""
import argparse

import numpy as np
import oneflow as flow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
from gradcheck import analytic_grads, assert_gradients_match
from knowledge_distill_util import att_distill, layer_distill, mseloss, pred_distill, soft_cross_entropy

F32 = dict(rtol=1.3e-6, atol=1e-5)  # PyTorch assert_close defaults for float32
LAYER_COUNTS = [(4, 12), (3, 6), (4, 4), (2, 6)]  # (student layers, teacher layers)


def t32(array):
    return flow.tensor(np.asarray(array, dtype=np.float32))


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def attention_scores(rng, layers, batch=2, heads=3, length=5, masked_from=3):
    """Raw scores with the additive -10000 padding mask on keys >= masked_from."""
    mask = np.zeros(length, np.float32)
    mask[masked_from:] = -10000.0
    return [rand(rng, batch, heads, length, length, scale=3.0) + mask for _ in range(layers)]


def attention_probs(rng, layers, **kw):
    return [ref.softmax(s).astype(np.float32) for s in attention_scores(rng, layers, **kw)]


# --- values ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(1, 2), (4, 3), (8, 1000), (2, 5, 7), (3, 4, 6, 2)])
def test_soft_cross_entropy_matches_reference(shape):
    rng = np.random.default_rng(sum(shape))
    s, t = rand(rng, *shape, scale=3.0), rand(rng, *shape, scale=3.0)
    np.testing.assert_allclose(soft_cross_entropy(t32(s), t32(t)).item(), ref.soft_cross_entropy(s, t), **F32)


@pytest.mark.parametrize("args, t_s, t_t", [
    (None, 1.0, 1.0),
    (argparse.Namespace(), 1.0, 1.0),
    (argparse.Namespace(temperature=2.0), 2.0, 2.0),
    (argparse.Namespace(temperature=2.0, student_temperature=None, teacher_temperature=5.0), 2.0, 5.0),
    (argparse.Namespace(temperature=1.0, student_temperature=0.5, teacher_temperature=3.0), 0.5, 3.0),
])
def test_pred_distill_uses_the_args_temperatures(args, t_s, t_t):
    rng = np.random.default_rng(0)
    s, t = rand(rng, 6, 4, scale=2.0), rand(rng, 6, 4, scale=2.0)
    np.testing.assert_allclose(pred_distill(args, t32(s), t32(t)).item(), ref.pred_distill(s, t, t_s, t_t), **F32)


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 5, 8)])
def test_mseloss_matches_reference(shape):
    rng = np.random.default_rng(len(shape))
    a, b = rand(rng, *shape), rand(rng, *shape)
    np.testing.assert_allclose(mseloss(t32(a), t32(b)).item(), ref.mse(a, b), **F32)


@pytest.mark.parametrize("student_layers, teacher_layers", LAYER_COUNTS)
def test_layer_distill_matches_reference(student_layers, teacher_layers):
    rng = np.random.default_rng(student_layers * 100 + teacher_layers)
    s = [rand(rng, 2, 5, 8) for _ in range(student_layers + 1)]
    t = [rand(rng, 2, 5, 8) for _ in range(teacher_layers + 1)]
    got = layer_distill(None, [t32(x) for x in s], [t32(x) for x in t]).item()
    np.testing.assert_allclose(got, ref.layer_distill(s, t), **F32)


@pytest.mark.parametrize("student_layers, teacher_layers", LAYER_COUNTS)
@pytest.mark.parametrize("kind", ["probabilities", "masked_scores"])
def test_att_distill_matches_reference(student_layers, teacher_layers, kind):
    rng = np.random.default_rng(student_layers * 10 + teacher_layers)
    make = attention_probs if kind == "probabilities" else attention_scores
    s, t = make(rng, student_layers), make(rng, teacher_layers)
    got = att_distill(None, [t32(x) for x in s], [t32(x) for x in t]).item()
    np.testing.assert_allclose(got, ref.att_distill(s, t), rtol=1e-5, atol=1e-5)


def test_att_distill_zeroes_masked_entries_in_both_tensors():
    rng = np.random.default_rng(3)
    s, t = attention_scores(rng, 1), attention_scores(rng, 1)
    s_valid, t_valid = s[0][..., :3], t[0][..., :3]
    expected = ((s_valid.astype(np.float64) - t_valid) ** 2).sum() / s[0].size
    np.testing.assert_allclose(att_distill(None, [t32(s[0])], [t32(t[0])]).item(), expected, rtol=1e-5)


def test_layer_maps_pair_the_documented_layers():
    """Only the mapped teacher entries influence the loss: perturbing the others changes nothing."""
    rng = np.random.default_rng(4)
    s = [t32(rand(rng, 1, 2, 3)) for _ in range(5)]      # embedding + 4 layers
    t = [t32(rand(rng, 1, 2, 3)) for _ in range(13)]     # embedding + 12 layers
    base = layer_distill(None, s, t).item()
    for j in range(13):
        changed = list(t)
        changed[j] = changed[j] + 1.0
        assert (layer_distill(None, s, changed).item() != base) == (j in (0, 3, 6, 9, 12)), j
    atts_s = [t32(rand(rng, 1, 1, 2, 2)) for _ in range(4)]
    atts_t = [t32(rand(rng, 1, 1, 2, 2)) for _ in range(12)]
    base = att_distill(None, atts_s, atts_t).item()
    for j in range(12):
        changed = list(atts_t)
        changed[j] = changed[j] + 1.0
        assert (att_distill(None, atts_s, changed).item() != base) == (j in (2, 5, 8, 11)), j


# --- gradients ---------------------------------------------------------------------------------------

def test_soft_cross_entropy_gradient_finite_differences():
    rng = np.random.default_rng(5)
    s, t = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    args = argparse.Namespace(student_temperature=1.5, teacher_temperature=2.5)
    assert_gradients_match(lambda a, b: pred_distill(args, a, b), [s, t], indices=[0])


@pytest.mark.parametrize("t_s, t_t", [(1.0, 1.0), (2.0, 0.5), (1e-3, 1e-3), (1e3, 1e3)])
def test_soft_cross_entropy_gradient_closed_form(t_s, t_t):
    rng = np.random.default_rng(6)
    s, t = rng.standard_normal((2, 3, 5)) * 3, rng.standard_normal((2, 3, 5)) * 3
    args = argparse.Namespace(student_temperature=t_s, teacher_temperature=t_t)
    grad_s, grad_t = analytic_grads(lambda a, b: pred_distill(args, a, b), [s, t])
    np.testing.assert_allclose(grad_s, ref.soft_cross_entropy_grad(s, t, t_s, t_t), rtol=1e-7, atol=1e-12)
    assert grad_t is None, "the teacher must receive no gradient"


def test_mseloss_gradient_reaches_both_sides():
    rng = np.random.default_rng(7)
    assert_gradients_match(mseloss, [rng.standard_normal((2, 3)), rng.standard_normal((2, 3))], indices=[0, 1])


def test_layer_distill_gradient_and_detached_teacher():
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal((1, 2, 3)) for _ in range(3 + 5)]  # student 2 layers, teacher 4 layers

    def loss(*tensors):
        return layer_distill(None, list(tensors[:3]), list(tensors[3:]))

    assert_gradients_match(loss, arrays, indices=[0, 1, 2])
    assert all(g is None for g in analytic_grads(loss, arrays)[3:])


def test_att_distill_gradient_and_detached_teacher():
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal((1, 2, 3, 3)) for _ in range(2 + 4)]
    arrays[0][..., -1] = -10000.0  # a masked key column: no gradient flows there

    def loss(*tensors):
        return att_distill(None, list(tensors[:2]), list(tensors[2:]))

    assert_gradients_match(loss, arrays, indices=[0, 1])
    grads = analytic_grads(loss, arrays)
    assert np.all(grads[0][..., -1] == 0)
    assert all(g is None for g in grads[2:])


# --- extreme but valid inputs ------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_pred_distill_is_finite_for_huge_logits(scale):
    rng = np.random.default_rng(10)
    s = (rng.choice([-1.0, 1.0], size=(4, 6)) * scale).astype(np.float32)
    t = (rng.choice([-1.0, 1.0], size=(4, 6)) * scale).astype(np.float32)
    student = t32(s).requires_grad_()
    loss = pred_distill(None, student, t32(t))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(student.grad.numpy()).all()
    np.testing.assert_allclose(loss.item(), ref.soft_cross_entropy(s, t), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1e-3, 1e3])
def test_pred_distill_extreme_temperatures(temperature):
    rng = np.random.default_rng(11)
    s, t = rand(rng, 3, 5, scale=5.0), rand(rng, 3, 5, scale=5.0)
    got = pred_distill(argparse.Namespace(temperature=temperature), t32(s), t32(t)).item()
    np.testing.assert_allclose(got, ref.pred_distill(s, t, temperature, temperature), rtol=1e-5)


def test_teacher_probabilities_that_underflow_to_zero():
    s = np.array([[0.0, 1.0, 2.0]], np.float32)
    t = np.array([[0.0, -200.0, 200.0]], np.float32)  # softmax(t) = [0, 0, 1] exactly in float32
    np.testing.assert_allclose(soft_cross_entropy(t32(s), t32(t)).item(), ref.soft_cross_entropy(s, t), **F32)


def test_att_distill_with_minus_inf_and_fully_masked_rows():
    s = np.full((1, 1, 2, 3), -np.inf, np.float32)
    s[0, 0, 0] = [0.5, 1.0, -np.inf]  # row 1 fully masked
    t = np.full((1, 1, 2, 3), -10000.0, np.float32)
    t[0, 0, 0] = [1.5, 0.0, -10000.0]
    got = att_distill(None, [t32(s)], [t32(t)]).item()
    np.testing.assert_allclose(got, ((0.5 - 1.5) ** 2 + 1.0) / 6, rtol=1e-6)


def test_nan_propagates_instead_of_being_hidden():
    nan_logits = t32([[np.nan, 0.0]])
    assert np.isnan(soft_cross_entropy(nan_logits, t32([[0.0, 1.0]])).item())
    assert np.isnan(mseloss(nan_logits, t32([[0.0, 1.0]])).item())
    assert np.isnan(att_distill(None, [t32([[[[np.nan]]]])], [t32([[[[0.0]]]])]).item())


# --- properties --------------------------------------------------------------------------------------

logits = hnp.arrays(np.float32, (3, 4), elements=st.floats(-30, 30, width=32))


@settings(max_examples=25, deadline=None)
@given(s=logits, t=logits, shift=st.floats(-50, 50, width=32))
def test_soft_cross_entropy_is_shift_invariant(s, t, shift):
    base = soft_cross_entropy(t32(s), t32(t)).item()
    shifted = soft_cross_entropy(t32(s + shift), t32(t - shift)).item()
    np.testing.assert_allclose(shifted, base, rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(s=logits, t=logits)
def test_cross_entropy_minus_entropy_is_a_nonnegative_kl(s, t):
    cross = soft_cross_entropy(t32(s), t32(t)).item()
    entropy = soft_cross_entropy(t32(t), t32(t)).item()
    p = ref.softmax(t)
    kl = float(np.sum(p * (ref.log_softmax(t) - ref.log_softmax(s)))) / s.size
    assert cross - entropy >= -1e-5
    np.testing.assert_allclose(cross - entropy, kl, rtol=1e-3, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(a=logits, b=logits, c=st.floats(-10, 10, width=32))
def test_mseloss_scales_quadratically(a, b, c):
    np.testing.assert_allclose(mseloss(t32(a * c), t32(b * c)).item(), c * c * mseloss(t32(a), t32(b)).item(),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_float16_inputs_are_computed_in_float32(scale):
    """Half inputs are upcast before the math (so this runs on CPU too); gradients come back as half."""
    rng = np.random.default_rng(12)
    s = (rng.standard_normal((4, 6)) * scale).astype(np.float16)
    t = (rng.standard_normal((4, 6)) * scale).astype(np.float16)
    student = flow.tensor(s, dtype=flow.float16).requires_grad_()
    loss = pred_distill(None, student, flow.tensor(t, dtype=flow.float16))
    loss.backward()
    assert loss.dtype == flow.float32 and student.grad.dtype == flow.float16
    assert np.isfinite(student.grad.numpy().astype(np.float32)).all()
    np.testing.assert_allclose(loss.item(), ref.soft_cross_entropy(s, t), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(student.grad.numpy().astype(np.float64), ref.soft_cross_entropy_grad(s, t),
                               rtol=1e-3, atol=1e-4)
    masked = [(rng.standard_normal((1, 2, 3, 3)) + np.array([0, 0, -10000.0])).astype(np.float16) for _ in range(2)]
    got = att_distill(None, [flow.tensor(masked[0], dtype=flow.float16)], [flow.tensor(masked[1], dtype=flow.float16)])
    np.testing.assert_allclose(got.item(), ref.att_distill(masked[:1], masked[1:]), rtol=1e-3, atol=1e-5)
