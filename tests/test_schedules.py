"""Temperature and weight schedules (issue 11, item 14) against numpy float64 references."""
import numpy as np
import oneflow as flow
import pytest

import reference_peer as peer
from knowledge_distill_util.functional import kl_div
from knowledge_distill_util.schedules import constant, cwsm_temperature, flsw_temperature, linear_decay, linear_growth

F32 = dict(rtol=1.3e-6, atol=1e-5)


def t32(a):
    return flow.tensor(np.asarray(a, np.float32))


@pytest.mark.parametrize("base, beta, gamma", [(2.0, 1.0, 2.0), (4.0, 0.5, 1.0), (1.0, 3.0, 0.5), (3.0, 1.0, 0.0)])
def test_flsw_matches_reference(base, beta, gamma):
    rng = np.random.default_rng(int(base * 10 + gamma * 3))
    s, t = rng.standard_normal((6, 5)).astype(np.float32), rng.standard_normal((6, 5)).astype(np.float32)
    got = flsw_temperature(t32(s), t32(t), base, beta=beta, gamma=gamma)
    assert tuple(got.shape) == (6,)
    np.testing.assert_allclose(got.numpy(), peer.flsw_temperature(s, t, base, beta, gamma), **F32)
    np.testing.assert_allclose(got.numpy().mean(), base, rtol=1e-6)


@pytest.mark.parametrize("base, beta", [(2.0, 1.0), (4.0, 0.25), (1.0, 0.1)])
def test_cwsm_matches_reference(base, beta):
    rng = np.random.default_rng(int(base * 7))
    s = (rng.standard_normal((7, 4)) * 3).astype(np.float32)
    got = cwsm_temperature(t32(s), base, beta=beta)
    np.testing.assert_allclose(got.numpy(), peer.cwsm_temperature(s, base, beta), **F32)


def test_schedules_detach_and_handle_zero_rows_and_identical_rows():
    s = t32([[0.0, 0.0], [1.0, 2.0]]).requires_grad_()
    t = t32([[1.0, 0.0], [1.0, 2.0]])
    temps = flsw_temperature(s, t, 2.0)
    assert not temps.requires_grad and not cwsm_temperature(s, 2.0).requires_grad
    np.testing.assert_allclose(temps.numpy(), peer.flsw_temperature(s.detach().numpy(), t.numpy(), 2.0), **F32)
    assert np.isfinite(temps.numpy()).all()


def test_half_logits_give_float32_temperatures():
    s = flow.tensor(np.array([[1.0, 2.0], [0.5, 0.0]]), dtype=flow.float16)
    assert cwsm_temperature(s, 2.0).dtype == flow.float32
    assert flsw_temperature(s, s, 2.0).dtype == flow.float32


def test_temperatures_feed_the_losses():
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal((4, 5)).astype(np.float32), rng.standard_normal((4, 5)).astype(np.float32)
    temps = flsw_temperature(t32(s), t32(t), 2.0)
    got = kl_div(t32(s), t32(t), student_temperature=temps, teacher_temperature=temps, temperature_scaling=True)
    want_t = peer.flsw_temperature(s, t, 2.0)
    np.testing.assert_allclose(got.item(), peer.kl_div(s, t, want_t, want_t, "batchmean", True), rtol=1e-5, atol=1e-5)


def test_too_large_beta_gives_a_clear_error_in_the_loss():
    s = t32([[0.0, 0.0], [9.0, 0.0]])
    temps = cwsm_temperature(s, 1.0, beta=10.0)
    with pytest.raises(ValueError, match=r"student_temperature must hold finite temperatures > 0.*lower beta"):
        kl_div(s, s, student_temperature=temps)


@pytest.mark.parametrize("step, total, growth", [(0, 10, 0.0), (5, 10, 0.5), (10, 10, 1.0), (15, 10, 1.0),
                                                 (-3, 10, 0.0), (2.5, 5, 0.5)])
def test_weight_schedules(step, total, growth):
    assert constant(step, total) == 1.0
    assert linear_growth(step, total) == growth
    assert linear_decay(step, total) == 1.0 - growth


@pytest.mark.parametrize("call, error, message", [
    (lambda: linear_growth(1, 0), ValueError, r"total must be > 0, got 0"),
    (lambda: linear_decay("1", 10), TypeError, r"step must be a finite number, got '1'"),
    (lambda: constant(1, float("inf")), TypeError, r"total must be a finite number, got inf"),
    (lambda: flsw_temperature(t32([[1.0]]), t32([[1.0]]), 0.0), ValueError, r"base must be > 0, got 0.0"),
    (lambda: flsw_temperature(t32([[1.0]]), t32([[1.0]]), 1.0, gamma=-1), ValueError, r"gamma must be >= 0"),
    (lambda: flsw_temperature(t32([1.0]), t32([1.0]), 1.0), ValueError,
     r"student_logits must have shape \[N, C\], got shape \(1,\)"),
    (lambda: flsw_temperature(t32([[1.0, 2.0]]), t32([[1.0]]), 1.0), ValueError,
     r"student_logits has shape \(1, 2\) but teacher_logits has shape \(1, 1\)"),
    (lambda: cwsm_temperature(np.zeros((2, 2)), 1.0), TypeError, r"student_logits must be a oneflow.Tensor"),
    (lambda: cwsm_temperature(t32([[1.0]]), 1.0, beta=None), TypeError, r"beta must be a finite number"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()
