"""What the Distiller reads from a teacher: logits computed beforehand (``train(teacher_logits=)``), no teacher at
all (labels only), and the layer-list losses of ``"layer_S": "all"`` matches (the original toolkit's
``layer_distill``/``att_distill`` formulas)."""
import os

import numpy as np
import oneflow as flow
import oneflow.nn as nn
import oneflow.nn.functional as F
import pytest
from oneflow.utils.data import DataLoader, Dataset

from knowledge_distill_util import Distiller, DistillationConfig, TrainingConfig
from knowledge_distill_util.engine.matches import Match

from .conftest import pair, random_data

ROWS, INPUTS, CLASSES, BATCH = 48, 8, 3, 16


class Indexed(Dataset):
    """``{"x", "labels", "index"}`` rows (``x`` float32 ``[INPUTS]``)."""

    def __init__(self, x, y, index=True):
        self.x, self.y, self.index = x, y, index

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        row = {"x": self.x[i], "labels": self.y[i]}
        return dict(row, index=np.int64(i)) if self.index else row


class Keyword(nn.Module):
    """``model(x=...)`` around a positional module."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


def _loader(x, y, index=True):
    return DataLoader(Indexed(x, y, index), batch_size=BATCH, shuffle=False)


def _weights(module):
    return {k: v.numpy().copy() for k, v in module.state_dict().items()}


def _train(tmp_path, name, teacher, student, config, **train):
    x, y = random_data(ROWS, INPUTS, CLASSES)
    cache = "off" if "teacher_logits" in train or teacher is None else "memory"
    cfg = TrainingConfig(output_dir=str(tmp_path / name), max_steps=6, seed=0, progress=False,
                         cache_teacher_outputs=cache)
    distiller = Distiller(teacher, Keyword(student), config, cfg)
    history = distiller.train(_loader(x, y, index=cache != "off" or "teacher_logits" in train), optimizer=flow.optim.SGD(distiller.parameters(), lr=0.1), **train)
    return history, _weights(student)


def test_precomputed_teacher_logits_train_exactly_as_the_teacher_itself(tmp_path):
    teacher, student = pair(INPUTS, CLASSES)
    teacher.eval()
    x, y = random_data(ROWS, INPUTS, CLASSES)
    with flow.no_grad():  # the teacher's logits in the loader's batches, as a forward in training gives them
        logits = np.concatenate([teacher(flow.tensor(x[i:i + BATCH])).numpy() for i in range(0, ROWS, BATCH)])
    config = DistillationConfig(temperature=2.0, logit_loss="soft_cross_entropy", hard_label_weight=0.5)
    start = _weights(student)
    online, online_weights = _train(tmp_path, "online", Keyword(teacher), student, config)
    student.load_state_dict({k: flow.tensor(v) for k, v in start.items()})
    offline, offline_weights = _train(tmp_path, "offline", None, student, config, teacher_logits=logits)
    assert online["loss"] == offline["loss"]
    for name, value in online_weights.items():
        np.testing.assert_array_equal(offline_weights[name], value)


def test_labels_only_needs_no_teacher_and_runs_none(tmp_path):
    _, student = pair(INPUTS, CLASSES)
    history, _ = _train(tmp_path, "labels", None, student, DistillationConfig(logit_weight=0, hard_label_weight=1))
    assert history["loss"] == history["hard_label"] and len(history["loss"]) == 6

    class Refuses(nn.Module):
        def forward(self, x):
            raise AssertionError("the teacher ran although nothing reads it")

    _train(tmp_path, "unread", Refuses(), student, DistillationConfig(logit_weight=0, hard_label_weight=1))


@pytest.mark.parametrize("case, message", [
    ("nan", "teacher_logits holds NaN or infinite values"),
    ("1d", r"teacher_logits must be a float array \[N, ..., C\]"),
    ("short", "holds the row id 40 under 'index', but teacher_logits has rows for the ids 0..39 only"),
])
def test_bad_teacher_logits_are_one_sentence_before_anything_is_written(tmp_path, case, message):
    _, student = pair(INPUTS, CLASSES)
    logits = np.zeros((ROWS, CLASSES), np.float32)
    logits = {"nan": np.full((ROWS, CLASSES), np.nan, np.float32), "1d": logits[:, 0], "short": logits[:40]}[case]
    with pytest.raises(ValueError, match=message):
        _train(tmp_path, case, None, student, DistillationConfig(), teacher_logits=logits)
    assert not os.path.exists(tmp_path / case / "checkpoints")


def test_teacher_logits_with_matches_or_no_teacher_at_all_are_refused(tmp_path):
    teacher, student = pair(INPUTS, CLASSES)
    match = DistillationConfig(intermediate_matches=[{"layer_S": "inner.body.0", "layer_T": "inner.body.2",
                                                      "feature": "output", "loss": "hidden_mse",
                                                      "proj": ["linear", 32, 128]}])
    with pytest.raises(ValueError, match="teacher_logits= gives the logit loss the teacher's logits, but "
                                         "intermediate_matches reads the teacher too"):
        _train(tmp_path, "m", Keyword(teacher), student, match, teacher_logits=np.zeros((ROWS, CLASSES), np.float32))
    with pytest.raises(ValueError, match="teacher is None but logit_weight is 1.0; give a teacher, the teacher's "
                                         "logits"):
        _train(tmp_path, "n", None, student, DistillationConfig())
    assert not os.listdir(tmp_path)


class Layers(nn.Module):
    """``(logits, reps, atts)`` as this package's BERT gives them: ``reps`` ``layers + 1`` tensors ``[B, 2, W]``
    (the input, then each layer), ``atts`` ``layers`` tensors ``[B, 1, 2, 2]``."""

    def __init__(self, layers, width=4):
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(width, width) for _ in range(layers)])
        self.head = nn.Linear(width, CLASSES)

    def forward(self, x):
        h = x.reshape(x.shape[0], 2, INPUTS // 2)
        reps, atts = [h], []
        for layer in self.layers:
            h = flow.tanh(layer(h))
            reps.append(h)
            atts.append(F.softmax(flow.matmul(h, h.transpose(1, 2)), dim=-1).unsqueeze(1))
        return self.head(h[:, 0]), reps, atts


def _numpy_layer_distill(s, t):
    """The original formula: sum over student entry ``i`` (teacher entry ``i * Lt // Ls``) of the element MSE."""
    k = (len(t) - 1) // (len(s) - 1)
    return sum(np.mean((a.astype(np.float64) - t[i * k].astype(np.float64)) ** 2) for i, a in enumerate(s))


def test_layer_list_matches_apply_the_original_formula_to_every_layer(tmp_path):
    flow.manual_seed(0)
    teacher, student = Layers(4), Layers(2)
    config = DistillationConfig(logit_weight=0, intermediate_matches=[
        {"layer_S": "all", "layer_T": "all", "feature": "hidden", "loss": "layer_distill_loss", "weight": 2.0},
        {"layer_S": "all", "layer_T": "all", "feature": "attention", "loss": "att_distill_loss"}])
    x, y = random_data(ROWS, INPUTS, CLASSES)
    cfg = TrainingConfig(output_dir=str(tmp_path / "run"), max_steps=1, progress=False)
    distiller = Distiller(teacher, student, config, cfg)
    history = distiller.train(DataLoader(Indexed(x, y, index=False), batch_size=BATCH), optimizer=flow.optim.SGD(
        distiller.parameters(), lr=0.0))
    with flow.no_grad():
        batch = flow.tensor(x[:BATCH])
        (_, s_reps, _), (_, t_reps, _) = student(batch), teacher(batch)
    expected = _numpy_layer_distill([r.numpy() for r in s_reps], [r.numpy() for r in t_reps])
    assert history["match0_layer_distill_loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history["loss"][0] == pytest.approx(2 * expected + history["match1_att_distill_loss"][0], rel=1e-5)


@pytest.mark.parametrize("entry, message", [
    (dict(layer_T=3), "\"layer_S\": \"all\" and \"layer_T\": \"all\" go together with a layer-list loss"),
    (dict(loss="hidden_mse"), "go together with a layer-list loss \\(layer_distill_loss, att_distill_loss, "
                              "pkd_patience_loss\\)"),
    (dict(feature="output"), "\\['feature'\\] must be one of 'hidden', 'attention'"),
    (dict(proj=["linear", 4, 8]), "has key\\(s\\) 'proj' that layer_distill_loss does not take"),
    (dict(options={"strategi": "last"}), "\\['options'\\] must be a dict with keys among layer_map, strategy"),
])
def test_bad_layer_list_entries(entry, message):
    with pytest.raises(ValueError, match=message):
        Match(2, dict({"layer_S": "all", "layer_T": "all", "feature": "hidden", "loss": "layer_distill_loss"},
                      **entry))


def _layers_run(tmp_path, name, **options):
    flow.manual_seed(0)
    teacher, student = Layers(4), Layers(2)
    config = DistillationConfig(logit_weight=0, intermediate_matches=[
        {"layer_S": "all", "layer_T": "all", "feature": "hidden", "loss": "layer_distill_loss"},
        {"layer_S": "all", "layer_T": "all", "feature": "attention", "loss": "att_distill_loss",
         "options": {"strategy": "last"}}])
    x, y = random_data(ROWS, INPUTS, CLASSES)
    cfg = TrainingConfig(output_dir=str(tmp_path / name), num_epochs=2, progress=False, **options)
    distiller = Distiller(Keyword(teacher), Keyword(student), config, cfg)
    index = options.get("cache_teacher_outputs", "off") != "off"
    history = distiller.train(DataLoader(Indexed(x, y, index=index), batch_size=BATCH),
                              optimizer=flow.optim.SGD(distiller.parameters(), lr=0.1))
    return distiller, history


def test_a_cache_of_layer_list_matches_holds_only_the_paired_layers_and_gives_the_same_losses(tmp_path, caplog):
    _, plain = _layers_run(tmp_path, "plain")
    with caplog.at_level("INFO", logger="knowledge_distill_util.engine.teacher_cache"):
        distiller, cached = _layers_run(tmp_path, "auto", cache_teacher_outputs="auto")
    assert cached["loss"] == plain["loss"]
    # hidden: the embedding + teacher layers 2 and 4 of 4; attention ("last"): teacher layers 3 and 4
    assert distiller.teacher_cache.summary().startswith(
        "48 rows of match0.0 [2, 4], match0.1 [2, 4], match0.2 [2, 4], match1.0 [1, 2, 2], match1.1 [1, 2, 2] ")
    assert any("cache_teacher_outputs='auto': 0.0 MB for the data's 48 rows, in memory" in r.getMessage()
               for r in caplog.records)


def test_a_disk_cache_without_the_room_is_refused_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setattr("knowledge_distill_util.engine.teacher_cache._free_bytes", lambda path: 1000)
    with pytest.raises(ValueError, match="the teacher-output cache needs 0 MB on disk for the data's 48 rows but .* has "
                                         "0 MB free; free some space"):
        _layers_run(tmp_path, "disk", cache_teacher_outputs="disk")
    assert not os.path.exists(tmp_path / "disk" / "checkpoints")


def test_a_layer_map_that_does_not_fit_names_the_match():
    match = Match(0, {"layer_S": "all", "layer_T": "all", "feature": "hidden", "loss": "layer_distill_loss",
                      "options": {"layer_map": [0, 2, 9]}})
    match.student_tensors({"hidden": [flow.zeros(1, 2)] * 3}, None)
    with pytest.raises(ValueError, match=r"intermediate_matches\[0\] \(layer_distill_loss\): options\['layer_map'\] = "
                                         r"\[0, 2, 9\] must give, for each of the student's 3 entries, an index into "
                                         r"the teacher's 5"):
        match.teacher_tensors({"hidden": [flow.zeros(1, 2)] * 5}, None)


def test_teacher_logits_need_dict_batches_with_row_ids(tmp_path):
    _, student = pair(INPUTS, CLASSES)
    x, y = random_data(ROWS, INPUTS, CLASSES)
    cfg = TrainingConfig(output_dir=str(tmp_path / "t"), max_steps=2, progress=False)
    distiller = Distiller(None, Keyword(student), DistillationConfig(), cfg)
    with pytest.raises(ValueError, match="teacher_logits= needs the row ids under TrainingConfig.index_key='index', "
                                         "but the batch has only 'x', 'labels'; .* or drop teacher_logits="):
        distiller.train(_loader(x, y, index=False), teacher_logits=np.zeros((ROWS, CLASSES), np.float32))
    assert not os.path.exists(tmp_path / "t")


def test_logit_options_reach_the_logit_loss(tmp_path):
    """``logit_options``: e.g. a teacher with more classes (``vocab_alignment``) and another reduction."""
    from knowledge_distill_util.functional import kl_div

    _, student = pair(INPUTS, CLASSES)
    x, y = random_data(ROWS, INPUTS, CLASSES)
    teacher = np.random.default_rng(0).standard_normal((ROWS, CLASSES + 2)).astype(np.float32)
    options = {"vocab_alignment": "truncate", "reduction": "sum"}
    config = DistillationConfig(temperature=2.0, logit_options=options)
    cfg = TrainingConfig(output_dir=str(tmp_path / "o"), max_steps=1, progress=False)
    distiller = Distiller(None, Keyword(student), config, cfg)
    with flow.no_grad():
        expected = kl_div(student(flow.tensor(x[:BATCH])), flow.tensor(teacher[:BATCH]), student_temperature=2.0,
                          teacher_temperature=2.0, **options).item()
    history = distiller.train(_loader(x, y), optimizer=flow.optim.SGD(distiller.parameters(), lr=0.0),
                              teacher_logits=teacher)
    assert history["kl_div"][0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("options, error, message", [
    ({"temperature": 2.0}, ValueError, "logit_options has 'temperature', which kl_div does not take \\(the "
                                       "temperatures have fields of their own\\); its options: reduction, "
                                       "vocab_alignment"),
    ({"student_temperature": 2.0}, ValueError, "logit_options has 'student_temperature', which kl_div"),
    ([("reduction", "sum")], TypeError, "logit_options must be a dict of keyword arguments of kl_div, got list"),
])
def test_bad_logit_options(options, error, message):
    with pytest.raises(error, match=message):
        DistillationConfig(logit_options=options)
