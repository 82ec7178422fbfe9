"""Batches: dicts, tuples, lists, NumPy arrays; batches that cannot be split."""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
from knowledge_distill_util.engine.batches import flatten, split_batch, unflatten

from .conftest import DictMLP, pair, random_data


def _distil(tmp_path, teacher, student, data, label_key="labels", steps=4):
    cfg = TrainingConfig(str(tmp_path), max_steps=steps, label_key=label_key)
    return Distiller(teacher, student, DistillationConfig(hard_label_weight=1.0), cfg).train(data)


def test_tuple_list_dict_and_numpy_batches_train_the_same(tmp_path):
    x, y = random_data(rows=32)
    chunks = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 32, 8)]
    runs = {
        "tensor tuples": [(flow.tensor(a), flow.tensor(b)) for a, b in chunks],
        "numpy tuples": chunks,
        "numpy lists": [[a, b] for a, b in chunks],
        "numpy float64": [(a.astype(np.float64), b) for a, b in chunks],
    }
    losses = {}
    for name, data in runs.items():
        teacher, student = pair(inputs=8, classes=3)
        losses[name] = _distil(tmp_path / name, teacher, student, data)["loss"]
    teacher, student = pair(inputs=8, classes=3, cls=DictMLP)
    losses["dicts"] = _distil(tmp_path / "dicts", teacher, student, [{"features": a, "y": b} for a, b in chunks],
                              label_key="y")["loss"]
    first = losses.pop("tensor tuples")
    for name, values in losses.items():
        np.testing.assert_allclose(values, first, rtol=1e-6, err_msg=name)


def test_split_batch_layout():
    batch = split_batch((np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), np.array([0, 1])), "labels", "cpu")
    assert len(batch.args) == 2 and batch.kwargs == {} and batch.labels.tolist() == [0, 1] and batch.rows() == 2
    batch = split_batch({"a": flow.ones(2), "text": ["x", "y"]}, "labels", "cpu")
    assert batch.labels is None and batch.kwargs["text"] == ["x", "y"]
    values, layout = flatten(split_batch({"a": flow.ones(2), "y": flow.zeros(2)}, "y", "cpu"), "y")
    rebuilt = unflatten(values, layout)
    assert list(rebuilt.kwargs) == ["a"] and list(rebuilt.raw) == ["a", "y"]
    with pytest.raises(TypeError, match="use_graph=True needs every batch value to be a tensor"):
        flatten(split_batch({"a": flow.ones(2), "text": ["x"]}, "labels", "cpu"))


@pytest.mark.parametrize("batch, error, message", [
    (flow.ones(4, 8), TypeError, "cannot split a batch of type Tensor into inputs and labels"),
    ((flow.ones(4, 8),), ValueError, "a tuple batch must be \\(inputs..., labels\\) with at least 2 items, got 1"),
    ({"labels": flow.ones(4)}, ValueError, "a dict batch holds only the labels 'labels'"),
])
def test_a_batch_that_cannot_be_split_fails_before_anything_is_written(tmp_path, batch, error, message):
    teacher, student = pair(inputs=8, classes=3)
    with pytest.raises(error, match=message):
        _distil(tmp_path / "out", teacher, student, [batch])
    assert not (tmp_path / "out").exists()


def test_missing_labels_with_a_hard_label_weight(tmp_path):
    teacher, student = pair(inputs=8, classes=3, cls=DictMLP)
    with pytest.raises(ValueError, match="hard_label_weight is 1.0 but the batch has no labels"):
        _distil(tmp_path / "out", teacher, student, [{"features": flow.ones(4, 8)}])
    assert not (tmp_path / "out").exists()


def test_empty_data(tmp_path):
    teacher, student = pair(inputs=8, classes=3)
    with pytest.raises(ValueError, match="the training data yielded no batch"):
        _distil(tmp_path / "out", teacher, student, [])
    assert not (tmp_path / "out").exists()


def test_a_one_pass_generator_is_refused(tmp_path):
    x, y = random_data(rows=16)
    teacher, student = pair(inputs=8, classes=3)
    data = ((x[i:i + 8], y[i:i + 8]) for i in range(0, 16, 8))
    with pytest.raises(TypeError, match="data must be re-iterable .* got a one-pass generator"):
        _distil(tmp_path / "out", teacher, student, data, steps=3)
    with pytest.raises(TypeError, match="data must be an iterable of batches"):
        _distil(tmp_path / "out", teacher, student, 3, steps=3)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels, error, message", [
    (np.full(8, 3), ValueError, "the labels hold 3, outside the student's 3 classes 0..2; map them to 0..2 "
                                "\\(or give the student 4 outputs; -100 marks a row the loss ignores\\)"),
    (np.full(8, -1), ValueError, "the labels hold -1, outside the student's 3 classes 0..2"),
    (np.zeros(8, np.float32), TypeError, "the labels are float32 but the student's 3 classes need integer class "
                                         "ids; give ids in 0..2"),
    (np.zeros((8, 2), np.int64), ValueError, "the labels have shape \\(8, 2\\) but the student's logits \\(8, 3\\) "
                                             "need one label per row, 8 in all"),
])
def test_labels_that_do_not_fit_the_logits_fail_before_anything_is_written(tmp_path, labels, error, message):
    x, _ = random_data(rows=8)
    teacher, student = pair(inputs=8, classes=3)
    with pytest.raises(error, match=message):  # instead of a NaN loss (ids out of range) or OneFlow's abort (shape)
        _distil(tmp_path / "out", teacher, student, [(x, labels)])
    assert not (tmp_path / "out").exists()


def test_labels_out_of_range_in_a_later_batch_stop_the_run_at_that_step(tmp_path):
    x, y = random_data(rows=16)
    teacher, student = pair(inputs=8, classes=3)
    data = [(x[:8], y[:8]), (x[8:], np.full(8, 5))]
    with pytest.raises(ValueError, match="the labels hold 5, outside the student's 3 classes"):
        _distil(tmp_path / "out", teacher, student, data, steps=2)


@pytest.mark.graph
def test_labels_out_of_range_in_a_later_batch_of_a_compiled_run_stop_it_at_that_step(tmp_path):
    x, y = random_data(rows=16)
    teacher, student = pair(inputs=8, classes=3)
    cfg = TrainingConfig(str(tmp_path / "out"), max_steps=2, use_graph=True)
    distiller = Distiller(teacher, student, DistillationConfig(hard_label_weight=1.0), cfg)
    with pytest.raises(ValueError, match="the labels hold 5, outside the student's 3 classes"):  # not a NaN loss
        distiller.train([(x[:8], y[:8]), (x[8:], np.full(8, 5))])


def test_class_ids_of_any_integer_dtype_train_alike_and_one_logit_takes_scores(tmp_path):
    x, y = random_data(rows=16)
    losses = {}
    for dtype in (np.int64, np.int32, np.uint8):
        teacher, student = pair(inputs=8, classes=3)
        losses[dtype] = _distil(tmp_path / str(dtype.__name__), teacher, student, [(x, y.astype(dtype))])["loss"]
    assert losses[np.int32] == losses[np.int64] == losses[np.uint8]
    teacher, student = pair(inputs=8, classes=1)
    cfg = TrainingConfig(str(tmp_path / "regression"), max_steps=4)
    history = Distiller(teacher, student, DistillationConfig(logit_loss="hidden_mse", hard_label_weight=1.0), cfg).train(
        [(x, x[:, :1] * 0.5)])
    assert np.all(np.isfinite(history["hard_label"])) and np.all(np.array(history["hidden_mse"]) > 0)


def test_ignored_rows_are_labelled_minus_100_as_in_cross_entropy(tmp_path):
    x, y = random_data(rows=16)
    ignored = y.copy()
    ignored[8:] = -100
    teacher, student = pair(inputs=8, classes=3)
    with_ignored = _distil(tmp_path / "ignored", teacher, student, [(x, ignored)], steps=1)["hard_label"]
    teacher, student = pair(inputs=8, classes=3)
    first_rows = _distil(tmp_path / "first", teacher, student, [(x[:8], y[:8])], steps=1)["hard_label"]
    assert with_ignored == pytest.approx(first_rows, rel=1e-6)  # the mean over the labelled rows only


def test_a_softmax_divergence_on_one_logit_is_refused_instead_of_a_zero_term(tmp_path):
    x, _ = random_data(rows=16)
    teacher, student = pair(inputs=8, classes=1)
    with pytest.raises(ValueError, match="the student gives one logit per row \\(regression\\), where the logit loss "
                                         "'kl_div', a divergence of softmax distributions over the classes, is always 0; "
                                         "use logit_loss='hidden_mse'"):
        _distil(tmp_path / "out", teacher, student, [(x, x[:, 0])])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data, error, message", [
    ([(np.zeros((8, 9), np.float32), np.zeros(8, np.int64))], RuntimeError,
     "the student \\(MLP\\) failed on a batch of input 0 float32 \\[8, 9\\]: \\(9 vs 8\\) in InferTensorDesc4Matmul; "
     "check that the batch fits the student \\(shapes, dtypes, device, argument names\\)"),
    ([{"x": np.zeros((8, 8), np.float32), "note": "a", "labels": np.zeros(8, np.int64)}], TypeError,
     "the student \\(MLP\\) failed on a batch of x float32 \\[8, 8\\], note str: .*unexpected keyword argument"),
])
def test_a_batch_the_model_cannot_take_fails_with_one_sentence_naming_the_inputs(tmp_path, data, error, message):
    teacher, student = pair(inputs=8, classes=3)
    with pytest.raises(error, match=message) as caught:
        _distil(tmp_path / "out", teacher, student, data)
    assert "\n" not in str(caught.value)  # not OneFlow's C++ stack
    assert not (tmp_path / "out").exists()
