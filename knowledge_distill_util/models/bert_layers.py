"""The building blocks of :class:`~knowledge_distill_util.models.bert.BertForSequenceClassification`: the
embeddings, self-attention, feed-forward layers, encoder and pooler (Hugging Face's ``BertModel`` parameter
names), the matmul LayerNorm, the student's ``fit_dense`` and the parameter count of a configuration.

Shapes: ``B`` batch, ``L`` sequence length, ``H`` hidden size, ``h`` heads; hidden states ``[B, L, H]``,
attentions ``[B, h, L, L]``, the additive attention mask ``[B, 1, 1, L]``.
"""
import math
from typing import Any, Mapping, Optional, Tuple

import oneflow as flow
import oneflow.nn as nn

from ._inputs import check_id_range

__all__ = ["fit_dense", "LayerNorm", "BertEmbeddings", "BertSelfAttention", "BertSelfOutput", "BertAttention",
           "BertIntermediate", "BertLayer", "BertEncoder", "BertPooler", "bert_parameter_count"]


def fit_dense(hidden_size: int, fit_size: int) -> nn.Linear:
    """The student's shared projection ``hidden_size -> fit_size`` applied to every hidden state.

    >>> fit_dense(312, 768)
    Linear(in_features=312, out_features=768, bias=True)
    """
    return nn.Linear(hidden_size, fit_size)


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` over the last dimension, computed with matmul reductions and broadcasts.

    Same parameters (``weight``, ``bias``) and values (within 2e-6 in float32). OneFlow 0.9's CPU
    kernels for LayerNorm and for any ``[N, 1]``-against-``[N, H]`` broadcast are slow; row means and
    their broadcasts as matmuls with constant ``1/H`` and ``1`` vectors avoid them (timings:
    docs/performance.md).
    """

    def __init__(self, hidden_size: int, eps: float):
        super().__init__(hidden_size, eps=eps)
        self.register_buffer("_average", flow.full((hidden_size, 1), 1.0 / hidden_size), persistent=False)
        self.register_buffer("_spread", flow.ones(1, hidden_size), persistent=False)

    def forward(self, x: flow.Tensor) -> flow.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        centred = rows - flow.matmul(flow.matmul(rows, self._average), self._spread)
        inverse_std = flow.rsqrt(flow.matmul(centred * centred, self._average) + self.eps)
        normed = centred * flow.matmul(inverse_std, self._spread)
        return (normed * self.weight + self.bias).reshape(x.shape)


class BertEmbeddings(nn.Module):
    """word + position + segment embeddings, LayerNorm, dropout: ``[B, L] -> [B, L, H]``.

    With ``check_inputs`` (eager mode only, see :mod:`._inputs`) token and segment ids are checked
    against the table sizes before the gather.
    """

    def __init__(self, vocab_size, hidden_size, max_position_embeddings, type_vocab_size,
                 dropout_prob, layer_norm_eps, check_inputs: bool = True):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_size)
        self.position_embeddings = nn.Embedding(max_position_embeddings, hidden_size)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, layer_norm_eps)
        self.dropout = nn.Dropout(dropout_prob)
        self.check_inputs = check_inputs

    def forward(self, input_ids: flow.Tensor, token_type_ids: flow.Tensor,
                check_inputs: Optional[bool] = None) -> flow.Tensor:
        if self.check_inputs if check_inputs is None else check_inputs:
            check_id_range("input_ids", input_ids, self.word_embeddings.num_embeddings, "vocab_size")
            check_id_range("token_type_ids", token_type_ids, self.token_type_embeddings.num_embeddings,
                           "type_vocab_size")
        length = input_ids.shape[1]
        # Positions 0..L-1 are a slice of the table: no index tensor, so no device to choose.
        positions = self.position_embeddings.weight[:length].unsqueeze(0)
        x = self.word_embeddings(input_ids) + positions + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Multi-head attention from batched matmul + softmax.

    Returns the context ``[B, L, H]`` and the attention matrix ``[B, h, L, L]`` (probabilities
    after dropout, or the scaled scores plus the additive mask, as chosen by ``attention_output``).
    """

    def __init__(self, hidden_size, num_heads, dropout_prob, attention_output):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.scale = 1.0 / math.sqrt(self.head_size)
        self.attention_output = attention_output
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout_prob)

    def forward(self, hidden: flow.Tensor, ext_mask: flow.Tensor, details: bool = False) -> Tuple[flow.Tensor, ...]:
        """``(context, attention)``; with ``details`` also ``(query, key, value, scores, probs)``: the three
        Linear outputs ``[B, L, H]`` before the head split, the scaled scores plus ``ext_mask`` and the
        probabilities after dropout ``[B, h, L, L]`` (the same tensors, no extra arithmetic)."""
        batch, length, width = hidden.shape
        heads, size = self.num_heads, self.head_size
        query = self.query(hidden)  # the previous op order: each projection then its head split
        q = query.reshape(batch, length, heads, size).permute(0, 2, 1, 3)
        key = self.key(hidden)
        k = key.reshape(batch, length, heads, size).permute(0, 2, 1, 3)
        value = self.value(hidden)
        v = value.reshape(batch, length, heads, size).permute(0, 2, 1, 3)
        # q @ k^T * scale in one kernel (transpose_b, alpha) instead of matmul(q, k.permute(...)) * scale:
        # bit-identical and faster on CPU (oneflow==0.9.0 is pinned).
        scores = flow._C.matmul(q, k, False, True, self.scale) + ext_mask  # [B, h, L, L]
        probs = self.dropout(flow.softmax(scores, dim=-1))
        context = flow.matmul(probs, v).permute(0, 2, 1, 3).reshape(batch, length, width)
        attention = probs if self.attention_output == "probs" else scores
        if details:
            return context, attention, (query, key, value, scores, probs)
        return context, attention


class BertSelfOutput(nn.Module):
    """dense, dropout, residual, LayerNorm."""

    def __init__(self, in_size, hidden_size, dropout_prob, layer_norm_eps):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = LayerNorm(hidden_size, layer_norm_eps)
        self.dropout = nn.Dropout(dropout_prob)

    def forward(self, x: flow.Tensor, residual: flow.Tensor) -> flow.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden_size, num_heads, hidden_dropout, attention_dropout, attention_output,
                 layer_norm_eps):
        super().__init__()
        self.self = BertSelfAttention(hidden_size, num_heads, attention_dropout, attention_output)
        self.output = BertSelfOutput(hidden_size, hidden_size, hidden_dropout, layer_norm_eps)

    def forward(self, hidden, ext_mask, details: bool = False):
        if details:
            context, att, extra = self.self(hidden, ext_mask, True)
            return self.output(context, hidden), att, extra
        context, att = self.self(hidden, ext_mask)
        return self.output(context, hidden), att


class BertIntermediate(nn.Module):
    def __init__(self, hidden_size, intermediate_size, act):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.act = act

    def forward(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    """One transformer block: ``[B, L, H] -> ([B, L, H], [B, h, L, L])``; with ``details=True`` a third
    element, the attention's ``(query, key, value, scores, probs)`` (see ``BertSelfAttention.forward``)."""

    def __init__(self, hidden_size, num_heads, intermediate_size, act, hidden_dropout,
                 attention_dropout, attention_output, layer_norm_eps):
        super().__init__()
        self.attention = BertAttention(hidden_size, num_heads, hidden_dropout, attention_dropout,
                                       attention_output, layer_norm_eps)
        self.intermediate = BertIntermediate(hidden_size, intermediate_size, act)
        self.output = BertSelfOutput(intermediate_size, hidden_size, hidden_dropout, layer_norm_eps)

    def forward(self, hidden, ext_mask, details: bool = False):
        if details:
            attended, att, extra = self.attention(hidden, ext_mask, True)
            return self.output(self.intermediate(attended), attended), att, extra
        attended, att = self.attention(hidden, ext_mask)
        return self.output(self.intermediate(attended), attended), att


class BertEncoder(nn.Module):
    def __init__(self, num_layers, **layer_kwargs):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(**layer_kwargs) for _ in range(num_layers)])


class BertPooler(nn.Module):
    """``tanh(dense(hidden[:, 0]))``: ``[B, L, H] -> [B, H]``."""

    def __init__(self, hidden_size):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden):
        return flow.tanh(self.dense(hidden[:, 0]))


def bert_parameter_count(config: Mapping[str, Any]) -> int:
    """Parameters of the model a checked full ``config`` builds: embeddings ``(V + P + T) * H``, per layer
    ``4 * H * (H + 1)`` (attention) ``+ 2 * H * I + I + H`` (feed-forward) ``+ 4 * H`` (two LayerNorms),
    pooler ``H * (H + 1)``, classifier ``(H + 1) * C``, and a student's ``fit_dense`` ``(H + 1) * F``."""
    h, i = config["hidden_size"], config["intermediate_size"]
    count = (config["vocab_size"] + config["max_position_embeddings"] + config["type_vocab_size"] + 2) * h
    count += config["num_hidden_layers"] * (4 * h * (h + 1) + 2 * h * i + i + h + 4 * h)
    count += h * (h + 1) + (h + 1) * config["label_num"]
    if config.get("is_student"):
        count += (h + 1) * config["fit_size"]
    return int(count)
