"""(Bi)LSTM student against a numpy float64 LSTM that reads only each sentence's valid tokens.

The reference runs the LSTM equations (gates i, f, g, o) step by step on the unpadded token list, so
padding-ignoring is checked against a model of what "no padding" means, not against the gather trick.
"""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import LSTMStudentForSequenceClassification
from knowledge_distill_util.models.lstm import run_lstm

SMALL = dict(vocab_size=30, hidden_size=6, intermediate_size=5, embedding_size=4, label_num=3)
TOL = dict(rtol=1e-5, atol=1e-5)


def build(**kwargs):
    flow.manual_seed(0)
    return LSTMStudentForSequenceClassification(**dict(SMALL, **kwargs)).eval()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def np_lstm(lstm, xs):
    """One unidirectional layer over ``xs [T, D]`` -> outputs ``[T, H]`` (float64)."""
    w = {k: v.numpy().astype(np.float64) for k, v in lstm.state_dict().items()}
    hidden = w["weight_hh_l0"].shape[1]
    h, c, outputs = np.zeros(hidden), np.zeros(hidden), []
    for x in xs:
        gates = w["weight_ih_l0"] @ x + w["bias_ih_l0"] + w["weight_hh_l0"] @ h + w["bias_hh_l0"]
        i, f, g, o = np.split(gates, 4)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        outputs.append(h)
    return np.stack(outputs)


def np_classifier(model, tokens):
    """Logits for one sentence given as its list of token ids (no padding anywhere)."""
    x = model.embedding.weight.numpy().astype(np.float64)[tokens]
    for i, forward in enumerate(model.forward_lstm):
        out = np_lstm(forward, x)
        if model.backward_lstm is None:
            x, final = out, out[-1]
            continue
        back = np_lstm(model.backward_lstm[i], x[::-1])[::-1]
        x, final = np.concatenate([out, back], axis=1), np.concatenate([out[-1], back[0]])
    dense = np.maximum(model.dense.weight.numpy() @ final + model.dense.bias.numpy(), 0.0)
    return model.classifier.weight.numpy() @ dense + model.classifier.bias.numpy()


SENTENCES = [[5, 9, 2, 7, 11], [3, 4], [8, 1, 6, 2, 9, 12, 13]]


def batch(sentences, length):
    ids = np.zeros((len(sentences), length), np.int64)
    mask = np.zeros_like(ids)
    for row, tokens in enumerate(sentences):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return flow.tensor(ids), flow.tensor(mask), flow.zeros_like(flow.tensor(ids))


@pytest.mark.parametrize("kwargs", [
    {"bidirectional": True},
    {"bidirectional": True, "num_hidden_layers": 2},
    {"bidirectional": False, "ignore_padding": True, "num_hidden_layers": 2},
])
def test_padding_ignored_equals_reference_on_valid_tokens(kwargs):
    model = build(**kwargs)
    for length in (7, 10):  # the same sentences with different amounts of padding
        logits = model(*batch(SENTENCES, length)).numpy()
        expected = np.stack([np_classifier(model, tokens) for tokens in SENTENCES])
        np.testing.assert_allclose(logits, expected, **TOL)


def test_bidirectional_outputs_independent_of_padding_and_batch():
    model = build(bidirectional=True, num_hidden_layers=2)
    alone = model(*batch(SENTENCES[1:2], 2)).numpy()
    padded = model(*batch(SENTENCES, 12)).numpy()[1:2]
    np.testing.assert_allclose(padded, alone, **TOL)


def test_original_unidirectional_reads_the_last_position_padding_included():
    model = build()
    assert not model.ignore_padding and model.backward_lstm is None
    ids, mask, types = batch(SENTENCES, 9)
    logits = model(ids, mask, types).numpy()
    expected = np.stack([np_classifier(model, list(row)) for row in ids.numpy()])  # padding ids 0 as tokens
    np.testing.assert_allclose(logits, expected, **TOL)
    unpadded = np.stack([np_classifier(model, tokens) for tokens in SENTENCES])
    assert not np.allclose(logits, unpadded, **TOL)  # the padding changes the original's output


def test_bidirectional_without_ignore_padding_is_a_plain_bilstm_over_all_positions():
    model = build(bidirectional=True, ignore_padding=False)
    ids, mask, types = batch(SENTENCES, 8)
    expected = np.stack([np_classifier(model, list(row)) for row in ids.numpy()])
    np.testing.assert_allclose(model(ids, mask, types).numpy(), expected, **TOL)


class Forward(flow.nn.Graph):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def build(self, ids, mask, types):
        return self.model(ids, mask, types)


@pytest.mark.graph
@pytest.mark.parametrize("bidirectional", [False, True])
def test_graph_equals_eager(bidirectional):
    model = build(bidirectional=bidirectional, num_hidden_layers=2)
    inputs = batch(SENTENCES, 9)
    np.testing.assert_allclose(Forward(model)(*inputs).numpy(), model(*inputs).numpy(), rtol=1e-5, atol=1e-5)


def test_gradients_reach_every_parameter():
    model = build(bidirectional=True, num_hidden_layers=2)
    model.train()
    model(*batch(SENTENCES, 9)).sum().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and np.abs(parameter.grad.numpy()).sum() > 0, name


def test_run_lstm_equals_oneflow_lstm_values_and_gradients():
    flow.manual_seed(0)
    lstm = flow.nn.LSTM(4, 6, batch_first=True)
    x = flow.randn(3, 5, 4, requires_grad=True)
    expected, _ = lstm(x)
    (expected * expected).sum().backward()
    expected_grads = [x.grad.numpy().copy()] + [p.grad.numpy().copy() for p in lstm.parameters()]
    x.grad = None
    for p in lstm.parameters():
        p.grad = None
    got = run_lstm(lstm, x)
    (got * got).sum().backward()
    np.testing.assert_allclose(got.detach().numpy(), expected.detach().numpy(), **TOL)
    for g, e in zip([x.grad.numpy()] + [p.grad.numpy() for p in lstm.parameters()], expected_grads):
        np.testing.assert_allclose(g, e, **TOL)


def test_defaults_follow_the_original_layout():
    model = LSTMStudentForSequenceClassification()
    assert tuple(model.embedding.weight.shape) == (30522, 300)
    assert model.forward_lstm[0].hidden_size == 300 and model.backward_lstm is None
    assert tuple(model.dense.weight.shape) == (400, 300) and tuple(model.classifier.weight.shape) == (2, 400)
    assert LSTMStudentForSequenceClassification(vocab_size=10, bidirectional=True).dense.in_features == 600


def test_errors():
    model = build()
    ids, mask, types = batch(SENTENCES, 7)
    with pytest.raises(TypeError, match=r"input_ids must have an integer \(int32/int64\) dtype, got oneflow\.float32"):
        model(ids.float(), mask, types)
    with pytest.raises(ValueError, match=r"input_mask has shape \(3, 5\) but input_ids has shape \(3, 7\)"):
        model(ids, mask[:, :5], types)
    with pytest.raises(ValueError, match=r"hidden_size must be a positive integer, got 0"):
        build(hidden_size=0)
    with pytest.raises(ValueError, match=r"hidden_dropout_prob must be a number in \[0, 1\), got 1\.5"):
        build(hidden_dropout_prob=1.5)


@pytest.mark.skipif(not flow.cuda.is_available(), reason="needs a CUDA device; this machine has none")
def test_cuda_equals_cpu():
    model = build(bidirectional=True, num_hidden_layers=2)
    inputs = batch(SENTENCES, 9)
    expected = model(*inputs).numpy()
    got = model.to("cuda")(*(t.to("cuda") for t in inputs)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
