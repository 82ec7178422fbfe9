"""Inputs that are views starting inside their storage (``x[1:]``, ``narrow``) give the values and the
gradients of their copies: OneFlow 0.9 drops a view's storage offset once it is detached, and the losses
detach the teacher and take views of it (chunks, ``unsqueeze``), so they used to read the wrong rows (kl_div
of a ``[2000, 1000]`` teacher view: 0.0023 instead of 0.9957)."""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import fused_linear_distill_loss
from knowledge_distill_util import functional as F
from knowledge_distill_util._checks import own_storage
from knowledge_distill_util.registry import get_loss

LOGIT_LOSSES = ["soft_cross_entropy", "kl_div", "reverse_kl", "js_divergence", "skew_kl", "skew_reverse_kl",
                "tv_distance"]


def _views(*shape, seed=0):
    """A tensor one row longer than ``shape`` (random) and its view without the first row."""
    flow.manual_seed(seed)
    whole = flow.randn(shape[0] + 1, *shape[1:]) * 3
    return whole, whole[1:]


def _value_and_grad(loss, student, *args, **kwargs):
    s = student.clone().requires_grad_()
    value = loss(s, *args, **kwargs)
    value.sum().backward()
    return value.detach().numpy(), s.grad.numpy()


@pytest.mark.parametrize("rows", [5, 2000])  # one chunk; the chunked kernel path (2000 x 1000 elements)
@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_a_teacher_view_equals_its_copy(name, rows):
    loss = get_loss(name)
    _, student = _views(rows, 1000 if rows > 5 else 7, seed=1)
    _, teacher = _views(rows, 1000 if rows > 5 else 7, seed=2)
    assert teacher.storage_offset() > 0
    got = _value_and_grad(loss, student.clone(), teacher)
    expected = _value_and_grad(loss, student.clone(), teacher.clone())
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["soft_cross_entropy", "kl_div", "js_divergence"])
def test_student_temperature_and_mask_views_equal_their_copies(name):
    loss = get_loss(name)
    _, student = _views(6, 5, seed=3)
    _, teacher = _views(6, 5, seed=4)
    temps = flow.tensor([9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0])[1:]
    mask = flow.tensor([1, 1, 0, 1, 0, 1, 1])[1:]
    got = _value_and_grad(loss, student, teacher, student_temperature=temps, teacher_temperature=temps, mask=mask)
    expected = _value_and_grad(loss, student.clone(), teacher.clone(), student_temperature=temps.clone(),
                               teacher_temperature=temps.clone(), mask=mask.clone())
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("loss", [F.hidden_mse, F.hidden_cosine, F.attention_mse, F.attention_kl])
def test_hidden_and_attention_views_equal_their_copies(loss):
    shape = (2, 2, 4, 4) if loss in (F.attention_mse, F.attention_kl) else (2, 3, 8)
    _, student = _views(*shape, seed=5)
    _, teacher = _views(*shape, seed=6)
    if loss is F.attention_kl:
        student, teacher = student.softmax(-1), teacher.softmax(-1)
        teacher = flow.cat([teacher[:1], teacher])[1:]  # a view again after the softmax
    got = _value_and_grad(loss, student, teacher)
    expected = _value_and_grad(loss, student.clone(), teacher.clone())
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6, atol=1e-9)


def test_fused_linear_with_view_inputs_equals_its_copies():
    _, hidden = _views(7, 4, seed=7)
    _, teacher = _views(7, 9, seed=8)
    weight = flow.randn(9, 4)
    got = _value_and_grad(lambda h, t: fused_linear_distill_loss(h, weight, None, t, chunk_size=3), hidden, teacher)
    expected = _value_and_grad(lambda h, t: F.kl_div(h @ weight.T, t), hidden.clone(), teacher.clone())
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-5, atol=1e-7)


def test_own_storage_copies_only_views_inside_their_storage():
    whole, view = _views(3, 2)
    assert own_storage(whole) is whole
    copied = own_storage(view)
    assert copied is not view and copied.storage_offset() == 0
    np.testing.assert_array_equal(copied.numpy(), view.numpy())
