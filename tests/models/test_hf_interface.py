"""Hugging Face's language for the BERT models (issue 17 item 3): aliases, labels -> loss, output flags,
save_pretrained in Hugging Face's layout read back by from_pretrained, and the real MiniLM checkpoint's names.

References: ``previous_forward`` below is the forward as it was before the flags existed (the same operations
written out from the submodules' parameters), numpy float64 cross-entropy / MSE / softmax / linear maps, and
the MiniLM checkpoint file itself read with ``safetensors.numpy``.
"""
import json
import math
import os
import stat

import numpy as np
import oneflow as flow
import pytest
from safetensors.numpy import load_file

from knowledge_distill_util import BertForSequenceClassification, BertStudentForSequenceClassification
from knowledge_distill_util.models import minilm_checkpoint_dir
from knowledge_distill_util.models import BertOutput

SMALL = dict(vocab_size=60, hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=24,
             max_position_embeddings=12)
FLAGS = dict(output_hidden_states=True, output_attentions=True, output_attention_scores=True, output_qkv=True)


def inputs(batch=3, length=7, seed=0, valid=(7, 4, 2)):
    rng = np.random.default_rng(seed)
    mask = (np.arange(length)[None, :] < np.array(valid)[:, None]).astype(np.int64)
    ids = rng.integers(1, 60, size=(batch, length)) * mask
    types = (np.arange(length)[None, :] >= 3).astype(np.int64).repeat(batch, 0) * mask
    return flow.tensor(ids), flow.tensor(mask), flow.tensor(types)


def model(cls=BertForSequenceClassification, **kwargs):
    flow.manual_seed(0)
    return cls(**dict(SMALL, **kwargs)).eval()


def previous_forward(net, ids, mask, types):
    """The forward before the HF flags, op by op (the code of the commit before this file)."""
    emb = net.embeddings
    length = ids.shape[1]
    x = emb.word_embeddings(ids) + emb.position_embeddings.weight[:length].unsqueeze(0) + \
        emb.token_type_embeddings(types)
    hidden = emb.dropout(emb.LayerNorm(x))
    bias = (1.0 - mask.to(hidden.dtype).unsqueeze(1).unsqueeze(2)) * -10000.0
    reps, atts = [hidden], []
    for layer in net.encoder.layer:
        attn = layer.attention.self
        batch, length, width = hidden.shape
        heads, size = attn.num_heads, attn.head_size
        q = attn.query(hidden).reshape(batch, length, heads, size).permute(0, 2, 1, 3)
        k = attn.key(hidden).reshape(batch, length, heads, size).permute(0, 2, 1, 3)
        v = attn.value(hidden).reshape(batch, length, heads, size).permute(0, 2, 1, 3)
        scores = flow._C.matmul(q, k, False, True, attn.scale) + bias
        probs = attn.dropout(flow.softmax(scores, dim=-1))
        context = flow.matmul(probs, v).permute(0, 2, 1, 3).reshape(batch, length, width)
        out = layer.attention.output
        attended = out.LayerNorm(out.dropout(out.dense(context)) + hidden)
        ffn = layer.output
        hidden = ffn.LayerNorm(ffn.dropout(ffn.dense(layer.intermediate(attended))) + attended)
        reps.append(hidden)
        atts.append(probs if attn.attention_output == "probs" else scores)
    logits = net.classifier(net.dropout(flow.tanh(net.pooler.dense(hidden[:, 0]))))
    if net.fit_dense is not None:
        reps = [net.fit_dense(rep) for rep in reps]
    return logits, reps, atts


def as_numpy(outputs):
    logits, reps, atts = outputs
    return [logits.numpy()] + [r.numpy() for r in reps] + [a.numpy() for a in atts]


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# --- aliases ----------------------------------------------------------------------------------------
def test_aliases_equal_the_native_names_exactly():
    net = model()
    ids, mask, types = inputs()
    native = as_numpy(net(ids, mask, types))
    assert_same(as_numpy(net(ids, attention_mask=mask, token_type_ids=types)), native)
    assert_same(as_numpy(net(input_ids=ids, input_mask=mask, segment_ids=types)), native)
    assert_same(as_numpy(net(ids, attention_mask=mask, segment_ids=types)), native)


@pytest.mark.parametrize("kwargs, message", [
    ({"input_mask": "m", "attention_mask": "m", "token_type_ids": "t"},
     r"^forward\(\) got both input_mask and its alias attention_mask; pass only one of them$"),
    ({"input_mask": "m", "token_type_ids": "t", "segment_ids": "t"},
     r"^forward\(\) got both token_type_ids and its alias segment_ids; pass only one of them$"),
    ({"token_type_ids": "t"}, r"^forward\(\) is missing input_mask \(or its alias attention_mask\).*"
                              r"flow\.ones_like\(input_ids\)$"),
    ({"attention_mask": "m"}, r"^forward\(\) is missing token_type_ids \(or its alias segment_ids\).*"
                              r"flow\.zeros_like\(input_ids\)$"),
])
def test_alias_conflicts_and_missing_names(kwargs, message):
    ids, mask, types = inputs()
    values = {"m": mask, "t": types}
    with pytest.raises(TypeError, match=message):
        model()(ids, **{k: values[v] for k, v in kwargs.items()})


# --- flags off: the previous outputs; flags on: the same numbers plus the extras ----------------------------
@pytest.mark.parametrize("kwargs", [{}, {"attention_output": "scores", "is_student": True, "fit_size": 20}])
def test_flags_off_is_the_previous_forward_bit_identical(kwargs):
    net = model(**kwargs)
    out = net(*inputs())
    assert isinstance(out, tuple) and len(out) == 3 and isinstance(out[1], list)
    assert_same(as_numpy(out), as_numpy(previous_forward(net, *inputs())))
    explicit = net(*inputs(), output_hidden_states=False, output_attentions=False,
                   output_attention_scores=False, output_qkv=False, labels=None)
    assert isinstance(explicit, tuple)
    assert_same(as_numpy(explicit), as_numpy(out))


@pytest.mark.parametrize("flags", [{"output_hidden_states": True}, {"output_attentions": True},
                                   {"output_attention_scores": True}, {"output_qkv": True}, FLAGS])
def test_flags_on_keep_logits_reps_atts(flags):
    net = model(is_student=True, fit_size=20)
    plain = as_numpy(net(*inputs()))
    out = net(*inputs(), **flags)
    assert isinstance(out, BertOutput)
    assert_same(as_numpy((out.logits, out.reps, out.atts)), plain)
    keys = {"output_hidden_states": ["hidden_states"], "output_attentions": ["attentions"],
            "output_attention_scores": ["attention_scores"], "output_qkv": ["query", "key", "value"]}
    assert list(out) == ["logits", "reps", "atts"] + [k for flag in keys if flag in flags for k in keys[flag]]


def test_hidden_states_are_reps_before_fit_dense():
    ids, mask, types = inputs()
    teacher = model()
    out = teacher(ids, mask, types, output_hidden_states=True)
    assert len(out.hidden_states) == 4 and all(tuple(h.shape) == (3, 7, 16) for h in out.hidden_states)
    assert_same([h.numpy() for h in out.hidden_states], [r.numpy() for r in teacher(ids, mask, types)[1]])
    student = model(BertStudentForSequenceClassification, fit_size=20)
    out = student(ids, mask, types, output_hidden_states=True)
    w = student.fit_dense.weight.numpy().astype(np.float64)
    b = student.fit_dense.bias.numpy().astype(np.float64)
    for state, rep in zip(out.hidden_states, out.reps):
        assert tuple(state.shape) == (3, 7, 16) and tuple(rep.shape) == (3, 7, 20)
        np.testing.assert_allclose(state.numpy().astype(np.float64) @ w.T + b, rep.numpy(), atol=1e-5)


@pytest.mark.parametrize("attention_output", ["probs", "scores"])
def test_attention_scores_softmax_to_the_attentions(attention_output):
    ids, mask, types = inputs()
    out = model(attention_output=attention_output)(ids, mask, types, output_attentions=True,
                                                   output_attention_scores=True)
    assert len(out.attentions) == len(out.attention_scores) == 3
    for scores, probs, att in zip(out.attention_scores, out.attentions, out.atts):
        assert tuple(scores.shape) == tuple(probs.shape) == (3, 4, 7, 7)
        s = scores.numpy().astype(np.float64)
        assert (s[1, :, :, 4:] < -9000).all() and (s[1, :, :, :4] > -100).all()  # the padding mask is in
        e = np.exp(s - s.max(-1, keepdims=True))
        np.testing.assert_allclose(e / e.sum(-1, keepdims=True), probs.numpy(), atol=1e-6)
        same_as_atts = probs if attention_output == "probs" else scores
        np.testing.assert_array_equal(att.numpy(), same_as_atts.numpy())


def test_qkv_are_the_linear_outputs_before_the_head_split():
    ids, mask, types = inputs()
    net = model()
    out = net(ids, mask, types, output_qkv=True, output_hidden_states=True)
    for name in ("query", "key", "value"):
        assert len(out[name]) == 3
        for i, layer in enumerate(net.encoder.layer):
            linear = getattr(layer.attention.self, name)
            tensor = out[name][i]
            assert tuple(tensor.shape) == (3, 7, 16)
            x = out.hidden_states[i].numpy().astype(np.float64)
            expected = x @ linear.weight.numpy().astype(np.float64).T + linear.bias.numpy()
            np.testing.assert_allclose(tensor.numpy(), expected, atol=1e-5)


# --- labels -> loss ---------------------------------------------------------------------------------------
def test_labels_give_the_cross_entropy_of_the_logits():
    net = model(label_num=3)
    labels = np.array([2, 0, 1])
    out = net(*inputs(), labels=flow.tensor(labels))
    assert list(out) == ["loss", "logits", "reps", "atts"]
    z = out.logits.numpy().astype(np.float64)
    log_probs = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    expected = -log_probs[np.arange(3), labels].mean()
    assert out.loss.shape == () and abs(out.loss.item() - expected) < 1e-6
    assert_same(as_numpy((out.logits, out.reps, out.atts)), as_numpy(net(*inputs())))
    out.loss.backward()
    assert net.classifier.weight.grad is not None and float(net.classifier.weight.grad.abs().sum()) > 0
    with_int32 = net(*inputs(), labels=flow.tensor(labels, dtype=flow.int32), output_qkv=True)
    assert with_int32.loss.item() == out.loss.item()


def test_regression_labels_give_the_mean_squared_error():
    net = model(label_num=1)
    scores = np.array([0.5, -1.0, 2.25], dtype=np.float32)
    out = net(*inputs(), labels=flow.tensor(scores))
    expected = ((out.logits.numpy()[:, 0].astype(np.float64) - scores) ** 2).mean()
    assert abs(out.loss.item() - expected) < 1e-6
    assert abs(net(*inputs(), labels=flow.tensor([0, 1, 2])).loss.item()
               - ((out.logits.numpy()[:, 0].astype(np.float64) - [0, 1, 2]) ** 2).mean()) < 1e-6


@pytest.mark.parametrize("labels, error, message", [
    ([0, 1], ValueError, r"^labels has shape \(2,\) but the batch has 3 rows; pass one label per row, shape \(3,\)$"),
    ([[0], [1], [1]], ValueError, r"^labels has shape \(3, 1\) but the batch has 3 rows"),
    ([0.0, 1.0, 1.0], TypeError,
     r"^labels must have an integer \(class id\) dtype for label_num=2, got oneflow\.float32"),
    ([0, 2, 1], ValueError, r"^labels holds 2 at row 1, outside \[0, 1\] \(label_num=2\); class ids count from 0$"),
    ([0, -1, 1], ValueError, r"^labels holds -1 at row 1"),
])
def test_bad_labels_are_refused(labels, error, message):
    with pytest.raises(error, match=message):
        model()(*inputs(), labels=flow.tensor(labels))


def test_labels_and_flags_types_are_checked():
    with pytest.raises(TypeError, match=r"^labels must be a oneflow\.Tensor, got list"):
        model()(*inputs(), labels=[0, 1, 1])
    with pytest.raises(TypeError, match=r"^output_qkv must be True or False, got 1 \(int\)$"):
        model()(*inputs(), output_qkv=1)


def test_output_reads_by_key_and_attribute_and_names_what_it_holds():
    out = model()(*inputs(), output_attentions=True)
    assert out.attentions is out["attentions"]
    with pytest.raises(AttributeError, match=r"holds \['logits', 'reps', 'atts', 'attentions'\], not 'loss'"):
        out.loss


# --- save_pretrained / from_pretrained ------------------------------------------------------------------
def assert_states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sorted(sa) == sorted(sb)
    for name in sa:
        assert sa[name].dtype == sb[name].dtype
        np.testing.assert_array_equal(sa[name].numpy(), sb[name].numpy())


@pytest.mark.parametrize("cls, kwargs", [
    (BertForSequenceClassification, {"label_num": 3}),
    (BertForSequenceClassification, {"label_num": 1}),
    (BertStudentForSequenceClassification, {"fit_size": 20, "attention_output": "scores", "label_num": 5}),
])
def test_save_pretrained_round_trip_is_bit_identical(tmp_path, cls, kwargs):
    net = model(cls, **kwargs)
    with flow.no_grad():  # non-zero biases everywhere, so a misplaced tensor cannot go unnoticed
        for p in net.parameters():
            p.add_(flow.randn(*p.shape) * 0.1)
    path = net.save_pretrained(tmp_path / "ckpt")
    assert path == str(tmp_path / "ckpt") and sorted(os.listdir(path)) == ["config.json", "model.safetensors"]
    back = BertForSequenceClassification.from_pretrained(path)
    assert back.load_report.initialised == [] and back.load_report.ignored == ["bert.embeddings.position_ids"]
    assert back.config == net.config
    assert_states_equal(back.eval(), net)
    assert_same(as_numpy(back(*inputs())), as_numpy(net(*inputs())))
    arrays = load_file(os.path.join(path, "model.safetensors"))
    heads = {n for n in arrays if n.startswith(("classifier.", "fit_dense."))}
    assert heads == ({"classifier.weight", "classifier.bias"}
                     | ({"fit_dense.weight", "fit_dense.bias"} if net.is_student else set()))
    assert all(n.startswith("bert.") for n in set(arrays) - heads)
    config = json.load(open(os.path.join(path, "config.json")))
    assert config["architectures"] == ["BertForSequenceClassification"] and config["model_type"] == "bert"
    assert len(config["id2label"]) == kwargs["label_num"]
    assert config["problem_type"] == ("regression" if kwargs["label_num"] == 1 else "single_label_classification")


def test_save_pretrained_without_head_and_other_files_kept(tmp_path):
    net = model(label_num=3)
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "vocab.txt").write_text("[PAD]\n")
    old = os.umask(0o027)
    try:
        net.save_pretrained(directory, head=False)
    finally:
        os.umask(old)
    assert sorted(os.listdir(directory)) == ["config.json", "model.safetensors", "vocab.txt"]
    for name in ("config.json", "model.safetensors"):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o640
    back = BertForSequenceClassification.from_pretrained(directory, label_num=3)
    assert back.load_report.initialised == ["classifier.weight", "classifier.bias"]
    state = net.state_dict()
    for name, value in back.state_dict().items():
        if not name.startswith("classifier."):
            np.testing.assert_array_equal(value.numpy(), state[name].numpy())
    config = json.load(open(directory / "config.json"))
    assert config["architectures"] == ["BertModel"] and "id2label" not in config


def test_save_pretrained_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=r"'.*file' exists and is not a directory; choose another path"):
        model().save_pretrained(tmp_path / "file")
    with pytest.raises(TypeError, match=r"^head must be True or False, got 'no' \(str\)$"):
        model().save_pretrained(tmp_path / "a", head="no")
    with pytest.raises(TypeError, match=r"^directory must be a path \(str or os\.PathLike\), got int$"):
        model().save_pretrained(3)
    from knowledge_distill_util.models.pretrained import save_pretrained

    with pytest.raises(TypeError, match=r"^model must be a BertForSequenceClassification .*got Linear$"):
        save_pretrained(flow.nn.Linear(2, 2), tmp_path / "b")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_minilm_save_pretrained_has_the_checkpoint_names_and_tensors(tmp_path):
    directory = minilm_checkpoint_dir()
    original = load_file(os.path.join(directory, "model.safetensors"))
    net = BertForSequenceClassification.from_pretrained(directory)
    saved = load_file(os.path.join(net.save_pretrained(tmp_path / "base", head=False), "model.safetensors"))
    assert sorted(saved) == sorted(original) and len(saved) == 104
    for name, value in original.items():
        assert saved[name].dtype == value.dtype and saved[name].shape == value.shape, name
        np.testing.assert_array_equal(saved[name], value)
    with_head = load_file(os.path.join(net.save_pretrained(tmp_path / "cls"), "model.safetensors"))
    assert sorted(with_head) == sorted(["bert." + n for n in original] + ["classifier.weight", "classifier.bias"])
    ours = json.load(open(tmp_path / "base" / "config.json"))
    theirs = json.load(open(os.path.join(directory, "config.json")))
    shared = set(ours) & set(theirs)
    assert {"vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "hidden_act",
            "layer_norm_eps", "pad_token_id", "position_embedding_type", "architectures"} <= shared
    assert {k: ours[k] for k in shared} == {k: theirs[k] for k in shared}
    again = BertForSequenceClassification.from_pretrained(tmp_path / "cls")
    assert_states_equal(again.eval(), net)


# --- nn.Graph --------------------------------------------------------------------------------------------
class Forward(flow.nn.Graph):
    def __init__(self, net, **kwargs):
        super().__init__()
        self.net = net
        self.kwargs = kwargs

    def build(self, ids, mask, types):
        out = self.net(ids, mask, types, **self.kwargs)
        return out if isinstance(out, tuple) else dict(out)


@pytest.mark.graph
def test_graph_flags_off_equals_the_previous_forward_and_flags_work_in_graph():
    net = model()
    reference = as_numpy(previous_forward(net, *inputs()))
    graph = as_numpy(Forward(net)(*inputs()))
    for g, e in zip(graph, reference):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    out = Forward(net, **FLAGS)(*inputs())
    eager = net(*inputs(), **FLAGS)
    assert list(out) == list(eager)
    for key in ("hidden_states", "attention_scores", "query", "value"):
        for g, e in zip(out[key], eager[key]):
            np.testing.assert_allclose(g.numpy(), e.numpy(), rtol=1e-5, atol=1e-5)
    assert math.isfinite(float(out["logits"].sum().numpy()))


def test_label_num_comes_from_id2label_unless_given(tmp_path):
    path = model(label_num=3).save_pretrained(tmp_path / "ckpt")
    assert BertForSequenceClassification.from_pretrained(path).label_num == 3
    with pytest.raises(ValueError, match=r"'classifier\.bias' has shape \(3,\) but the model's .* \(2,\)"):
        BertForSequenceClassification.from_pretrained(path, label_num=2)
    with open(os.path.join(path, "model.safetensors"), "rb") as handle:  # transformers requires this metadata
        header = handle.read(8 + int.from_bytes(handle.read(8), "little"))
    assert b'"__metadata__":{"format":"pt"}' in header


@pytest.mark.parametrize("key, value, message", [
    ("id2label", [],
     r"id2label in .*config\.json must be a non-empty object of label names, got \[\]; fix or remove it"),
    ("knowledge_distill_util", "student", r"knowledge_distill_util in .*config\.json must be an object, got 'student'"),
    ("knowledge_distill_util", {"fit_size": 0}, r"fit_size in .*config\.json must be a positive integer, got 0"),
])
def test_bad_saved_extras_in_config_json_are_named(tmp_path, key, value, message):
    path = model().save_pretrained(tmp_path / "ckpt")
    config = json.load(open(os.path.join(path, "config.json")))
    config[key] = value
    json.dump(config, open(os.path.join(path, "config.json"), "w"))
    with pytest.raises(ValueError, match=message):
        BertForSequenceClassification.from_pretrained(path)
