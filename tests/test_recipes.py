"""Training recipes: each loss formula against a numpy float64 hand computation, Theseus replacement,
the configuration, atomic checkpoints + resume, and graph vs eager training."""
import argparse
import json
import os

import numpy as np
import oneflow as flow
import pytest

import reference as ref
from knowledge_distill_util.data import Features
from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.training.checkpoint import latest_checkpoint, save_checkpoint
from knowledge_distill_util.training.config import (
    TrainConfig,
    format_config,
    known_keys,
    merge_config,
    read_config_file,
    resolve_config,
    save_config,
)
from knowledge_distill_util.training.evaluate import compute_metrics
from knowledge_distill_util.training.recipes import RECIPES, Registry
from knowledge_distill_util.training.summary import format_markdown, summary_rows
from knowledge_distill_util.training.theseus import TheseusModel, sample_replacement
from knowledge_distill_util.training.trainer import LossStep, train_stage

RTOL, ATOL = 1e-5, 1e-6


def _t(array, requires_grad=False):
    return flow.tensor(np.asarray(array, dtype=np.float32), requires_grad=requires_grad)


def _ce(logits, labels):
    return float(np.mean(-ref.log_softmax(logits)[np.arange(len(labels)), labels]))


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 3)) * 2, rng.normal(size=(4, 3)) * 2
    labels = np.array([0, 2, 1, 2])
    s_reps = [rng.normal(size=(4, 5, 6)) for _ in range(3)]          # embedding + 2 layers
    t_reps = [rng.normal(size=(4, 5, 6)) for _ in range(5)]          # embedding + 4 layers
    s_atts = [rng.normal(size=(4, 2, 5, 5)) for _ in range(2)]
    t_atts = [rng.normal(size=(4, 2, 5, 5)) for _ in range(4)]
    for att in s_atts + t_atts:
        att[..., -1] = -10000.0                                        # a masked key: zeroed by att_distill
    return dict(s=s, t=t, labels=labels, s_reps=s_reps, t_reps=t_reps, s_atts=s_atts, t_atts=t_atts)


def _call(name, args, x, **extra):
    return RECIPES.get(name)(
        args, student_logits=_t(x["s"], True), teacher_logits=_t(x["t"]), labels=flow.tensor(x["labels"]),
        student_reps=[_t(r) for r in x["s_reps"]], teacher_reps=[_t(r) for r in x["t_reps"]],
        student_atts=[_t(a) for a in x["s_atts"]], teacher_atts=[_t(a) for a in x["t_atts"]], **extra)


def _check(terms, expected):
    assert set(terms) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name].numpy(), value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_kd_formula(tensors):
    args = argparse.Namespace(kd_alpha=0.8, temperature=2.0)
    ce, soft = _ce(tensors["s"], tensors["labels"]), ref.pred_distill(tensors["s"], tensors["t"], 2.0, 2.0)
    _check(_call("kd", args, tensors), {"loss": 0.8 * ce + 0.2 * soft, "ce": ce, "pred_distill": soft})


def test_bilstm_formula_uses_the_opposite_alpha(tensors):
    args = argparse.Namespace(kd_alpha=0.7, temperature=1.0, teacher_temperature=3.0)
    ce, soft = _ce(tensors["s"], tensors["labels"]), ref.pred_distill(tensors["s"], tensors["t"], 1.0, 3.0)
    _check(_call("bilstm", args, tensors), {"loss": 0.3 * ce + 0.7 * soft, "ce": ce, "pred_distill": soft})


def test_bert_pkd_formula(tensors):
    args = argparse.Namespace(kd_alpha=0.2, kd_beta=10.0, temperature=1.0)
    ce, soft = _ce(tensors["s"], tensors["labels"]), ref.pred_distill(tensors["s"], tensors["t"])
    layer = sum(ref.mse(tensors["s_reps"][i], tensors["t_reps"][2 * i]) for i in range(3))  # pairs (0,0),(1,2),(2,4)
    _check(_call("bert_pkd", args, tensors),
           {"loss": 0.8 * ce + 0.2 * soft + 10.0 * layer, "ce": ce, "pred_distill": soft, "layer_distill": layer})


def test_tinybert_stages(tensors):
    args = argparse.Namespace(temperature=1.0)
    masked = [np.where(a <= -100, 0.0, a) for a in tensors["s_atts"] + tensors["t_atts"]]
    s_atts, t_atts = masked[:2], masked[2:]
    att = ref.mse(s_atts[0], t_atts[1]) + ref.mse(s_atts[1], t_atts[3])                   # layer i -> 2i + 1
    layer = ref.layer_distill(tensors["s_reps"], tensors["t_reps"])
    _check(_call("tinybert_intermediate", args, tensors),
           {"loss": att + layer, "att_distill": att, "layer_distill": layer})
    soft = ref.pred_distill(tensors["s"], tensors["t"])
    _check(_call("tinybert_pred", args, tensors), {"loss": soft, "pred_distill": soft})


def test_labels_only(tensors):
    ce = _ce(tensors["s"], tensors["labels"])
    _check(_call("labels", None, tensors), {"loss": ce, "ce": ce})


def test_regression_uses_mse_for_both_terms():
    s, t, y = np.array([[0.5], [2.0], [-1.0]]), np.array([[1.0], [1.5], [0.0]]), np.array([1.0, 2.5, -0.5])
    args = argparse.Namespace(kd_alpha=0.8, temperature=1.0)
    terms = RECIPES.get("kd")(args, student_logits=_t(s), teacher_logits=_t(t), labels=_t(y))
    hard, soft = ref.mse(s[:, 0], y), ref.mse(s, t)
    _check(terms, {"loss": 0.8 * hard + 0.2 * soft, "ce": hard, "pred_distill": soft})


def test_teacher_gets_no_gradient(tensors):
    s, t = _t(tensors["s"], True), _t(tensors["t"], True)
    terms = RECIPES.get("kd")(argparse.Namespace(kd_alpha=0.5, temperature=1.0), student_logits=s,
                              teacher_logits=t, labels=flow.tensor(tensors["labels"]))
    terms["loss"].backward()
    assert t.grad is None or float(np.abs(t.grad.numpy()).max()) == 0.0
    assert float(np.abs(s.grad.numpy()).max()) > 0.0


def test_registry_refuses_duplicates_and_lists_names():
    registry = Registry("thing")
    registry.register("a", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a", 2)
    with pytest.raises(KeyError, match=r"unknown recipe loss 'nope'; known: \['bert_pkd', 'bilstm', 'kd'"):
        RECIPES.get("nope")


# ------------------------------------------------------------------------------------ Theseus
def test_replacement_probability_with_seeded_rng():
    rng = np.random.default_rng(123)
    coins = np.stack([sample_replacement(rng, 3, 0.5) for _ in range(4000)])
    assert abs(coins.mean() - 0.5) < 4 * np.sqrt(0.25 / coins.size)        # 4 sigma
    assert set(np.unique(coins)) == {0.0, 1.0}
    again = np.stack([sample_replacement(np.random.default_rng(123), 3, 0.5) for _ in range(1)])
    np.testing.assert_array_equal(again[0], coins[0])                      # same seed, same coins
    assert sample_replacement(rng, 5, 0.0).sum() == 0 and sample_replacement(rng, 5, 1.0).sum() == 5


def _tiny_bert(layers=4, seed=0, label_num=3, initializer_range=0.02):
    flow.manual_seed(seed)
    return BertForSequenceClassification(vocab_size=40, hidden_size=8, num_hidden_layers=layers,
                                         num_attention_heads=2, intermediate_size=16, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, label_num=label_num,
                                         initializer_range=initializer_range)


def _inputs(batch=3, length=6, seed=0):
    ids = flow.tensor(np.random.default_rng(seed).integers(1, 40, (batch, length)))
    mask = flow.ones_like(ids)
    mask[0, -2:] = 0
    return ids, mask, flow.zeros_like(ids)


def test_theseus_blocks_route_as_the_coins_say():
    teacher = _tiny_bert(initializer_range=0.5)  # large weights: the two paths give clearly different logits
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
        TheseusModel(_tiny_bert(), 3, 0.5)


# ------------------------------------------------------------------------------------ config
def test_config_merging_order(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"kd_alpha": 0.8, "seq_length": 32, "student_init_layers": [0, 2]}))
    cfg = resolve_config(["--config", str(path), "--seq_length", "16", "--do_train", "false"],
                         defaults={"recipe": "kd", "kd_alpha": 0.1, "learning_rate": 1e-3})
    assert (cfg.kd_alpha, cfg.seq_length, cfg.learning_rate, cfg.do_train) == (0.8, 16, 1e-3, False)
    assert cfg.student_init_layers == [0, 2] and cfg.temperature == 1.0


def test_unknown_key_lists_known_keys(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"kd_alpah": 0.8}))
    with pytest.raises(ValueError, match=r"bad.json: unknown configuration key 'kd_alpah'; known keys: .*kd_alpha"):
        read_config_file(str(path))
    with pytest.raises(ValueError, match="key 'seq_length' must be a int, got '32'"):
        merge_config({}, {"seq_length": "32"}, "x.json")


def test_config_is_printed_and_saved(tmp_path):
    cfg = TrainConfig(kd_alpha=0.7)
    text = format_config(cfg)
    assert "  kd_alpha = 0.7" in text and len(text.splitlines()) == len(known_keys())
    saved = json.loads(open(save_config(cfg, str(tmp_path))).read())
    assert saved["kd_alpha"] == 0.7 and sorted(saved) == known_keys()


# ------------------------------------------------------------------------ checkpoints, resume, graph
def _features(n=20, length=6, seed=0):
    rng = np.random.default_rng(seed)
    return Features(rng.integers(1, 40, (n, length)), np.ones((n, length), np.int64),
                    np.zeros((n, length), np.int64), rng.integers(0, 3, n))


def _train(work, graph=False, stop=None, resume=False, recipe="kd"):
    teacher, student = _tiny_bert(2, seed=1), _tiny_bert(2, seed=2)
    cfg = TrainConfig(batch_size_per_device=8, checkpoint_every=2, resume=resume, use_graph=graph,
                      warmup_proportion=0.2, kd_alpha=0.5)

    def hook(step, terms):
        if stop is not None and step == stop:
            raise KeyboardInterrupt  # a kill after step `stop` (its checkpoint, if any, is complete)

    try:
        train_stage(LossStep(student, teacher, RECIPES.get(recipe), cfg), _features(), cfg, work_dir=str(work),
                    stage="s", num_epochs=3, learning_rate=1e-2, progress=False, on_step=hook)
    except KeyboardInterrupt:
        pass
    return student


def _max_diff(a, b):
    return max(float(np.abs(p.numpy() - q.numpy()).max()) for p, q in zip(a.parameters(), b.parameters()))


@pytest.mark.graph
@pytest.mark.parametrize("graph", [False, True], ids=["eager", "graph"])
def test_resume_equals_uninterrupted(tmp_path, graph):
    full = _train(tmp_path / "full", graph)
    _train(tmp_path / "cut", graph, stop=5)                  # killed after step 5: last checkpoint is step 4
    assert os.path.basename(latest_checkpoint(str(tmp_path / "cut" / "checkpoints" / "s"))) == "step-00000004"
    resumed = _train(tmp_path / "cut", graph, resume=True)
    assert _max_diff(full, resumed) == 0.0
    rows = open(tmp_path / "cut" / "s_losses.csv").read().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(i) for i in range(1, 10)]   # step 5 re-run once
    assert os.path.isfile(tmp_path / "cut" / "s_losses.png")


@pytest.mark.graph
def test_graph_training_matches_eager(tmp_path):
    eager = _train(tmp_path / "e", graph=False)
    graph = _train(tmp_path / "g", graph=True)
    untrained = _tiny_bert(2, seed=2)
    assert _max_diff(eager, untrained) > 1e-3                  # training moved the weights
    assert _max_diff(eager, graph) < 1e-4


def test_checkpoint_ignores_an_interrupted_write(tmp_path):
    root = str(tmp_path)
    save_checkpoint(root, 2, {"w": flow.ones(2)}, None, {})
    os.makedirs(os.path.join(root, ".step-00000004.partial"))      # a write killed before os.replace
    assert latest_checkpoint(root) == os.path.join(root, "step-00000002")
    save_checkpoint(root, 4, {"w": flow.zeros(2)}, None, {})
    assert sorted(os.listdir(root)) == ["LATEST", "step-00000004"]


# ------------------------------------------------------------------------------ metrics, summary
def test_metrics_binary_and_multiclass():
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    m = compute_metrics(logits, np.array([0, 1, 0, 1]), "classification")   # tp 1, fp 1, fn 1, tn 1
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["mcc"]) == (0.5, 0.5, 0.5, 0.5, 0.0)
    three = compute_metrics(np.eye(3)[[0, 1, 2, 2]], np.array([0, 1, 2, 1]), "classification")
    assert three["accuracy"] == 0.75
    np.testing.assert_allclose(three["f1"], np.mean([1.0, 2 / 3, 2 / 3]))   # macro over classes
    reg = compute_metrics(np.array([[1.0], [2.0], [4.0]]), np.array([1.5, 2.0, 3.0]), "regression")
    np.testing.assert_allclose(reg["pearson"], np.corrcoef([1, 2, 4], [1.5, 2, 3])[0, 1])


def test_summary_table():
    entry = lambda name, acc, params, speed: {"model": name, "layers": 2, "hidden_size": 8, "results": {  # noqa: E731
        "accuracy": acc, "parameters": params, "modelSize": params / 1e6, "reasoningTime": speed}}
    rows = summary_rows([entry("teacher", 0.9, 4e6, 100.0), entry("labels-only student", 0.6, 1e6, 300.0),
                         entry("KD", 0.65, 1e6, 310.0)], "accuracy")
    assert (rows[2]["compression"], rows[2]["speedup"], rows[2]["delta_vs_labels_only"]) == (4.0, 3.1, 0.05)
    text = format_markdown(rows)
    assert text.splitlines()[0].startswith("| model | accuracy | layers")
    assert "| KD | 0.6500 | 2 | 8 | 1.00M | 1.0 | 4.00x | 310.0 | 3.10x | +0.0500 |" in text


def test_summary_compares_a_row_with_its_own_labels_only_student():
    entry = lambda name, acc, **kw: {"model": name, "layers": 1, "hidden_size": 8, **kw, "results": {  # noqa: E731
        "accuracy": acc, "parameters": 1e6, "modelSize": 1.0, "reasoningTime": 100.0}}
    rows = summary_rows([entry("teacher", 0.9), entry("labels-only student", 0.6),
                         entry("labels-only BiLSTM", 0.5, baseline="labels-only student"),
                         entry("Distilled-BiLSTM", 0.55, baseline="labels-only BiLSTM"),
                         entry("KD", 0.7, baseline="labels-only student")], "accuracy")
    assert [row["delta_vs_labels_only"] for row in rows] == [None, None, None, 0.05, 0.1]
