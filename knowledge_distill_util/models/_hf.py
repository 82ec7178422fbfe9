"""Hugging Face's calling convention for the BERT models: argument aliases, ``labels``, output flags.

:meth:`BertForSequenceClassification.forward <knowledge_distill_util.models.bert.BertForSequenceClassification.forward>`
uses these helpers; its default call (no ``labels``, every flag off) never reaches them and returns the
tuple ``(logits, reps, atts)`` as before.

- Aliases (keyword only): ``attention_mask`` for ``input_mask``, ``segment_ids`` (this package's batch
  key) for ``token_type_ids``. Giving a name and its alias is a ``TypeError`` naming both.
- ``labels`` ``[B]``: integer class ids in ``[0, label_num)``, or scores (any number type) when
  ``label_num == 1``. The loss is the training's hard-label loss: mean cross-entropy of the logits, or for
  one logit the mean squared error ``mean((logits[:, 0] - labels)**2)``.
- Flags ``output_hidden_states``, ``output_attentions``, ``output_attention_scores``, ``output_qkv``
  (``True``/``False``, default off).

With ``labels`` or any flag the forward returns a :class:`BertOutput`, an ordered dict also readable by
attribute (``out.loss`` = ``out["loss"]``), holding ``logits``, ``reps``, ``atts`` (today's three outputs,
unchanged) and only what was asked for, in this order: ``loss`` (first, as Hugging Face), ``logits``,
``reps``, ``atts``, ``hidden_states``, ``attentions``, ``attention_scores``, ``query``, ``key``, ``value``.
"""
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import oneflow as flow
import oneflow.nn.functional as F

from .._checks import check_bool
from ._inputs import INTEGER_DTYPES, _building_graph, _host

__all__ = ["BertOutput", "OUTPUT_FLAGS", "one_of", "check_flags", "check_labels", "label_loss", "build_output"]

#: The output flags, in the order their keys appear in a :class:`BertOutput`.
OUTPUT_FLAGS = ("output_hidden_states", "output_attentions", "output_attention_scores", "output_qkv")
_FLOAT_DTYPES = (flow.float16, flow.float32, flow.float64)


class BertOutput(OrderedDict):
    """The forward's outputs by name (an ``OrderedDict``), also readable as attributes (``out.logits``)."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"this output holds {list(self)}, not {name!r}; ask for it with the matching forward flag "
                f"({', '.join(OUTPUT_FLAGS)}) or labels="
            ) from None


def one_of(name: str, value, alias: str, alias_value, fill: str):
    """``value`` or ``alias_value``, whichever was given; both or neither is a ``TypeError`` naming them."""
    if value is not None and alias_value is not None:
        raise TypeError(f"forward() got both {name} and its alias {alias}; pass only one of them")
    chosen = alias_value if value is None else value
    if chosen is None:
        raise TypeError(f"forward() is missing {name} (or its alias {alias}): pass a [batch, seq_length] "
                        f"tensor, e.g. {fill}")
    return chosen


def check_flags(**flags) -> Dict[str, bool]:
    """Each flag must be ``True`` or ``False`` (``TypeError`` naming it)."""
    return {name: check_bool(name, value) for name, value in flags.items()}


def check_labels(labels, batch: int, label_num: int, check_values: bool) -> None:
    """``labels``: a tensor ``[B]``; integers in ``[0, label_num)`` for classification (values checked in
    eager mode when ``check_values``), integers or floats for regression (``label_num == 1``)."""
    if not isinstance(labels, flow.Tensor):
        raise TypeError(f"labels must be a oneflow.Tensor, got {type(labels).__name__}; convert it with "
                        f"oneflow.tensor(...)")
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"labels has shape {tuple(labels.shape)} but the batch has {batch} rows; pass one "
                         f"label per row, shape ({batch},)")
    regression = label_num == 1
    allowed = INTEGER_DTYPES + (_FLOAT_DTYPES if regression else ())
    if labels.dtype not in allowed:
        kind = "an integer or floating-point" if regression else "an integer (class id)"
        raise TypeError(f"labels must have {kind} dtype for label_num={label_num}, got {labels.dtype}; cast "
                        f"it with labels.to(oneflow.int64)" + (" or .to(oneflow.float32)" if regression else ""))
    if regression or not check_values or _building_graph(labels):
        return
    if bool(((labels < 0) | (labels >= label_num)).any().item()):
        values = _host(labels)
        index = int(((values < 0) | (values >= label_num)).nonzero()[0][0])
        raise ValueError(f"labels holds {values[index]} at row {index}, outside [0, {label_num - 1}] "
                         f"(label_num={label_num}); class ids count from 0")


def label_loss(logits: flow.Tensor, labels: flow.Tensor) -> flow.Tensor:
    """The training's hard-label loss: ``cross_entropy(logits [B, C], labels [B])`` (mean), or for one logit
    ``mean((logits[:, 0] - labels)**2)``."""
    if logits.shape[-1] == 1:
        from ..functional import mseloss  # as training.kd_objectives.hard_label_loss

        return mseloss(logits.reshape(-1), labels.to(logits.dtype).reshape(-1))
    return F.cross_entropy(logits, labels.to(flow.int64))


def build_output(logits: flow.Tensor, reps: List[flow.Tensor], atts: List[flow.Tensor],
                 states: List[flow.Tensor], details: Sequence[Tuple[flow.Tensor, ...]],
                 loss: Optional[flow.Tensor], flags: Dict[str, bool]) -> BertOutput:
    """A :class:`BertOutput` of what was asked for (module doc); ``details`` holds one
    ``(query, key, value, scores, probs)`` per layer (empty unless an attention flag is on)."""
    out = BertOutput()
    if loss is not None:
        out["loss"] = loss
    out.update(logits=logits, reps=reps, atts=atts)
    if flags["output_hidden_states"]:
        out["hidden_states"] = list(states)
    if flags["output_attentions"]:
        out["attentions"] = [d[4] for d in details]
    if flags["output_attention_scores"]:
        out["attention_scores"] = [d[3] for d in details]
    if flags["output_qkv"]:
        for index, name in enumerate(("query", "key", "value")):
            out[name] = [d[index] for d in details]
    return out
