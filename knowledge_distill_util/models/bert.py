"""BERT for sequence classification returning ``(logits, reps, atts)`` for the distillation operators.

The parameter names follow the Hugging Face ``BertModel`` layout (``embeddings.*``,
``encoder.layer.N.*``, ``pooler.dense``) so that checkpoints map by name, plus ``classifier`` and,
for students, ``fit_dense``.

Shapes (``B`` batch, ``L`` sequence length, ``H`` hidden size, ``h`` heads):

- ``input_ids``, ``input_mask``, ``token_type_ids``: ``[B, L]`` (mask: 1 = token, 0 = padding).
- ``logits``: ``[B, label_num]`` (``label_num=1``: a regression head).
- ``reps``: ``num_hidden_layers + 1`` tensors ``[B, L, H]`` (``[B, L, fit_size]`` for a student):
  the embedding output, then every layer's output.
- ``atts``: ``num_hidden_layers`` tensors ``[B, h, L, L]``.

Hugging Face's convention (aliases ``attention_mask``/``segment_ids``, ``labels`` -> ``loss``, the
``output_*`` flags returning a :class:`~._hf.BertOutput`) is described in :mod:`._hf` and
``forward``; ``save_pretrained`` writes Hugging Face's layout (:mod:`.pretrained`).
"""
import math
from typing import Any, List, Mapping, Optional, Tuple, Union

import oneflow as flow
import oneflow.nn as nn

from .._checks import check_bool
from ._hf import BertOutput, build_output, check_flags, check_labels, label_loss, one_of
from ._inputs import check_id_range, check_mask_values, check_model_inputs, extended_attention_mask
from ._sizes import check_parameter_memory
from .bert_config import ATTENTION_OUTPUTS, HIDDEN_ACTS, check_bert_config

__all__ = [
    "BertForSequenceClassification",
    "BertStudentForSequenceClassification",
    "fit_dense",
    "ATTENTION_OUTPUTS",
    "HIDDEN_ACTS",
    "check_bert_config",
]

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


class BertForSequenceClassification(nn.Module):
    """BERT encoder + pooler + classifier, returning ``(logits, reps, atts)``.

    The constructor takes the original keyword names; types and ranges are checked
    (:func:`check_bert_config`). ``check_inputs`` (default True) makes eager forwards check token and
    segment ids against the embedding tables (skipped inside ``nn.Graph``: see :mod:`._inputs`); it is
    not part of ``config``. ``seq_length`` is kept for compatibility only
    (inputs of any length up to ``max_position_embeddings`` are accepted). ``attention_output``:
    ``"probs"`` (the original: softmax probabilities after attention dropout) or ``"scores"``
    (TinyBERT: scaled scores plus the additive ``-10000`` padding mask, before softmax).
    ``is_student=True`` projects every entry of ``reps`` with the shared ``fit_dense``
    (``hidden_size -> fit_size``), always, as the original did, even when the sizes are equal.

    >>> model = BertForSequenceClassification(vocab_size=50, hidden_size=8, num_hidden_layers=2,
    ...                                       num_attention_heads=2, intermediate_size=16)
    >>> ids = flow.ones(3, 5, dtype=flow.int64)
    >>> logits, reps, atts = model(ids, flow.ones_like(ids), flow.zeros_like(ids))
    >>> tuple(logits.shape), len(reps), tuple(reps[0].shape), len(atts), tuple(atts[0].shape)
    ((3, 2), 3, (3, 5, 8), 2, (3, 2, 5, 5))
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        seq_length: int = 128,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        label_num: int = 2,
        is_student: bool = False,
        fit_size: int = 768,
        attention_output: str = "probs",
        layer_norm_eps: float = 1e-12,
        check_inputs: bool = True,
    ):
        super().__init__()
        config = check_bert_config(dict(
            vocab_size=vocab_size, seq_length=seq_length, hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size, hidden_act=hidden_act,
            hidden_dropout_prob=hidden_dropout_prob,
            attention_probs_dropout_prob=attention_probs_dropout_prob,
            max_position_embeddings=max_position_embeddings, type_vocab_size=type_vocab_size,
            initializer_range=initializer_range, label_num=label_num, is_student=is_student,
            fit_size=fit_size, attention_output=attention_output, layer_norm_eps=layer_norm_eps,
        ))
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size = (
            config[k] for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                "intermediate_size"))
        max_position_embeddings, type_vocab_size, label_num, fit_size = (
            config[k] for k in ("max_position_embeddings", "type_vocab_size", "label_num", "fit_size"))
        hidden_dropout_prob = config["hidden_dropout_prob"]
        attention_probs_dropout_prob = config["attention_probs_dropout_prob"]
        layer_norm_eps, initializer_range = config["layer_norm_eps"], config["initializer_range"]
        check_inputs = check_bool("check_inputs", check_inputs)
        check_parameter_memory(bert_parameter_count(config), "BERT model")
        self.config = config
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.label_num = label_num
        self.is_student = is_student
        self.fit_size = fit_size
        self.embeddings = BertEmbeddings(vocab_size, hidden_size, max_position_embeddings,
                                         type_vocab_size, hidden_dropout_prob, layer_norm_eps, check_inputs)
        self.encoder = BertEncoder(
            num_hidden_layers, hidden_size=hidden_size, num_heads=num_attention_heads,
            intermediate_size=intermediate_size, act=HIDDEN_ACTS[hidden_act],
            hidden_dropout=hidden_dropout_prob, attention_dropout=attention_probs_dropout_prob,
            attention_output=attention_output, layer_norm_eps=layer_norm_eps,
        )
        self.pooler = BertPooler(hidden_size)
        self.dropout = nn.Dropout(hidden_dropout_prob)
        self.classifier = nn.Linear(hidden_size, label_num)
        self.fit_dense = fit_dense(hidden_size, fit_size) if is_student else None
        self.initializer_range = initializer_range
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation: truncated normal(0, initializer_range) weights, zero biases."""
        std = self.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def check_inputs(self) -> bool:
        """Whether eager forwards check token and segment ids against the embedding tables."""
        return self.embeddings.check_inputs

    @check_inputs.setter
    def check_inputs(self, value: bool) -> None:
        self.embeddings.check_inputs = check_bool("check_inputs", value)

    def forward(
        self, input_ids: flow.Tensor, input_mask: Optional[flow.Tensor] = None,
        token_type_ids: Optional[flow.Tensor] = None, check_inputs: Optional[bool] = None, *,
        attention_mask: Optional[flow.Tensor] = None, segment_ids: Optional[flow.Tensor] = None,
        labels: Optional[flow.Tensor] = None, output_hidden_states: bool = False,
        output_attentions: bool = False, output_attention_scores: bool = False, output_qkv: bool = False,
    ) -> Union[Tuple[flow.Tensor, List[flow.Tensor], List[flow.Tensor]], BertOutput]:
        """``[B, L]`` ids, mask, segments -> ``(logits [B, C], reps, atts)`` (see the module doc).

        ``check_inputs`` (default: the model's ``check_inputs``) checks in eager mode that every token
        id is in ``[0, vocab_size)``, every segment id in ``[0, type_vocab_size)``, every mask entry
        0 or 1 and every class label in ``[0, label_num)``; inside ``nn.Graph`` the values are never
        checked (they would need a host synchronisation).

        Hugging Face's convention (:mod:`._hf`): ``attention_mask`` and ``segment_ids`` are keyword aliases
        of ``input_mask`` and ``token_type_ids`` (a name and its alias together: ``TypeError``). With
        ``labels [B]`` or any of the flags the result is a :class:`~._hf.BertOutput` (an ordered dict,
        also read by attribute) holding ``logits``, ``reps``, ``atts`` as above plus what was asked for:

        - ``loss`` (``labels``): the training's hard-label loss, cross-entropy (MSE for ``label_num=1``).
        - ``hidden_states`` (``output_hidden_states``): ``num_hidden_layers + 1`` tensors ``[B, L, H]``,
          the embedding output then every layer's output, before ``fit_dense`` (for a teacher the same
          tensors as ``reps``; for a student ``reps[i] = fit_dense(hidden_states[i])``).
        - ``attentions`` (``output_attentions``): per layer the softmax probabilities after attention
          dropout ``[B, h, L, L]`` (Hugging Face's ``attentions``).
        - ``attention_scores`` (``output_attention_scores``): per layer ``q k^T / sqrt(d)`` plus the
          additive ``-10000`` padding mask, before the softmax ``[B, h, L, L]``.
        - ``query``, ``key``, ``value`` (``output_qkv``): per layer the three Linear outputs ``[B, L, H]``
          before the split into heads.

        Without ``labels`` and flags the computation and the returned tuple are exactly as before; with
        them the same operations run, so ``logits``, ``reps`` and ``atts`` are bit-identical.
        """
        input_mask = one_of("input_mask", input_mask, "attention_mask", attention_mask, "flow.ones_like(input_ids)")
        token_type_ids = one_of("token_type_ids", token_type_ids, "segment_ids", segment_ids,
                                "flow.zeros_like(input_ids)")
        flags = check_flags(output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                            output_attention_scores=output_attention_scores, output_qkv=output_qkv)
        check_model_inputs(input_ids, input_mask, token_type_ids, self.max_position_embeddings)
        check = self.embeddings.check_inputs if check_inputs is None else check_inputs
        if labels is not None:
            check_labels(labels, input_ids.shape[0], self.label_num, check)
        if check:
            check_mask_values(input_mask)
        hidden = self.embed(input_ids, token_type_ids, check_inputs)
        bias = self.attention_bias(input_mask, hidden.dtype)
        details = flags["output_attentions"] or flags["output_attention_scores"] or flags["output_qkv"]
        reps, atts, extras = [hidden], [], []
        for layer in self.encoder.layer:
            if details:
                hidden, att, extra = layer(hidden, bias, True)
                extras.append(extra)
            else:
                hidden, att = layer(hidden, bias)
            reps.append(hidden)
            atts.append(att)
        logits = self.classify(hidden)
        states = reps
        if self.fit_dense is not None:
            reps = [self.fit_dense(rep) for rep in reps]
        if labels is None and not any(flags.values()):
            return logits, reps, atts
        loss = None if labels is None else label_loss(logits, labels)
        return build_output(logits, reps, atts, states, extras, loss, flags)

    def embed(self, input_ids: flow.Tensor, token_type_ids: flow.Tensor,
              check_inputs: Optional[bool] = None) -> flow.Tensor:
        """The embedding output ``[B, L, H]``; ids are checked as in :meth:`forward`."""
        return self.embeddings(input_ids, token_type_ids, check_inputs)

    @staticmethod
    def attention_bias(input_mask: flow.Tensor, dtype: flow.dtype) -> flow.Tensor:
        """The additive attention mask ``[B, 1, 1, L]``: 0 for tokens, -10000 for padding; the second
        argument of every ``encoder.layer[i](hidden, bias) -> (hidden, attention)``."""
        return extended_attention_mask(input_mask, dtype)

    def classify(self, hidden: flow.Tensor) -> flow.Tensor:
        """Logits ``[B, C]`` of the last hidden states ``[B, L, H]`` (pooler, dropout, classifier)."""
        return self.classifier(self.dropout(self.pooler(hidden)))

    def word_embedding_table(self) -> flow.Tensor:
        """The word-embedding parameter ``[vocab_size, hidden_size]``."""
        return self.embeddings.word_embeddings.weight

    @classmethod
    def from_pretrained(cls, path, label_num: Optional[int] = None, **overrides):
        """Build from a Hugging Face BERT directory (``config.json`` + ``model.safetensors``).

        ``label_num``: default the number of ``id2label`` entries of ``config.json``, else 2.
        ``overrides`` replace configuration values (e.g. ``hidden_dropout_prob=0.0``). Pooler and
        classifier weights missing from the checkpoint keep their fresh initialisation and are
        listed in ``model.load_report`` (see :func:`load_hf_bert_weights`). A directory written by
        :meth:`save_pretrained` comes back bit-identical (student, ``fit_size`` and ``attention_output``
        included).
        """
        from .pretrained import build_from_pretrained

        return build_from_pretrained(cls, path, label_num=label_num, **overrides)

    def save_pretrained(self, directory, head: bool = True) -> str:
        """Write ``config.json`` + ``model.safetensors`` in Hugging Face's BERT layout, atomically per file.

        ``head=True``: ``BertForSequenceClassification``'s names (``bert.*``, ``classifier.*``);
        ``head=False``: ``BertModel``'s, exactly the all-MiniLM-L6-v2 names (no classifier). See
        :func:`~knowledge_distill_util.models.pretrained.save_pretrained`. Returns the absolute directory.
        """
        from .pretrained import save_pretrained

        return save_pretrained(self, directory, head=head)


class BertStudentForSequenceClassification(BertForSequenceClassification):
    """:class:`BertForSequenceClassification` with ``is_student=True`` by default (``fit_dense`` on)."""

    def __init__(self, *args, is_student: bool = True, **kwargs):
        super().__init__(*args, is_student=is_student, **kwargs)
