"""soft_cross_entropy / kl_div with reductions, masks, per-row temperatures and T² scaling, and
average_logits, against the numpy float64 references in tests/reference_peer.py (issue 11, items 1, 2, 11)."""
import numpy as np
import oneflow as flow
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import reference as ref
import reference_peer as peer
from gradcheck import analytic_grads, assert_gradients_match
from knowledge_distill_util import soft_cross_entropy
from knowledge_distill_util.functional import REDUCTIONS, average_logits, kl_div

F32 = dict(rtol=1.3e-6, atol=1e-5)
F64 = dict(rtol=1e-7, atol=1e-7)
# OneFlow 0.9's float32 CPU log_softmax is off by up to ~4e-6 on log-probabilities of O(1) logits (about
# 30 ulp; its float64 kernel is exact to the reference, and ``x - logsumexp(x)`` is 100x slower), so
# float32 row losses (reduction "none"/"sum", T² scaling up to 6x) are compared at rtol 1e-5, atol 5e-5; the formula
# itself is pinned in float64 at rtol 1e-7.
F32_ROWS = dict(rtol=1e-5, atol=5e-5)
LOSSES = {"soft_cross_entropy": (soft_cross_entropy, peer.soft_cross_entropy),
          "kl_div": (kl_div, peer.kl_div)}


def t32(array):
    return flow.tensor(np.asarray(array, dtype=np.float32))


def t64(array):
    return flow.tensor(np.asarray(array, dtype=np.float64))


def padding_mask(shape, rng):
    """0/1 over the leading dims, with a padded tail and (for 2-D leading shapes) a fully padded sequence."""
    mask = (rng.random(shape) > 0.3).astype(np.float32)
    mask.reshape(-1)[0] = 1.0
    if len(shape) == 2:
        mask[-1] = 0.0
    return mask


def temperatures(kind, lead, rng):
    """Temperatures that keep the scaled logits O(1): float32 log_softmax of logits near 20 is off by
    about one ulp of 20 (2e-6), which would exceed the float32 tolerance for reasons that are not the loss's."""
    if kind == "number":
        return 2.0, 1.5
    return (rng.uniform(1.0, 2.5, lead).astype(np.float32), rng.uniform(1.0, 2.5, lead).astype(np.float32))


def as_tensor(value):
    return t32(value) if isinstance(value, np.ndarray) else value


# --- values ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 6)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("temperature", ["number", "per_row"])
@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("scaling", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_matches_reference(name, shape, reduction, temperature, use_mask, scaling, dtype):
    fn, reference = LOSSES[name]
    rng = np.random.default_rng(len(shape) * 1000 + REDUCTIONS.index(reduction) * 100 + use_mask * 10 + scaling)
    s, t = (rng.standard_normal(shape) * 2).astype(dtype), (rng.standard_normal(shape) * 2).astype(dtype)
    lead = shape[:-1]
    ts, tt = temperatures(temperature, lead, rng)
    ts, tt = (x.astype(dtype) if isinstance(x, np.ndarray) else x for x in (ts, tt))
    mask = padding_mask(lead, rng) if use_mask else None
    tensor = lambda a: flow.tensor(a)  # noqa: E731 (keeps the array's dtype)
    got = fn(tensor(s), tensor(t), student_temperature=tensor(ts) if isinstance(ts, np.ndarray) else ts,
             teacher_temperature=tensor(tt) if isinstance(tt, np.ndarray) else tt,
             reduction=reduction, temperature_scaling=scaling, mask=None if mask is None else t32(mask))
    want = reference(s, t, ts, tt, reduction, scaling, mask)
    assert tuple(got.shape) == (lead if reduction == "none" else ())
    tolerance = F64 if dtype == "float64" else (F32 if reduction in ("mean", "batchmean") else F32_ROWS)
    np.testing.assert_allclose(got.numpy(), want, **tolerance)


def test_soft_cross_entropy_defaults_keep_the_original_value():
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((6, 9)).astype(np.float32), rng.standard_normal((6, 9)).astype(np.float32)
    np.testing.assert_allclose(soft_cross_entropy(t32(s), t32(t)).item(), ref.soft_cross_entropy(s, t), **F32)
    ones = t32(np.ones(6))  # an all-valid mask takes the plain path: the same value
    np.testing.assert_allclose(soft_cross_entropy(t32(s), t32(t), mask=ones).item(),
                               soft_cross_entropy(t32(s), t32(t)).item(), **F32)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "sum"])
def test_kernel_path_equals_plain_path_for_every_scalar_reduction(name, reduction):
    """Number temperatures without a mask use the memory-lean kernel; an all-ones mask the plain formula."""
    fn = LOSSES[name][0]
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((4, 3, 5)) * 4, rng.standard_normal((4, 3, 5)) * 4
    kw = dict(student_temperature=1.5, teacher_temperature=3.0, reduction=reduction, temperature_scaling=True)
    grads = []
    for mask in (None, t64(np.ones((4, 3)))):
        student = t64(s).requires_grad_()
        loss = fn(student, t64(t), mask=mask, **kw)
        loss.backward()
        grads.append((loss.item(), student.grad.numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0], rtol=1e-12)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-14)


def test_kl_div_defaults_are_batchmean_without_scaling():
    rng = np.random.default_rng(2)
    s, t = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    p = ref.softmax(t)
    want = float(np.sum(p * (ref.log_softmax(t) - ref.log_softmax(s)))) / 4
    np.testing.assert_allclose(kl_div(t32(s), t32(t)).item(), want, **F32)


def test_hinton_t_squared():
    rng = np.random.default_rng(3)
    s, t = t32(rng.standard_normal((4, 5))), t32(rng.standard_normal((4, 5)))
    plain = kl_div(s, t, student_temperature=4.0, teacher_temperature=4.0).item()
    scaled = kl_div(s, t, student_temperature=4.0, teacher_temperature=4.0, temperature_scaling=True).item()
    np.testing.assert_allclose(scaled, 16.0 * plain, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_per_row_temperatures_equal_rows_computed_one_by_one(name):
    fn = LOSSES[name][0]
    rng = np.random.default_rng(4)
    s, t = t32(rng.standard_normal((5, 6)) * 2), t32(rng.standard_normal((5, 6)) * 2)
    ts, tt = rng.uniform(0.3, 4, 5).astype(np.float32), rng.uniform(0.3, 4, 5).astype(np.float32)
    rows = fn(s, t, student_temperature=t32(ts), teacher_temperature=t32(tt), reduction="none").numpy()
    for i in range(5):
        one = fn(s[i:i + 1], t[i:i + 1], student_temperature=float(ts[i]), teacher_temperature=float(tt[i]),
                 reduction="sum").item()
        np.testing.assert_allclose(rows[i], one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mask_without_valid_rows_gives_zero(name, reduction):
    fn = LOSSES[name][0]
    s = t32(np.random.default_rng(5).standard_normal((2, 3, 4)))
    got = fn(s, s * 2, mask=flow.zeros(2, 3, dtype=flow.bool), reduction=reduction)
    assert np.all(got.numpy() == 0)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_masked_rows_do_not_matter(name):
    """Padding rows may hold anything, even inf/NaN logits: they contribute nothing."""
    fn = LOSSES[name][0]
    rng = np.random.default_rng(6)
    s, t = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 4, 5))
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0]])
    base = fn(t32(s), t32(t), mask=t32(mask), reduction="batchmean").item()
    s[0, 2], t[1, 3] = np.nan, np.inf
    np.testing.assert_allclose(fn(t32(s), t32(t), mask=t32(mask), reduction="batchmean").item(), base, **F32)
    gathered = fn(t32(s[mask > 0]), t32(t[mask > 0]), reduction="batchmean").item()
    np.testing.assert_allclose(base, gathered, **F32)


@pytest.mark.parametrize("dtype", [flow.bool, flow.int64, flow.int32, flow.uint8, flow.float64])
def test_mask_of_any_numeric_or_bool_dtype(dtype):
    rng = np.random.default_rng(7)
    s, t = t32(rng.standard_normal((3, 4))), t32(rng.standard_normal((3, 4)))
    mask = np.array([1, 0, 1])
    want = kl_div(s, t, mask=t32(mask)).item()
    np.testing.assert_allclose(kl_div(s, t, mask=flow.tensor(mask).to(dtype)).item(), want, rtol=0, atol=0)


# --- gradients ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_finite_differences_with_mask_and_row_temperatures(name, reduction):
    fn = LOSSES[name][0]
    rng = np.random.default_rng(8)
    s, t = rng.standard_normal((2, 3, 4)) * 2, rng.standard_normal((2, 3, 4)) * 2
    ts, tt = t64(rng.uniform(0.5, 2, (2, 3))), t64(rng.uniform(0.5, 2, (2, 3)))
    mask = t64([[1, 1, 0], [1, 0, 1]])

    def loss(a, b):
        out = fn(a, b, student_temperature=ts, teacher_temperature=tt, reduction=reduction,
                 temperature_scaling=True, mask=mask)
        return out if reduction != "none" else (out * t64(np.arange(1.0, 7.0).reshape(2, 3))).sum()

    assert_gradients_match(loss, [s, t], indices=[0])
    assert analytic_grads(loss, [s, t])[1] is None, "the teacher must receive no gradient"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_finite_differences_number_temperatures(name):
    fn = LOSSES[name][0]
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal((3, 5)), rng.standard_normal((3, 5))]
    assert_gradients_match(lambda a, b: fn(a, b, student_temperature=0.7, teacher_temperature=2.0,
                                           reduction="sum"), arrays, indices=[0])


def test_gradient_closed_form_of_kl_equals_cross_entropy():
    rng = np.random.default_rng(10)
    s, t = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    g_kl = analytic_grads(lambda a, b: kl_div(a, b, student_temperature=2.0, reduction="mean"), [s, t])[0]
    np.testing.assert_allclose(g_kl, ref.soft_cross_entropy_grad(s, t, 2.0, 1.0), rtol=1e-7, atol=1e-12)


# --- extreme inputs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction, mask", [("batchmean", None), ("sum", None), ("batchmean", [1, 1]),
                                             ("none", None)])
def test_classes_at_minus_inf_in_both_inputs_stay_finite(name, reduction, mask):
    """A class at -inf in student and teacher contributes 0 (value and gradient), kernel and plain path."""
    fn, reference = LOSSES[name]
    s = np.array([[0.5, -np.inf, 2.0], [1.0, 0.0, -1.0]], np.float32)
    t = np.array([[1.5, -np.inf, 0.0], [0.0, 2.0, 1.0]], np.float32)
    student = t32(s).requires_grad_()
    got = fn(student, t32(t), reduction=reduction, mask=None if mask is None else t32(mask))
    got.sum().backward()
    assert np.isfinite(got.numpy()).all() and np.isfinite(student.grad.numpy()).all()
    np.testing.assert_allclose(got.numpy(), reference(s, t, reduction=reduction), **F32)
    assert student.grad.numpy()[0, 1] == 0


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_huge_logits_are_finite(name, scale):
    fn, reference = LOSSES[name]
    rng = np.random.default_rng(11)
    s = (rng.choice([-1.0, 1.0], size=(4, 6)) * scale).astype(np.float32)
    t = (rng.choice([-1.0, 1.0], size=(4, 6)) * scale).astype(np.float32)
    ts = t32(np.full(4, 1.0))  # per-row temperatures: the plain path
    student = t32(s).requires_grad_()
    loss = fn(student, t32(t), student_temperature=ts, reduction="batchmean")
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(student.grad.numpy()).all()
    np.testing.assert_allclose(loss.item(), reference(s, t, reduction="batchmean"), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("temperature", [1e-3, 1e3])
def test_extreme_temperatures(name, temperature):
    fn, reference = LOSSES[name]
    rng = np.random.default_rng(12)
    s, t = (rng.standard_normal((3, 5)) * 5).astype(np.float32), (rng.standard_normal((3, 5)) * 5).astype(np.float32)
    got = fn(t32(s), t32(t), student_temperature=t32(np.full(3, temperature)), teacher_temperature=temperature,
             reduction="sum")
    np.testing.assert_allclose(got.item(), reference(s, t, temperature, temperature, "sum"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_float16_is_computed_in_float32(name):
    fn, reference = LOSSES[name]
    rng = np.random.default_rng(13)
    s, t = rng.standard_normal((4, 6)).astype(np.float16), rng.standard_normal((4, 6)).astype(np.float16)
    student = flow.tensor(s, dtype=flow.float16).requires_grad_()
    loss = fn(student, flow.tensor(t, dtype=flow.float16), mask=t32([1, 1, 0, 1]), reduction="batchmean")
    loss.backward()
    assert loss.dtype == flow.float32 and student.grad.dtype == flow.float16
    np.testing.assert_allclose(loss.item(), reference(s, t, reduction="batchmean", mask=[1, 1, 0, 1]),
                               rtol=1e-3, atol=1e-5)


def test_nan_in_a_valid_row_propagates():
    nan = t32([[np.nan, 0.0], [0.0, 1.0]])
    assert np.isnan(kl_div(nan, t32([[0.0, 1.0], [0.0, 1.0]]), mask=t32([1, 1])).item())
    assert np.isnan(kl_div(nan, t32([[0.0, 1.0], [0.0, 1.0]])).item())


# --- properties --------------------------------------------------------------------------------------

logits = hnp.arrays(np.float32, (3, 4), elements=st.floats(-30, 30, width=32))


@settings(max_examples=25, deadline=None)
@given(s=logits, t=logits)
def test_kl_is_cross_entropy_minus_entropy_and_nonnegative(s, t):
    kl = kl_div(t32(s), t32(t), reduction="sum").item()
    cross = soft_cross_entropy(t32(s), t32(t), reduction="sum").item()
    entropy = soft_cross_entropy(t32(t), t32(t), reduction="sum").item()
    assert kl >= -1e-5
    np.testing.assert_allclose(kl, cross - entropy, rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(s=logits, t=logits, shift=st.floats(-50, 50, width=32))
def test_kl_is_shift_invariant(s, t, shift):
    np.testing.assert_allclose(kl_div(t32(s + shift), t32(t - shift)).item(), kl_div(t32(s), t32(t)).item(),
                               rtol=1e-4, atol=1e-4)


# --- multi-teacher ------------------------------------------------------------------------------------

@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5], [0, 1, 0]])
def test_average_logits_matches_reference(weights):
    rng = np.random.default_rng(14)
    teachers = [rng.standard_normal((3, 5)).astype(np.float32) for _ in range(3)]
    got = average_logits([t32(x) for x in teachers], weights=weights)
    np.testing.assert_allclose(got.numpy(), peer.average_logits(teachers, weights), **F32)


def test_average_logits_feeds_any_loss():
    rng = np.random.default_rng(15)
    s, a, b = (rng.standard_normal((2, 4)).astype(np.float32) for _ in range(3))
    got = kl_div(t32(s), average_logits([t32(a), t32(b)], weights=[3, 1]))
    np.testing.assert_allclose(got.item(), peer.kl_div(s, (3 * a + b) / 4), **F32)


# --- validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("kwargs, error, message", [
    (dict(reduction="avg"), ValueError, r"reduction must be one of 'mean', 'batchmean', 'sum', 'none'; got 'avg'"),
    (dict(mask=flow.ones(3)), ValueError, r"mask has shape \(3,\) but must have shape \(2,\)"),
    (dict(mask=flow.ones(2, 1)), ValueError, r"mask has shape \(2, 1\) but must have shape \(2,\)"),
    (dict(mask=flow.tensor([0.5, 1.0])), ValueError, r"mask must hold only 0 and 1"),
    (dict(mask=flow.tensor([2, 1])), ValueError, r"mask must hold only 0 and 1"),
    (dict(mask=[1, 0]), TypeError, r"mask must be a oneflow.Tensor of 0/1 values"),
    (dict(student_temperature=flow.ones(3)), ValueError,
     r"student_temperature is a tensor of shape \(3,\) but a per-row temperature must have the leading shape"),
    (dict(teacher_temperature=flow.tensor([1.0, -1.0])), ValueError,
     r"teacher_temperature must hold finite temperatures > 0, got min -1.0"),
    (dict(student_temperature=flow.tensor([1, 2])), TypeError, r"student_temperature must be a floating-point"),
    (dict(student_temperature=0.0), ValueError, r"student_temperature must be a finite number >= 0.0001"),
    (dict(temperature_scaling="yes"), TypeError, r"temperature_scaling must be True or False"),
])
def test_bad_input_is_named(name, kwargs, error, message):
    fn = LOSSES[name][0]
    with pytest.raises(error, match=message):
        fn(flow.zeros(2, 3), flow.zeros(2, 3), **kwargs)


def test_average_logits_bad_input():
    a = flow.zeros(2, 3)
    with pytest.raises(ValueError, match=r"teacher_logits is empty; pass one tensor per layer"):
        average_logits([])
    with pytest.raises(TypeError, match=r"teacher_logits must be a list or tuple of tensors"):
        average_logits(a)
    with pytest.raises(ValueError, match=r"weights has 1 entries but there are 2 teachers"):
        average_logits([a, a], weights=[1.0])
    with pytest.raises(ValueError, match=r"weights\[1\] must be a finite number >= 0, got -1"):
        average_logits([a, a], weights=[1.0, -1])
    with pytest.raises(ValueError, match=r"weights sum to 0.0; at least one teacher needs a positive weight"):
        average_logits([a, a], weights=[0, 0])
    with pytest.raises(ValueError, match=r"teacher_logits\[0\] has shape \(2, 3\) but teacher_logits\[1\] has shape"):
        average_logits([a, flow.zeros(2, 4)])
    with pytest.raises(TypeError, match=r"weights must be a list of numbers"):
        average_logits([a, a], weights=flow.ones(2))
