"""BERT-of-Theseus: the replacement coins and the routing of each block."""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.models.theseus import TheseusModel, sample_replacement
from knowledge_distill_util.training.trainer import StepInputs
from training.conftest import tiny_bert


def _inputs(batch=3, length=6, seed=0):
    ids = flow.tensor(np.random.default_rng(seed).integers(1, 40, (batch, length)))
    mask = flow.ones_like(ids)
    mask[0, -2:] = 0
    return ids, mask, flow.zeros_like(ids)


def test_replacement_probability_with_seeded_rng():
    rng = np.random.default_rng(123)
    coins = np.stack([sample_replacement(rng, 3, 0.5) for _ in range(4000)])
    assert abs(coins.mean() - 0.5) < 4 * np.sqrt(0.25 / coins.size)        # 4 sigma
    assert set(np.unique(coins)) == {0.0, 1.0}
    again = np.stack([sample_replacement(np.random.default_rng(123), 3, 0.5) for _ in range(1)])
    np.testing.assert_array_equal(again[0], coins[0])                      # same seed, same coins
    assert sample_replacement(rng, 5, 0.0).sum() == 0 and sample_replacement(rng, 5, 1.0).sum() == 5


def test_theseus_blocks_route_as_the_coins_say():
    teacher = tiny_bert(initializer_range=0.5)  # large weights: the two paths give clearly different logits
    model = TheseusModel(teacher, 2, 0.5)
    model.eval()
    inputs = _inputs()
    with flow.no_grad():
        all_old = model(*inputs, np.zeros(2))[0].numpy()
        all_new = model(*inputs, np.ones(2))[0].numpy()
        blended = model(*inputs, flow.tensor([0.0, 1.0]))[0].numpy()
        branched = model(*inputs, np.array([0.0, 1.0]))[0].numpy()
        teacher_logits = teacher(*inputs)[0].numpy()
        successor_logits = model.successor(*inputs)[0].numpy()
    np.testing.assert_allclose(all_old, teacher_logits, rtol=1e-5, atol=1e-6)   # predecessor = the teacher
    np.testing.assert_allclose(all_new, successor_logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blended, branched, rtol=1e-5, atol=1e-6)       # graph form = eager form
    assert np.abs(all_old - all_new).max() > 1e-4                              # the two paths differ


def test_theseus_rejects_a_non_divisor():
    with pytest.raises(ValueError, match="student_num_hidden_layers=3 must divide the teacher's 4 layers"):
        TheseusModel(tiny_bert(), 3, 0.5)


def test_theseus_tells_the_trainer_its_step_inputs():
    model = TheseusModel(tiny_bert(), 2, 0.5, seed=3)
    assert isinstance(model, StepInputs) and not isinstance(tiny_bert(), StepInputs)
    state = model.rng_state()
    first = model.step_inputs()["coins"]
    model.set_rng_state(state)
    np.testing.assert_array_equal(model.step_inputs()["coins"], first)   # the state replays the same coins

