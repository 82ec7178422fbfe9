"""BertForMaskedLM: the head loaded by name from a Hugging Face-layout safetensors file written here by hand
(``cls.predictions.*``) and from an original-layout snapshot (``cls-predictions-*``, kernel stored [in, out]);
the head's forward against a numpy formula; checkpoints without a head or with a head of another vocabulary."""
import json
import math

import numpy as np
import oneflow as flow
import pytest
from safetensors.numpy import save_file

from knowledge_distill_util.models import BertForMaskedLM, BertForSequenceClassification, NoMaskedLMHead
from knowledge_distill_util.models.pretrained import hf_arrays, hf_config
from knowledge_distill_util.models.snapshot import save_snapshot

V, H = 40, 8
CONFIG = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
              max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def _head(rng, vocab=V):
    w = lambda *shape: (rng.standard_normal(shape) * 0.3).astype(np.float32)  # noqa: E731
    return {"dense_w": w(H, H), "dense_b": w(H), "gamma": 1 + w(H), "beta": w(H), "bias": w(vocab)}


def _encoder():
    flow.manual_seed(0)
    return BertForSequenceClassification(**CONFIG)


def _write_hf(directory, encoder, head=None, old_names=False):
    """A Hugging Face BertForMaskedLM directory: encoder under bert.*, head under cls.predictions.*."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in hf_arrays(encoder, head=True).items() if not k.startswith("classifier.")}
    if head is not None:
        norm = ("gamma", "beta") if old_names else ("weight", "bias")
        arrays.update({
            "cls.predictions.transform.dense.weight": head["dense_w"],
            "cls.predictions.transform.dense.bias": head["dense_b"],
            f"cls.predictions.transform.LayerNorm.{norm[0]}": head["gamma"],
            f"cls.predictions.transform.LayerNorm.{norm[1]}": head["beta"],
            "cls.predictions.bias": head["bias"],
            "cls.predictions.decoder.weight": arrays["bert.embeddings.word_embeddings.weight"],
            "cls.predictions.decoder.bias": head["bias"],
        })
    save_file(arrays, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = hf_config(encoder, head=False)
    config["architectures"] = ["BertForMaskedLM"]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def _numpy_logits(hidden, head, table):
    """LayerNorm(gelu(hidden @ W^T + b)) @ E^T + bias, in float64 (eps 1e-12)."""
    x = hidden.astype(np.float64) @ head["dense_w"].T.astype(np.float64) + head["dense_b"]
    x = x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12) * head["gamma"] + head["beta"]
    return x @ table.T.astype(np.float64) + head["bias"]


def _inputs():
    ids = flow.tensor([[2, 5, 7, 3, 0], [2, 9, 4, 11, 3]], dtype=flow.int64)
    mask = flow.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=flow.int64)
    return ids, mask, flow.zeros_like(ids)


@pytest.mark.parametrize("old_names", [False, True])
def test_hf_head_loads_by_name_and_computes_the_formula(tmp_path, old_names):
    encoder, head = _encoder(), _head(np.random.default_rng(1))
    model = BertForMaskedLM.from_pretrained(_write_hf(tmp_path / "hf", encoder, head, old_names))
    params = {k: v.numpy() for k, v in model.cls.named_parameters()}
    np.testing.assert_array_equal(params["transform.dense.weight"], head["dense_w"])  # [out, in] as nn.Linear
    np.testing.assert_array_equal(params["transform.LayerNorm.weight"], head["gamma"])
    np.testing.assert_array_equal(params["bias"], head["bias"])
    ids, mask, types = _inputs()
    hidden = encoder(ids, mask, types, output_hidden_states=True).hidden_states[-1].numpy()
    table = encoder.embeddings.word_embeddings.weight.numpy()
    positions = np.array([1, 3])
    got = model.eval()(ids, mask, types, flow.tensor(positions)).numpy()
    want = _numpy_logits(hidden[np.arange(2), positions], head, table)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert tuple(model(ids, mask, types).shape) == (2, 5, V)


def test_checkpoint_without_head_says_what_to_use(tmp_path):
    with pytest.raises(NoMaskedLMHead, match=r"has no masked-LM head \(no cls.predictions.bias\); use a pretrained "
                                             r"BERT that has one .*nearest neighbours in the word-embedding table"):
        BertForMaskedLM.from_pretrained(_write_hf(tmp_path / "hf", _encoder()))


def test_head_of_another_vocabulary_is_refused(tmp_path):
    head = _head(np.random.default_rng(2), vocab=V + 3)
    with pytest.raises(ValueError, match=rf"has {V + 3} output entries but the model's vocabulary has {V}"):
        BertForMaskedLM.from_pretrained(_write_hf(tmp_path / "hf", _encoder(), head))


def test_original_snapshot_head_loads_with_the_kernel_transposed(tmp_path):
    encoder, head = _encoder(), _head(np.random.default_rng(3))
    extra = {"cls-predictions-transform-dense-weight": head["dense_w"].T,  # _FullyConnected: [in, out]
             "cls-predictions-transform-dense-bias": head["dense_b"],
             "cls-predictions-transform-LayerNorm-gamma": head["gamma"],
             "cls-predictions-transform-LayerNorm-beta": head["beta"],
             "cls-predictions-output_bias": head["bias"]}
    path = save_snapshot(encoder, tmp_path / "snapshot", scope="teacher", extra=extra)
    model = BertForMaskedLM.from_snapshot(path, num_attention_heads=2)
    np.testing.assert_array_equal(model.cls.transform.dense.weight.numpy(), head["dense_w"])
    np.testing.assert_array_equal(model.cls.bias.numpy(), head["bias"])
    np.testing.assert_array_equal(model.bert.embeddings.word_embeddings.weight.numpy(),
                                  encoder.embeddings.word_embeddings.weight.numpy())
    assert model.config["layer_norm_eps"] == 1e-5  # the original's LayerNorm
    assert sorted(model.snapshot_head_arrays()) == sorted(extra)
    np.testing.assert_array_equal(model.snapshot_head_arrays()["cls-predictions-transform-dense-weight"],
                                  head["dense_w"].T)
    plain = save_snapshot(encoder, tmp_path / "plain", scope="teacher")
    with pytest.raises(NoMaskedLMHead, match=r"no cls-predictions-output_bias variable"):
        BertForMaskedLM.from_snapshot(plain, num_attention_heads=2)
    with pytest.raises(ValueError, match=r"already written from the model"):
        save_snapshot(encoder, tmp_path / "clash", scope="teacher",
                      extra={"bert-pooler-dense-bias": np.zeros(H, np.float32)})
