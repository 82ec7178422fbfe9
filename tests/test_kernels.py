"""The compute kernels behind the operators: chunked soft cross entropy equals the one-pass path, every
kernel's gradient equals its closed form (numpy float64), and nn.Graph (training) equals eager.

The public operators' values against the reference are in test_operators.py; here the kernels' own
mechanics are checked: chunk boundaries, the saved-nothing backward, gradients for whichever side requires
one, repeated backward, and the graph path (which never chunks) against the chunked eager path.
"""
import os
import subprocess
import sys

import numpy as np
import oneflow as flow
import pytest

import reference as ref
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
    return _kernels.sum_of_masked_mse([(params[0] - 2.0, teacher[0]), (params[1], teacher[1])], -1.0)


@pytest.mark.graph
@pytest.mark.parametrize("kind", ["soft_ce", "mse", "sum_of_mse", "sum_of_masked_mse"])
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
