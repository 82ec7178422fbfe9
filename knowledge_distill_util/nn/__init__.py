"""torch-style Modules of the distillation losses, a projection layer, and :class:`IntermediateMatches`.

Each loss Module only stores its options (validated in the constructor) and calls the function of
:mod:`knowledge_distill_util.functional` in a one-line ``forward(student, teacher, mask=None)``.

Example::

    >>> import oneflow as flow
    >>> from knowledge_distill_util.nn import KLDivLoss
    >>> loss = KLDivLoss(student_temperature=2.0, teacher_temperature=2.0, temperature_scaling=True)
    >>> loss
    KLDivLoss(student_temperature=2.0, teacher_temperature=2.0, reduction='batchmean', temperature_scaling=True)
    >>> loss(flow.zeros(2, 3), flow.zeros(2, 3)).item()
    0.0

The Modules live in private modules by job (import them from here, the one public path): ``_soft_target``
(the logit losses and divergences), ``_features`` (hidden-state, attention, relation, FSP and MMD losses) and
``_matches`` (:class:`Projection` and :class:`IntermediateMatches`).
"""
from ._soft_target import (JSDivergenceLoss, KLDivLoss, ReverseKLLoss, SkewKLLoss, SkewReverseKLLoss,
                           SoftCrossEntropyLoss, TVDistanceLoss, ULDLoss)
from ._features import (AttentionKLLoss, AttentionMSELoss, FSPLoss, HiddenCosineLoss, HiddenMSELoss, MMDLoss,
                        PKDLoss, RelationKLLoss)
from ._matches import ACTIVATIONS, FEATURES, IntermediateMatches, Projection

__all__ = [
    "SoftCrossEntropyLoss",
    "KLDivLoss",
    "HiddenMSELoss",
    "HiddenCosineLoss",
    "PKDLoss",
    "AttentionMSELoss",
    "AttentionKLLoss",
    "RelationKLLoss",
    "FSPLoss",
    "MMDLoss",
    "ReverseKLLoss",
    "JSDivergenceLoss",
    "SkewKLLoss",
    "SkewReverseKLLoss",
    "TVDistanceLoss",
    "ULDLoss",
    "Projection",
    "IntermediateMatches",
    "ACTIVATIONS",
    "FEATURES",
]

# The public path in reprs, error messages and the docs (``knowledge_distill_util.nn.KLDivLoss``), as before
# the split into modules by job.
for _name in __all__:
    if isinstance(globals()[_name], type):
        globals()[_name].__module__ = __name__
del _name
