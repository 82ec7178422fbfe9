"""CUDA variants: the same numbers on the GPU, and float16 inputs (which have no CPU kernels).

Every test here skips, with the reason, on machines without CUDA.
"""
import argparse

import numpy as np
import oneflow as flow
import pytest

import reference as ref
from knowledge_distill_util import att_distill, layer_distill, mseloss, pred_distill, soft_cross_entropy

pytestmark = pytest.mark.skipif(not flow.cuda.is_available(), reason="needs a CUDA device; this machine has none")

F32 = dict(rtol=1.3e-6, atol=1e-5)
ARGS = argparse.Namespace(temperature=2.0)


def on_cuda(array, dtype=flow.float32):
    return flow.tensor(np.asarray(array), dtype=dtype, device="cuda")


def test_every_operator_matches_the_reference_on_cuda():
    rng = np.random.default_rng(0)
    s, t = rng.standard_normal((8, 30)).astype(np.float32), rng.standard_normal((8, 30)).astype(np.float32)
    np.testing.assert_allclose(pred_distill(ARGS, on_cuda(s), on_cuda(t)).item(), ref.pred_distill(s, t, 2.0, 2.0), **F32)
    np.testing.assert_allclose(soft_cross_entropy(on_cuda(s), on_cuda(t)).item(), ref.soft_cross_entropy(s, t), **F32)
    np.testing.assert_allclose(mseloss(on_cuda(s), on_cuda(t)).item(), ref.mse(s, t), **F32)
    reps_s = [rng.standard_normal((2, 4, 8)).astype(np.float32) for _ in range(3)]
    reps_t = [rng.standard_normal((2, 4, 8)).astype(np.float32) for _ in range(7)]
    np.testing.assert_allclose(layer_distill(None, [on_cuda(x) for x in reps_s], [on_cuda(x) for x in reps_t]).item(),
                               ref.layer_distill(reps_s, reps_t), **F32)
    mask = np.where(np.arange(4) >= 3, -10000.0, 0.0).astype(np.float32)
    atts_s = [rng.standard_normal((2, 2, 4, 4)).astype(np.float32) + mask for _ in range(2)]
    atts_t = [rng.standard_normal((2, 2, 4, 4)).astype(np.float32) + mask for _ in range(6)]
    np.testing.assert_allclose(att_distill(None, [on_cuda(x) for x in atts_s], [on_cuda(x) for x in atts_t]).item(),
                               ref.att_distill(atts_s, atts_t), rtol=1e-5, atol=1e-5)


def test_loss_stays_on_the_input_device():
    loss = soft_cross_entropy(on_cuda([[1.0, 2.0]]), on_cuda([[0.0, 1.0]]))
    assert loss.device.type == "cuda"


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_float16_logits_give_finite_correct_results(scale):
    rng = np.random.default_rng(1)
    s = (rng.standard_normal((16, 50)) * scale).astype(np.float16)
    t = (rng.standard_normal((16, 50)) * scale).astype(np.float16)
    student = on_cuda(s, flow.float16).requires_grad_()
    loss = pred_distill(ARGS, student, on_cuda(t, flow.float16))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(student.grad.numpy().astype(np.float32)).all()
    assert student.grad.dtype == flow.float16
    np.testing.assert_allclose(loss.item(), ref.pred_distill(s, t, 2.0, 2.0), rtol=1e-3, atol=1e-5)


def test_float16_masked_attention_scores():
    rng = np.random.default_rng(2)
    mask = np.where(np.arange(6) >= 4, -10000.0, 0.0)
    s = [(rng.standard_normal((2, 2, 6, 6)) + mask).astype(np.float16)]
    t = [(rng.standard_normal((2, 2, 6, 6)) + mask).astype(np.float16) for _ in range(2)]
    got = att_distill(None, [on_cuda(x, flow.float16) for x in s], [on_cuda(x, flow.float16) for x in t]).item()
    np.testing.assert_allclose(got, ref.att_distill(s, t), rtol=1e-3, atol=1e-5)
