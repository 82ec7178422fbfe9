"""Model inputs and configurations that used to kill the process or give silent wrong numbers (issue 9):
token/segment ids outside the embedding tables, empty batches, BiLSTM masks with padding first,
configuration values of the wrong type or range (constructor, config.json), truncated safetensors,
device names."""
import json
import os

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util._device import resolve_device
from knowledge_distill_util.models import BertForSequenceClassification, LSTMStudentForSequenceClassification
from models.test_pretrained import TINY, hf_style_arrays, write_checkpoint

SMALL = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=24,
             max_position_embeddings=12)
LSTM = dict(vocab_size=30, hidden_size=6, intermediate_size=5, embedding_size=4)


def bert(**kwargs):
    flow.manual_seed(0)
    return BertForSequenceClassification(**dict(SMALL, **kwargs)).eval()


def lstm(**kwargs):
    flow.manual_seed(0)
    return LSTMStudentForSequenceClassification(**dict(LSTM, **kwargs)).eval()


def triple(ids, mask=None, types=None):
    ids = flow.tensor(np.asarray(ids, np.int64))
    mask = flow.ones_like(ids) if mask is None else flow.tensor(np.asarray(mask, np.int64))
    types = flow.zeros_like(ids) if types is None else flow.tensor(np.asarray(types, np.int64))
    return ids, mask, types


# --- token and segment ids ------------------------------------------------------------------------
@pytest.mark.parametrize("bad, shown", [(-1, "-1"), (60, "60"), (-100000, "-100000"), (10 ** 9, "1000000000")])
def test_bert_token_ids_outside_the_vocabulary(bad, shown):
    ids = [[1, 2, 3], [4, 5, bad]]
    with pytest.raises(ValueError, match=rf"input_ids holds {shown} at \[row 1, position 2\] \(1 id\(s\) out of "
                                         r"range\), outside \[0, 59\] \(vocab_size=60\); ids must index the "
                                         r"embedding table: check that the tokenizer's vocabulary matches"):
        bert()(*triple(ids))


@pytest.mark.parametrize("bad", [-1, 2, 7])
def test_bert_segment_ids_outside_the_table(bad):
    types = [[0, 0, 1], [0, bad, bad]]
    with pytest.raises(ValueError, match=rf"token_type_ids holds {bad} at \[row 1, position 1\] \(2 id\(s\) out of "
                                         r"range\), outside \[0, 1\] \(type_vocab_size=2\); segment ids are 0 for "
                                         r"the first text and 1 for the second"):
        bert()(*triple([[1, 2, 3], [4, 5, 6]], types=types))


@pytest.mark.parametrize("bad", [-1, 30])
def test_lstm_token_ids_outside_the_vocabulary(bad):
    for model in (lstm(), lstm(bidirectional=True)):
        with pytest.raises(ValueError, match=rf"input_ids holds {bad} at \[row 0, position 0\] .* outside \[0, 29\] "
                                             r"\(vocab_size=30\)"):
            model(*triple([[bad, 1, 2]]))


def test_the_embeddings_module_checks_too():
    """BERT-of-Theseus calls model.embeddings directly: the check lives there."""
    model = bert()
    with pytest.raises(ValueError, match=r"input_ids holds 60"):
        model.embeddings(flow.tensor([[60]]), flow.tensor([[0]]))


def test_valid_boundary_ids_pass_and_the_check_changes_nothing():
    ids, mask, types = triple([[0, 59, 3], [1, 2, 59]], types=[[0, 1, 1], [1, 0, 0]])
    checked, unchecked = bert(), bert(check_inputs=False)
    np.testing.assert_array_equal(checked(ids, mask, types)[0].numpy(), unchecked(ids, mask, types)[0].numpy())


def test_check_inputs_false_skips_the_value_checks():
    ids, mask, types = triple([[1, 60]])  # 60 is past the table: OneFlow reads a zero row (no abort)
    for model in (bert(check_inputs=False), lstm(check_inputs=False)):
        assert model.check_inputs is False
        model(ids, mask, types)
    model = bert()
    model(ids, mask, types, check_inputs=False)  # per call
    with pytest.raises(ValueError, match=r"input_ids holds 60"):
        model(ids, mask, types)
    model.check_inputs = False  # the property reaches the embeddings module
    assert model.embeddings.check_inputs is False
    model(ids, mask, types)
    with pytest.raises(ValueError, match=r"input_ids holds 60"):
        model(ids, mask, types, check_inputs=True)
    with pytest.raises(TypeError, match=r"check_inputs must be True or False, got 'no' \(str\)"):
        bert(check_inputs="no")


@pytest.mark.graph
def test_inside_nn_graph_the_value_checks_are_skipped():
    """In nn.Graph the ids are not checked (no host synchronisation): valid ids give the eager values, and
    an id past the table is not refused there (eager refuses it)."""
    model = bert()

    class Forward(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = model

        def build(self, ids, mask, types):
            return self.model(ids, mask, types)[0]

    ids, mask, types = triple([[1, 2, 3, 4], [5, 6, 7, 0]], mask=[[1, 1, 1, 1], [1, 1, 1, 0]])
    graph = Forward()
    np.testing.assert_allclose(graph(ids, mask, types).numpy(), model(ids, mask, types)[0].numpy(),
                               rtol=1e-5, atol=1e-5)
    past = triple([[1, 2, 3, 60], [5, 6, 7, 0]], mask=[[1, 1, 1, 1], [1, 1, 1, 0]])
    assert np.isfinite(graph(*past).numpy()).all()
    with pytest.raises(ValueError, match=r"input_ids holds 60"):
        model(*past)


# --- empty batches --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(0, 5), (3, 0)])
def test_empty_batches_are_refused(shape):
    ids = flow.zeros(*shape, dtype=flow.int64)
    for model in (lstm(), lstm(bidirectional=True), bert()):
        with pytest.raises(ValueError, match=rf"input_ids is empty \(shape \({shape[0]}, {shape[1]}\)\); the model "
                                             r"needs at least one sequence of at least one token: skip empty batches"):
            model(ids, flow.ones_like(ids), flow.zeros_like(ids))


# --- BiLSTM masks ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mask, row, shown", [
    ([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1]], 1, r"\[0, 0, 1, 1, 1\]"),   # padding first
    ([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1]], 0, r"\[1, 0, 1, 1, 0\]"),   # a hole
])
def test_bilstm_masks_must_be_tokens_then_padding(mask, row, shown):
    ids, mask, types = triple([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], mask=mask)
    with pytest.raises(ValueError, match=rf"input_mask row {row} is {shown}: padding before or between tokens; the "
                                         r"BiLSTM reads the valid tokens first and the padding after them "
                                         r"\(1 \.\.\. 1 0 \.\.\. 0\): pad on the right, or build the model with "
                                         r"ignore_padding=False"):
        lstm(bidirectional=True)(ids, mask, types)


def test_bilstm_mask_values_must_be_zero_or_one():
    ids, mask, types = triple([[1, 2, 3]], mask=[[1, 2, 0]])
    with pytest.raises(ValueError, match=r"input_mask holds 2 at \[row 0, position 1\]; a mask holds 1 \(token\) or "
                                         r"0 \(padding\)"):
        lstm(bidirectional=True)(ids, mask, types)


def test_masks_the_model_does_not_read_are_not_checked():
    ids, mask, types = triple([[1, 2, 3, 4, 5]], mask=[[0, 0, 1, 1, 1]])
    lstm()(ids, mask, types)  # unidirectional, ignore_padding False: the mask is unused
    lstm(bidirectional=True, ignore_padding=False)(ids, mask, types)
    lstm(bidirectional=True)(*triple([[1, 2, 3]], mask=[[0, 0, 0]]))  # a fully padded row is accepted


def test_long_mask_rows_are_shortened_in_the_message():
    row = [0] + [1] * 40
    ids, mask, types = triple([list(range(1, 29)) + [1] * 13], mask=[row])
    with pytest.raises(ValueError, match=r"input_mask row 0 is \[0, 1, 1, .*, 1, \.\.\.\]: padding"):
        lstm(bidirectional=True)(ids, mask, types)


# --- constructor configuration --------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    ({"layer_norm_eps": "1e-12"}, TypeError, r"layer_norm_eps must be a finite number > 0, got '1e-12' \(str\)"),
    ({"layer_norm_eps": 0.0}, ValueError, r"layer_norm_eps must be a finite number > 0, got 0\.0"),
    ({"layer_norm_eps": float("nan")}, ValueError, r"layer_norm_eps must be a finite number > 0, got nan"),
    ({"initializer_range": -0.02}, ValueError, r"initializer_range must be a finite number > 0, got -0\.02"),
    ({"hidden_size": "16"}, TypeError, r"hidden_size must be a positive integer, got '16' \(str\)"),
    ({"hidden_size": 16.0}, TypeError, r"hidden_size must be a positive integer, got 16\.0 \(float\)"),
    ({"num_hidden_layers": 0}, ValueError, r"num_hidden_layers must be a positive integer, got 0"),
    ({"vocab_size": True}, TypeError, r"vocab_size must be a positive integer, got True \(bool\)"),
    ({"hidden_dropout_prob": "0.1"}, TypeError, r"hidden_dropout_prob must be a number in \[0, 1\), got '0\.1'"),
    ({"attention_probs_dropout_prob": -0.1}, ValueError, r"attention_probs_dropout_prob must be a number in \[0, 1\)"),
    ({"attention_probs_dropout_prob": float("nan")}, ValueError, r"attention_probs_dropout_prob .* got nan"),
    ({"is_student": "yes"}, TypeError, r"is_student must be True or False, got 'yes' \(str\)"),
    ({"hidden_act": ["gelu"]}, TypeError, r"hidden_act must be one of \['gelu', .*\], got \['gelu'\] \(list\)"),
    ({"attention_output": None}, TypeError, r"attention_output must be one of \('probs', 'scores'\), got None"),
    ({"num_attention_heads": 5}, ValueError, r"hidden_size \(16\) must be a multiple of num_attention_heads \(5\)"),
])
def test_bert_constructor_checks_types_and_ranges(kwargs, error, message):
    with pytest.raises(error, match=message):
        BertForSequenceClassification(**dict(SMALL, **kwargs))


def test_numpy_integers_are_integers_and_config_holds_python_values():
    model = BertForSequenceClassification(**dict(SMALL, hidden_size=np.int64(16), hidden_dropout_prob=np.float32(0.5)))
    assert type(model.config["hidden_size"]) is int and type(model.config["hidden_dropout_prob"]) is float
    json.dumps(model.config)  # stays serialisable
    model = LSTMStudentForSequenceClassification(**dict(LSTM, hidden_size=np.int32(6)))
    assert type(model.config["hidden_size"]) is int
    json.dumps(model.config)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"hidden_size": "6"}, TypeError, r"hidden_size must be a positive integer, got '6' \(str\)"),
    ({"embedding_size": 0}, ValueError, r"embedding_size must be a positive integer, got 0"),
    ({"hidden_dropout_prob": 1.0}, ValueError, r"hidden_dropout_prob must be a number in \[0, 1\), got 1\.0"),
    ({"bidirectional": 1}, TypeError, r"bidirectional must be True or False, got 1 \(int\)"),
    ({"ignore_padding": "false"}, TypeError, r"ignore_padding must be True, False or None, got 'false' \(str\)"),
])
def test_lstm_constructor_checks_types_and_ranges(kwargs, error, message):
    with pytest.raises(error, match=message):
        LSTMStudentForSequenceClassification(**dict(LSTM, **kwargs))


# --- from_pretrained: config.json and model.safetensors -------------------------------------------
@pytest.mark.parametrize("change, error, message", [
    ({"layer_norm_eps": "1e-12"}, TypeError, r"layer_norm_eps in .*config\.json must be a finite number > 0, got "
                                             r"'1e-12' \(str\)"),
    ({"hidden_size": 9}, ValueError, r"hidden_size \(9\) must be a multiple of num_attention_heads \(2\) in "
                                      r".*config\.json"),
    ({"attention_probs_dropout_prob": 1.5}, ValueError, r"attention_probs_dropout_prob in .*config\.json must be a "
                                                        r"number in \[0, 1\), got 1\.5"),
    ({"num_hidden_layers": None}, TypeError, r"num_hidden_layers in .*config\.json must be a positive integer, "
                                             r"got None"),
])
def test_config_json_values_are_checked_naming_the_file(tmp_path, change, error, message):
    path = write_checkpoint(str(tmp_path / "ckpt"), hf_style_arrays(), dict(TINY, **change))
    with pytest.raises(error, match=message):
        BertForSequenceClassification.from_pretrained(path, label_num=3)


@pytest.mark.parametrize("text, message", [
    ('{"hidden_size": 8,', r"checkpoint configuration .*config\.json is not valid JSON \(.* at line 1, column 19\); "
                           r"it is truncated or corrupt: restore or re-create it"),
    ("", r"checkpoint configuration .*config\.json is not valid JSON \(Expecting value at line 1, column 1\)"),
    ("[1, 2]", r".*config\.json holds a JSON list, not an object of configuration keys"),
])
def test_config_json_that_is_not_a_config_names_the_file(tmp_path, text, message):
    path = write_checkpoint(str(tmp_path / "ckpt"), hf_style_arrays())
    with open(os.path.join(path, "config.json"), "w") as handle:
        handle.write(text)
    with pytest.raises(ValueError, match=message):
        BertForSequenceClassification.from_pretrained(path, label_num=3)


@pytest.mark.parametrize("keep", [0, 5, 100, -10])
def test_truncated_safetensors_names_the_file_and_the_fix(tmp_path, keep):
    path = write_checkpoint(str(tmp_path / "ckpt"), hf_style_arrays())
    weights = os.path.join(path, "model.safetensors")
    data = open(weights, "rb").read()
    with open(weights, "wb") as handle:
        handle.write(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ValueError, match=r"ckpt/model\.safetensors is unreadable \(Error while deserializing header: "
                                         r".*\); the file is truncated or corrupt: copy or download the checkpoint "
                                         r"again"):
        BertForSequenceClassification.from_pretrained(path, label_num=3)


# --- devices --------------------------------------------------------------------------------------
def fake_gpus(monkeypatch, count):
    monkeypatch.setattr(flow.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(flow.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("name, expected", [("cpu", "cpu:0"), (" CPU ", "cpu:0"), ("cpu:0", "cpu:0"),
                                            (None, "cpu:0"), ("", "cpu:0")])
def test_resolve_device_cpu(monkeypatch, name, expected):
    fake_gpus(monkeypatch, 0)
    assert str(resolve_device(name)) == expected


def test_resolve_device_cuda_without_a_gpu(monkeypatch):
    fake_gpus(monkeypatch, 0)
    for name in ("cuda", "cuda:0", "CUDA:1"):
        with pytest.raises(ValueError, match=rf"device {name!r} requested but no CUDA device is visible on this "
                                             r"machine .*; use --device cpu"):
            resolve_device(name)


def test_resolve_device_with_two_gpus(monkeypatch):
    fake_gpus(monkeypatch, 2)
    assert str(resolve_device("cuda")) == "cuda:0" and str(resolve_device("cuda:1")) == "cuda:1"
    assert str(resolve_device(None)) == "cuda:0"
    with pytest.raises(ValueError, match=r"device 'cuda:2': only 2 CUDA device\(s\) are visible \(cuda:0 to cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name, error, message", [
    ("tpu", ValueError, r"unknown device 'tpu'; valid devices: cpu, cuda, cuda:N \(N = a CUDA device index\)"),
    ("cuda:x", ValueError, r"unknown device 'cuda:x'; valid devices"),
    ("gpu", ValueError, r"unknown device 'gpu'"),
    ("cpu:1", ValueError, r"device 'cpu:1': the CPU has only index 0; use 'cpu'"),
    (0, TypeError, r"device must be a string such as 'cpu' or 'cuda:0', got int 0"),
])
def test_resolve_device_refuses_unknown_names(name, error, message):
    with pytest.raises(error, match=message):
        resolve_device(name)


# --- BERT masks (issue 16) ------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-3, 2])
def test_bert_mask_values_must_be_zero_or_one(value):
    """A mask of -3 used to be accepted: an attention bias of +40000 on that token."""
    ids, mask, types = triple([[1, 2, 3]], mask=[[1, 1, value]])
    with pytest.raises(ValueError, match=rf"^input_mask holds {value} at \[row 0, position 2\]; a mask holds 1 "
                                         r"\(token\) or 0 \(padding\)$"):
        bert()(ids, mask, types)


def test_bert_masks_of_bool_int_and_gaps_pass():
    ids, mask, types = triple([[1, 2, 3]], mask=[[1, 0, 1]])
    bert()(ids, mask, types)  # a gap is fine for attention
    bert()(ids, mask.to(flow.bool), types)
    bert()(ids, mask.to(flow.int32), types)
    bert()(ids, flow.tensor([[1, 1, -3]]), types, check_inputs=False)  # checks off: not read
