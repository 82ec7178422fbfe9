"""The original toolkit's snapshot directories: snapshots written by hand from numpy with the original's
variable names and shapes (yejinlei/Dubhe ``src/bert.py``, ``src/knowledge_distill_util.py``,
``src/lstm.py``, ``theseus/bert_theseus.py``; ``<variable>/out`` raw float32, ``convert_tf_ckpt_to_of.py``
style, ``meta`` optional), loaded and compared value by value and against a float64 numpy forward of the
original's graph; save -> load round trips; bad inputs."""
import logging
import math
import os

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.models import (
    BertForSequenceClassification,
    BertStudentForSequenceClassification,
    LSTMStudentForSequenceClassification,
)
from knowledge_distill_util.models.snapshot import (
    build_from_snapshot,
    load_snapshot,
    read_snapshot_config,
    read_snapshot_variable,
    save_snapshot,
)

RTOL, ATOL = 1.3e-6, 1e-5
V, P, T, H, I, C, F, HEADS, LAYERS = 40, 16, 2, 8, 12, 3, 10, 2, 2


def original_bert_variables(rng, prefix="", layer_stem=None, layers=LAYERS, classifier=True, fit=False):
    """{name: array} with the original's names and shapes (kernels [in, out])."""
    layer_stem = layer_stem or f"{prefix}bert-encoder-layer_"
    w = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)  # noqa: E731
    out = {
        f"{prefix}bert-embeddings-word_embeddings": w(V, H),
        f"{prefix}bert-embeddings-position_embeddings": w(1, P, H),
        f"{prefix}bert-embeddings-token_type_embeddings": w(T, H),
        f"{prefix}bert-embeddings-LayerNorm-gamma": 1 + w(H),
        f"{prefix}bert-embeddings-LayerNorm-beta": w(H),
        f"{prefix}bert-pooler-dense-weight": w(H, H),
        f"{prefix}bert-pooler-dense-bias": w(H),
    }
    for i in range(layers):
        s = f"{layer_stem}{i}-"
        for name in ("query", "key", "value"):
            out[f"{s}attention-self-{name}-weight"] = w(H, H)
            out[f"{s}attention-self-{name}-bias"] = w(H)
        out[f"{s}attention-output-dense-weight"] = w(H, H)
        out[f"{s}attention-output-dense-bias"] = w(H)
        out[f"{s}attention-output-LayerNorm-gamma"] = 1 + w(H)
        out[f"{s}attention-output-LayerNorm-beta"] = w(H)
        out[f"{s}intermediate-dense-weight"] = w(H, I)
        out[f"{s}intermediate-dense-bias"] = w(I)
        out[f"{s}output-dense-weight"] = w(I, H)
        out[f"{s}output-dense-bias"] = w(H)
        out[f"{s}output-LayerNorm-gamma"] = 1 + w(H)
        out[f"{s}output-LayerNorm-beta"] = w(H)
    if classifier:
        out[f"{prefix}classification-output_weights"] = w(C, H)
        out[f"{prefix}classification-output_bias"] = w(C)
    if fit:
        out[f"{prefix}fit_dense-weight"] = w(F, H)
        out[f"{prefix}fit_dense-bias"] = w(F)
    return out


def write_snapshot(directory, variables, meta=False):
    """One folder per variable with a raw `out` file (and a `meta` text file when asked)."""
    for name, value in variables.items():
        folder = os.path.join(directory, name)
        os.makedirs(folder)
        with open(os.path.join(folder, "out"), "wb") as handle:
            handle.write(np.ascontiguousarray(value, dtype=np.float32).tobytes())
        if meta:
            dims = "".join(f"  dim: {d}\n" for d in value.shape)
            with open(os.path.join(folder, "meta"), "w") as handle:
                handle.write(f"shape {{\n{dims}}}\ndata_type: kFloat\n")


# ------------------------------------------------------------------------ float64 forward of the original


def _ln(x, gamma, beta, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def original_bert_forward(v, ids, mask, segments, prefix="", layer_stem=None, layers=LAYERS, fit=False):
    """src/bert.py + knowledge_distill_util.py: x @ kernel[in, out] + bias, mask (m - 1) * 10000,
    LayerNorm epsilon 1e-5, exact GELU, tanh pooler, logits = pooled @ output_weights^T + bias."""
    v = {k: a.astype(np.float64) for k, a in v.items()}
    layer_stem = layer_stem or f"{prefix}bert-encoder-layer_"
    e = f"{prefix}bert-embeddings-"
    length = ids.shape[1]
    x = (v[e + "word_embeddings"][ids] + v[e + "token_type_embeddings"][segments]
         + v[e + "position_embeddings"][0, :length])
    x = _ln(x, v[e + "LayerNorm-gamma"], v[e + "LayerNorm-beta"])
    reps = [x]
    add = (mask[:, None, None, :].astype(np.float64) - 1.0) * 10000.0
    size = H // HEADS
    for i in range(layers):
        s = f"{layer_stem}{i}-"
        proj = lambda name, inp: inp @ v[f"{s}{name}-weight"] + v[f"{s}{name}-bias"]  # noqa: E731
        heads = lambda t: t.reshape(t.shape[0], length, HEADS, size).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, val = (heads(proj(f"attention-self-{n}", x)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + add
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ val).transpose(0, 2, 1, 3).reshape(x.shape)
        attended = _ln(proj("attention-output-dense", context) + x, v[f"{s}attention-output-LayerNorm-gamma"],
                       v[f"{s}attention-output-LayerNorm-beta"])
        x = _ln(proj("output-dense", _gelu(proj("intermediate-dense", attended))) + attended,
                v[f"{s}output-LayerNorm-gamma"], v[f"{s}output-LayerNorm-beta"])
        reps.append(x)
    pooled = np.tanh(x[:, 0] @ v[f"{prefix}bert-pooler-dense-weight"] + v[f"{prefix}bert-pooler-dense-bias"])
    logits = pooled @ v[f"{prefix}classification-output_weights"].T + v[f"{prefix}classification-output_bias"]
    if fit:
        reps = [r @ v[f"{prefix}fit_dense-weight"].T + v[f"{prefix}fit_dense-bias"] for r in reps]
    return logits, reps


def inputs(rng, batch=3, length=7, vocab=V):
    ids = rng.integers(0, vocab, size=(batch, length))
    lengths = np.array([length, 4, 2])[:batch]
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    segments = (np.arange(length)[None, :] >= 3).astype(np.int64) * mask
    return ids, mask, segments


def bert(**kwargs):
    config = dict(vocab_size=V, hidden_size=H, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  intermediate_size=I, max_position_embeddings=P, type_vocab_size=T, label_num=C,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, layer_norm_eps=1e-5)
    config.update(kwargs)
    student = config.pop("student", False)
    return (BertStudentForSequenceClassification(fit_size=F, **config) if student
            else BertForSequenceClassification(**config)).eval()


def run(model, ids, mask, segments):
    t = lambda a: flow.tensor(a, dtype=flow.int64)  # noqa: E731
    with flow.no_grad():
        return model(t(ids), t(mask), t(segments))


# ------------------------------------------------------------------------------------------------ BERT


@pytest.mark.parametrize("meta", [False, True])
def test_teacher_snapshot_values_and_forward(tmp_path, meta):
    rng = np.random.default_rng(0)
    v = original_bert_variables(rng)
    write_snapshot(str(tmp_path / "snapshot_best"), v, meta=meta)
    model = bert()
    report = load_snapshot(model, str(tmp_path / "snapshot_best"))
    assert report.scope == "teacher" and not report.missing and not report.unused
    assert len(report.loaded) == len(v)
    sd = {k: t.numpy() for k, t in model.state_dict().items()}
    np.testing.assert_array_equal(sd["embeddings.word_embeddings.weight"], v["bert-embeddings-word_embeddings"])
    np.testing.assert_array_equal(sd["embeddings.position_embeddings.weight"],
                                  v["bert-embeddings-position_embeddings"][0])
    np.testing.assert_array_equal(sd["embeddings.LayerNorm.weight"], v["bert-embeddings-LayerNorm-gamma"])
    for i in range(LAYERS):
        s, k = f"bert-encoder-layer_{i}-", f"encoder.layer.{i}."
        np.testing.assert_array_equal(sd[k + "attention.self.key.weight"], v[s + "attention-self-key-weight"].T)
        np.testing.assert_array_equal(sd[k + "attention.self.value.bias"], v[s + "attention-self-value-bias"])
        np.testing.assert_array_equal(sd[k + "intermediate.dense.weight"], v[s + "intermediate-dense-weight"].T)
        np.testing.assert_array_equal(sd[k + "output.dense.weight"], v[s + "output-dense-weight"].T)
        np.testing.assert_array_equal(sd[k + "output.LayerNorm.bias"], v[s + "output-LayerNorm-beta"])
    np.testing.assert_array_equal(sd["pooler.dense.weight"], v["bert-pooler-dense-weight"].T)
    np.testing.assert_array_equal(sd["classifier.weight"], v["classification-output_weights"])
    ids, mask, segments = inputs(rng)
    logits, reps, _ = run(model, ids, mask, segments)
    want_logits, want_reps = original_bert_forward(v, ids, mask, segments)
    np.testing.assert_allclose(logits.numpy(), want_logits, rtol=RTOL, atol=ATOL)
    for got, want in zip(reps, want_reps):
        np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)


def test_kd_snapshot_student_and_teacher_with_adam_slots(tmp_path):
    """task_student_kd.py saves teacher (bert-...) and student (student-...) variables and Adam's -m/-v."""
    rng = np.random.default_rng(1)
    teacher_v = original_bert_variables(rng)
    student_v = original_bert_variables(rng, prefix="student-", layers=1, fit=True)
    slots = {f"{n}-{s}": np.zeros_like(a) for n, a in student_v.items() for s in ("m", "v")}
    write_snapshot(str(tmp_path), {**teacher_v, **student_v, **slots})
    student = bert(student=True, num_hidden_layers=1)
    report = load_snapshot(student, str(tmp_path))
    assert report.scope == "student" and report.optimizer_slots == len(slots)
    assert report.unused == sorted(teacher_v)
    ids, mask, segments = inputs(rng)
    logits, reps, _ = run(student, ids, mask, segments)
    want_logits, want_reps = original_bert_forward(student_v, ids, mask, segments, prefix="student-", layers=1,
                                                   fit=True)
    np.testing.assert_allclose(logits.numpy(), want_logits, rtol=RTOL, atol=ATOL)
    for got, want in zip(reps, want_reps):
        assert got.shape[-1] == F
        np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)
    teacher = bert()
    assert load_snapshot(teacher, str(tmp_path)).scope == "teacher"
    np.testing.assert_allclose(run(teacher, ids, mask, segments)[0].numpy(),
                               original_bert_forward(teacher_v, ids, mask, segments)[0], rtol=RTOL, atol=ATOL)


def test_pretrained_bert_without_classifier_and_pkd_student_without_fit_dense(tmp_path, caplog):
    rng = np.random.default_rng(2)
    v = original_bert_variables(rng, classifier=False)
    v["cls-predictions-output_bias"] = np.zeros(V, np.float32)  # a converted TF BERT's MLM head
    write_snapshot(str(tmp_path / "pre"), v)
    model = bert()
    before = model.classifier.weight.numpy().copy()
    with caplog.at_level(logging.WARNING):
        report = load_snapshot(model, str(tmp_path / "pre"))
    assert report.missing == ["classification-output_bias", "classification-output_weights"]
    assert report.unused == ["cls-predictions-output_bias"]
    assert "kept as initialised" in caplog.text
    np.testing.assert_array_equal(model.classifier.weight.numpy(), before)
    pkd = original_bert_variables(rng, prefix="student-", layers=1)  # bert-pkd_generate_student_model.py output
    write_snapshot(str(tmp_path / "pkd"), pkd)
    report = load_snapshot(bert(student=True, num_hidden_layers=1), str(tmp_path / "pkd"))
    assert report.missing == ["student-fit_dense-bias", "student-fit_dense-weight"]


def test_theseus_successor(tmp_path):
    rng = np.random.default_rng(3)
    v = original_bert_variables(rng, layers=4)  # predecessor
    successor = original_bert_variables(rng, layer_stem="bert-encoder-student-layer_", layers=1)
    v.update({k: a for k, a in successor.items() if "student-layer" in k})
    write_snapshot(str(tmp_path), v)
    model = bert(num_hidden_layers=1)
    report = load_snapshot(model, str(tmp_path), scope="theseus")
    assert all("bert-encoder-layer_" in n for n in report.unused)
    ids, mask, segments = inputs(rng)
    want = original_bert_forward(v, ids, mask, segments, layer_stem="bert-encoder-student-layer_", layers=1)[0]
    np.testing.assert_allclose(run(model, ids, mask, segments)[0].numpy(), want, rtol=RTOL, atol=ATOL)
    assert read_snapshot_config(str(tmp_path), scope="theseus", num_attention_heads=2).config["num_hidden_layers"] == 1


def test_config_inferred_from_the_sizes(tmp_path):
    rng = np.random.default_rng(4)
    v = original_bert_variables(rng, prefix="student-", fit=True)
    write_snapshot(str(tmp_path / "s"), v)
    found = read_snapshot_config(str(tmp_path / "s"), num_attention_heads=HEADS)
    assert found.kind == "bert" and found.scope == "student"
    assert found.config == dict(vocab_size=V, hidden_size=H, num_hidden_layers=LAYERS, intermediate_size=I,
                                max_position_embeddings=P, type_vocab_size=T, layer_norm_eps=1e-5,
                                num_attention_heads=HEADS, label_num=C, is_student=True, fit_size=F)
    model, report = build_from_snapshot(str(tmp_path / "s"), num_attention_heads=HEADS)
    assert isinstance(model, BertStudentForSequenceClassification) and report.loaded == sorted(v)
    with pytest.raises(ValueError, match=r"hidden_size 8, which is not a multiple of 64, .* pass num_attention_heads"):
        read_snapshot_config(str(tmp_path / "s"))
    with pytest.raises(ValueError, match=r"num_attention_heads=3 does not divide the snapshot's hidden_size 8"):
        read_snapshot_config(str(tmp_path / "s"), num_attention_heads=3)


def test_heads_default_is_hidden_over_64_with_a_warning(tmp_path, caplog):
    model = BertForSequenceClassification(vocab_size=10, hidden_size=128, num_hidden_layers=1,
                                          num_attention_heads=2, intermediate_size=20, max_position_embeddings=8)
    save_snapshot(model, str(tmp_path))
    with caplog.at_level(logging.WARNING):
        assert read_snapshot_config(str(tmp_path)).config["num_attention_heads"] == 2
    assert "does not store the number of attention heads; assuming 2" in caplog.text


def test_save_load_round_trip_and_oneflow_reads_it(tmp_path):
    rng = np.random.default_rng(5)
    model = bert(student=True)
    save_snapshot(model, str(tmp_path / "snapshot_best"))
    names = sorted(os.listdir(tmp_path / "snapshot_best"))
    assert "snapshot_done" in names and "student-fit_dense-weight" in names
    assert not any(n.endswith(("-m", "-v")) for n in names)
    loaded = flow.load(str(tmp_path / "snapshot_best"))  # OneFlow's own reader of the layout
    np.testing.assert_array_equal(loaded["student-bert-encoder-layer_1-intermediate-dense-weight"].numpy(),
                                  model.encoder.layer[1].intermediate.dense.weight.numpy().T)
    assert tuple(loaded["student-bert-embeddings-position_embeddings"].shape) == (1, P, H)
    other = bert(student=True)
    load_snapshot(other, str(tmp_path / "snapshot_best"))
    for (key, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=key)
    ids, mask, segments = inputs(rng)
    np.testing.assert_array_equal(run(model, ids, mask, segments)[0].numpy(),
                                  run(other, ids, mask, segments)[0].numpy())
    save_snapshot(bert(num_hidden_layers=1), str(tmp_path / "snapshot_best"), scope="teacher")  # replaced whole
    assert not any(n.startswith("student-") for n in os.listdir(tmp_path / "snapshot_best"))


# ------------------------------------------------------------------------------------------------ LSTM


def original_lstm_variables(rng, vocab=15, hidden=5, inter=6, labels=2):
    w = lambda *shape: (rng.standard_normal(shape) * 0.4).astype(np.float32)  # noqa: E731
    out = {"student-embeddings-word_embeddings": w(vocab + 1, hidden)}  # vocab_size + 1 rows, E = H
    for gate in ("input", "forget", "cell", "output"):
        out[f"student-lstm-layer0-forward-{gate}-weight"] = w(hidden, hidden)
        out[f"student-lstm-layer0-forward-{gate}-h-weight"] = w(hidden, hidden)
        out[f"student-lstm-layer0-forward-{gate}-bias"] = w(hidden)
    out.update({"student-lstm-FC1-weight": w(inter, hidden), "student-lstm-FC1-bias": w(inter),
                "student-lstm-FC2-weight": w(labels, inter), "student-lstm-FC2-bias": w(labels)})
    return out


def original_lstm_forward(v, ids):
    """src/lstm.py step_function over every position, last output, FC1 + relu, FC2."""
    v = {k: a.astype(np.float64) for k, a in v.items()}
    x = v["student-embeddings-word_embeddings"][ids]
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    g = lambda name, inp, h: (inp @ v[f"student-lstm-layer0-forward-{name}-weight"]  # noqa: E731
                              + v[f"student-lstm-layer0-forward-{name}-bias"]
                              + h @ v[f"student-lstm-layer0-forward-{name}-h-weight"])
    h = c = np.zeros((ids.shape[0], v["student-lstm-layer0-forward-input-bias"].shape[0]))
    for t in range(ids.shape[1]):
        step = x[:, t]
        i, f, cell, o = sig(g("input", step, h)), sig(g("forget", step, h)), np.tanh(g("cell", step, h)), \
            sig(g("output", step, h))
        c = f * c + i * cell
        h = o * np.tanh(c)
    hidden = np.maximum(h @ v["student-lstm-FC1-weight"].T + v["student-lstm-FC1-bias"], 0)
    return hidden @ v["student-lstm-FC2-weight"].T + v["student-lstm-FC2-bias"]


def test_lstm_snapshot_values_and_forward(tmp_path):
    rng = np.random.default_rng(6)
    v = original_lstm_variables(rng)
    write_snapshot(str(tmp_path), v)
    found = read_snapshot_config(str(tmp_path))
    assert found.kind == "lstm"
    assert found.config == dict(vocab_size=16, embedding_size=5, hidden_size=5, num_hidden_layers=1,
                                bidirectional=False, intermediate_size=6, ignore_padding=False, label_num=2)
    model, report = build_from_snapshot(str(tmp_path), hidden_dropout_prob=0.0)
    assert len(report.loaded) == len(v)
    lstm = model.forward_lstm[0]
    np.testing.assert_array_equal(lstm.weight_ih_l0.numpy()[5:10], v["student-lstm-layer0-forward-forget-weight"].T)
    np.testing.assert_array_equal(lstm.weight_hh_l0.numpy()[10:15], v["student-lstm-layer0-forward-cell-h-weight"].T)
    np.testing.assert_array_equal(lstm.bias_ih_l0.numpy()[15:], v["student-lstm-layer0-forward-output-bias"])
    np.testing.assert_array_equal(lstm.bias_hh_l0.numpy(), np.zeros(20))
    ids = rng.integers(0, 16, size=(3, 6))
    mask = np.ones_like(ids)
    mask[1, 4:] = 0  # the original reads the state after the last position, padding included
    got = run(model.eval(), ids, mask, np.zeros_like(ids)).numpy()
    np.testing.assert_allclose(got, original_lstm_forward(v, ids), rtol=RTOL, atol=ATOL)


def test_lstm_round_trip_bidirectional(tmp_path):
    rng = np.random.default_rng(7)
    model = LSTMStudentForSequenceClassification(vocab_size=12, hidden_size=4, intermediate_size=3,
                                                 embedding_size=6, num_hidden_layers=2, bidirectional=True,
                                                 hidden_dropout_prob=0.0).eval()
    save_snapshot(model, str(tmp_path))
    assert os.path.isdir(tmp_path / "student-lstm-layer1-backward-cell-h-weight")
    other, _ = build_from_snapshot(str(tmp_path), ignore_padding=True, hidden_dropout_prob=0.0)
    ids = rng.integers(0, 12, size=(2, 5))
    mask = np.ones_like(ids)
    np.testing.assert_allclose(run(other.eval(), ids, mask, mask).numpy(), run(model, ids, mask, mask).numpy(),
                               rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------ bad inputs


def test_not_a_snapshot(tmp_path):
    with pytest.raises(ValueError, match=r"snapshot directory .*nothing does not exist"):
        load_snapshot(bert(), str(tmp_path / "nothing"))
    (tmp_path / "model_save" / "snapshot_best").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"model_save is not a OneFlow snapshot \(no <variable>/out file\); it holds "
                                         r"snapshot_best: pass .*model_save/snapshot_best"):
        load_snapshot(bert(), str(tmp_path / "model_save"))
    write_snapshot(str(tmp_path / "other"), {"foo-bar": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match=r"holds no BERT \(neither bert-embeddings-word_embeddings nor "
                                         r"student-bert-embeddings-word_embeddings\); it holds foo-bar"):
        load_snapshot(bert(), str(tmp_path / "other"))


def test_missing_variable_is_named(tmp_path):
    v = original_bert_variables(np.random.default_rng(8))
    del v["bert-encoder-layer_1-attention-self-value-bias"]
    write_snapshot(str(tmp_path), v)
    with pytest.raises(ValueError, match=r"variable bert-encoder-layer_1-attention-self-value-bias \(shape \(8,\)\) "
                                         r"is missing from snapshot"):
        load_snapshot(bert(), str(tmp_path))


def test_wrong_shapes_name_both(tmp_path):
    v = original_bert_variables(np.random.default_rng(9))
    write_snapshot(str(tmp_path / "meta"), v, meta=True)
    with pytest.raises(ValueError, match=r"variable bert-embeddings-word_embeddings in .* has shape \(40, 8\) but "
                                         r"the model needs \(50, 8\)"):
        load_snapshot(bert(vocab_size=50), str(tmp_path / "meta"))
    write_snapshot(str(tmp_path / "raw"), v)
    with pytest.raises(ValueError, match=r"variable bert-encoder-layer_0-intermediate-dense-weight in .* holds 96 "
                                         r"float32 values but the model needs shape \(8, 16\) \(128 values\)"):
        load_snapshot(bert(intermediate_size=16), str(tmp_path / "raw"))
    with pytest.raises(ValueError, match=r"holds 2 encoder layers \(bert-encoder-layer_<i>-...\) but the model has 3"):
        load_snapshot(bert(num_hidden_layers=3), str(tmp_path / "raw"))
    model = bert()
    before = model.embeddings.word_embeddings.weight.numpy().copy()
    with pytest.raises(ValueError):
        load_snapshot(model, str(tmp_path / "raw"), scope="student")
    np.testing.assert_array_equal(model.embeddings.word_embeddings.weight.numpy(), before)  # nothing changed


def test_corrupt_files(tmp_path):
    write_snapshot(str(tmp_path), {"x": np.zeros(4, np.float32)})
    with open(tmp_path / "x" / "out", "ab") as handle:
        handle.write(b"\x00\x00")
    with pytest.raises(ValueError, match=r"has 18 bytes, not a whole number of float32 values"):
        read_snapshot_variable(str(tmp_path), "x")
    write_snapshot(str(tmp_path / "m"), {"y": np.zeros(4, np.float32)})
    (tmp_path / "m" / "y" / "meta").write_text("shape { dim: 4 }\ndata_type: kInt32\n")
    with pytest.raises(ValueError, match=r"variable y in .* is kInt32, expected kFloat"):
        read_snapshot_variable(str(tmp_path / "m"), "y")
    (tmp_path / "m" / "y" / "meta").write_text("shape { dim: 5 }\ndata_type: kFloat\n")
    with pytest.raises(ValueError, match=r"meta says shape \(5,\) but .* holds 4 float32 values"):
        read_snapshot_variable(str(tmp_path / "m"), "y")
    (tmp_path / "m" / "y" / "meta").write_text("not a proto")
    with pytest.raises(ValueError, match=r"is not a VariableMetaInfo"):
        read_snapshot_variable(str(tmp_path / "m"), "y")


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match=r"model must be a BertForSequenceClassification .* got Linear"):
        load_snapshot(flow.nn.Linear(2, 2), str(tmp_path))
    with pytest.raises(ValueError, match=r"scope must be one of \('auto', 'teacher', 'student', 'theseus'\), got 'x'"):
        load_snapshot(bert(), str(tmp_path), scope="x")
    with pytest.raises(ValueError, match=r"save_snapshot needs a definite scope"):
        save_snapshot(bert(), str(tmp_path / "s"), scope="auto")
    with pytest.raises(TypeError, match=r"directory must be a path"):
        save_snapshot(bert(), None)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_saved_snapshot_gets_the_umask_permissions(tmp_path, umask):
    model = BertForSequenceClassification(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=16, max_position_embeddings=10)
    old = os.umask(umask)
    try:
        path = save_snapshot(model, tmp_path / "snapshot_best")
    finally:
        os.umask(old)
    for directory, _, files in os.walk(path):
        assert os.stat(directory).st_mode & 0o777 == 0o777 & ~umask, directory
        for name in files:
            assert os.stat(os.path.join(directory, name)).st_mode & 0o777 == 0o666 & ~umask, name
