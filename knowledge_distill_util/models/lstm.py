"""The Distilled-BiLSTM student: embedding -> (Bi)LSTM -> dense + ReLU -> dropout -> dense to labels.

Padding: OneFlow 0.9 can pack sequences (``pack_padded_sequence``) only with data-dependent Python
(``int(batch_sizes[0])``), which ``nn.Graph`` cannot run. Instead, with ``ignore_padding`` the
backward direction reads each sequence's valid tokens in reverse order through an index gather
(padding stays at the end, after the valid tokens), and each direction's final state is read at the
last valid token. Both directions then never see a padding token, in eager mode and in ``nn.Graph``.
Valid tokens must come first (``input_mask`` of the form ``1 ... 1 0 ... 0``): in eager mode any other
mask is refused with a ``ValueError`` naming the row (with ``check_inputs``, see
:func:`~knowledge_distill_util.models._inputs.check_mask_order`; not checked inside ``nn.Graph``).

Speed: the ``nn.LSTM`` modules only hold the parameters (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, gates in the order i, f, g, o). :func:`run_lstm` computes the input
projection of all time steps in one matmul and then loops over time; on CPU this is faster than OneFlow
0.9's ``nn.LSTM`` kernel (timings: docs/performance.md), with the same values.
"""
from typing import Any, Dict, Mapping, Optional, Tuple

import oneflow as flow
import oneflow.nn as nn

from .._checks import check_bool, check_probability
from ._inputs import check_id_range, check_mask_order, check_model_inputs
from ._sizes import check_parameter_memory, check_size

__all__ = ["LSTMStudentForSequenceClassification", "run_lstm", "check_lstm_config"]

_LSTM_INTS = ("vocab_size", "seq_length", "hidden_size", "intermediate_size", "num_hidden_layers", "label_num",
              "embedding_size")
LSTM_CONFIG_KEYS = _LSTM_INTS + ("hidden_dropout_prob", "bidirectional", "ignore_padding")


def check_lstm_config(config: Mapping[str, Any], source: Optional[str] = None) -> Dict[str, Any]:
    """Check the types and ranges of (some of) the LSTM constructor's values; ``source`` (a file) goes
    into the messages. Returns a copy with the dropout as ``float``.

    >>> check_lstm_config({"hidden_size": 0})
    Traceback (most recent call last):
    ...
    ValueError: hidden_size must be a positive integer, got 0
    """
    unknown = sorted(str(k) for k in config if k not in LSTM_CONFIG_KEYS)
    if unknown:
        where = f" in {source}" if source else ""
        raise TypeError(f"unknown LSTM configuration keys {unknown}{where}; valid keys: {', '.join(LSTM_CONFIG_KEYS)}")
    checked = dict(config)
    for key, value in config.items():
        if key in _LSTM_INTS:
            checked[key] = check_size(key, value, source=source)
        elif key == "hidden_dropout_prob":
            checked[key] = check_probability(key, value, source=source)
        else:
            checked[key] = check_bool(key, value, allow_none=key == "ignore_padding", source=source)
    return checked


def _read_indices(input_ids: flow.Tensor, input_mask: flow.Tensor, ignore_padding: bool
                  ) -> Tuple[flow.Tensor, flow.Tensor]:
    """Flat row indices into ``[B * L, ...]``: the reversed order and each row's last step.

    ``reverse[b * L + t]`` is the row of the ``t``-th token of sequence ``b`` read backwards
    (``n_b - 1 - t`` for ``t < n_b``, else ``t``), ``last[b]`` the row of its last valid token;
    ``n_b`` is the number of valid tokens (``L`` for every row when padding is not ignored).
    """
    batch, length = input_ids.shape
    steps = flow.arange(length, dtype=flow.int64, device=input_ids.device).unsqueeze(0)
    if ignore_padding:
        counts = input_mask.to(flow.int64).sum(dim=1, keepdim=True).clamp(min=1)  # [B, 1]
    else:
        counts = (steps[:, -1:] + 1).expand(batch, 1)
    reverse = flow.where(steps < counts, counts - 1 - steps, steps.expand(batch, length))
    offsets = flow.arange(batch, dtype=flow.int64, device=input_ids.device).unsqueeze(1) * length
    return (reverse + offsets).reshape(-1), (counts - 1 + offsets).reshape(-1)


def run_lstm(lstm: nn.LSTM, x: flow.Tensor) -> flow.Tensor:
    """A one-layer unidirectional ``batch_first`` LSTM from zero state: ``[B, L, D] -> [B, L, H]``."""
    batch, length, _ = x.shape
    inputs = flow._C.matmul(x.reshape(-1, x.shape[-1]), lstm.weight_ih_l0, False, True, 1.0)
    inputs = (inputs + (lstm.bias_ih_l0 + lstm.bias_hh_l0)).reshape(batch, length, -1)
    hidden = cell = None
    outputs = []
    for step in range(length):
        gates = inputs[:, step]
        if hidden is not None:
            gates = gates + flow._C.matmul(hidden, lstm.weight_hh_l0, False, True, 1.0)
        i, f, g, o = flow.chunk(gates, 4, dim=1)
        update = flow.sigmoid(i) * flow.tanh(g)
        cell = update if cell is None else flow.sigmoid(f) * cell + update
        hidden = flow.sigmoid(o) * flow.tanh(cell)
        outputs.append(hidden)
    return flow.stack(outputs, dim=1)


def _rows(x: flow.Tensor, index: flow.Tensor) -> flow.Tensor:
    """``x [B, L, D]`` -> rows ``index`` of ``x.reshape(B * L, D)``."""
    return flow.index_select(x.reshape(-1, x.shape[-1]), 0, index)


class LSTMStudentForSequenceClassification(nn.Module):
    """Embedding -> LSTM (``num_hidden_layers``, optionally bidirectional) -> dense -> logits.

    ``forward(input_ids, input_mask, token_type_ids)`` takes ``[B, L]`` tensors (``token_type_ids``
    is accepted for the common signature and unused) and returns logits ``[B, label_num]`` from the
    final hidden state (both directions concatenated when ``bidirectional``).
    ``ignore_padding`` (default: the value of ``bidirectional``) reads the state at the last valid
    token and runs the backward direction over the valid tokens only; ``False`` is the original's
    behaviour: the state after the last position ``L - 1``, padding included. ``check_inputs``
    (default True, not part of ``config``) makes eager forwards check the ids and the mask (see
    :meth:`forward`). Types and ranges of the configuration are checked (:func:`check_lstm_config`).

    >>> model = LSTMStudentForSequenceClassification(vocab_size=20, hidden_size=6, intermediate_size=5,
    ...                                              embedding_size=4, bidirectional=True)
    >>> ids = flow.ones(2, 7, dtype=flow.int64)
    >>> tuple(model(ids, flow.ones_like(ids), flow.zeros_like(ids)).shape)
    (2, 2)
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        seq_length: int = 32,
        hidden_size: int = 300,
        intermediate_size: int = 400,
        num_hidden_layers: int = 1,
        label_num: int = 2,
        embedding_size: int = 300,
        hidden_dropout_prob: float = 0.1,
        bidirectional: bool = False,
        ignore_padding: Optional[bool] = None,
        check_inputs: bool = True,
    ):
        super().__init__()
        checked = check_lstm_config(dict(
            vocab_size=vocab_size, seq_length=seq_length, hidden_size=hidden_size,
            intermediate_size=intermediate_size, num_hidden_layers=num_hidden_layers, label_num=label_num,
            embedding_size=embedding_size, hidden_dropout_prob=hidden_dropout_prob,
            bidirectional=bidirectional, ignore_padding=ignore_padding,
        ))
        vocab_size, seq_length, hidden_size, intermediate_size, num_hidden_layers, label_num, embedding_size = (
            checked[k] for k in _LSTM_INTS)
        hidden_dropout_prob = checked["hidden_dropout_prob"]
        self.check_inputs = check_bool("check_inputs", check_inputs)
        self.bidirectional = bidirectional
        self.ignore_padding = self.bidirectional if ignore_padding is None else ignore_padding
        self.config = dict(
            vocab_size=vocab_size, seq_length=seq_length, hidden_size=hidden_size,
            intermediate_size=intermediate_size, num_hidden_layers=num_hidden_layers,
            label_num=label_num, embedding_size=embedding_size,
            hidden_dropout_prob=hidden_dropout_prob, bidirectional=self.bidirectional,
            ignore_padding=self.ignore_padding,
        )
        directions = 2 if self.bidirectional else 1
        sizes = [embedding_size] + [hidden_size * directions] * (num_hidden_layers - 1)
        check_parameter_memory(  # embedding, LSTMs (4 gates, two biases), dense, classifier
            vocab_size * embedding_size + directions * sum(4 * hidden_size * (s + hidden_size + 2) for s in sizes)
            + (hidden_size * directions + 1) * intermediate_size + (intermediate_size + 1) * label_num, "LSTM model")
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.forward_lstm = nn.ModuleList([nn.LSTM(s, hidden_size, batch_first=True) for s in sizes])
        self.backward_lstm = (
            nn.ModuleList([nn.LSTM(s, hidden_size, batch_first=True) for s in sizes])
            if self.bidirectional else None
        )
        self.dense = nn.Linear(hidden_size * directions, intermediate_size)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.classifier = nn.Linear(intermediate_size, label_num)

    def forward(self, input_ids: flow.Tensor, input_mask: flow.Tensor,
                token_type_ids: flow.Tensor, check_inputs: Optional[bool] = None) -> flow.Tensor:
        """``[B, L]`` ids, mask, (unused) segments -> logits ``[B, label_num]``.

        ``check_inputs`` (default: the model's ``check_inputs``) checks in eager mode that every token
        id is in ``[0, vocab_size)`` and, with ``ignore_padding``, that each mask row is valid tokens
        then padding; inside ``nn.Graph`` the values are never checked (a host synchronisation).
        """
        check_model_inputs(input_ids, input_mask, token_type_ids)
        if self.check_inputs if check_inputs is None else check_inputs:
            check_id_range("input_ids", input_ids, self.embedding.num_embeddings, "vocab_size")
            if self.ignore_padding:
                check_mask_order(input_mask)
        x = self.embedding(input_ids)
        reverse, last = _read_indices(input_ids, input_mask, self.ignore_padding)
        for i, lstm in enumerate(self.forward_lstm):
            forward_out = run_lstm(lstm, x)
            if self.backward_lstm is None:
                x = forward_out
                continue
            reversed_x = _rows(x, reverse).reshape(x.shape)
            backward_out = run_lstm(self.backward_lstm[i], reversed_x)
            # backward_out's last valid step saw the whole sequence; un-reverse for the next layer
            final_backward = _rows(backward_out, last)
            backward_out = _rows(backward_out, reverse).reshape(backward_out.shape)
            x = flow.cat([forward_out, backward_out], dim=-1)
        final = _rows(forward_out, last)
        if self.backward_lstm is not None:
            final = flow.cat([final, final_backward], dim=-1)
        hidden = self.dropout(flow.relu(self.dense(final)))
        return self.classifier(hidden)

    def word_embedding_table(self) -> flow.Tensor:
        """The word-embedding parameter ``[vocab_size, embedding_size]``."""
        return self.embedding.weight
