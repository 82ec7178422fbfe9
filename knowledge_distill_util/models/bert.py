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
``forward``; ``save_pretrained`` writes Hugging Face's layout (:mod:`.pretrained`). The layers are in
:mod:`.bert_layers` (``LayerNorm``, ``BertLayer``, ``fit_dense``, ``bert_parameter_count`` re-exported here).
"""
from typing import List, Optional, Tuple, Union

import oneflow as flow
import oneflow.nn as nn

from .._checks import check_bool
from ._hf import BertOutput, build_output, check_flags, check_labels, label_loss, one_of
from ._inputs import check_mask_values, check_model_inputs, extended_attention_mask
from ._sizes import check_parameter_memory
from .bert_config import ATTENTION_OUTPUTS, HIDDEN_ACTS, check_bert_config
from .bert_layers import BertEmbeddings, BertEncoder, BertLayer, BertPooler, LayerNorm, bert_parameter_count, fit_dense

__all__ = [
    "BertForSequenceClassification",
    "BertStudentForSequenceClassification",
    "fit_dense",
    "ATTENTION_OUTPUTS",
    "HIDDEN_ACTS",
    "check_bert_config",
    "LayerNorm",
    "BertLayer",
    "bert_parameter_count",
]

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
        check_inputs = check_bool("check_inputs", check_inputs)
        check_parameter_memory(bert_parameter_count(config), "BERT model")
        self._build(config, check_inputs)
        self.apply(self._init_weights)

    def _build(self, config: dict, check_inputs: bool) -> None:
        """The attributes and submodules of a checked ``config``, in the order their parameters are made
        (the random initialisation follows it)."""
        hidden_size, dropout = config["hidden_size"], config["hidden_dropout_prob"]
        self.config = config
        self.hidden_size = hidden_size
        self.num_hidden_layers = config["num_hidden_layers"]
        self.num_attention_heads = config["num_attention_heads"]
        self.max_position_embeddings = config["max_position_embeddings"]
        self.label_num = config["label_num"]
        self.is_student = config["is_student"]
        self.fit_size = config["fit_size"]
        self.embeddings = BertEmbeddings(config["vocab_size"], hidden_size, config["max_position_embeddings"],
                                         config["type_vocab_size"], dropout, config["layer_norm_eps"], check_inputs)
        self.encoder = BertEncoder(
            config["num_hidden_layers"], hidden_size=hidden_size, num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"], act=HIDDEN_ACTS[config["hidden_act"]],
            hidden_dropout=dropout, attention_dropout=config["attention_probs_dropout_prob"],
            attention_output=config["attention_output"], layer_norm_eps=config["layer_norm_eps"],
        )
        self.pooler = BertPooler(hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, config["label_num"])
        self.fit_dense = fit_dense(hidden_size, config["fit_size"]) if config["is_student"] else None
        self.initializer_range = config["initializer_range"]

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
        reps, atts, extras = self._encode(hidden, bias, details)
        logits = self.classify(reps[-1])
        states = reps
        if self.fit_dense is not None:
            reps = [self.fit_dense(rep) for rep in reps]
        if labels is None and not any(flags.values()):
            return logits, reps, atts
        loss = None if labels is None else label_loss(logits, labels)
        return build_output(logits, reps, atts, states, extras, loss, flags)

    def _encode(self, hidden: flow.Tensor, bias: flow.Tensor, details: bool):
        """Every layer on the embedding output ``hidden``: ``(reps, atts, extras)``, ``reps`` the embedding
        output then each layer's ``[B, L, H]``, ``atts`` each layer's ``[B, h, L, L]``, ``extras`` (``details``
        only) each layer's attention details for :func:`~._hf.build_output`."""
        reps, atts, extras = [hidden], [], []
        for layer in self.encoder.layer:
            if details:
                hidden, att, extra = layer(hidden, bias, True)
                extras.append(extra)
            else:
                hidden, att = layer(hidden, bias)
            reps.append(hidden)
            atts.append(att)
        return reps, atts, extras

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
