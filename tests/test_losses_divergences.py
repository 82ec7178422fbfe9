"""The divergences of issue 22 item 1 (reverse_kl, js_divergence, skew_kl, skew_reverse_kl, tv_distance) and
the different vocabularies of item 5 (vocab_alignment None/"truncate"/"uld", uld_loss), against numpy float64
references written here from the issue's formulas.

The references work in **probability space** (``M = w P + (1 - w) Q`` formed literally, ``log M = np.log(M)``),
sum only the terms whose own probability is > 0 (``0 log 0 = 0``) and mask by gathering the valid rows
(``reference_peer.reduce_rows``); the package works in log space with log-sum-exp and masks by filling.
"""
import math

import numpy as np
import oneflow as flow
import pytest

import reference_peer as peer
from gradcheck import analytic_grads, assert_gradients_match
from reference import log_softmax, softmax
from knowledge_distill_util import divergences, functional as KF, nn as knn, registry
from knowledge_distill_util.functional import REDUCTIONS

F64 = dict(rtol=1e-9, atol=1e-12)
F32 = dict(rtol=2e-5, atol=5e-5)  # OneFlow 0.9's float32 CPU log_softmax is off by ~30 ulp (tests/test_losses_logits.py)


# --- references (numpy float64, from the formulas) ----------------------------------------------------

def _kl_row(a, b, log_a=None):
    """sum_c a_c log(a_c / b_c) over a_c > 0; ``log_a`` exact log-probabilities when given."""
    total = 0.0
    for c in range(a.shape[-1]):
        if a[c] > 0:
            la = math.log(a[c]) if log_a is None else log_a[c]
            total += a[c] * (la - (math.log(b[c]) if b[c] > 0 else -math.inf))
    return total


def _kl_logs(log_a, log_b):
    """KL from exact log-probabilities (the endpoints: no mixture, so no probability can round to 0)."""
    a = np.exp(log_a)
    return float(sum(a[c] * (log_a[c] - log_b[c]) for c in range(a.shape[-1]) if a[c] > 0))


def ref_rows(name, s_row, t_row, weight=None):
    """One row's loss from scaled logits (student ``s_row``, teacher ``t_row``)."""
    log_q, log_p = log_softmax(s_row), log_softmax(t_row)
    q, p = np.exp(log_q), np.exp(log_p)
    if name == "reverse_kl":
        return _kl_logs(log_q, log_p)
    if name == "js_divergence":
        if weight == 0:
            return _kl_logs(log_p, log_q)
        if weight == 1:
            return _kl_logs(log_q, log_p)
        m = weight * p + (1 - weight) * q
        return weight * _kl_row(p, m, log_p) + (1 - weight) * _kl_row(q, m, log_q)
    if name == "skew_kl":
        return _kl_row(p, weight * p + (1 - weight) * q, log_p) if weight > 0 else _kl_logs(log_p, log_q)
    if name == "skew_reverse_kl":
        return _kl_row(q, (1 - weight) * p + weight * q, log_q) if weight > 0 else _kl_logs(log_q, log_p)
    if name == "tv_distance":
        return 0.5 * float(np.abs(p - q).sum())
    if name == "uld_loss":
        size = max(q.size, p.size)
        sq, sp = np.zeros(size), np.zeros(size)
        sq[:q.size], sp[:p.size] = np.sort(q)[::-1], np.sort(p)[::-1]
        return float(np.abs(sq - sp).sum())
    raise KeyError(name)


def reference(name, s, t, ts=1.0, tt=1.0, reduction="batchmean", scaling=False, mask=None, weight=None):
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    lead = s.shape[:-1]
    ts_arr, tt_arr = np.broadcast_to(np.asarray(ts, np.float64), lead), np.broadcast_to(np.asarray(tt, np.float64), lead)
    rows = np.zeros(lead)
    for idx in np.ndindex(*lead):
        rows[idx] = ref_rows(name, s[idx] / ts_arr[idx], t[idx] / tt_arr[idx], weight)
        if scaling:
            rows[idx] *= ts_arr[idx] * tt_arr[idx]
    return peer.reduce_rows(rows, mask, reduction, max(s.shape[-1], t.shape[-1]))


WEIGHTS = {"js_divergence": ("beta", 0.5), "skew_kl": ("alpha", 0.1), "skew_reverse_kl": ("alpha", 0.1)}
NAMES = ["reverse_kl", "js_divergence", "skew_kl", "skew_reverse_kl", "tv_distance", "uld_loss"]


def call(name, s, t, weight=None, **kw):
    if name in WEIGHTS and weight is not None:
        kw[WEIGHTS[name][0]] = weight
    return getattr(KF, name)(s, t, **kw)


def default_weight(name):
    return WEIGHTS[name][1] if name in WEIGHTS else None


def t64(a):
    return flow.tensor(np.asarray(a, dtype=np.float64))


def t32(a):
    return flow.tensor(np.asarray(a, dtype=np.float32))


# --- values ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", ["plain", "mask_row_temperatures_scaling"])
def test_matches_the_float64_reference(name, reduction, case):
    rng = np.random.default_rng(NAMES.index(name) * 10 + REDUCTIONS.index(reduction))
    s, t = rng.standard_normal((2, 3, 5)) * 2, rng.standard_normal((2, 3, 5)) * 2
    kw, ref_kw = dict(reduction=reduction), dict(reduction=reduction)
    if case != "plain":
        ts, tt, mask = rng.uniform(0.5, 2.5, (2, 3)), 1.5, np.array([[1, 0, 1], [1, 1, 0]], np.float64)
        kw.update(student_temperature=t64(ts), teacher_temperature=tt, temperature_scaling=True, mask=t64(mask))
        ref_kw.update(ts=ts, tt=tt, scaling=True, mask=mask)
    got = call(name, t64(s), t64(t), **kw)
    assert tuple(got.shape) == ((2, 3) if reduction == "none" else ())
    np.testing.assert_allclose(got.numpy(), reference(name, s, t, weight=default_weight(name), **ref_kw), **F64)


@pytest.mark.parametrize("name", NAMES)
def test_float32_matches_the_reference(name):
    rng = np.random.default_rng(1)
    s, t = (rng.standard_normal((4, 7)) * 2).astype(np.float32), (rng.standard_normal((4, 7)) * 2).astype(np.float32)
    got = call(name, t32(s), t32(t), student_temperature=2.0, reduction="none")
    assert got.dtype == flow.float32
    np.testing.assert_allclose(got.numpy(), reference(name, s, t, ts=2.0, reduction="none", weight=default_weight(name)),
                               **F32)


@pytest.mark.parametrize("name, weight", [("js_divergence", 0.1), ("js_divergence", 0.9), ("skew_kl", 0.5),
                                          ("skew_kl", 0.9), ("skew_reverse_kl", 0.5), ("skew_reverse_kl", 0.9)])
def test_other_mixture_weights(name, weight):
    rng = np.random.default_rng(2)
    s, t = rng.standard_normal((3, 6)) * 3, rng.standard_normal((3, 6)) * 3
    np.testing.assert_allclose(call(name, t64(s), t64(t), weight).item(), reference(name, s, t, weight=weight), **F64)


def test_known_values():
    """Disjoint distributions (logits 0 and 30): JSD(0.5) = log 2, skew KLs = -log alpha, TV = 1."""
    s, t = t64([[0.0, 30.0]]), t64([[30.0, 0.0]])
    np.testing.assert_allclose(KF.js_divergence(s, t).item(), math.log(2), rtol=1e-10)  # up to e^-30 terms
    np.testing.assert_allclose(KF.skew_kl(s, t, alpha=0.25).item(), -math.log(0.25), rtol=1e-10)
    np.testing.assert_allclose(KF.skew_reverse_kl(s, t, alpha=0.25).item(), -math.log(0.25), rtol=1e-10)
    np.testing.assert_allclose(KF.tv_distance(s, t).item(), 1.0, rtol=1e-10)
    same = t64([[1.0, -2.0, 0.5]])
    for name in NAMES:
        assert call(name, same, same).item() == pytest.approx(0.0, abs=1e-15), name


def test_jsd_is_symmetric_at_one_half_and_bounded_by_log_2():
    rng = np.random.default_rng(3)
    s, t = t64(rng.standard_normal((5, 8)) * 4), t64(rng.standard_normal((5, 8)) * 4)
    a, b = KF.js_divergence(s, t, reduction="none").numpy(), KF.js_divergence(t, s, reduction="none").numpy()
    np.testing.assert_allclose(a, b, **F64)
    assert (a >= 0).all() and (a <= math.log(2) + 1e-12).all()


# --- the mixture weights' endpoints -----------------------------------------------------------------------

def test_beta_endpoints_are_exactly_forward_and_reverse_kl():
    rng = np.random.default_rng(4)
    s, t = t64(rng.standard_normal((3, 4, 6)) * 3), t64(rng.standard_normal((3, 4, 6)) * 3)
    kw = dict(student_temperature=2.0, teacher_temperature=0.5, reduction="none")
    assert np.array_equal(KF.js_divergence(s, t, beta=1.0, **kw).numpy(), KF.reverse_kl(s, t, **kw).numpy())
    np.testing.assert_allclose(KF.js_divergence(s, t, beta=0.0, **kw).numpy(), KF.kl_div(s, t, **kw).numpy(), **F64)
    np.testing.assert_allclose(KF.js_divergence(s, t, beta=0, **kw).numpy(),
                               reference("js_divergence", s.numpy(), t.numpy(), 2.0, 0.5, "none", weight=0), **F64)
    np.testing.assert_allclose(KF.skew_kl(s, t, alpha=0.0, **kw).numpy(), KF.kl_div(s, t, **kw).numpy(), **F64)
    assert np.array_equal(KF.skew_reverse_kl(s, t, alpha=0.0, **kw).numpy(), KF.reverse_kl(s, t, **kw).numpy())
    for name in ("skew_kl", "skew_reverse_kl"):  # the mixture is the first distribution itself: exactly 0
        assert (call(name, s, t, 1.0, **kw).numpy() == 0).all(), name


@pytest.mark.parametrize("name, weight", [("js_divergence", 0.0), ("js_divergence", 1.0), ("skew_kl", 0.0),
                                          ("skew_kl", 1.0), ("skew_reverse_kl", 0.0), ("skew_reverse_kl", 1.0)])
def test_endpoints_have_finite_gradients_at_huge_logits(name, weight):
    s = t32([[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4]]).requires_grad_()
    t = t32([[-1e4, 1e4, 0.0], [-1e4, 1e4, -1e4]])
    loss = call(name, s, t, weight)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(s.grad.numpy()).all()
    np.testing.assert_allclose(loss.item(), reference(name, s.numpy(), t.numpy(), weight=weight), rtol=1e-5)


# --- gradients ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", ["batchmean", "none"])
def test_gradient_finite_differences(name, reduction):
    rng = np.random.default_rng(5 + NAMES.index(name))
    s, t = rng.standard_normal((2, 3, 4)) * 2, rng.standard_normal((2, 3, 4)) * 2
    ts, tt = t64(rng.uniform(0.5, 2, (2, 3))), t64(rng.uniform(0.5, 2, (2, 3)))
    mask = t64([[1, 1, 0], [1, 0, 1]])

    def loss(a, b):
        out = call(name, a, b, student_temperature=ts, teacher_temperature=tt, reduction=reduction,
                   temperature_scaling=True, mask=mask)
        return out if reduction != "none" else (out * t64(np.arange(1.0, 7.0).reshape(2, 3))).sum()

    assert_gradients_match(loss, [s, t], indices=[0])
    assert analytic_grads(loss, [s, t])[1] is None, "the teacher must receive no gradient"


@pytest.mark.parametrize("name, weight", [("js_divergence", 0.0), ("js_divergence", 0.3), ("js_divergence", 1.0),
                                          ("skew_kl", 0.0), ("skew_reverse_kl", 0.0)])
def test_gradient_finite_differences_of_the_mixture_weights(name, weight):
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal((3, 5)), rng.standard_normal((3, 5))]
    assert_gradients_match(lambda a, b: call(name, a, b, weight, student_temperature=0.7, reduction="sum"),
                           arrays, indices=[0])


# --- extreme inputs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [1e4, -1e4])
def test_huge_logits_are_finite_and_exact(name, scale):
    rng = np.random.default_rng(7)
    s = (rng.choice([-1.0, 1.0], size=(4, 6)) * scale).astype(np.float32)
    t = (rng.choice([-1.0, 1.0], size=(4, 6)) * scale).astype(np.float32)
    student = t32(s).requires_grad_()
    loss = call(name, student, t32(t), student_temperature=t32(np.ones(4)))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(student.grad.numpy()).all()
    np.testing.assert_allclose(loss.item(), reference(name, s, t, weight=default_weight(name)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_classes_at_minus_inf_in_both_inputs_contribute_nothing(name):
    """0 log 0 = 0: a class at -inf on both sides changes neither the value nor the other gradients."""
    s = np.array([[0.5, -np.inf, 2.0], [1.0, -np.inf, -1.0]], np.float32)
    t = np.array([[1.5, -np.inf, 0.0], [0.0, -np.inf, 1.0]], np.float32)
    student = t32(s).requires_grad_()
    loss = call(name, student, t32(t), temperature_scaling=True, student_temperature=4.0, teacher_temperature=4.0)
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(student.grad.numpy()).all()
    assert (student.grad.numpy()[:, 1] == 0).all()
    keep = [0, 2]
    finite = call(name, t32(s[:, keep]), t32(t[:, keep]), temperature_scaling=True, student_temperature=4.0,
                  teacher_temperature=4.0)
    np.testing.assert_allclose(loss.item(), finite.item(), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_float16_is_computed_in_float32(name):
    rng = np.random.default_rng(8)
    s, t = (rng.standard_normal((4, 6)) * 3).astype(np.float16), (rng.standard_normal((4, 6)) * 3).astype(np.float16)
    student = flow.tensor(s, dtype=flow.float16).requires_grad_()
    loss = call(name, student, flow.tensor(t, dtype=flow.float16), mask=t32([1, 1, 0, 1]))
    loss.backward()
    assert loss.dtype == flow.float32 and student.grad.dtype == flow.float16
    assert np.isfinite(student.grad.numpy().astype(np.float32)).all()
    np.testing.assert_allclose(loss.item(), reference(name, s, t, mask=[1, 1, 0, 1], weight=default_weight(name)),
                               rtol=1e-4, atol=1e-5)


# --- masks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_masked_rows_do_not_matter_and_no_valid_row_gives_zero(name):
    s = np.array([[0.0, 1.0, 2.0], [np.nan, np.inf, 0.0]], np.float32)
    t = np.array([[2.0, 1.0, 0.0], [np.nan, 0.0, 0.0]], np.float32)
    mask = t32([1, 0])
    for reduction in ("mean", "batchmean", "sum"):
        got = call(name, t32(s), t32(t), mask=mask, reduction=reduction).item()
        want = reference(name, s[:1], t[:1], reduction=reduction, weight=default_weight(name))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=reduction)
    assert call(name, t32(s), t32(t), mask=mask, reduction="none").numpy()[1] == 0
    for reduction in REDUCTIONS:
        assert (call(name, t32(s[:1]), t32(t[:1]), mask=t32([0]), reduction=reduction).numpy() == 0).all()


# --- different vocabularies (item 5) --------------------------------------------------------------------

LOGIT_LOSSES = ["soft_cross_entropy", "kl_div"] + NAMES[:-1]


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_different_vocabularies_stop_with_one_sentence_naming_both_sizes(name):
    with pytest.raises(ValueError, match=r"^the student's logits \(predicts\) have a vocabulary of 7 ids but the "
                                         r"teacher's \(targets\) have 5; pass vocab_alignment=\"truncate\" to compare "
                                         r"the shared first 5 ids or vocab_alignment=\"uld\" for the universal logit "
                                         r"distillation distance$"):
        getattr(KF, name)(flow.zeros(2, 3, 7), flow.zeros(2, 3, 5))


@pytest.mark.parametrize("name", LOGIT_LOSSES)
@pytest.mark.parametrize("sizes", [(7, 5), (4, 6), (5, 5)])
def test_truncate_compares_the_shared_first_ids_renormalised(name, sizes):
    rng = np.random.default_rng(9)
    s, t = rng.standard_normal((3, sizes[0])) * 2, rng.standard_normal((3, sizes[1])) * 2
    shared = min(sizes)
    got = getattr(KF, name)(t64(s), t64(t), vocab_alignment="truncate", reduction="sum")
    want = getattr(KF, name)(t64(s[:, :shared]), t64(t[:, :shared]), reduction="sum")
    assert got.item() == want.item()
    if name in NAMES:
        np.testing.assert_allclose(got.item(), reference(name, s[:, :shared], t[:, :shared], reduction="sum",
                                                         weight=default_weight(name)), **F64)


@pytest.mark.parametrize("sizes", [(7, 5), (4, 9), (6, 6)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_uld_matches_the_reference(sizes, reduction):
    rng = np.random.default_rng(10)
    s, t = rng.standard_normal((2, 3, sizes[0])) * 2, rng.standard_normal((2, 3, sizes[1])) * 2
    mask = np.array([[1, 1, 0], [0, 1, 1]], np.float64)
    got = KF.uld_loss(t64(s), t64(t), student_temperature=2.0, reduction=reduction, mask=t64(mask))
    np.testing.assert_allclose(got.numpy(), reference("uld_loss", s, t, ts=2.0, reduction=reduction, mask=mask), **F64)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_vocab_alignment_uld_makes_every_logit_loss_the_uld_distance(name):
    rng = np.random.default_rng(11)
    s, t = t64(rng.standard_normal((3, 4))), t64(rng.standard_normal((3, 8)))
    kw = dict(student_temperature=1.5, reduction="mean", temperature_scaling=True)
    assert getattr(KF, name)(s, t, vocab_alignment="uld", **kw).item() == KF.uld_loss(s, t, **kw).item()


def test_uld_gradient_finite_differences_and_no_teacher_gradient():
    rng = np.random.default_rng(12)
    arrays = [rng.standard_normal((3, 4)), rng.standard_normal((3, 7))]
    fn = lambda a, b: KF.kl_div(a, b, vocab_alignment="uld", student_temperature=1.3)  # noqa: E731
    assert_gradients_match(fn, arrays, indices=[0])
    assert analytic_grads(fn, arrays)[1] is None


# --- bad input ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kwargs, error, message", [
    ("js_divergence", dict(beta=1.5), ValueError, r"beta must be a number in \[0, 1\] \(0 = KL\(P \|\| Q\), 1 = KL\(Q \|\| P\)\), got 1.5"),
    ("js_divergence", dict(beta=-0.1), ValueError, r"beta must be a number in \[0, 1\] .*got -0.1"),
    ("js_divergence", dict(beta=float("nan")), ValueError, r"beta must be a number in \[0, 1\] .*got nan"),
    ("js_divergence", dict(beta=True), TypeError, r"beta must be a number in \[0, 1\] .*got True \(bool\)"),
    ("js_divergence", dict(beta="0.5"), TypeError, r"beta must be a number in \[0, 1\] .*got '0.5' \(str\)"),
    ("skew_kl", dict(alpha=2), ValueError, r"alpha must be a number in \[0, 1\] \(0 = KL\(P \|\| Q\), 1 = 0\), got 2"),
    ("skew_reverse_kl", dict(alpha=-1e-9), ValueError, r"alpha must be a number in \[0, 1\] .*got -1e-09"),
    ("skew_reverse_kl", dict(alpha=None), TypeError, r"alpha must be a number in \[0, 1\] .*got None \(NoneType\)"),
    ("reverse_kl", dict(reduction="avg"), ValueError, r"reduction must be one of 'mean', 'batchmean', 'sum', 'none'; got 'avg'"),
    ("tv_distance", dict(mask=flow.ones(3)), ValueError, r"mask has shape \(3,\) but must have shape \(2,\)"),
    ("tv_distance", dict(mask=flow.ones(2, 1)), ValueError, r"mask has shape \(2, 1\) but must have shape \(2,\)"),
    ("reverse_kl", dict(mask=flow.tensor([1.0, 0.5])), ValueError, r"mask must hold only 0 and 1"),
    ("skew_kl", dict(student_temperature=0.0), ValueError, r"student_temperature must be a finite number >= 0.0001"),
    ("js_divergence", dict(temperature_scaling=1), TypeError, r"temperature_scaling must be True or False, got 1"),
    ("tv_distance", dict(vocab_alignment="pad"), ValueError,
     r"vocab_alignment must be None \(equal vocabularies\), \"truncate\" or \"uld\"; got 'pad'"),
    ("kl_div", dict(vocab_alignment="pad"), ValueError, r"vocab_alignment must be None .*got 'pad'"),
])
def test_bad_input_is_named(name, kwargs, error, message):
    with pytest.raises(error, match=message):
        getattr(KF, name)(flow.zeros(2, 3), flow.zeros(2, 3), **kwargs)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("s, t, error, message", [
    (flow.zeros(2, 3), flow.zeros(3, 3), ValueError, r"predicts has shape \(2, 3\) but targets has shape \(3, 3\)"),
    (flow.zeros(2, 3), flow.zeros(2, 1, 3), ValueError, r"predicts has shape \(2, 3\) but targets has shape \(2, 1, 3\)"),
    (flow.zeros(2, 3), flow.zeros(2, 4).double(), TypeError, r"predicts has dtype oneflow.float32 but targets has dtype"),
    (flow.zeros(2, 3), [[0.0] * 3] * 2, TypeError, r"targets must be a oneflow.Tensor, got list"),
    (flow.zeros(2, 0), flow.zeros(2, 3), ValueError, r"predicts is empty \(shape \(2, 0\)\)"),
    (flow.zeros(2, 3, dtype=flow.int64), flow.zeros(2, 3, dtype=flow.int64), TypeError,
     r"predicts must be a floating-point tensor"),
])
def test_bad_tensors_are_named(name, s, t, error, message):
    with pytest.raises(error, match=message):
        getattr(KF, name)(s, t, vocab_alignment="truncate") if name != "uld_loss" else KF.uld_loss(s, t)


# --- re-exports, registry, Modules ----------------------------------------------------------------------

def test_functional_reexports_and_registry():
    for name in NAMES:
        assert getattr(KF, name) is getattr(divergences, name) and name in KF.__all__
        assert registry.get_loss(name) is getattr(KF, name)


MODULES = [
    (knn.ReverseKLLoss(2.0, 1.5, temperature_scaling=True), lambda s, t, **kw: KF.reverse_kl(
        s, t, student_temperature=2.0, teacher_temperature=1.5, temperature_scaling=True, **kw)),
    (knn.JSDivergenceLoss(beta=0.2, reduction="sum"), lambda s, t, **kw: KF.js_divergence(s, t, beta=0.2, reduction="sum", **kw)),
    (knn.SkewKLLoss(alpha=0.3), lambda s, t, **kw: KF.skew_kl(s, t, alpha=0.3, **kw)),
    (knn.SkewReverseKLLoss(), lambda s, t, **kw: KF.skew_reverse_kl(s, t, **kw)),
    (knn.TVDistanceLoss(reduction="mean"), lambda s, t, **kw: KF.tv_distance(s, t, reduction="mean", **kw)),
    (knn.ULDLoss(), KF.uld_loss),
    (knn.KLDivLoss(vocab_alignment="truncate"), lambda s, t, **kw: KF.kl_div(s, t, vocab_alignment="truncate", **kw)),
]


@pytest.mark.parametrize("case", range(len(MODULES)))
def test_module_equals_function(case):
    module, fn = MODULES[case]
    rng = np.random.default_rng(case)
    s, t, mask = t32(rng.standard_normal((4, 6))), t32(rng.standard_normal((4, 6 if case < 5 else 9))), t32([1, 0, 1, 1])
    assert module(s, t, mask=mask).item() == fn(s, t, mask=mask).item()


def test_module_reprs_and_validation():
    assert repr(knn.SkewKLLoss()) == ("SkewKLLoss(student_temperature=1.0, teacher_temperature=1.0, reduction='batchmean', "
                                      "temperature_scaling=False, alpha=0.1)")
    assert repr(knn.TVDistanceLoss(vocab_alignment="uld")).endswith("temperature_scaling=False, vocab_alignment='uld')")
    assert knn.JSDivergenceLoss().beta == 0.5 and knn.ReverseKLLoss().reduction == "batchmean"
    with pytest.raises(ValueError, match=r"beta must be a number in \[0, 1\] .*got 1.01"):
        knn.JSDivergenceLoss(beta=1.01)
    with pytest.raises(ValueError, match=r"vocab_alignment must be None .*got 'cut'"):
        knn.ReverseKLLoss(vocab_alignment="cut")


# --- nn.Graph = eager -----------------------------------------------------------------------------------

@pytest.mark.graph
def test_graph_training_step_equals_eager():
    """One compiled graph: every divergence (masks, per-row temperatures, the weights' endpoints, truncate and
    ULD over different vocabularies) summed into one loss and an SGD step; values and updated weights equal
    eager mode's."""
    rng = np.random.default_rng(13)
    x, teacher, wide = t32(rng.standard_normal((3, 4))), t32(rng.standard_normal((3, 5)) * 2), t32(rng.standard_normal((3, 8)))
    temps, mask = t32([1.0, 2.0, 0.5]), t32([1, 0, 1])

    def losses(head, x, teacher, wide, temps, mask):
        s = head(x)
        values = [KF.reverse_kl(s, teacher, student_temperature=temps, mask=mask, temperature_scaling=True)]
        values += [KF.js_divergence(s, teacher, beta=b, mask=mask) for b in (0.0, 0.5, 1.0)]
        values += [KF.skew_kl(s, teacher, alpha=a, reduction="sum") for a in (0.0, 0.1)]
        values += [KF.skew_reverse_kl(s, teacher, teacher_temperature=temps), KF.tv_distance(s, teacher, reduction="mean")]
        values += [KF.kl_div(s, wide, vocab_alignment="truncate", mask=mask), KF.uld_loss(s, wide, mask=mask),
                   KF.js_divergence(s * 1e4, teacher * 1e4)]
        return flow.stack(values)

    heads = {}
    for mode in ("eager", "graph"):
        flow.manual_seed(0)
        heads[mode] = flow.nn.Linear(4, 5)
    eager_opt = flow.optim.SGD(heads["eager"].parameters(), lr=0.5)
    eager = losses(heads["eager"], x, teacher, wide, temps, mask)
    eager.sum().backward()
    eager_opt.step()
    graph_opt = flow.optim.SGD(heads["graph"].parameters(), lr=0.5)

    class Step(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.head = heads["graph"]
            self.add_optimizer(graph_opt)

        def build(self, *tensors):
            values = losses(self.head, *tensors)
            values.sum().backward()
            return values

    got = Step()(x, teacher, wide, temps, mask)
    assert np.isfinite(eager.numpy()).all()
    np.testing.assert_allclose(got.numpy(), eager.detach().numpy(), rtol=1e-5, atol=1e-5)
    for key, value in heads["eager"].state_dict().items():
        np.testing.assert_allclose(heads["graph"].state_dict()[key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=key)
