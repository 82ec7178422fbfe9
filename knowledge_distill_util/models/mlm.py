"""BERT with its masked-LM head: ``BertForMaskedLM``, loaded from a Hugging Face checkpoint or an original snapshot.

The head is BERT's pre-training ``cls.predictions``: ``transform.dense`` (``H -> H``), the hidden activation,
``transform.LayerNorm``, then a decoder tied to the word embeddings plus a bias ``[V]``:

    logits = LayerNorm(act(hidden @ W_t^T + b_t)) @ E^T + bias      hidden [N, H], E [V, H] -> logits [N, V]

Names (``V`` vocabulary, ``H`` hidden size; "T" = stored transposed):

- Hugging Face (``BertForMaskedLM`` / ``BertForPreTraining``): ``cls.predictions.transform.dense.weight``
  ``[H, H]`` / ``.bias``, ``cls.predictions.transform.LayerNorm.weight`` / ``.bias`` (or ``gamma`` / ``beta``),
  ``cls.predictions.bias`` ``[V]``; ``cls.predictions.decoder.weight`` (when saved) is the word-embedding
  table and ``cls.predictions.decoder.bias`` the same bias, so both are ignored.
- The original snapshot (yejinlei/Dubhe ``examples/tinybert/maskedBert.py`` ``_AddMaskedLanguageModel``):
  ``cls-predictions-transform-dense-weight`` ``[H, H]`` (T) / ``-bias`` ``[H]``,
  ``cls-predictions-transform-LayerNorm-gamma`` / ``-beta`` ``[H]``, ``cls-predictions-output_bias`` ``[V]``;
  the decoder is ``bert-embeddings-word_embeddings``.

A checkpoint without these tensors raises :class:`NoMaskedLMHead` (a ``ValueError``) naming what can be used
instead. The encoder is a :class:`~.bert.BertForSequenceClassification` (``model.bert``: its pooler and
classifier are unused here and may be missing from the checkpoint).
"""
import logging
import os
from typing import Dict, Optional

import numpy as np
import oneflow as flow
import oneflow.nn as nn

from .bert import HIDDEN_ACTS, BertForSequenceClassification, LayerNorm

__all__ = ["MaskedLMHead", "BertForMaskedLM", "NoMaskedLMHead", "HF_HEAD_NAMES", "SNAPSHOT_HEAD_NAMES"]

logger = logging.getLogger(__name__)

#: This package's head parameter -> the Hugging Face checkpoint name.
HF_HEAD_NAMES = {
    "transform.dense.weight": "cls.predictions.transform.dense.weight",
    "transform.dense.bias": "cls.predictions.transform.dense.bias",
    "transform.LayerNorm.weight": "cls.predictions.transform.LayerNorm.weight",
    "transform.LayerNorm.bias": "cls.predictions.transform.LayerNorm.bias",
    "bias": "cls.predictions.bias",
}
#: This package's head parameter -> (the original snapshot's variable, stored transposed).
SNAPSHOT_HEAD_NAMES = {
    "transform.dense.weight": ("cls-predictions-transform-dense-weight", True),
    "transform.dense.bias": ("cls-predictions-transform-dense-bias", False),
    "transform.LayerNorm.weight": ("cls-predictions-transform-LayerNorm-gamma", False),
    "transform.LayerNorm.bias": ("cls-predictions-transform-LayerNorm-beta", False),
    "bias": ("cls-predictions-output_bias", False),
}
_INSTEAD = ("use a pretrained BERT that has one (Hugging Face BertForMaskedLM / BertForPreTraining, or the original's "
            "pretrained snapshot with cls-predictions-* variables), or let scripts/data_augmentation.py fall back to "
            "nearest neighbours in the word-embedding table")


class NoMaskedLMHead(ValueError):
    """The checkpoint holds an encoder but no masked-LM head."""


class _Transform(nn.Module):
    def __init__(self, hidden_size: int, act, layer_norm_eps: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = act
        self.LayerNorm = LayerNorm(hidden_size, layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class MaskedLMHead(nn.Module):
    """``cls.predictions``: ``hidden [..., H]`` and the word embeddings ``[V, H]`` -> logits ``[..., V]``."""

    def __init__(self, hidden_size: int, vocab_size: int, hidden_act: str = "gelu", layer_norm_eps: float = 1e-12):
        super().__init__()
        self.transform = _Transform(hidden_size, HIDDEN_ACTS[hidden_act], layer_norm_eps)
        self.bias = nn.Parameter(flow.zeros(vocab_size))

    def forward(self, hidden: flow.Tensor, word_embeddings: flow.Tensor) -> flow.Tensor:
        return flow.matmul(self.transform(hidden), word_embeddings, transpose_b=True) + self.bias


class BertForMaskedLM(nn.Module):
    """A BERT encoder (``self.bert``) and its masked-LM head (``self.cls``), decoder tied to the word embeddings.

    ``config``: :class:`~.bert.BertForSequenceClassification`'s keyword arguments.

    >>> model = BertForMaskedLM(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                         intermediate_size=16)
    >>> ids = flow.ones(2, 5, dtype=flow.int64)
    >>> tuple(model(ids, flow.ones_like(ids), flow.zeros_like(ids), flow.tensor([1, 3])).shape)
    (2, 30)
    """

    def __init__(self, **config):
        super().__init__()
        self.bert = BertForSequenceClassification(**config)
        cfg = self.bert.config
        self.config = cfg
        self.cls = MaskedLMHead(cfg["hidden_size"], cfg["vocab_size"], cfg["hidden_act"], cfg["layer_norm_eps"])
        with flow.no_grad():  # BERT's initialisation of the head (the original's output_bias starts at 1.0: unused)
            self.bert._init_weights(self.cls.transform.dense)

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def forward(self, input_ids: flow.Tensor, input_mask: flow.Tensor, token_type_ids: flow.Tensor,
                positions: Optional[flow.Tensor] = None) -> flow.Tensor:
        """``[B, L]`` ids, mask, segments -> logits ``[B, L, V]``; with ``positions`` ``[B]`` (one position per
        row) the logits there only, ``[B, V]`` (the head then runs on ``B`` vectors, not ``B * L``)."""
        hidden = self.bert(input_ids, input_mask, token_type_ids, output_hidden_states=True).hidden_states[-1]
        if positions is not None:
            rows = flow.arange(hidden.shape[0], device=hidden.device)
            hidden = hidden[rows, positions.to(flow.int64)]
        return self.cls(hidden, self.bert.word_embedding_table())

    # ------------------------------------------------------------------------------------------ loading

    def _load_head(self, values: Dict[str, np.ndarray], source: str) -> None:
        """Copy ``{head parameter: array}`` into ``self.cls`` after checking every shape."""
        params = dict(self.cls.named_parameters())
        bias = values["bias"]
        if tuple(bias.shape) != (self.vocab_size,):
            raise ValueError(f"the masked-LM head of {source} has {bias.size} output entries but the model's vocabulary "
                             f"has {self.vocab_size}; the head belongs to another vocabulary: use the checkpoint's own "
                             f"vocab.txt and sizes")
        for name, value in values.items():
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(f"masked-LM head tensor {name} of {source} has shape {tuple(value.shape)} but the "
                                 f"model needs {tuple(params[name].shape)}; the checkpoint's head does not fit its encoder")
        with flow.no_grad():
            for name, value in values.items():
                target = params[name]
                target.copy_(flow.tensor(np.ascontiguousarray(value), dtype=target.dtype, device=target.device))

    @classmethod
    def from_pretrained(cls, path, **overrides) -> "BertForMaskedLM":
        """Build from a Hugging Face BERT directory (``config.json`` + ``model.safetensors``) with ``cls.predictions``.

        :class:`NoMaskedLMHead` when the checkpoint has no head; ``ValueError`` for a head whose sizes differ
        from the vocabulary or the hidden size (see :mod:`.pretrained` for the encoder's checks)."""
        from .pretrained import _checkpoint_files, _read_safetensors, load_hf_bert_weights, read_hf_config

        _, weights_file = _checkpoint_files(path)
        arrays = _read_safetensors(weights_file)
        if HF_HEAD_NAMES["bias"] not in arrays:
            raise NoMaskedLMHead(f"checkpoint {weights_file} has no masked-LM head (no {HF_HEAD_NAMES['bias']}); "
                                 f"{_INSTEAD}")
        missing = [name for name in HF_HEAD_NAMES.values() if name not in arrays and _old_norm(name, arrays) is None]
        if missing:
            raise ValueError(f"checkpoint {weights_file} has an incomplete masked-LM head (missing {missing}); "
                             f"restore the checkpoint or {_INSTEAD}")
        config = dict(read_hf_config(path), **overrides)
        model = cls(**config)
        model.load_report = load_hf_bert_weights(model.bert, path)
        model._load_head({ours: arrays.get(theirs, _old_norm(theirs, arrays)) for ours, theirs in HF_HEAD_NAMES.items()},
                         weights_file)
        logger.info("BertForMaskedLM.from_pretrained(%s): %s; masked-LM head loaded", os.fspath(path), model.load_report)
        return model

    @classmethod
    def from_snapshot(cls, directory, num_attention_heads: Optional[int] = None, **overrides) -> "BertForMaskedLM":
        """Build from an original snapshot (the teacher's ``bert-*`` variables and ``cls-predictions-*``).

        ``num_attention_heads``: not stored in a snapshot (see :func:`~.snapshot.read_snapshot_config`).
        :class:`NoMaskedLMHead` when the snapshot has no ``cls-predictions-*`` variables."""
        from .snapshot import list_snapshot_variables, load_snapshot, read_snapshot_config, read_snapshot_variable

        names = list_snapshot_variables(directory)
        head_bias = SNAPSHOT_HEAD_NAMES["bias"][0]
        if head_bias not in names:
            raise NoMaskedLMHead(f"snapshot {os.fspath(directory)} has no masked-LM head (no {head_bias} variable); "
                                 f"{_INSTEAD}")
        found = read_snapshot_config(directory, "teacher", num_attention_heads)
        model = cls(**dict(found.config, **overrides))
        model.load_report = load_snapshot(model.bert, directory, "teacher")
        hidden = model.config["hidden_size"]
        values = {}
        for ours, (name, transposed) in SNAPSHOT_HEAD_NAMES.items():
            if name not in names:
                raise ValueError(f"snapshot {os.fspath(directory)} has an incomplete masked-LM head (no {name}); "
                                 f"restore the snapshot or {_INSTEAD}")
            shape = (model.vocab_size,) if ours == "bias" else (hidden, hidden) if transposed else (hidden,)
            if ours == "bias":
                value = read_snapshot_variable(directory, name)
                values[ours] = value.reshape(-1)
            else:
                value = read_snapshot_variable(directory, name, shape)
                values[ours] = value.T if transposed else value
        model._load_head(values, f"snapshot {os.fspath(directory)}")
        logger.info("BertForMaskedLM.from_snapshot(%s): %d encoder variables and the masked-LM head loaded",
                    os.fspath(directory), len(model.load_report.loaded))
        return model

    def snapshot_head_arrays(self) -> Dict[str, np.ndarray]:
        """The head as the original's ``cls-predictions-*`` variables (original shapes), for
        ``save_snapshot(model.bert, directory, extra=model.snapshot_head_arrays())``."""
        params = {k: v.detach().cpu().numpy() for k, v in self.cls.named_parameters()}
        return {name: (params[ours].T if transposed else params[ours]) for ours, (name, transposed)
                in SNAPSHOT_HEAD_NAMES.items()}


def _old_norm(name: str, arrays: Dict[str, np.ndarray]):
    """The old ``LayerNorm.gamma`` / ``beta`` spelling of a ``LayerNorm.weight`` / ``bias`` name, if present."""
    old = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
    return arrays.get(old) if old != name else None
