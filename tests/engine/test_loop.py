"""The step loop: accumulation, several teachers, schedules, clipping, warm-up and decay, nn.Graph."""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
from knowledge_distill_util.functional import kl_div

from .conftest import pair, random_data, tuple_loader

MATCH = {"layer_S": "body.1", "layer_T": "body.3", "feature": "output", "loss": "hidden_mse",
         "proj": ["linear", 32, 128]}


def _train(out, data, steps, distill=None, teacher=None, **training):
    t, student = pair(inputs=8, classes=3)
    distiller = Distiller(teacher or t, student, distill or DistillationConfig(hard_label_weight=0.5, temperature=2.0,
                                                                               intermediate_matches=[MATCH]),
                          TrainingConfig(str(out), max_steps=steps, **training))
    return distiller, distiller.train(data, optimizer=flow.optim.SGD(distiller.parameters(), lr=0.1))


def test_gradient_accumulation_equals_a_larger_batch(tmp_path):
    x, y = random_data(rows=32)
    big, big_history = _train(tmp_path / "big", tuple_loader(x, y, batch_size=16), steps=2)
    small, small_history = _train(tmp_path / "small", tuple_loader(x, y, batch_size=8), steps=2,
                                  gradient_accumulation_steps=2)
    np.testing.assert_allclose(small_history["loss"], big_history["loss"], rtol=1e-5)
    expected = big.state_dict()
    for name, value in small.state_dict().items():
        np.testing.assert_allclose(value.numpy(), expected[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_several_teachers_average_their_logits_with_weights(tmp_path):
    x, y = random_data(rows=16)
    t1, student = pair(inputs=8, classes=3)
    t2, _ = pair(inputs=8, classes=3, seed=1)
    config = DistillationConfig(temperature=2.0, teacher_weights=[1.0, 3.0])
    distiller = Distiller([t1, t2], student, config, TrainingConfig(str(tmp_path), max_steps=1))
    xs, ys = flow.tensor(x), flow.tensor(y)
    with flow.no_grad():
        expected = kl_div(student(xs), 0.25 * t1(xs) + 0.75 * t2(xs), student_temperature=2.0,
                          teacher_temperature=2.0).item()
    history = distiller.train(tuple_loader(x, y), optimizer=flow.optim.SGD(distiller.parameters(), lr=0.1))
    assert history["kl_div"][0] == pytest.approx(expected, rel=1e-5)
    t3, _ = pair(inputs=8, classes=4, seed=2)
    with pytest.raises(ValueError, match="^teacher 1's logits have shape \\(16, 4\\) but teacher 0's \\(16, 3\\); several "
                                         "teachers' logits are averaged class by class"):
        Distiller([t1, t3], student, config, TrainingConfig(str(tmp_path / "other"), max_steps=1)).train(
            tuple_loader(x, y))
    assert not (tmp_path / "other").exists()


def test_weight_schedules_and_per_row_temperatures(tmp_path):
    x, y = random_data(rows=64)
    config = DistillationConfig(hard_label_weight=1.0, logit_weight=2.0, logit_weight_schedule="linear_decay",
                                hard_label_weight_schedule="linear_growth", temperature_scheduler="flsw",
                                temperature=4.0)
    _, history = _train(tmp_path, tuple_loader(x, y), steps=4, distill=config)
    for step in range(4):  # linear_decay(s, 4) = 1 - s/4, linear_growth(s, 4) = s/4
        expected = 2.0 * (1 - step / 4) * history["kl_div"][step] + (step / 4) * history["hard_label"][step]
        assert history["loss"][step] == pytest.approx(expected, rel=1e-5)


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_logit_terms_add_their_weighted_losses(tmp_path):
    """Two logit_terms beside the top-level logit loss: each term's value is its formula in float64 NumPy on the
    initial models' logits (step 0), the total their weighted sum under the terms' own schedules."""
    x, y = random_data(rows=16)
    teacher, student = pair(inputs=8, classes=3)
    with flow.no_grad():
        z_s, z_t = (model(flow.tensor(x)).numpy().astype(np.float64) for model in (student, teacher))
    config = DistillationConfig(temperature=2.0, logit_weight=0.25, logit_terms=[
        {"loss": "kl_div", "temperature": 4.0, "temperature_scaling": True, "weight_schedule": "linear_decay"},
        {"loss": "tv_distance", "weight": 0.5, "student_temperature": 1.0}])
    distiller = Distiller(teacher, student, config, TrainingConfig(str(tmp_path), max_steps=4))
    history = distiller.train(tuple_loader(x, y), optimizer=flow.optim.SGD(distiller.parameters(), lr=0.1))

    def kl(t_s, t_t):
        p_t, p_s = _np_softmax(z_t / t_t), _np_softmax(z_s / t_s)
        return float((p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean())

    tv = float(0.5 * np.abs(_np_softmax(z_s / 1.0) - _np_softmax(z_t / 2.0)).sum(-1).mean())
    # float32 sums of p log p (about 1) give a small KL (1e-3 here) to about 1e-6
    assert history["kl_div"][0] == pytest.approx(kl(2.0, 2.0), rel=2e-3)
    assert history["logit0_kl_div"][0] == pytest.approx(16 * kl(4.0, 4.0), rel=2e-3)
    assert history["logit1_tv_distance"][0] == pytest.approx(tv, rel=1e-5)
    for step in range(4):  # linear_decay(s, 4) = 1 - s/4
        expected = (0.25 * history["kl_div"][step] + (1 - step / 4) * history["logit0_kl_div"][step]
                    + 0.5 * history["logit1_tv_distance"][step])
        assert history["loss"][step] == pytest.approx(expected, rel=1e-5)


def test_clipping_bounds_the_update(tmp_path):
    x, y = random_data(rows=16)
    clipped, _ = _train(tmp_path / "clipped", tuple_loader(x, y), steps=1, max_grad_norm=1e-3)
    _, student = pair(inputs=8, classes=3)  # the same initial student
    squared = sum(float(((a - b) ** 2).sum()) for a, b in zip(clipped.student.parameters(), student.parameters()))
    assert 0 < squared ** 0.5 <= 0.1 * 1e-3 * 1.0001  # lr * max_grad_norm


def test_warm_up_then_linear_decay(tmp_path):
    x, y = random_data(rows=16)
    _, history = _train(tmp_path / "linear", tuple_loader(x, y), steps=5, warmup_steps=2, lr_schedule="linear")
    # engine.optim.make_scheduler: lr * min(1, s / warmup) * (1 - max(s, warmup) / total), s from 0
    assert history["lr"] == pytest.approx([0.0, 0.1 * 0.5 * 3 / 5, 0.1 * 3 / 5, 0.1 * 2 / 5, 0.1 * 1 / 5])
    _, history = _train(tmp_path / "constant", tuple_loader(x, y), steps=4, warmup_steps=2)
    assert history["lr"] == pytest.approx([0.0, 0.05, 0.1, 0.1])


def test_eval_every(tmp_path):
    x, y = random_data(rows=16)
    t, student = pair(inputs=8, classes=3)
    distiller = Distiller(t, student, DistillationConfig(), TrainingConfig(str(tmp_path), max_steps=5, eval_every=2))
    history = distiller.train(tuple_loader(x, y), eval_data=tuple_loader(x, y))
    assert [e["step"] for e in history["eval"]] == [2, 4, 5]
    assert history["eval"][-1]["accuracy"] == distiller.evaluate(tuple_loader(x, y))["accuracy"]


def test_a_loss_that_becomes_nan_stops_with_one_sentence(tmp_path):
    x, y = random_data(rows=32)
    x[20, 0] = np.nan  # in the second batch of 16
    with pytest.raises(FloatingPointError, match="the loss became nan at step 2; lower the learning rate"):
        _train(tmp_path, tuple_loader(x, y), steps=2)


def test_a_nan_in_the_first_batch_is_refused_before_anything_is_written(tmp_path):
    x, y = random_data(rows=16)
    x[0, 0] = np.nan
    with pytest.raises(FloatingPointError, match="^the loss of the first batch is nan before any update \\(loss nan, "
                                                 ".*\\); check the inputs and the models' weights for NaN or "
                                                 "infinite values$"):
        _train(tmp_path / "out", tuple_loader(x, y), steps=2)
    assert not (tmp_path / "out").exists()


@pytest.mark.graph
def test_graph_accumulation_equals_eager_accumulation(tmp_path):
    x, y = random_data(rows=32)
    runs = {}
    for use_graph in (False, True):
        runs[use_graph] = _train(tmp_path / str(use_graph), tuple_loader(x, y, batch_size=8), steps=2,
                                 gradient_accumulation_steps=2, use_graph=use_graph)
    (eager, eager_history), (graph, graph_history) = runs[False], runs[True]
    for term in ("loss", "kl_div", "hard_label", "match0_hidden_mse"):
        np.testing.assert_allclose(graph_history[term], eager_history[term], rtol=1e-5, err_msg=term)
    expected = eager.state_dict()
    for name, value in graph.state_dict().items():
        np.testing.assert_allclose(value.numpy(), expected[name].numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.graph
def test_graph_equals_eager(tmp_path):
    x, y = random_data(rows=48)
    runs = {}
    for use_graph in (False, True):
        t, student = pair(inputs=8, classes=3)
        config = DistillationConfig(hard_label_weight=0.5, temperature=2.0, intermediate_matches=[MATCH],
                                    logit_weight_schedule="linear_decay", logit_terms=[
                                        {"loss": "tv_distance", "weight": 0.5, "weight_schedule": "linear_growth"}])
        distiller = Distiller(t, student, config, TrainingConfig(str(tmp_path / str(use_graph)), max_steps=4,
                                                                 use_graph=use_graph, warmup_steps=1,
                                                                 lr_schedule="linear", max_grad_norm=1.0))
        history = distiller.train(tuple_loader(x, y, batch_size=16, shuffle=True),
                                  optimizer=flow.optim.AdamW(distiller.parameters(), lr=1e-2))
        runs[use_graph] = (history, {k: v.numpy() for k, v in distiller.state_dict().items()})
    (eager, eager_state), (graph, graph_state) = runs[False], runs[True]
    for term in ("loss", "kl_div", "hard_label", "match0_hidden_mse", "logit0_tv_distance", "lr"):
        np.testing.assert_allclose(graph[term], eager[term], rtol=1e-4, atol=1e-6, err_msg=term)
    for name in eager_state:
        np.testing.assert_allclose(graph_state[name], eager_state[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_graph_mode_refuses_a_loader_with_a_short_last_batch_before_anything_is_written(tmp_path):
    x, y = random_data(rows=40)
    t, student = pair(inputs=8, classes=3)
    distiller = Distiller(t, student, DistillationConfig(), TrainingConfig(str(tmp_path / "out"), max_steps=2,
                                                                           use_graph=True))
    with pytest.raises(ValueError, match="the loader's 40 rows in batches of 16 end with a batch of 8; use "
                                         "DataLoader\\(..., drop_last=True\\)"):
        distiller.train(tuple_loader(x, y, batch_size=16))
    assert not (tmp_path / "out").exists()
