"""Layer-map strategies (issue 11, item 10): the issue's f(i) on 1-based layers, written out in
tests/reference_peer.py; "uniform" keeps the original pairs; the *_distill_loss functions take strategy=."""
import numpy as np
import oneflow as flow
import pytest

import reference as ref
import reference_peer as peer
from knowledge_distill_util.functional import (
    LAYER_MAP_STRATEGIES, att_distill_loss, attention_layer_map, hidden_layer_map, layer_distill_loss,
)

COUNTS = [(4, 12), (3, 6), (6, 6), (1, 12), (5, 12), (4, 7), (2, 3)]


def divisible(n_s, n_t):
    return n_t % n_s == 0


@pytest.mark.parametrize("strategy, n_s, n_t", [  # "uniform" needs n_t % n_s == 0 (its error: below)
    (strategy, n_s, n_t) for strategy in LAYER_MAP_STRATEGIES for n_s, n_t in COUNTS
    if strategy != "uniform" or divisible(n_s, n_t)])
def test_maps_follow_the_formulas(strategy, n_s, n_t):
    f = [peer.teacher_layer(i, n_s, n_t, strategy) for i in range(1, n_s + 1)]
    assert hidden_layer_map(n_s + 1, n_t + 1, strategy) == [(0, 0)] + [(i, f[i - 1]) for i in range(1, n_s + 1)]
    assert attention_layer_map(n_s, n_t, strategy=strategy) == [(i - 1, f[i - 1] - 1) for i in range(1, n_s + 1)]
    assert all(1 <= x <= n_t for x in f) and f == sorted(f)


def test_the_documented_examples():
    assert [t for _, t in attention_layer_map(5, 12, "round")] == [1, 4, 6, 9, 11]  # layers 2, 5, 7, 10, 12
    assert hidden_layer_map(5, 13, "last") == [(0, 0), (1, 9), (2, 10), (3, 11), (4, 12)]
    assert attention_layer_map(3, 12, "first") == [(0, 0), (1, 1), (2, 2)]


@pytest.mark.parametrize("n_s, n_t", [(4, 12), (3, 6), (6, 6), (1, 12)])
def test_uniform_keeps_the_original_pairs(n_s, n_t):
    k = n_t // n_s
    assert hidden_layer_map(n_s + 1, n_t + 1) == [(i, i * k) for i in range(n_s + 1)]
    assert attention_layer_map(n_s, n_t) == [(i, i * k + k - 1) for i in range(n_s)]
    assert hidden_layer_map(n_s + 1, n_t + 1, "round") == hidden_layer_map(n_s + 1, n_t + 1)


def rand_list(rng, count, *shape):
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(count)]


@pytest.mark.parametrize("strategy", ["first", "last", "round"])
def test_layer_losses_use_the_strategy(strategy):
    rng = np.random.default_rng(LAYER_MAP_STRATEGIES.index(strategy))
    reps_s, reps_t = rand_list(rng, 6, 2, 3, 4), rand_list(rng, 13, 2, 3, 4)
    atts_s, atts_t = rand_list(rng, 5, 2, 2, 3, 3), rand_list(rng, 12, 2, 2, 3, 3)
    got = layer_distill_loss([flow.tensor(x) for x in reps_s], [flow.tensor(x) for x in reps_t], strategy=strategy)
    want = sum(ref.mse(reps_s[i], reps_t[j]) for i, j in
               [(0, 0)] + [(i, peer.teacher_layer(i, 5, 12, strategy)) for i in range(1, 6)])
    np.testing.assert_allclose(got.item(), want, rtol=1.3e-6, atol=1e-5)
    got = att_distill_loss([flow.tensor(x) for x in atts_s], [flow.tensor(x) for x in atts_t], strategy=strategy)
    want = sum(ref.mse(atts_s[i - 1], atts_t[peer.teacher_layer(i, 5, 12, strategy) - 1]) for i in range(1, 6))
    np.testing.assert_allclose(got.item(), want, rtol=1.3e-6, atol=1e-5)


def test_bad_strategies_and_counts():
    with pytest.raises(ValueError, match=r"strategy must be one of 'uniform', 'first', 'last', 'round'; got 'even'"):
        hidden_layer_map(5, 13, strategy="even")
    with pytest.raises(ValueError, match=r"strategy must be one of .*; got 'skip'"):
        attention_layer_map(4, 12, strategy="skip")
    with pytest.raises(ValueError, match=r"must be a multiple of the student's .* pass strategy=\"round\""):
        attention_layer_map(5, 12)
    with pytest.raises(ValueError, match=r"student has more layers \(student_atts: 5\) than the teacher"):
        attention_layer_map(5, 4, strategy="round")
    with pytest.raises(TypeError, match=r"student_atts must be an integer count, got 2.0"):
        attention_layer_map(2.0, 4, strategy="first")
    x = [flow.zeros(1, 2, 3)] * 3
    with pytest.raises(ValueError, match=r"pass either layer_map or strategy, not both"):
        layer_distill_loss(x, x, layer_map=[0, 1, 2], strategy="first")
    with pytest.raises(ValueError, match=r"strategy must be one of"):
        att_distill_loss(x, x, strategy="nearest")


@pytest.mark.parametrize("strategy, pairs", [("skip", [(1, 2), (2, 4)]), ("last", [(1, 4), (2, 5)])])
def test_pkd_patience_loss_sums_pkd_over_its_pairs(strategy, pairs):
    """BERT-PKD's patience term of a 3-layer student and a 6-layer teacher against the float64 reference: the
    pairs written out (skip: k * 2; last: 6 - 3 + k), each the normalised [CLS] vectors' squared distance."""
    from gradcheck import assert_gradients_match
    from knowledge_distill_util.functional import patience_layer_pairs, pkd_patience_loss

    rng = np.random.default_rng(3)
    s = [rng.standard_normal((2, 3, 4)) for _ in range(4)]
    t = [rng.standard_normal((2, 3, 4)) for _ in range(7)]
    assert patience_layer_pairs(4, 7, strategy) == pairs
    value = pkd_patience_loss([flow.tensor(a, dtype=flow.float32) for a in s],
                              [flow.tensor(a, dtype=flow.float32) for a in t], strategy=strategy)
    np.testing.assert_allclose(value.item(), sum(peer.pkd(s[i], t[j]) for i, j in pairs), rtol=1.3e-6, atol=1e-5)

    def loss(*tensors):
        return pkd_patience_loss(list(tensors[:4]), list(tensors[4:]), strategy=strategy)

    assert_gradients_match(loss, s + t, indices=[i for i, _ in pairs])


def test_pkd_patience_loss_refuses_what_it_cannot_pair():
    from knowledge_distill_util.functional import pkd_patience_loss

    one = [flow.zeros(1, 2, 3)] * 2
    with pytest.raises(ValueError, match="needs a student with at least 2 layers"):
        pkd_patience_loss(one, [flow.zeros(1, 2, 3)] * 5)
    with pytest.raises(ValueError, match=r"pairs must be \(student, teacher\) index pairs into the 2 student"):
        pkd_patience_loss(one, one, pairs=[(0, 5)])
