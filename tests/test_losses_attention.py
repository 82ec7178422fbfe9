"""attention_mse, attention_kl and relation_kl against the numpy float64 references in
tests/reference_peer.py (issue 11, items 6, 7, 8). The references remove padded keys and query rows by
gathering the valid positions; the package masks them."""
import numpy as np
import oneflow as flow
import pytest

import reference as ref
import reference_peer as peer
from gradcheck import analytic_grads, assert_gradients_match
from knowledge_distill_util import att_distill
from knowledge_distill_util.functional import _masked_row_kl, attention_kl, attention_mse, relation_kl

F32 = dict(rtol=1.3e-6, atol=1e-5)


def t32(array):
    return flow.tensor(np.asarray(array, dtype=np.float32))


def t64(array):
    return flow.tensor(np.asarray(array, dtype=np.float64))


def scores(rng, batch=3, heads=2, length=5, additive=None):
    x = (rng.standard_normal((batch, heads, length, length)) * 3).astype(np.float32)
    if additive is not None:  # the BERT additive padding mask on keys
        x = x + np.where(additive > 0, 0.0, -10000.0)[:, None, None, :].astype(np.float32)
    return x


MASKS = {
    "none": None,
    "padding": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]),
    "empty_sequence": np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 1, 1, 0]]),
}


def as_mask(mask):
    return None if mask is None else t32(mask)


# --- values ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("additive", [False, True])
def test_attention_mse_matches_reference(mask, additive):
    rng = np.random.default_rng(len(mask))
    m = MASKS[mask]
    add = m if (additive and m is not None) else None
    s, t = scores(rng, additive=add), scores(rng, additive=add)
    np.testing.assert_allclose(attention_mse(t32(s), t32(t), mask=as_mask(m)).item(),
                               peer.attention_mse(s, t, m), **F32)


def test_attention_mse_without_mask_is_the_att_distill_pair_value():
    rng = np.random.default_rng(1)
    add = MASKS["padding"]
    s, t = scores(rng, additive=add), scores(rng, additive=add)
    assert attention_mse(t32(s), t32(t)).item() == att_distill(None, [t32(s)], [t32(t)]).item()
    np.testing.assert_allclose(attention_mse(t32(s), t32(t), mask_threshold=-1.0).item(),
                               peer.attention_mse(s, t, None, threshold=-1.0), **F32)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("additive", [False, True])
def test_attention_kl_matches_reference(mask, additive):
    rng = np.random.default_rng(2 + len(mask))
    m = MASKS[mask]
    add = m if (additive and m is not None) else None
    s, t = scores(rng, additive=add), scores(rng, additive=add)
    np.testing.assert_allclose(attention_kl(t32(s), t32(t), mask=as_mask(m)).item(),
                               peer.attention_kl(s, t, m), **F32)


def test_attention_kl_without_mask_averages_every_row():
    rng = np.random.default_rng(3)
    s, t = scores(rng), scores(rng)
    rows = [float(np.sum(ref.softmax(t[b, h, i]) * (ref.log_softmax(t[b, h, i]) - ref.log_softmax(s[b, h, i]))))
            for b in range(3) for h in range(2) for i in range(5)]
    np.testing.assert_allclose(attention_kl(t32(s), t32(t)).item(), np.mean(rows), **F32)


@pytest.mark.parametrize("mask", sorted(MASKS))
@pytest.mark.parametrize("widths, heads", [((8, 8), 2), ((6, 12), 3), ((4, 8), 1), ((12, 12), 12)])
def test_relation_kl_matches_reference(mask, widths, heads):
    rng = np.random.default_rng(heads * 10 + len(mask))
    s = (rng.standard_normal((3, 5, widths[0])) * 1.5).astype(np.float32)
    t = (rng.standard_normal((3, 5, widths[1])) * 1.5).astype(np.float32)
    got = relation_kl(t32(s), t32(t), num_relation_heads=heads, mask=as_mask(MASKS[mask])).item()
    np.testing.assert_allclose(got, peer.relation_kl(s, t, heads, MASKS[mask]), **F32)


@pytest.mark.parametrize("fn", [attention_mse, attention_kl])
def test_all_padding_gives_zero_and_padding_content_does_not_matter(fn):
    rng = np.random.default_rng(4)
    m = MASKS["padding"]
    s, t = scores(rng), scores(rng)
    base = fn(t32(s), t32(t), mask=t32(m)).item()
    s[0, :, 3:, :] = 50.0  # padded query rows
    s[0, :, :, 4] = -50.0  # a padded key
    t[2, :, :, 1:] = np.inf  # padded keys of a sequence with one token
    assert fn(t32(s), t32(t), mask=t32(m)).item() == pytest.approx(base, rel=1e-6)
    assert fn(t32(s), t32(t), mask=flow.zeros(3, 5, dtype=flow.int64)).item() == 0.0


def test_attention_kl_keys_at_minus_inf_in_both_stay_finite():
    """The unmasked BERT convention: -inf scores on padded keys, no mask argument."""
    rng = np.random.default_rng(5)
    s, t = scores(rng, batch=1, length=4), scores(rng, batch=1, length=4)
    s[..., 3], t[..., 3] = -np.inf, -np.inf
    student = t32(s).requires_grad_()
    loss = attention_kl(student, t32(t))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(student.grad.numpy()).all()
    rows = [float(np.sum(ref.softmax(t[0, h, i, :3]) * (ref.log_softmax(t[0, h, i, :3])
                                                        - ref.log_softmax(s[0, h, i, :3]))))
            for h in range(2) for i in range(4)]
    np.testing.assert_allclose(loss.item(), np.mean(rows), **F32)
    assert np.all(student.grad.numpy()[..., 3] == 0)


def test_huge_scores_are_finite():
    rng = np.random.default_rng(6)
    s = (rng.choice([-1.0, 1.0], size=(1, 2, 3, 3)) * 1e4).astype(np.float32)
    t = (rng.choice([-1.0, 1.0], size=(1, 2, 3, 3)) * 1e4).astype(np.float32)
    student = t32(s).requires_grad_()
    loss = attention_kl(student, t32(t), mask=t32([[1, 1, 0]]))
    loss.backward()
    assert np.isfinite(loss.item()) and np.isfinite(student.grad.numpy()).all()
    np.testing.assert_allclose(loss.item(), peer.attention_kl(s, t, np.array([[1, 1, 0]])), rtol=1e-5)


def test_masked_row_kl_contract():
    """The seam shared with the kernels: [..., Lq, Lk] -> [..., Lq]; key_mask [B, 1, 1, Lk]; empty rows 0."""
    rng = np.random.default_rng(7)
    s, t = scores(rng, batch=2, length=4), scores(rng, batch=2, length=4)
    key_mask = np.array([[1, 1, 0, 1], [0, 0, 0, 0]], np.float32)
    rows = _masked_row_kl(t32(s), t32(t), t32(key_mask).reshape(2, 1, 1, 4)).numpy()
    assert rows.shape == (2, 2, 4)
    keep = [0, 1, 3]
    for h in range(2):
        for i in range(4):
            want = float(np.sum(ref.softmax(t[0, h, i, keep]) * (ref.log_softmax(t[0, h, i, keep])
                                                                  - ref.log_softmax(s[0, h, i, keep]))))
            np.testing.assert_allclose(rows[0, h, i], want, **F32)
    assert np.all(rows[1] == 0)
    np.testing.assert_allclose(_masked_row_kl(t32(s), t32(t), None).numpy()[1, 0, 0],
                               float(np.sum(ref.softmax(t[1, 0, 0]) * (ref.log_softmax(t[1, 0, 0])
                                                                     - ref.log_softmax(s[1, 0, 0])))), **F32)


# --- gradients ---------------------------------------------------------------------------------------

MASK64 = t64([[1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("fn", [attention_mse, attention_kl])
@pytest.mark.parametrize("mask", [None, MASK64])
def test_attention_gradients_finite_differences(fn, mask):
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal((2, 2, 3, 3)) * 2, rng.standard_normal((2, 2, 3, 3)) * 2]
    loss = lambda s, t: fn(s, t, mask=mask)  # noqa: E731
    assert_gradients_match(loss, arrays, indices=[0])
    grads = analytic_grads(loss, arrays)
    assert grads[1] is None
    if mask is not None:  # padded keys and the empty sequence get no gradient
        assert np.all(grads[0][0, :, :, 2] == 0) and np.all(grads[0][1] == 0)


@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("mask", [None, MASK64])
def test_relation_gradients_finite_differences(heads, mask):
    rng = np.random.default_rng(9)
    arrays = [rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 6))]
    loss = lambda s, t: relation_kl(s, t, num_relation_heads=heads, mask=mask)  # noqa: E731
    assert_gradients_match(loss, arrays, indices=[0])
    assert analytic_grads(loss, arrays)[1] is None


def test_float16_is_computed_in_float32():
    rng = np.random.default_rng(10)
    s, t = scores(rng).astype(np.float16), scores(rng).astype(np.float16)
    m = MASKS["padding"]
    got = attention_kl(flow.tensor(s, dtype=flow.float16), flow.tensor(t, dtype=flow.float16), mask=t32(m))
    assert got.dtype == flow.float32
    np.testing.assert_allclose(got.item(), peer.attention_kl(s, t, m), rtol=1e-5, atol=1e-5)


# --- validation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [attention_mse, attention_kl])
def test_attention_bad_input(fn):
    x = flow.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 4, 4\) but must have shape \(2, 4\)"):
        fn(x, x, mask=flow.ones(2, 4, 4))
    with pytest.raises(ValueError, match=r"mask must hold only 0 and 1"):
        fn(x, x, mask=flow.full((2, 4), -1))
    with pytest.raises(ValueError, match=r"student must have shape \[B, heads, L, L\], got shape \(2, 4, 4\)"):
        fn(flow.zeros(2, 4, 4), flow.zeros(2, 4, 4))


def test_relation_bad_input():
    s, t = flow.zeros(2, 3, 8), flow.zeros(2, 3, 12)
    with pytest.raises(ValueError, match=r"student's width 8 is not divisible by num_relation_heads=3; choose"):
        relation_kl(s, t, num_relation_heads=3)
    with pytest.raises(ValueError, match=r"teacher's width 12 is not divisible by num_relation_heads=8"):
        relation_kl(s, t, num_relation_heads=8)
    with pytest.raises(TypeError, match=r"num_relation_heads must be a positive integer, got 2.0"):
        relation_kl(s, t, num_relation_heads=2.0)
    with pytest.raises(ValueError, match=r"num_relation_heads must be a positive integer, got 0"):
        relation_kl(s, t, num_relation_heads=0)
    with pytest.raises(ValueError, match=r"student has shape \(2, 3, 8\) and teacher has shape \(2, 4, 12\)"):
        relation_kl(s, flow.zeros(2, 4, 12), num_relation_heads=4)
    with pytest.raises(TypeError, match=r"keyword-only|missing 1 required keyword-only argument"):
        relation_kl(s, t)
