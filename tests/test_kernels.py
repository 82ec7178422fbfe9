"""The compute kernels behind the operators: chunked soft cross entropy equals the one-pass path, every
kernel's gradient equals its closed form (numpy float64), and nn.Graph (training) equals eager.

The public operators' values against the reference are in test_operators.py; here the kernels' own
mechanics are checked: chunk boundaries, the saved-nothing backward, gradients for whichever side requires
one, repeated backward, and the graph path (which never chunks) against the chunked eager path.
"""
import os
import re
import subprocess
import sys

import numpy as np
import oneflow as flow
import pytest

import reference as ref
from gradcheck import assert_gradients_match
from knowledge_distill_util import _kernels

F32 = dict(rtol=1.3e-6, atol=1e-5)  # PyTorch assert_close defaults for float32
GRAD = dict(rtol=1e-5, atol=1e-8)  # gradients are O(1 / numel): compare relatively
GRAPH = dict(rtol=1e-5, atol=1e-5)  # OneFlow's graph-vs-eager tolerance
TINY_CHUNK = 7  # elements per chunk: one or a few rows per chunk, uneven last chunk


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def soft_ce(student, teacher, t_s=1.0, t_t=1.0, chunk_elements=None, grad_scale=1.0):
    """Loss and student gradient of the kernel for numpy inputs (``grad_scale`` is the upstream dy)."""
    s = flow.tensor(student, requires_grad=True)
    loss = _kernels.soft_cross_entropy_mean(s, flow.tensor(teacher), t_s, t_t, chunk_elements=chunk_elements)
    (loss * grad_scale).backward()
    return loss.item(), s.grad.numpy()


# --- soft cross entropy: chunking ----------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 3), (11, 4), (2, 3, 6), (1, 9)])
@pytest.mark.parametrize("temperatures", [(1.0, 1.0), (2.0, 0.5)])
def test_chunked_soft_cross_entropy_equals_one_pass_and_closed_form(shape, temperatures):
    rng = np.random.default_rng(sum(shape))
    s, t = rand(rng, *shape, scale=3.0), rand(rng, *shape, scale=3.0)
    chunked = soft_ce(s, t, *temperatures, chunk_elements=TINY_CHUNK, grad_scale=2.5)
    whole = soft_ce(s, t, *temperatures, chunk_elements=10 ** 9, grad_scale=2.5)
    expected_loss = ref.pred_distill(s, t, *temperatures)
    expected_grad = 2.5 * ref.soft_cross_entropy_grad(s, t, *temperatures)
    for loss, grad in (chunked, whole):
        np.testing.assert_allclose(loss, expected_loss, **F32)
        np.testing.assert_allclose(grad, expected_grad, **GRAD)
    np.testing.assert_allclose(chunked[1], whole[1], **GRAD)


def test_chunking_is_used_only_for_local_eager_tensors_with_more_rows_than_a_chunk():
    x = flow.zeros(10, 4)
    assert _kernels._use_chunks(x, chunk_rows=3)
    assert not _kernels._use_chunks(x, chunk_rows=10)
    one_rank = x.to_global(placement=flow.placement("cpu", ranks=[0]), sbp=flow.sbp.broadcast)
    assert not _kernels._use_chunks(one_rank, chunk_rows=3)  # global tensors are never sliced
    assert _kernels._chunk_rows(num_classes=4, chunk_elements=TINY_CHUNK) == 1
    assert _kernels._chunk_rows(num_classes=30522, chunk_elements=_kernels.DEFAULT_CHUNK_ELEMENTS) == 34


def test_chunked_path_keeps_extreme_logits_finite_and_propagates_nan():
    rng = np.random.default_rng(1)
    s, t = rand(rng, 6, 5, scale=1e4), rand(rng, 6, 5, scale=1e4)
    loss, grad = soft_ce(s, t, chunk_elements=TINY_CHUNK)
    np.testing.assert_allclose(loss, ref.soft_cross_entropy(s, t), rtol=1e-5)
    assert np.isfinite(grad).all()
    s[4, 2] = np.nan  # the last chunks: NaN must not be hidden by the chunk bookkeeping
    loss, grad = soft_ce(s, t, chunk_elements=TINY_CHUNK)
    assert np.isnan(loss)
    assert np.isnan(grad[4, 2])  # (OneFlow's softmax leaves the row's other entries finite)
    assert np.isfinite(np.delete(grad, 4, axis=0)).all()


@pytest.mark.parametrize("chunk_elements", [TINY_CHUNK, None])
def test_backward_twice_with_retain_graph_accumulates_the_same_gradient(chunk_elements):
    rng = np.random.default_rng(2)
    s_np, t_np = rand(rng, 9, 4), rand(rng, 9, 4)
    s = flow.tensor(s_np, requires_grad=True)
    loss = _kernels.soft_cross_entropy_mean(s, flow.tensor(t_np), 1.0, 1.0, chunk_elements=chunk_elements)
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_allclose(s.grad.numpy(), 2 * ref.soft_cross_entropy_grad(s_np, t_np), **GRAD)


@pytest.mark.parametrize("bad", [0, -4, 2.5, True])
def test_chunk_elements_must_be_a_positive_integer(bad):
    x = flow.zeros(2, 3)
    with pytest.raises(ValueError, match=r"chunk_elements must be a positive integer .* got " + repr(bad)):
        _kernels.soft_cross_entropy_mean(x, x, 1.0, 1.0, chunk_elements=bad)


def test_one_function_class_per_temperature_pair_and_chunk_size_is_cached():
    make = _kernels._soft_cross_entropy_function
    assert make(2.0, 1.0, 8) is make(2.0, 1.0, 8)
    assert make(2.0, 1.0, 8) is not make(1.0, 2.0, 8)


# --- mean squared error -------------------------------------------------------------------------------

@pytest.mark.parametrize("needs", [(True, False), (False, True), (True, True)])
def test_mse_gradient_closed_form_for_whichever_side_requires_it(needs):
    rng = np.random.default_rng(3)
    a_np, b_np = rand(rng, 3, 4, 5), rand(rng, 3, 4, 5)
    a = flow.tensor(a_np, requires_grad=needs[0])
    b = flow.tensor(b_np, requires_grad=needs[1])
    loss = _kernels.mse_mean(a, b)
    (loss * 3.0).backward()
    np.testing.assert_allclose(loss.item(), ref.mse(a_np, b_np), **F32)
    expected = 3.0 * 2.0 * (a_np.astype(np.float64) - b_np) / a_np.size
    for tensor, sign, needed in ((a, 1.0, needs[0]), (b, -1.0, needs[1])):
        if needed:
            np.testing.assert_allclose(tensor.grad.numpy(), sign * expected, **GRAD)
        else:
            assert tensor.grad is None


def test_chunked_sum_of_squares_equals_the_reference(monkeypatch):
    monkeypatch.setattr(_kernels, "DEFAULT_CHUNK_ELEMENTS", TINY_CHUNK)  # 60 elements: 9 chunks
    rng = np.random.default_rng(7)
    a_np, b_np = rand(rng, 3, 4, 5), rand(rng, 3, 4, 5)
    a = flow.tensor(a_np, requires_grad=True)
    loss = _kernels.mse_mean(a, flow.tensor(b_np))
    loss.backward()
    np.testing.assert_allclose(loss.item(), ref.mse(a_np, b_np), **F32)
    np.testing.assert_allclose(a.grad.numpy(), 2.0 * (a_np.astype(np.float64) - b_np) / a_np.size, **GRAD)


def test_sum_of_mse_adds_the_pairs():
    rng = np.random.default_rng(4)
    pairs = [(rand(rng, 2, 3), rand(rng, 2, 3)) for _ in range(3)]
    loss = _kernels.sum_of_mse([(flow.tensor(a), flow.tensor(b)) for a, b in pairs])
    np.testing.assert_allclose(loss.item(), sum(ref.mse(a, b) for a, b in pairs), **F32)


# --- masked (attention) MSE ---------------------------------------------------------------------------

def test_masked_replaces_entries_at_or_below_the_threshold_and_keeps_nan():
    x = flow.tensor([np.nan, -np.inf, -1e4, -100.0, -99.5, 0.0, 3.0, np.inf], dtype=flow.float32)
    np.testing.assert_array_equal(
        _kernels.masked(x, -100.0).numpy(), [np.nan, 0.0, 0.0, 0.0, -99.5, 0.0, 3.0, np.inf]
    )


def test_masked_mse_gradient_is_zero_exactly_where_the_student_was_masked():
    a_np = np.array([[-np.inf, -1e4, -100.0, -99.0, 2.0, 0.5]], np.float32)
    b_np = np.array([[1.0, -np.inf, 3.0, -1e4, -2.0, 0.5]], np.float32)
    a = flow.tensor(a_np, requires_grad=True)
    loss = _kernels.sum_of_masked_mse([(a, flow.tensor(b_np))], -100.0)
    loss.backward()
    za, zb = (np.where(x <= -100.0, 0.0, x.astype(np.float64)) for x in (a_np, b_np))
    np.testing.assert_allclose(loss.item(), np.mean((za - zb) ** 2), **F32)
    expected = np.where(a_np <= -100.0, 0.0, 2.0 * (za - zb) / a_np.size)
    np.testing.assert_allclose(a.grad.numpy(), expected, **GRAD)
    assert np.isfinite(a.grad.numpy()).all()


# --- nn.Graph (training) equals eager (chunked) -----------------------------------------------------------

class _Student(flow.nn.Module):
    def __init__(self, shapes, rng):
        super().__init__()
        for i, shape in enumerate(shapes):
            setattr(self, f"w{i}", flow.nn.Parameter(flow.tensor(rand(rng, *shape, scale=2.0))))

    def params(self):
        return [getattr(self, name) for name, _ in self.named_parameters()]


def _kernel_loss(kind, params, teacher):
    if kind == "soft_ce":
        return _kernels.soft_cross_entropy_mean(params[0] * 1.5, teacher[0], 2.0, 0.5, chunk_elements=TINY_CHUNK)
    if kind == "mse":  # symmetric: both sides are parameters
        return _kernels.mse_mean(params[0], params[1])
    if kind == "sum_of_mse":
        return _kernels.sum_of_mse([(params[0], teacher[0]), (params[1], teacher[1])])
    if kind == "kl_div":
        return _kernels.kl_div_mean(params[0] * 1.5, teacher[0], 2.0, 0.5, chunk_elements=TINY_CHUNK)
    if kind in ("row_kl", "row_kl_masked"):  # [6, 5] seen as [B=2, 3 query rows, 5 keys], rows weighted
        key_mask = flow.tensor([[[1.0, 1.0, 0.0, 1.0, 0.0]], [[0.0, 0.0, 0.0, 0.0, 0.0]]])
        rows = _kernels.masked_row_kl(params[0].reshape(2, 3, 5), teacher[0].reshape(2, 3, 5),
                                      key_mask if kind == "row_kl_masked" else None, chunk_elements=TINY_CHUNK)
        return (rows * flow.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])).sum()
    return _kernels.sum_of_masked_mse([(params[0] - 2.0, teacher[0]), (params[1], teacher[1])], -1.0)


@pytest.mark.graph
@pytest.mark.parametrize("kind", ["soft_ce", "mse", "sum_of_mse", "sum_of_masked_mse", "kl_div", "row_kl",
                                  "row_kl_masked"])
def test_graph_training_steps_equal_eager(kind):
    rng = np.random.default_rng(5)
    shapes = [(6, 5), (6, 5)]
    teacher = [flow.tensor(rand(rng, *shape, scale=2.0)) for shape in shapes]
    eager, compiled = _Student(shapes, rng), _Student(shapes, rng)
    compiled.load_state_dict(eager.state_dict())
    eager_opt = flow.optim.SGD(eager.parameters(), lr=0.5)

    class Step(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.student = compiled
            self.add_optimizer(flow.optim.SGD(compiled.parameters(), lr=0.5))

        def build(self, *teacher_tensors):
            loss = _kernel_loss(kind, self.student.params(), list(teacher_tensors))
            loss.backward()
            return loss

    step = Step()
    initial = {name: value.numpy().copy() for name, value in eager.state_dict().items()}
    for _ in range(3):
        eager_opt.zero_grad(set_to_none=True)
        loss = _kernel_loss(kind, eager.params(), teacher)
        loss.backward()
        eager_opt.step()
        np.testing.assert_allclose(step(*teacher).numpy(), loss.numpy(), **GRAPH)
    for name, value in eager.state_dict().items():
        np.testing.assert_allclose(compiled.state_dict()[name].numpy(), value.numpy(), **GRAPH, err_msg=name)
    moved = [name for name, value in eager.state_dict().items() if not np.allclose(value.numpy(), initial[name])]
    assert moved, "the training steps changed no parameter: the comparison would be vacuous"


# --- CUDA -----------------------------------------------------------------------------------------------

requires_cuda = pytest.mark.skipif(not flow.cuda.is_available(), reason="needs a CUDA device; this machine has none")


@requires_cuda
def test_kernels_on_cuda_equal_the_reference_chunked_and_in_one_pass():
    rng = np.random.default_rng(6)
    s_np, t_np = rand(rng, 9, 5, scale=3.0), rand(rng, 9, 5, scale=3.0)
    for chunk_elements in (TINY_CHUNK, None):
        s = flow.tensor(s_np, device="cuda", requires_grad=True)
        loss = _kernels.soft_cross_entropy_mean(s, flow.tensor(t_np, device="cuda"), 2.0, 0.5,
                                                chunk_elements=chunk_elements)
        loss.backward()
        assert loss.device.type == "cuda"
        np.testing.assert_allclose(loss.item(), ref.pred_distill(s_np, t_np, 2.0, 0.5), **F32)
        np.testing.assert_allclose(s.grad.numpy(), ref.soft_cross_entropy_grad(s_np, t_np, 2.0, 0.5), **GRAD)
    a_np = np.array([[-np.inf, -1e4, 0.5, 2.0]], np.float32)
    b_np = np.array([[1.0, 0.0, -np.inf, 1.0]], np.float32)
    a = flow.tensor(a_np, device="cuda", requires_grad=True)
    loss = _kernels.sum_of_masked_mse([(a, flow.tensor(b_np, device="cuda"))], -100.0)
    loss.backward()
    np.testing.assert_allclose(loss.item(), (1.0 + 0.0 + 0.25 + 1.0) / 4, **F32)
    np.testing.assert_allclose(a.grad.numpy(), [[0.0, 0.0, 0.25, 0.5]], **GRAD)


# --- process health -------------------------------------------------------------------------------------

def test_many_backward_passes_leave_the_process_able_to_exit_cleanly(tmp_path):
    """Regression: a Function whose backward read a ``ctx`` attribute corrupted the heap in OneFlow 0.9,
    and the process aborted at exit (``free(): invalid pointer``) after a few thousand steps."""
    script = tmp_path / "loop.py"
    script.write_text(
        "import oneflow as flow\n"
        "from knowledge_distill_util import _kernels as K\n"
        "s = flow.randn(6, 5).requires_grad_(); t = flow.randn(6, 5)\n"
        "for i in range(3000):\n"
        "    s.grad = None\n"
        "    (K.soft_cross_entropy_mean(s, t, 2.0, 1.0, chunk_elements=7 if i % 2 else None)\n"
        "     + K.sum_of_masked_mse([(s, t)], -1.0)).backward()\n"
        "print('done', flush=True)\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, GLOG_minloglevel="3", PYTHONPATH=repo)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env)
    assert done.stdout.strip() == "done"
    assert done.returncode == 0, done.stderr[-2000:]


# --- soft cross entropy / KL: classes at -inf, the in-place gradient buffer -------------------------------

def _row_kl_reference(s, t):
    """``sum_c p_t (log p_t - log p_s)`` per row over the classes where ``p_t > 0`` (float64)."""
    p = ref.softmax(t)
    with np.errstate(invalid="ignore"):
        return np.where(p > 0, p * (ref.log_softmax(t) - ref.log_softmax(s)), 0.0).sum(axis=-1)


def _cross_entropy_rows(s, t):
    p = ref.softmax(t)
    with np.errstate(invalid="ignore"):
        return np.where(p > 0, -p * ref.log_softmax(s), 0.0).sum(axis=-1)


KERNELS = {"soft_ce": (_kernels.soft_cross_entropy_mean, _cross_entropy_rows),
           "kl_div": (_kernels.kl_div_mean, _row_kl_reference)}


def _loss_and_grad(kernel, s_np, t_np, chunk_elements, t_s=1.0, t_t=1.0):
    s = flow.tensor(s_np, requires_grad=True)
    loss = kernel(s, flow.tensor(t_np), t_s, t_t, chunk_elements=chunk_elements)
    loss.backward()
    return loss.item(), s.grad.numpy()


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("chunk_elements", [TINY_CHUNK, None])
def test_a_class_at_minus_inf_in_both_inputs_gives_a_finite_loss_and_gradient(name, chunk_elements):
    """0 * log 0 = 0: the class drops out of the loss; its gradient is 0 (regression: it was NaN)."""
    kernel, rows = KERNELS[name]
    rng = np.random.default_rng(8)
    s, t = rand(rng, 6, 5, scale=2.0), rand(rng, 6, 5, scale=2.0)
    s[:, 1] = t[:, 1] = -np.inf
    s[3, 4] = t[3, 4] = -np.inf
    loss, grad = _loss_and_grad(kernel, s, t, chunk_elements)
    assert np.isfinite(loss) and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, rows(s, t).sum() / s.size, **F32)
    np.testing.assert_allclose(grad, ref.soft_cross_entropy_grad(s, t), **GRAD)
    assert np.all(grad[:, 1] == 0) and grad[3, 4] == 0


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_a_class_only_the_student_rules_out_gives_the_same_huge_finite_loss_chunked_or_not(name):
    """Log-probabilities are floored at the lowest float32: p_t * 3.4e38 instead of inf, on every path."""
    kernel, _ = KERNELS[name]
    s = np.array([[0.0, -np.inf, 1.0], [0.5, 0.0, 2.0], [1.0, 1.0, 1.0]], np.float32)
    t = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 2.0]], np.float32)
    chunked, whole = (_loss_and_grad(kernel, s, t, c) for c in (TINY_CHUNK, None))
    expected = (1.0 / 3.0) * -_kernels.LOWEST_LOG_PROBABILITY / s.size  # the ruled-out class, p_t = 1/3
    for loss, grad in (chunked, whole):
        assert np.isfinite(loss)
        np.testing.assert_allclose(loss, expected, rtol=1e-5)
        assert np.isfinite(grad).all()
    np.testing.assert_allclose(chunked[1], whole[1], **GRAD)


@pytest.mark.parametrize("shape", [(5, 3), (2, 3, 6), (1, 9)])
@pytest.mark.parametrize("temperatures", [(1.0, 1.0), (2.0, 0.5)])
def test_kl_div_mean_matches_the_reference_chunked_and_whole(shape, temperatures):
    rng = np.random.default_rng(sum(shape) + 40)
    s, t = rand(rng, *shape, scale=3.0), rand(rng, *shape, scale=3.0)
    t_s, t_t = temperatures
    expected = _row_kl_reference(s.astype(np.float64) / t_s, t.astype(np.float64) / t_t).sum() / s.size
    for chunk_elements in (TINY_CHUNK, None):
        loss, grad = _loss_and_grad(_kernels.kl_div_mean, s, t, chunk_elements, t_s, t_t)
        np.testing.assert_allclose(loss, expected, rtol=1e-5, atol=1e-6)  # float32 log_softmax: ~30 ulp
        np.testing.assert_allclose(grad, ref.soft_cross_entropy_grad(s, t, t_s, t_t), **GRAD)


def test_kl_div_mean_is_zero_for_equal_inputs_and_exact_in_float64():
    rng = np.random.default_rng(41)
    s, t = rng.standard_normal((7, 4)) * 3, rng.standard_normal((7, 4)) * 3
    got = _kernels.kl_div_mean(flow.tensor(s), flow.tensor(t), 1.5, 1.5, chunk_elements=TINY_CHUNK).item()
    np.testing.assert_allclose(got, _row_kl_reference(s / 1.5, t / 1.5).sum() / s.size, rtol=1e-12)
    x = flow.tensor(rand(rng, 7, 4))
    assert _kernels.kl_div_mean(x, x, 1.0, 1.0, chunk_elements=TINY_CHUNK).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_gradients_by_finite_differences_in_float64(name):
    kernel, _ = KERNELS[name]
    rng = np.random.default_rng(42)
    arrays = [rng.standard_normal((5, 3)) * 2, rng.standard_normal((5, 3)) * 2]
    assert_gradients_match(lambda a, b: kernel(a, b.detach(), 1.5, 0.5, chunk_elements=TINY_CHUNK), arrays, [0])


def test_zeroing_the_gradient_in_place_does_not_change_a_second_backward():
    """The first backward hands the teacher-softmax buffer over as the gradient; a retained graph's second
    backward must not read it again (the user may have zeroed or clipped it in place)."""
    rng = np.random.default_rng(43)
    s_np, t_np = rand(rng, 9, 4), rand(rng, 9, 4)
    s = flow.tensor(s_np, requires_grad=True)
    loss = _kernels.soft_cross_entropy_mean(s, flow.tensor(t_np), 1.0, 1.0, chunk_elements=TINY_CHUNK)
    loss.backward(retain_graph=True)
    first = s.grad.numpy().copy()
    s.grad.zero_()
    (loss * 3.0).backward()
    np.testing.assert_allclose(first, ref.soft_cross_entropy_grad(s_np, t_np), **GRAD)
    np.testing.assert_allclose(s.grad.numpy(), 3.0 * first, **GRAD)


def _float32_gradient(s_np, t_np, t_s, t_t, dy):
    """The chunked backward's gradient ``(softmax(t / T_t) - softmax(s / T_s)) * (dy * (-(1 / numel) / T_s))``
    composed from whole-tensor float32 OneFlow ops (a softmax row does not depend on the chunking, bit for bit)."""
    s, t = flow.tensor(s_np), flow.tensor(t_np)
    factor = flow.tensor(dy, dtype=flow.float32) * (-(1.0 / s.numel()) / t_s)
    return ((flow.softmax(t / t_t, dim=-1) - flow.softmax(s / t_s, dim=-1)) * factor).numpy()


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("chunk_elements", [TINY_CHUNK, 15])  # chunked (one chunk: q - P, zeros may be -0.0)
@pytest.mark.parametrize("scale, temperatures, dy", [(3.0, (1.0, 1.0), 1.0), (3.0, (2.0, 0.5), 0.37),
                                                     (1e4, (1.0, 1.0), 2.5), (1e4, (2.0, 0.5), 1.0)])
def test_the_chunked_gradient_is_bit_identical_to_float32_ops(name, chunk_elements, scale, temperatures, dy):
    """Pins the chunked path's gradient to the bit, so that a faster arrangement of the passes (issue 23)
    cannot change training numbers: extreme logits, classes at ``-inf`` in both inputs, temperatures, an
    upstream gradient other than 1 and an uneven last chunk."""
    kernel, _ = KERNELS[name]
    rng = np.random.default_rng(44)
    s_np, t_np = rand(rng, 11, 5, scale=scale), rand(rng, 11, 5, scale=scale)
    s_np[:, 1] = t_np[:, 1] = -np.inf
    s = flow.tensor(s_np, requires_grad=True)
    (kernel(s, flow.tensor(t_np), *temperatures, chunk_elements=chunk_elements) * dy).backward()
    expected = _float32_gradient(s_np, t_np, *temperatures, dy)
    assert np.isfinite(expected).all()
    assert s.grad.numpy().tobytes() == expected.tobytes()


# --- masked_row_kl ------------------------------------------------------------------------------------------

def row_kl_reference(s, t, key_mask=None):
    """Per-row KL over the valid keys only (excluded keys removed), 0 for a row without a valid key;
    a key at -inf in the teacher has p_t = 0 and contributes 0 (float64)."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    out = np.zeros(s.shape[:-1])
    for index in np.ndindex(*s.shape[:-1]):
        valid = np.ones(s.shape[-1], bool) if key_mask is None else key_mask[index[0]].reshape(-1) > 0
        if valid.any():
            out[index] = _row_kl_reference(s[index][valid], t[index][valid])
    return out


def row_kl(s_np, t_np, key_mask=None, chunk_elements=None, weights=None, dtype=flow.float32):
    """Rows, and the student gradient of ``sum(weights * rows)``."""
    s = flow.tensor(s_np, dtype=dtype, requires_grad=True)
    mask = None if key_mask is None else flow.tensor(key_mask)
    rows = _kernels.masked_row_kl(s, flow.tensor(t_np, dtype=dtype), mask, chunk_elements=chunk_elements)
    w = np.ones(rows.shape) if weights is None else weights
    (rows * flow.tensor(w, dtype=dtype)).sum().backward()
    return rows.numpy(), s.grad.numpy()


def row_kl_grad_reference(s, t, key_mask, weights):
    """Closed form: (softmax(s') - softmax(t')) * w per row, over the valid keys; 0 on excluded keys."""
    s, t = np.asarray(s, np.float64), np.asarray(t, np.float64)
    grad = np.zeros(s.shape)
    for index in np.ndindex(*s.shape[:-1]):
        valid = np.ones(s.shape[-1], bool) if key_mask is None else key_mask[index[0]].reshape(-1) > 0
        if valid.any():
            grad[index + (valid,)] = (ref.softmax(s[index][valid]) - ref.softmax(t[index][valid])) * weights[index]
    return grad


KEY_MASK = np.array([[1, 1, 0, 1, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], np.float32).reshape(3, 1, 1, 5)
ROW_KL_F32 = dict(rtol=1e-5, atol=1e-5)  # OneFlow's float32 log_softmax is off by up to ~30 ulp


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("chunk_elements", [TINY_CHUNK, 30, None])
def test_masked_row_kl_matches_the_reference_values_and_gradient(masked, chunk_elements):
    rng = np.random.default_rng(50 + masked)
    s, t = rand(rng, 3, 2, 4, 5, scale=3.0), rand(rng, 3, 2, 4, 5, scale=3.0)
    w = rng.standard_normal((3, 2, 4))
    key_mask = KEY_MASK if masked else None
    rows, grad = row_kl(s, t, key_mask, chunk_elements, w)
    np.testing.assert_allclose(rows, row_kl_reference(s, t, key_mask), **ROW_KL_F32)
    np.testing.assert_allclose(grad, row_kl_grad_reference(s, t, key_mask, w), rtol=1e-5, atol=1e-6)
    if masked:
        assert np.all(rows[1] == 0) and np.all(grad[1] == 0)  # a sequence without a valid key
        assert np.all(grad[:2, ..., 2] == 0) and np.all(grad[:2, ..., 4] == 0)  # excluded keys


@pytest.mark.parametrize("shape, mask_shape", [((2, 4, 3), (2, 1, 3)), ((4, 6), None), ((2, 2, 1, 3, 4), (2, 1, 1, 1, 4))])
def test_masked_row_kl_other_ranks(shape, mask_shape):
    rng = np.random.default_rng(len(shape))
    s, t = rand(rng, *shape, scale=2.0), rand(rng, *shape, scale=2.0)
    key_mask = None
    if mask_shape is not None:
        key_mask = np.ones(mask_shape, np.float32)
        key_mask[0, ..., -1] = 0
    rows, _ = row_kl(s, t, key_mask, TINY_CHUNK)
    assert rows.shape == shape[:-1]
    np.testing.assert_allclose(rows, row_kl_reference(s, t, key_mask), **ROW_KL_F32)


@pytest.mark.parametrize("masked", [False, True])
def test_masked_row_kl_float64_exact_and_finite_differences(masked):
    rng = np.random.default_rng(52)
    s, t = rng.standard_normal((3, 1, 2, 5)) * 2, rng.standard_normal((3, 1, 2, 5)) * 2
    w = rng.standard_normal((3, 1, 2))
    key_mask = KEY_MASK if masked else None
    rows, grad = row_kl(s, t, key_mask, TINY_CHUNK, w, dtype=flow.float64)
    np.testing.assert_allclose(rows, row_kl_reference(s, t, key_mask), rtol=1e-10, atol=1e-12)
    mask = None if key_mask is None else flow.tensor(key_mask)

    def loss(a, b):
        return (_kernels.masked_row_kl(a, b.detach(), mask, chunk_elements=TINY_CHUNK) * flow.tensor(w)).sum()

    assert_gradients_match(loss, [s, t], [0])


def test_masked_row_kl_minus_inf_and_additive_minus_10000_scores():
    rng = np.random.default_rng(53)
    s, t = rand(rng, 2, 2, 3, 4, scale=3.0), rand(rng, 2, 2, 3, 4, scale=3.0)
    key_mask = np.array([1, 1, 1, 0], np.float32)
    s_inf, t_inf = s.copy(), t.copy()
    s_inf[..., 3] = t_inf[..., 3] = -np.inf  # the unmasked BERT convention
    additive = np.where(key_mask > 0, 0.0, -10000.0).astype(np.float32)
    masked = row_kl(s, t, np.tile(key_mask, (2, 1)).reshape(2, 1, 1, 4))
    expected = row_kl_reference(s[..., :3], t[..., :3])
    for rows, grad in (row_kl(s_inf, t_inf), row_kl(s + additive, t + additive), masked):
        assert np.isfinite(rows).all() and np.isfinite(grad).all()
        np.testing.assert_allclose(rows, expected, **ROW_KL_F32)
        assert np.all(grad[..., 3] == 0)
    everything = np.full((1, 1, 2, 3), -np.inf, np.float32)  # rows of nothing but -inf: 0, not NaN
    rows, grad = row_kl(everything, everything)
    assert np.all(rows == 0) and np.all(grad == 0)


def test_masked_row_kl_ignores_what_excluded_keys_hold_and_propagates_nan_on_valid_keys():
    rng = np.random.default_rng(54)
    s, t = rand(rng, 3, 2, 4, 5), rand(rng, 3, 2, 4, 5)
    base, _ = row_kl(s, t, KEY_MASK, TINY_CHUNK)
    s[0, ..., 2], t[0, ..., 4], s[1] = np.nan, np.inf, np.inf
    rows, grad = row_kl(s, t, KEY_MASK, TINY_CHUNK)
    np.testing.assert_array_equal(rows, base)
    assert np.isfinite(grad).all()
    s[2, 1, 3, 0] = np.nan  # a valid key
    rows, _ = row_kl(s, t, KEY_MASK, TINY_CHUNK)
    assert np.isnan(rows[2, 1, 3]) and np.isfinite(np.delete(rows.reshape(-1), 2 * 8 + 7)).all()


def test_masked_row_kl_teacher_gets_no_gradient_and_huge_scores_stay_finite():
    rng = np.random.default_rng(55)
    s = (rng.choice([-1.0, 1.0], size=(2, 2, 3, 3)) * 1e4).astype(np.float32)
    t = (rng.choice([-1.0, 1.0], size=(2, 2, 3, 3)) * 1e4).astype(np.float32)
    rows, grad = row_kl(s, t, KEY_MASK[:2, ..., :3])
    assert np.isfinite(rows).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(rows, row_kl_reference(s, t, KEY_MASK[:2, ..., :3]), rtol=1e-5, atol=1e-3)
    student, teacher = flow.tensor(s, requires_grad=True), flow.tensor(t, requires_grad=True)
    _kernels.masked_row_kl(student, teacher.detach()).sum().backward()
    assert teacher.grad is None and student.grad is not None


@pytest.mark.parametrize("mask_shape", [(3, 5), (3, 1, 5), (3, 2, 1, 5), (1, 1, 1, 5), (3, 1, 1, 4)])
def test_masked_row_kl_rejects_key_masks_of_another_shape(mask_shape):
    x = flow.zeros(3, 2, 4, 5)
    with pytest.raises(ValueError, match=r"key_mask must have shape \(3, 1, 1, 5\).*got " + re.escape(str(mask_shape))):
        _kernels.masked_row_kl(x, x, flow.ones(*mask_shape))


def test_masked_row_kl_rejects_bad_chunk_elements_and_vectors():
    x = flow.zeros(2, 3)
    with pytest.raises(ValueError, match=r"chunk_elements must be a positive integer .* got 0"):
        _kernels.masked_row_kl(x, x, chunk_elements=0)
    with pytest.raises(ValueError, match=r"student_scores must have shape \[\.\.\., L_q, L_k\], got \(3,\)"):
        _kernels.masked_row_kl(flow.zeros(3), flow.zeros(3))


# --- relation scores ------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, heads", [(8, 2), (12, 3), (6, 1), (12, 12)])
def test_relation_scores_match_the_per_head_products(width, heads):
    rng = np.random.default_rng(width + heads)
    x = rng.standard_normal((2, 5, width))
    d = width // heads
    expected = np.stack([x[:, :, r * d:(r + 1) * d] @ x[:, :, r * d:(r + 1) * d].transpose(0, 2, 1) / np.sqrt(d)
                         for r in range(heads)], axis=1)
    np.testing.assert_allclose(_kernels.relation_scores(flow.tensor(x), heads).numpy(), expected, rtol=1e-12)
    got32 = _kernels.relation_scores(flow.tensor(x.astype(np.float32)), heads).numpy()
    np.testing.assert_allclose(got32, expected, rtol=1e-5, atol=1e-5)
    assert_gradients_match(lambda a: (_kernels.relation_scores(a, heads) * flow.tensor(np.cos(expected))).sum(),
                           [x], [0])
