"""knowledge_distill_util.sparse_losses: sparse_kl_div and sparse_js_divergence against float64 NumPy
references written over the full vocabulary (the teacher's top-k completed with zeros, or with its tail
mass spread uniformly, as DistillKit's missing_probability_handling), the dense kl_div at k = V,
finite-difference gradients, extreme logits and bad input."""
import math

import numpy as np
import oneflow as flow
import pytest

from gradcheck import assert_gradients_match
from knowledge_distill_util import available_losses
from knowledge_distill_util.functional import kl_div, sparse_js_divergence, sparse_kl_div

V, K = 11, 4


def log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def full_distributions(student, teacher, k, temperature, missing):
    """float64 P (the sparse teacher completed over all V ids) and Q (the student; with "uniform" its tail
    spread uniformly too, DistillKit's symmetric assumption), each [..., V]."""
    student, teacher = student / temperature, teacher / temperature
    ids = np.argsort(-teacher, axis=-1)[..., :k]
    q = np.exp(log_softmax(student))
    in_top = np.zeros(teacher.shape, bool)
    np.put_along_axis(in_top, ids, True, axis=-1)
    if missing == "zero":
        a = np.where(in_top, teacher, -np.inf)
        p = np.exp(log_softmax(a))
        return p, q, ids
    p_full = np.exp(log_softmax(teacher))
    tail = max(V - k, 1)
    p = np.where(in_top, p_full, (1 - (p_full * in_top).sum(-1, keepdims=True)) / tail)
    q = np.where(in_top, q, (1 - (q * in_top).sum(-1, keepdims=True)) / tail)
    return p, q, ids


def kl_rows(p, q):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(-1)


def jsd_rows(p, q, beta):
    if beta == 0:
        return kl_rows(p, q)
    if beta == 1:
        return kl_rows(q, p)
    m = beta * p + (1 - beta) * q
    return beta * kl_rows(p, m) + (1 - beta) * kl_rows(q, m)


def inputs(seed=0, shape=(2, 3), scale=3.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape + (V,)) * scale, rng.normal(size=shape + (V,)) * scale


def sparse_args(teacher, k, temperature=1.0, dtype=flow.float64):
    t = flow.tensor(teacher, dtype=dtype)
    values, ids = flow.topk(t, k, dim=-1)
    lse = flow.logsumexp(t / temperature, dim=-1)
    return values, ids.to(flow.int32), lse


@pytest.mark.parametrize("missing, beta", [(m, b) for m in ("zero", "uniform") for b in (None, 0.0, 0.3, 0.5, 1.0)
                                           if (m, b) != ("zero", 1.0)])  # refused (infinite): tested below
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_the_losses_equal_the_float64_full_vocabulary_reference(missing, beta, temperature):
    student, teacher = inputs()
    p, q, _ = full_distributions(student, teacher, K, temperature, missing)
    expected = kl_rows(p, q) if beta is None else jsd_rows(p, q, beta)
    values, ids, lse = sparse_args(teacher, K, temperature)
    s = flow.tensor(student, dtype=flow.float64)
    kwargs = dict(temperature=temperature, missing=missing, teacher_logsumexp=lse, reduction="none")
    got = sparse_kl_div(s, values, ids, **kwargs) if beta is None else \
        sparse_js_divergence(s, values, ids, beta=beta, **kwargs)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["batchmean", "mean", "sum", "none"])
def test_zero_at_k_equal_to_v_is_the_dense_kl_div(reduction):
    student, teacher = inputs(1)
    mask = flow.tensor([[1, 0, 1], [1, 1, 0]])
    s, t = flow.tensor(student, dtype=flow.float64), flow.tensor(teacher, dtype=flow.float64)
    values, ids = flow.topk(t, V, dim=-1)
    common = dict(reduction=reduction, temperature_scaling=True, mask=mask)
    dense = kl_div(s, t, student_temperature=2.0, teacher_temperature=2.0, **common)
    sparse = sparse_kl_div(s, values, ids, temperature=2.0, **common)
    np.testing.assert_allclose(sparse.numpy(), dense.numpy(), rtol=1e-10, atol=1e-12)
    unmasked = sparse_kl_div(s, values, ids, reduction=reduction)
    np.testing.assert_allclose(unmasked.numpy(), kl_div(s, t, reduction=reduction).numpy(), rtol=1e-10, atol=1e-12)


def test_reductions_masks_and_temperature_scaling_against_the_reference():
    student, teacher = inputs(2)
    p, q, _ = full_distributions(student, teacher, K, 2.0, "uniform")
    mask = np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float64)
    rows = kl_rows(p, q) * 4.0 * mask
    values, ids, lse = sparse_args(teacher, K, 2.0)
    s = flow.tensor(student, dtype=flow.float64)
    kwargs = dict(temperature=2.0, missing="uniform", teacher_logsumexp=lse, temperature_scaling=True,
                  mask=flow.tensor(mask))
    for reduction, expected in [("sum", rows.sum()), ("batchmean", rows.sum() / 4), ("mean", rows.sum() / (4 * V))]:
        got = sparse_kl_div(s, values, ids, reduction=reduction, **kwargs).item()
        assert got == pytest.approx(expected, rel=1e-10), reduction


@pytest.mark.parametrize("missing", ["zero", "uniform"])
@pytest.mark.parametrize("beta", [None, 0.4])
def test_finite_difference_gradients(missing, beta):
    student, teacher = inputs(3, shape=(2,), scale=1.5)
    values, ids, lse = sparse_args(teacher, K, 1.5)

    def loss(s):
        kwargs = dict(temperature=1.5, missing=missing, teacher_logsumexp=lse)
        if beta is None:
            return sparse_kl_div(s, values, ids, **kwargs)
        return sparse_js_divergence(s, values, ids, beta=beta, **kwargs)

    assert_gradients_match(loss, [student], [0])


@pytest.mark.parametrize("missing", ["zero", "uniform"])
@pytest.mark.parametrize("beta", [None, 0.0, 0.5, 0.9])
def test_logits_of_plus_minus_1e4_stay_finite(missing, beta):
    s = flow.tensor([[1e4, -1e4, 0.0, 5e3, -1e4], [0.0, 0.0, 1e4, 0.0, -1e4]], requires_grad=True)
    t = flow.tensor([[-1e4, 1e4, 3.0, 2.0, 1e4], [1e4, -1e4, 0.0, 0.0, 0.0]])
    values, ids = flow.topk(t, 2, dim=-1)
    kwargs = dict(missing=missing, teacher_logsumexp=flow.logsumexp(t, dim=-1))
    loss = sparse_kl_div(s, values, ids, **kwargs) if beta is None else \
        sparse_js_divergence(s, values, ids, beta=beta, **kwargs)
    loss.backward()
    assert math.isfinite(loss.item())
    assert bool(flow.isfinite(s.grad).all().item())


def test_float16_teacher_values_are_computed_in_float32():
    student, teacher = inputs(4)
    s = flow.tensor(student, dtype=flow.float32)
    values, ids = flow.topk(flow.tensor(teacher, dtype=flow.float32), K, dim=-1)
    exact = sparse_kl_div(s, values, ids).item()
    half = sparse_kl_div(s, values.to(flow.float16), ids)
    assert half.dtype == flow.float32
    assert half.item() == pytest.approx(exact, abs=2e-3)


def test_the_sparse_losses_are_in_functional_but_not_in_the_registry():
    """Their teacher is (values, ids[, logsumexp]), not the registry's second tensor of the student's shape."""
    assert {"sparse_kl_div", "sparse_js_divergence"}.isdisjoint(available_losses())


def bad(**overrides):
    s = flow.zeros(2, 5)
    values, ids = flow.topk(flow.arange(10, dtype=flow.float32).reshape(2, 5), 2, dim=-1)
    args = dict(student_logits=s, topk_values=values, topk_ids=ids)
    args.update(overrides)
    beta = args.pop("beta", None)
    if beta is None:
        return sparse_kl_div(args.pop("student_logits"), args.pop("topk_values"), args.pop("topk_ids"), **args)
    return sparse_js_divergence(args.pop("student_logits"), args.pop("topk_values"), args.pop("topk_ids"),
                                beta=beta, **args)


@pytest.mark.parametrize("overrides, error, words", [
    (dict(topk_values=flow.zeros(2, 0), topk_ids=flow.zeros(2, 0, dtype=flow.int64)), ValueError,
     "top_k (the last dim of topk_values) is 0 but must be between 1"),
    (dict(topk_values=flow.zeros(2, 6), topk_ids=flow.zeros(2, 6, dtype=flow.int64)), ValueError,
     "top_k (the last dim of topk_values) is 6 but must be between 1 and the student's vocabulary size V = 5"),
    (dict(beta=1.5), ValueError, "beta must be a number in [0, 1]"),
    (dict(beta=-0.1), ValueError, "beta must be a number in [0, 1]"),
    (dict(beta="0.5"), TypeError, "beta must be a number in [0, 1], got '0.5'"),
    (dict(beta=1.0), ValueError, "beta=1 (KL(student || teacher)) with missing='zero' is infinite"),
    (dict(missing="uniform"), ValueError, "missing='uniform' needs teacher_logsumexp"),
    (dict(missing="tail"), ValueError, "missing must be one of 'zero', 'uniform'; got 'tail'"),
    (dict(topk_ids=flow.tensor([[4, 7], [0, 1]])), ValueError, "topk_ids must hold ids in [0, 5)"),
    (dict(topk_ids=flow.tensor([[4, 4], [0, 1]])), ValueError, "topk_ids holds an id twice in one row"),
    (dict(topk_ids=flow.tensor([[4.0, 3.0], [0.0, 1.0]])), TypeError, "topk_ids must be an int32 or int64"),
    (dict(topk_values=flow.zeros(3, 2), topk_ids=flow.zeros(3, 2, dtype=flow.int64)), ValueError,
     "topk_values has shape (3, 2) but must be [..., k] with the leading shape (2,)"),
    (dict(temperature=0.0), ValueError, "temperature must be a finite number"),
    (dict(reduction="avg"), ValueError, "reduction must be one of"),
    (dict(mask=flow.tensor([1, 2])), ValueError, "mask must hold only 0 and 1"),
    (dict(missing="uniform", teacher_logsumexp=flow.zeros(3)), ValueError, "teacher_logsumexp has shape (3,)"),
])
def test_bad_input_is_one_sentence_naming_the_argument(overrides, error, words):
    with pytest.raises(error) as raised:
        bad(**overrides)
    assert words in str(raised.value)
    assert "\n" not in str(raised.value)
