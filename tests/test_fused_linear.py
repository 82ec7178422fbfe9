"""fused_linear_distill_loss: the value and the gradients of hidden, weight and bias equal the plain
formula ``loss(hidden @ weight.T + bias, teacher)`` (a float64 numpy reference with finite differences, and
the registered losses themselves), for masks, every reduction, chunk sizes that do and do not divide N,
per-row temperatures and a teacher tuple; bad input is refused with one sentence naming the argument."""
import numpy as np
import oneflow as flow
import pytest

from gradcheck import numpy_numeric_grad
from knowledge_distill_util import fused_linear
from knowledge_distill_util import fused_linear_distill_loss
from knowledge_distill_util.registry import get_loss

N, H, V = 7, 3, 5
MASK = np.array([1, 0, 1, 1, 0, 1, 1], dtype=np.float64)
CHUNKS = (None, 1, 3)  # the default (one chunk here), one dividing N = 7 and one not
REDUCTIONS = ("mean", "batchmean", "sum", "none")
F32 = dict(rtol=2e-5, atol=2e-6)


def arrays(seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) * scale for shape in ((N, H), (V, H), (V,), (N, V))]


# ---------------------------------------------------------------------------------------------------------
# float64 numpy reference of the plain formula, written from the definitions in functional's docstrings
# ---------------------------------------------------------------------------------------------------------


def np_log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_rows(logits, teacher, loss, t_s, t_t, scaling):
    """Row losses [N]: -sum p_t log p_s (soft CE) or sum p_t (log p_t - log p_s) (KL), times T_s T_t."""
    t_s, t_t = np.broadcast_to(t_s, (len(logits),))[:, None], np.broadcast_to(t_t, (len(logits),))[:, None]
    log_q, log_p = np_log_softmax(logits / t_s), np_log_softmax(teacher / t_t)
    inner = log_p - log_q if loss == "kl_div" else -log_q
    rows = (np.exp(log_p) * inner).sum(axis=-1)
    return rows * (t_s[:, 0] * t_t[:, 0]) if scaling else rows


def np_reduce(rows, mask, reduction, vocab):
    m = np.ones_like(rows) if mask is None else mask
    rows = rows * m
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    count = max(m.sum(), 1.0) if mask is not None else len(rows)
    return rows.sum() / (count * (vocab if reduction == "mean" else 1))


def np_plain(h, w, b, teacher, *, loss="kl_div", t_s=1.0, t_t=1.0, mask=None, reduction="batchmean",
             scaling=False, weights=None):
    """The plain formula; ``weights`` turns ``"none"`` into the scalar ``sum(weights * rows)``."""
    logits = h @ w.T + (0.0 if b is None else b)
    out = np_reduce(np_rows(logits, teacher, loss, t_s, t_t, scaling), mask, reduction, w.shape[0])
    return float((out * weights).sum()) if weights is not None else out


def to_flow(values, dtype=flow.float64, grad=False):
    return [flow.tensor(v, dtype=dtype, requires_grad=grad) for v in values]


@pytest.mark.parametrize("loss", ["kl_div", "soft_cross_entropy"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_value_and_gradients_equal_the_float64_reference(loss, reduction):
    h, w, b, t = arrays(1)
    weights = np.random.default_rng(2).uniform(0.5, 1.5, N) if reduction == "none" else None
    for mask in (None, MASK):
        options = dict(loss=loss, t_s=2.0, t_t=3.0, mask=mask, reduction=reduction, scaling=True)
        expected = np_plain(h, w, b, t, **options)
        expected_grads = [numpy_numeric_grad(lambda *x: np_plain(*x, t, **options, weights=weights), (h, w, b), i)
                          for i in range(3)]
        for chunk in CHUNKS:
            fh, fw, fb = to_flow((h, w, b), grad=True)
            out = fused_linear_distill_loss(
                fh, fw, fb, flow.tensor(t), loss=loss, student_temperature=2.0, teacher_temperature=3.0,
                mask=None if mask is None else flow.tensor(mask), reduction=reduction, temperature_scaling=True,
                chunk_size=chunk)
            where = f"{loss} {reduction} mask={mask is not None} chunk_size={chunk}"
            np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=where)
            (out * flow.tensor(weights) if weights is not None else out).sum().backward()
            for name, got, want in zip("hwb", (fh.grad, fw.grad, fb.grad), expected_grads):
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-8, err_msg=f"{where} grad {name}")


def test_float32_equals_the_reference_and_per_row_temperatures_on_chunks_inside_the_tensor():
    """Per-row temperatures (and the mask) are cut into chunks that start inside them: OneFlow 0.9 loses
    the storage offset of a detached view, so a chunk must be a tensor of its own."""
    h, w, b, t = arrays(3)
    temps = np.random.default_rng(4).uniform(0.5, 3.0, N)
    expected = np_plain(h, w, b, t, t_s=temps, t_t=temps[::-1].copy(), mask=MASK, reduction="sum")
    for chunk in (2, 3):
        out = fused_linear_distill_loss(*to_flow((h, w, b), flow.float32), flow.tensor(t, dtype=flow.float32),
                                        student_temperature=flow.tensor(temps, dtype=flow.float32),
                                        teacher_temperature=flow.tensor(temps[::-1].copy(), dtype=flow.float32),
                                        mask=flow.tensor(MASK), reduction="sum", chunk_size=chunk)
        np.testing.assert_allclose(out.numpy(), expected, **F32)


def test_views_that_start_inside_their_storage_give_the_same_values_and_gradients():
    h, w, b, t = arrays(5)
    pad = np.zeros((2, V))
    big_t = flow.tensor(np.concatenate([pad, t]), dtype=flow.float32)
    big_h = flow.tensor(np.concatenate([np.zeros((3, H)), h]), dtype=flow.float32, requires_grad=True)
    big_mask = flow.tensor(np.concatenate([[0.0, 0.0], MASK]), dtype=flow.float32)
    big_temp = flow.tensor(np.concatenate([[9.0], np.linspace(1, 2, N)]), dtype=flow.float32)
    fw, fb = to_flow((w, b), flow.float32, grad=True)
    out = fused_linear_distill_loss(big_h.narrow(0, 3, N), fw, fb, big_t.narrow(0, 2, N), mask=big_mask.narrow(0, 2, N),
                                    student_temperature=big_temp.narrow(0, 1, N), chunk_size=3)
    out.backward()
    expected = np_plain(h, w, b, t, t_s=np.linspace(1, 2, N), mask=MASK)
    np.testing.assert_allclose(out.item(), expected, **F32)
    gh, gw, gb = [numpy_numeric_grad(lambda *x: np_plain(*x, t, t_s=np.linspace(1, 2, N), mask=MASK), (h, w, b), i)
                  for i in range(3)]
    np.testing.assert_allclose(big_h.grad.numpy()[3:], gh, rtol=1e-3, atol=1e-5)
    assert not big_h.grad.numpy()[:3].any()
    np.testing.assert_allclose(fw.grad.numpy(), gw, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(fb.grad.numpy(), gb, rtol=1e-3, atol=1e-5)


def _plain_flow(loss, h, w, b, teacher_logits, **options):
    logits = flow.matmul(h, w, transpose_b=True)
    return get_loss(loss)(logits if b is None else logits + b, teacher_logits, **options)


def _value_and_grads(fn, tensors):
    copies = [None if x is None else x.detach().clone().requires_grad_() for x in tensors]
    out = fn(*copies)
    (out * flow.linspace(0.5, 1.5, out.numel()).reshape(out.shape) if out.ndim else out).sum().backward()
    return out.detach().numpy(), [None if x is None else x.grad.numpy() for x in copies]


@pytest.mark.parametrize("loss", fused_linear.logit_losses())
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_every_registered_logit_loss_equals_its_plain_formula(loss, reduction):
    """The loss is looked up in the registry: every logit loss (those added later too) equals itself
    applied to the logits built whole, value and gradients, float32, with a mask and chunks of 3."""
    h, w, b, t = to_flow(arrays(6), flow.float32)
    mask = flow.tensor(MASK, dtype=flow.float32)
    options = dict(student_temperature=1.5, teacher_temperature=2.0, mask=mask, reduction=reduction,
                   temperature_scaling=True)
    for bias in (b, None):
        want, want_grads = _value_and_grads(lambda *x: _plain_flow(loss, *x, t, **options), (h, w, bias))
        got, got_grads = _value_and_grads(
            lambda *x: fused_linear_distill_loss(*x, t, loss=loss, chunk_size=3, **options), (h, w, bias))
        np.testing.assert_allclose(got, want, **F32)
        for g, e in zip(got_grads, want_grads):
            if e is not None:
                np.testing.assert_allclose(g, e, **F32)


def test_a_teacher_tuple_equals_its_logits_and_gets_no_gradient():
    h, w, b, _ = to_flow(arrays(7), flow.float32)
    rng = np.random.default_rng(8)
    th, tw, tb = (flow.tensor(rng.standard_normal(s), dtype=flow.float32, requires_grad=True)
                  for s in ((N, 4), (V, 4), (V,)))
    teacher_logits = (flow.matmul(th, tw, transpose_b=True) + tb).detach()
    for tuple_teacher, logits in (((th, tw, tb), teacher_logits),
                                  ((th, tw), flow.matmul(th, tw, transpose_b=True).detach()),
                                  ((th, tw, None), flow.matmul(th, tw, transpose_b=True).detach())):
        for reduction in ("batchmean", "none"):
            want, want_grads = _value_and_grads(
                lambda *x: fused_linear_distill_loss(*x, logits, reduction=reduction, chunk_size=2), (h, w, b))
            got, got_grads = _value_and_grads(
                lambda *x: fused_linear_distill_loss(*x, tuple_teacher, reduction=reduction, chunk_size=2), (h, w, b))
            np.testing.assert_allclose(got, want, **F32)
            for g, e in zip(got_grads, want_grads):
                np.testing.assert_allclose(g, e, **F32)
    assert th.grad is None and tw.grad is None and tb.grad is None


def test_frozen_inputs_get_no_gradient_and_no_grad_mode_gives_the_value():
    h, w, b, t = to_flow(arrays(9), flow.float32)
    want = _plain_flow("kl_div", h, w, b, t).item()
    hidden = h.clone().requires_grad_()
    out = fused_linear_distill_loss(hidden, w, b, t, chunk_size=3)  # weight and bias frozen
    out.backward()
    assert w.grad is None and b.grad is None
    np.testing.assert_allclose(out.item(), want, **F32)
    _, (want_h, _, _) = _value_and_grads(lambda *x: _plain_flow("kl_div", *x, t), (h, w, b))
    np.testing.assert_allclose(hidden.grad.numpy(), want_h, **F32)
    with flow.no_grad():
        np.testing.assert_allclose(fused_linear_distill_loss(hidden, w, b, t, chunk_size=2).item(), want, **F32)


def test_defaults_follow_the_loss_and_temperature_sets_both_sides():
    h, w, b, t = to_flow(arrays(10), flow.float32)
    for loss in ("kl_div", "soft_cross_entropy"):  # default reduction: the loss's own (batchmean / mean)
        np.testing.assert_allclose(fused_linear_distill_loss(h, w, b, t, loss=loss).item(),
                                   _plain_flow(loss, h, w, b, t).item(), **F32)
    np.testing.assert_allclose(
        fused_linear_distill_loss(h, w, b, t, temperature=2.5).item(),
        _plain_flow("kl_div", h, w, b, t, student_temperature=2.5, teacher_temperature=2.5).item(), **F32)


def test_the_default_chunk_size_keeps_a_chunk_near_the_byte_budget():
    assert fused_linear.FUSED_CHUNK_BYTES == 64 << 20
    assert fused_linear.default_chunk_size(30522) == (64 << 20) // (30522 * 4) == 549
    assert fused_linear.default_chunk_size(151936, itemsize=8) == (64 << 20) // (151936 * 8)
    assert fused_linear.default_chunk_size(10 ** 9) == 1


# ---------------------------------------------------------------------------------------------------------
# bad input: one sentence naming the argument
# ---------------------------------------------------------------------------------------------------------


def _inputs():
    return to_flow(arrays(11), flow.float32)


@pytest.mark.parametrize("chunk_size", [0, -3])
def test_chunk_size_below_one_is_refused(chunk_size):
    h, w, b, t = _inputs()
    with pytest.raises(ValueError, match=rf"chunk_size must be a positive integer .*got {chunk_size}"):
        fused_linear_distill_loss(h, w, b, t, chunk_size=chunk_size)


@pytest.mark.parametrize("chunk_size", [2.0, True, "4"])
def test_a_chunk_size_that_is_not_an_integer_is_refused(chunk_size):
    h, w, b, t = _inputs()
    with pytest.raises(TypeError, match="chunk_size must be a positive integer"):
        fused_linear_distill_loss(h, w, b, t, chunk_size=chunk_size)


def test_a_weight_of_another_hidden_size_is_refused():
    h, _, b, t = _inputs()
    with pytest.raises(ValueError, match=r"weight has shape \(5, 4\), so it expects hidden size 4, but "
                                         r"student_hidden has hidden size 3"):
        fused_linear_distill_loss(h, flow.zeros(V, 4), b, t)


def test_a_teacher_of_another_vocabulary_is_refused():
    h, w, b, _ = _inputs()
    with pytest.raises(ValueError, match=r"teacher logits have shape \(7, 6\) .*\(7, 5\).*vocabulary size differs"):
        fused_linear_distill_loss(h, w, b, flow.zeros(N, V + 1))
    with pytest.raises(ValueError, match="teacher weight has vocabulary size 6 but the student's weight has 5"):
        fused_linear_distill_loss(h, w, b, (flow.zeros(N, 2), flow.zeros(V + 1, 2)))
    with pytest.raises(ValueError, match="teacher weight has shape"):
        fused_linear_distill_loss(h, w, b, (flow.zeros(N, 2), flow.zeros(V, 3)))
    with pytest.raises(ValueError, match="teacher hidden has 6 rows but student_hidden has 7"):
        fused_linear_distill_loss(h, w, b, (flow.zeros(N - 1, 2), flow.zeros(V, 2)))
    with pytest.raises(TypeError, match="teacher must be the teacher's logits"):
        fused_linear_distill_loss(h, w, b, (flow.zeros(N, 2),))


def test_an_unknown_or_non_logit_loss_is_refused_with_the_known_names():
    h, w, b, t = _inputs()
    for name in ("kl", "hidden_mse", None):
        with pytest.raises(ValueError, match=r"loss must be the name of a registered logit loss, got .*; known: "
                                             r".*kl_div.*soft_cross_entropy"):
            fused_linear_distill_loss(h, w, b, t, loss=name)


def test_other_bad_arguments_are_refused():
    h, w, b, t = _inputs()
    cases = [
        (dict(bias=flow.zeros(V + 1)), ValueError, r"bias must have shape \[V\] = \(5,\)"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(mask=flow.ones(N + 1)), ValueError, "mask has shape"),
        (dict(temperature=2.0, student_temperature=1.0), ValueError, "pass either temperature or"),
        (dict(student_temperature=0.0), ValueError, "student_temperature must be"),
        (dict(temperature_scaling=1), TypeError, "temperature_scaling must be True or False"),
        (dict(hidden=h.double()), TypeError, "weight has dtype"),
        (dict(hidden=h.reshape(1, N, H)), ValueError, r"student_hidden must have shape \[N, H\]"),
    ]
    for change, error, message in cases:
        hidden, bias = change.pop("hidden", h), change.pop("bias", b)
        with pytest.raises(error, match=message):
            fused_linear_distill_loss(hidden, w, bias, t, **change)


# ---------------------------------------------------------------------------------------------------------
# nn.Graph = eager
# ---------------------------------------------------------------------------------------------------------


class _Head(flow.nn.Module):
    """Student parameters and the sum of four fused losses (mask + per-row temperatures, "none" with a teacher
    tuple, soft cross entropy, no bias)."""

    def __init__(self, h, w, b):
        super().__init__()
        self.h, self.w, self.b = (flow.nn.Parameter(flow.tensor(x, dtype=flow.float32)) for x in (h, w, b))

    def forward(self, t, mask, temps, th, tw):
        return (fused_linear_distill_loss(self.h, self.w, self.b, t, mask=mask, student_temperature=temps,
                                          teacher_temperature=2.0, temperature_scaling=True, chunk_size=3)
                + fused_linear_distill_loss(self.h, self.w, self.b, (th, tw), reduction="none", chunk_size=2).sum()
                + fused_linear_distill_loss(self.h, self.w, self.b, t, loss="soft_cross_entropy", mask=mask,
                                            reduction="mean", chunk_size=4)
                + fused_linear_distill_loss(self.h, self.w, None, t, reduction="sum"))


def _train_step(graph: bool):
    h, w, b, t = arrays(12)
    rng = np.random.default_rng(13)
    inputs = [flow.tensor(x, dtype=flow.float32) for x in
              (t, MASK, rng.uniform(1, 3, N), rng.standard_normal((N, 4)), rng.standard_normal((V, 4)))]
    head = _Head(h, w, b)
    optimizer = flow.optim.SGD(head.parameters(), lr=0.5)
    if graph:
        class Step(flow.nn.Graph):
            def __init__(self):
                super().__init__()
                self.head = head
                self.add_optimizer(optimizer)

            def build(self, *tensors):
                loss = self.head(*tensors)
                loss.backward()
                return loss

        loss = Step()(*inputs)
    else:
        loss = head(*inputs)
        loss.backward()
        optimizer.step()
    return loss.numpy(), [p.numpy() for p in (head.h, head.w, head.b)]


@pytest.mark.graph  # compiles graphs: its own process (tests/conftest.py)
def test_a_training_step_in_graph_equals_eager_with_the_closed_form_and_with_the_plain_fallback(monkeypatch):
    """Inside nn.Graph the logit gradient of kl_div / soft_cross_entropy comes from a closed form; a loss
    without one takes the plain formula (checked by emptying the table). Both equal the eager step."""
    eager_loss, eager_params = _train_step(graph=False)
    for closed_forms in (True, False):
        if not closed_forms:
            monkeypatch.setattr(fused_linear, "_closed_forms", lambda: {})
        loss, params = _train_step(graph=True)
        np.testing.assert_allclose(loss, eager_loss, rtol=1e-5, atol=1e-6)
        for got, want in zip(params, eager_params):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_second_backward_of_a_retained_graph_gives_the_gradients_again():
    """The first backward hands the saved gradients over (scaled in place); a second one recomputes them."""
    h, w, b, t = to_flow(arrays(14), flow.float32)
    _, want = _value_and_grads(lambda *x: 3.0 * _plain_flow("kl_div", *x, t), (h, w, b))
    params = [x.clone().requires_grad_() for x in (h, w, b)]
    out = 3.0 * fused_linear_distill_loss(*params, t, chunk_size=3)
    out.backward(retain_graph=True)
    out.backward()
    for got, once in zip(params, want):
        np.testing.assert_allclose(got.grad.numpy(), 2 * once, **F32)
