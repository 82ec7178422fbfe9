"""Student and teacher logits over different vocabularies: refuse them, or align them as the user chose.

Every logit loss (``soft_cross_entropy``, ``kl_div`` and the divergences of
:mod:`knowledge_distill_util.divergences`) takes ``vocab_alignment``:

- ``None`` (default): the last dims must be equal; logits whose last dims differ (the student's and the
  teacher's vocabulary sizes ``V_s != V_t``) stop with one sentence naming both sizes.
- ``"truncate"``: both sides keep only the shared first ``min(V_s, V_t)`` ids; each softmax is taken over
  those ids, so both distributions are renormalised over the shared ids.
- ``"uld"``: the loss becomes the universal logit distillation distance (Boizard et al. 2024, as TRL's
  ``ULDLoss`` computes it) whatever the divergence: per row, the L1 distance between the two probability
  vectors sorted in descending order, the shorter padded with zeros to ``max(V_s, V_t)``.
"""
from typing import Optional, Tuple

import oneflow as flow
import oneflow.nn.functional as F

from ._checks import check_float_tensor, check_not_empty, check_pair, check_same_device

__all__ = ["VOCAB_ALIGNMENTS", "check_vocab_alignment", "align_vocabularies", "uld_rows"]

#: The values of ``vocab_alignment`` besides ``None`` (equal vocabularies required).
VOCAB_ALIGNMENTS = ("truncate", "uld")


def check_vocab_alignment(value) -> Optional[str]:
    """``None``, ``"truncate"`` or ``"uld"``; anything else is a ``ValueError`` naming the value."""
    if value is not None and (not isinstance(value, str) or value not in VOCAB_ALIGNMENTS):
        raise ValueError(f"vocab_alignment must be None (equal vocabularies), \"truncate\" or \"uld\"; got {value!r}")
    return value


def _differ_only_in_vocabulary(a, b) -> bool:
    """Two tensors of the same rank >= 1 and leading dims whose last dims differ."""
    return (isinstance(a, flow.Tensor) and isinstance(b, flow.Tensor) and a.ndim == b.ndim and a.ndim >= 1
            and tuple(a.shape[:-1]) == tuple(b.shape[:-1]) and a.shape[-1] != b.shape[-1])


def align_vocabularies(predicts, targets, vocab_alignment: Optional[str],
                       names: Tuple[str, str] = ("predicts", "targets")) -> Tuple[flow.Tensor, flow.Tensor]:
    """Validate a student/teacher logit pair and return it aligned as ``vocab_alignment`` says.

    Both must be floating tensors on one device with one dtype, equal in every dim but the last, and not
    empty. Equal last dims are returned unchanged; different last dims (``[..., V_s]`` vs ``[..., V_t]``)
    are refused with ``vocab_alignment=None``, cut to the first ``min(V_s, V_t)`` ids with ``"truncate"``
    and returned unchanged with ``"uld"`` (:func:`uld_rows` compares them).

    >>> import oneflow as flow
    >>> align_vocabularies(flow.zeros(2, 5), flow.zeros(2, 3), None)
    Traceback (most recent call last):
    ...
    ValueError: the student's logits (predicts) have a vocabulary of 5 ids but the teacher's (targets) have 3; pass vocab_alignment="truncate" to compare the shared first 3 ids or vocab_alignment="uld" for the universal logit distillation distance
    >>> [tuple(x.shape) for x in align_vocabularies(flow.zeros(2, 5), flow.zeros(2, 3), "truncate")]
    [(2, 3), (2, 3)]
    """
    check_vocab_alignment(vocab_alignment)
    if not _differ_only_in_vocabulary(predicts, targets):
        check_pair(names[0], predicts, names[1], targets)
        return predicts, targets
    check_float_tensor(names[0], predicts)
    check_float_tensor(names[1], targets)
    check_same_device(names[0], predicts, names[1], targets)
    if predicts.dtype != targets.dtype:
        raise TypeError(f"{names[0]} has dtype {predicts.dtype} but {names[1]} has dtype {targets.dtype}; "
                        f"cast one to the other's dtype")
    check_not_empty(names[0], predicts)
    check_not_empty(names[1], targets)
    v_s, v_t = predicts.shape[-1], targets.shape[-1]
    shared = min(v_s, v_t)
    if vocab_alignment is None:
        raise ValueError(
            f"the student's logits ({names[0]}) have a vocabulary of {v_s} ids but the teacher's ({names[1]}) "
            f"have {v_t}; pass vocab_alignment=\"truncate\" to compare the shared first {shared} ids or "
            f"vocab_alignment=\"uld\" for the universal logit distillation distance"
        )
    if vocab_alignment == "truncate":
        return predicts[..., :shared], targets[..., :shared]
    return predicts, targets


def _sorted_padded(p: flow.Tensor, size: int) -> flow.Tensor:
    """``p`` ``[..., V]`` sorted in descending order along the last dim, zero-padded to ``size``."""
    values = flow.sort(p, dim=-1, descending=True)[0]
    if values.shape[-1] == size:
        return values
    return F.pad(values, (0, size - values.shape[-1]), mode="constant", value=0.0)


def uld_rows(student_scaled: flow.Tensor, teacher_scaled: flow.Tensor) -> flow.Tensor:
    r"""Universal logit distillation per row ``[...]`` of temperature-divided logits ``[..., V_s]``,
    ``[..., V_t]`` (the teacher detached):

    .. math::
        r_n = \sum_{i=1}^{\max(V_s, V_t)} \big| \operatorname{sort}_\downarrow(q_n)_i
              - \operatorname{sort}_\downarrow(p_n)_i \big|,
        \quad q = \operatorname{softmax}(s), \; p = \operatorname{softmax}(t)

    with the shorter sorted vector padded with zeros. TRL's ``ULDLoss`` is the mean of :math:`r_n` over
    a sequence's rows (``reduction="batchmean"``).
    """
    size = max(student_scaled.shape[-1], teacher_scaled.shape[-1])
    q = _sorted_padded(F.softmax(student_scaled, dim=-1), size)
    p = _sorted_padded(F.softmax(teacher_scaled, dim=-1), size)
    return flow.abs(q - p).sum(dim=-1)
