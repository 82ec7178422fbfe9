"""The layer-list losses of the Distiller's matches (``"layer_S": "all", "layer_T": "all"``): a loss of the whole
per-layer lists ``features[feature]`` of both sides, which pairs their layers itself.

| loss | pairs (``options``) |
|---|---|
| ``layer_distill_loss`` (the original ``layer_distill``) | :func:`~knowledge_distill_util.functional.hidden_layer_map` (``strategy``), or ``layer_map`` |
| ``att_distill_loss`` (the original ``att_distill``) | :func:`~knowledge_distill_util.functional.attention_layer_map` (``strategy``), or ``layer_map`` |
| ``pkd_patience_loss`` (BERT-PKD's patience term) | :func:`~knowledge_distill_util.functional.patience_layer_pairs` (``strategy``), or ``pairs`` |

Once the student's list has been seen (the probe's forward), the teacher tensors read are only the layers the
pairs take, in pair order, so that a teacher-output cache stores those alone; the loss then gets the paired
student and teacher layers with the identity pairing, the very pairs and order (and values) of the whole lists.
"""
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import oneflow as flow

from ..functional import (att_distill_loss, attention_layer_map, hidden_layer_map, layer_distill_loss,
                          patience_layer_pairs, pkd_patience_loss)
from ..registry import keyword_options

__all__ = ["LIST_LOSSES", "LayerList"]

Pairs = List[Tuple[int, int]]


def _layer_map_pairs(uniform: Callable) -> Callable[[int, int, Mapping[str, Any]], Pairs]:
    def pairs(students: int, teachers: int, options: Mapping[str, Any]) -> Pairs:
        layer_map = options.get("layer_map")
        if layer_map is None:
            return uniform(students, teachers, options.get("strategy", "uniform"))
        if len(layer_map) != students or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < teachers for t in layer_map):
            raise ValueError(f"options['layer_map'] = {list(layer_map)!r} must give, for each of the student's "
                             f"{students} entries, an index into the teacher's {teachers}")
        return list(enumerate(layer_map))
    return pairs


def _patience_pairs(students: int, teachers: int, options: Mapping[str, Any]) -> Pairs:
    return patience_layer_pairs(students, teachers, options.get("strategy", "skip"), options.get("pairs"))


#: name -> (the loss of the whole lists, its pairs ``(students, teachers, options) -> [(s, t), ...]``, the keyword
#: giving the identity pairing of two paired lists of ``n`` entries).
LIST_LOSSES: Dict[str, Tuple[Callable, Callable, Callable[[int], Dict[str, Any]]]] = {
    "layer_distill_loss": (layer_distill_loss, _layer_map_pairs(hidden_layer_map),
                           lambda n: {"layer_map": list(range(n))}),
    "att_distill_loss": (att_distill_loss, _layer_map_pairs(attention_layer_map),
                         lambda n: {"layer_map": list(range(n))}),
    "pkd_patience_loss": (pkd_patience_loss, _patience_pairs, lambda n: {"pairs": [(i, i) for i in range(n)]}),
}


def option_names(loss: str) -> List[str]:
    """The options of layer-list loss ``loss``: its keyword-only arguments."""
    return keyword_options(LIST_LOSSES[loss][0])


class LayerList:
    """The pairing of one layer-list match: ``loss`` a name of :data:`LIST_LOSSES`, ``options`` its keyword
    arguments (checked by the caller)."""

    def __init__(self, loss: str, options: Mapping[str, Any]):
        self.fn, self._pairs_of, self._identity = LIST_LOSSES[loss]
        self.options = dict(options)
        self.students: Optional[int] = None  # the student list's length, once seen
        self.pairs: Optional[Pairs] = None  # set when the teacher's paired layers were taken

    def teacher(self, tensors: Sequence[flow.Tensor]) -> List[flow.Tensor]:
        """The teacher tensors to read: the paired layers, in pair order (every layer before the student's list was
        seen)."""
        if self.students is None:
            return list(tensors)
        self.pairs = self._pairs_of(self.students, len(tensors), self.options)
        return [tensors[t] for _, t in self.pairs]

    def __call__(self, student: Sequence[flow.Tensor], teacher: Sequence[flow.Tensor]) -> flow.Tensor:
        """The loss of the student's whole list and the teacher tensors of :meth:`teacher`."""
        if self.pairs is None:
            return self.fn(list(student), list(teacher), **self.options)
        paired = [student[s] for s, _ in self.pairs]
        return self.fn(paired, list(teacher), **self._identity(len(paired)))
