"""hidden_mse, hidden_cosine, pkd_loss, fsp_loss and mmd_loss against the numpy float64 references in
tests/reference_peer.py (issue 11, items 3, 4, 5, 9)."""
import numpy as np
import oneflow as flow
import pytest

import reference as ref
import reference_peer as peer
from gradcheck import analytic_grads, assert_gradients_match
from knowledge_distill_util import mseloss
from knowledge_distill_util.functional import fsp_loss, hidden_cosine, hidden_mse, mmd_loss, pkd_loss

F32 = dict(rtol=1.3e-6, atol=1e-5)


def t32(array):
    return flow.tensor(np.asarray(array, dtype=np.float32))


def t64(array):
    return flow.tensor(np.asarray(array, dtype=np.float64))


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


MASKS = {
    "none": None,
    "padding": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]),
    "empty_sequence": np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]]),
}


def as_mask(mask):
    return None if mask is None else t32(mask)


# --- values ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("name, fn, reference", [
    ("hidden_mse", hidden_mse, peer.hidden_mse),
    ("hidden_cosine", hidden_cosine, peer.hidden_cosine),
])
def test_hidden_losses_match_reference(name, fn, reference, mask):
    rng = np.random.default_rng(len(name) + len(mask))
    s, t = rand(rng, 3, 5, 8, scale=2), rand(rng, 3, 5, 8, scale=2)
    np.testing.assert_allclose(fn(t32(s), t32(t), mask=as_mask(MASKS[mask])).item(),
                               reference(s, t, MASKS[mask]), **F32)


def test_hidden_mse_without_mask_is_mseloss():
    rng = np.random.default_rng(0)
    s, t = t32(rand(rng, 2, 4, 6)), t32(rand(rng, 2, 4, 6))
    assert hidden_mse(s, t).item() == mseloss(s, t).item()


@pytest.mark.parametrize("fn", [hidden_mse, hidden_cosine])
def test_masked_positions_do_not_matter_and_all_padding_gives_zero(fn):
    rng = np.random.default_rng(1)
    s, t = rand(rng, 2, 3, 4), rand(rng, 2, 3, 4)
    mask = np.array([[1, 0, 1], [0, 0, 1]])
    base = fn(t32(s), t32(t), mask=t32(mask)).item()
    s[0, 1], t[1, 0] = 1e6, -1e6
    assert fn(t32(s), t32(t), mask=t32(mask)).item() == pytest.approx(base, rel=1e-6)
    np.testing.assert_allclose(base, fn(t32(s[mask > 0]), t32(t[mask > 0])).item(), **F32)
    assert fn(t32(s), t32(t), mask=flow.zeros(2, 3, dtype=flow.bool)).item() == 0.0


def test_hidden_cosine_of_zero_vectors_uses_the_1e_8_floor():
    s = np.zeros((1, 2, 3), np.float32)
    s[0, 1] = [1, 2, 3]
    t = np.ones((1, 2, 3), np.float32)
    student = t32(s).requires_grad_()
    loss = hidden_cosine(student, t32(t))
    loss.backward()
    np.testing.assert_allclose(loss.item(), peer.hidden_cosine(s, t), **F32)
    assert np.isfinite(student.grad.numpy()).all()


@pytest.mark.parametrize("shape", [(4, 6), (4, 3, 6)])
def test_pkd_matches_reference(shape):
    rng = np.random.default_rng(len(shape))
    s, t = rand(rng, *shape, scale=3), rand(rng, *shape, scale=3)
    np.testing.assert_allclose(pkd_loss(t32(s), t32(t)).item(), peer.pkd(s, t), **F32)


def test_pkd_uses_only_position_zero_and_is_scale_free():
    rng = np.random.default_rng(2)
    s, t = rand(rng, 2, 3, 4), rand(rng, 2, 3, 4)
    base = pkd_loss(t32(s), t32(t)).item()
    s[:, 1:] += 5.0
    assert pkd_loss(t32(s), t32(t)).item() == base
    np.testing.assert_allclose(pkd_loss(t32(s * 7), t32(t * 0.1)).item(), base, rtol=1e-5)
    zero = pkd_loss(t32(np.zeros((1, 4))), t32(np.ones((1, 4)))).item()  # a zero vector normalises to 0
    assert zero == pytest.approx(1.0)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("widths", [((4, 6), (4, 6)), ((3, 3), (3, 3))])
def test_fsp_matches_reference(mask, widths):
    rng = np.random.default_rng(3)
    (a, b), (c, d) = widths
    student = (rand(rng, 3, 5, a), rand(rng, 3, 5, b))
    teacher = (rand(rng, 3, 5, c), rand(rng, 3, 5, d))
    got = fsp_loss(tuple(map(t32, student)), tuple(map(t32, teacher)), mask=as_mask(MASKS[mask])).item()
    np.testing.assert_allclose(got, peer.fsp(student, teacher, MASKS[mask]), **F32)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("widths", [(6, 6), (4, 10)])
def test_mmd_matches_reference(mask, widths):
    rng = np.random.default_rng(4)
    student = (rand(rng, 3, 5, widths[0]), rand(rng, 3, 5, widths[0]))
    teacher = (rand(rng, 3, 5, widths[1]), rand(rng, 3, 5, widths[1]))
    got = mmd_loss(tuple(map(t32, student)), tuple(map(t32, teacher)), mask=as_mask(MASKS[mask])).item()
    np.testing.assert_allclose(got, peer.mmd(student, teacher, MASKS[mask]), **F32)


@pytest.mark.parametrize("fn", [fsp_loss, mmd_loss])
def test_gram_losses_give_zero_for_a_mask_without_valid_positions(fn):
    rng = np.random.default_rng(5)
    x = [t32(rand(rng, 2, 3, 4)) for _ in range(4)]
    assert fn((x[0], x[1]), (x[2], x[3]), mask=flow.zeros(2, 3)).item() == 0.0


# --- gradients ---------------------------------------------------------------------------------------

MASK64 = t64([[1, 1, 0], [1, 0, 0]])


@pytest.mark.parametrize("fn", [hidden_mse, hidden_cosine])
@pytest.mark.parametrize("mask", [None, MASK64])
def test_hidden_gradients_finite_differences(fn, mask):
    rng = np.random.default_rng(6)
    arrays = [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))]
    loss = lambda s, t: fn(s, t, mask=mask)  # noqa: E731
    assert_gradients_match(loss, arrays, indices=[0])
    assert analytic_grads(loss, arrays)[1] is None


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4)])
def test_pkd_gradient_finite_differences(shape):
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(shape), rng.standard_normal(shape)]
    assert_gradients_match(pkd_loss, arrays, indices=[0])
    assert analytic_grads(pkd_loss, arrays)[1] is None


@pytest.mark.parametrize("fn", [fsp_loss, mmd_loss])
@pytest.mark.parametrize("mask", [None, MASK64])
def test_gram_gradients_finite_differences(fn, mask):
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal((2, 3, 4)) for _ in range(4)]
    loss = lambda a, b, c, d: fn((a, b), (c, d), mask=mask)  # noqa: E731
    assert_gradients_match(loss, arrays, indices=[0, 1])
    assert analytic_grads(loss, arrays)[2:] == [None, None]


# --- float16 ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, fn, reference", [
    ("hidden_mse", hidden_mse, peer.hidden_mse), ("hidden_cosine", hidden_cosine, peer.hidden_cosine),
])
def test_float16_is_computed_in_float32(name, fn, reference):
    rng = np.random.default_rng(9)
    s, t = rand(rng, 2, 3, 4).astype(np.float16), rand(rng, 2, 3, 4).astype(np.float16)
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    got = fn(flow.tensor(s, dtype=flow.float16), flow.tensor(t, dtype=flow.float16), mask=t32(mask))
    assert got.dtype == flow.float32
    np.testing.assert_allclose(got.item(), reference(s, t, mask), rtol=1e-5, atol=1e-5)


# --- validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [hidden_mse, hidden_cosine])
def test_hidden_bad_masks(fn):
    x = flow.zeros(2, 3, 4)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3, 4\) but must have shape \(2, 3\)"):
        fn(x, x, mask=flow.ones(2, 3, 4))
    with pytest.raises(ValueError, match=r"mask must hold only 0 and 1"):
        fn(x, x, mask=flow.full((2, 3), 0.5))
    with pytest.raises(TypeError, match=r"mask must be a oneflow.Tensor"):
        fn(x, x, mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"student has shape \(2, 3, 4\) but teacher has shape \(2, 3, 5\)"):
        fn(x, flow.zeros(2, 3, 5))


def test_pkd_bad_shapes():
    with pytest.raises(ValueError, match=r"student must have shape \[B, H\] or \[B, L, H\], got shape \(4,\)"):
        pkd_loss(flow.zeros(4), flow.zeros(4))


def test_gram_bad_inputs():
    a, b = flow.zeros(2, 3, 4), flow.zeros(2, 3, 6)
    with pytest.raises(ValueError, match=r"the FSP Gram shapes differ: student \(4, 4\) .* but teacher \(6, 4\)"):
        fsp_loss((a, a), (b, a))
    with pytest.raises(TypeError, match=r"student must be a pair \(x0, x1\) of \[B, L, H\] tensors"):
        fsp_loss(a, (a, a))
    with pytest.raises(TypeError, match=r"teacher must be a pair .* got list of length 3"):
        mmd_loss((a, a), [a, a, a])
    with pytest.raises(ValueError, match=r"student\[0\] has shape \(2, 3, 4\) and teacher\[0\] has shape \(2, 5, 4\)"):
        mmd_loss((a, a), (flow.zeros(2, 5, 4), flow.zeros(2, 5, 4)))
    with pytest.raises(ValueError, match=r"teacher\[0\] has width 6 but teacher\[1\] has width 4; the MMD Gram"):
        mmd_loss((a, a), (b, a))
    with pytest.raises(ValueError, match=r"mask has shape \(3,\) but must have shape \(2, 3\)"):
        mmd_loss((a, a), (b, b), mask=flow.ones(3))


def test_reference_sanity_old_mse_unchanged():
    """The hidden MSE without a mask is the original element mean (tests/reference.py)."""
    rng = np.random.default_rng(10)
    s, t = rand(rng, 2, 3, 4), rand(rng, 2, 3, 4)
    np.testing.assert_allclose(hidden_mse(t32(s), t32(t)).item(), ref.mse(s, t), **F32)


@pytest.mark.parametrize("fn", [fsp_loss, mmd_loss])
def test_gram_losses_ignore_padding_content(fn):
    rng = np.random.default_rng(11)
    x = [rand(rng, 2, 3, 4) for _ in range(4)]
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    base = fn((t32(x[0]), t32(x[1])), (t32(x[2]), t32(x[3])), mask=t32(mask)).item()
    x[0][0, 2], x[3][1, 1] = np.inf, np.nan
    assert fn((t32(x[0]), t32(x[1])), (t32(x[2]), t32(x[3])), mask=t32(mask)).item() == pytest.approx(base, rel=1e-6)
