"""Pure tensor math of the distillation losses: explicit keyword arguments, no ``args``, no I/O.

Every loss returns a scalar tensor on the inputs' device. Reductions follow the original Tianshu/Dubhe
operators exactly: soft cross entropy and MSE are **means over all elements**, layer losses are **sums
over the mapped layer pairs**. The teacher side never receives a gradient. float16 inputs are computed
in float32 (the loss is returned as float32), so extreme logits stay finite.

Layer maps (the original "uniform" strategy)::

    hidden states (embedding + Ls layers)  student i -> teacher i * k            for i = 0..Ls
    attentions    (Ls layers)              student i -> teacher i * k + k - 1    for i = 0..Ls-1
    where k = Lt // Ls and Lt % Ls == 0

Further strategies (``"first"``, ``"last"``, ``"round"``) and the losses of the PyTorch distillation
toolkits (KL with T², masks, reductions, cosine, BERT-PKD, attention and relation KL, FSP, MMD,
multi-teacher averages) are opt-in keyword arguments and functions; the defaults keep every original value.
Masks are 0/1 tensors (any numeric or bool dtype) of exactly the stated shape; a sequence without a valid
position contributes nothing, and a mask without any valid position gives 0.

The functions live in private modules by loss family (import them from here, the one public path):
``_logits`` (soft cross entropy, KL, MSE, several teachers' average), ``_layer_maps`` (the layer maps and the
original layer operators), ``_hidden`` (hidden-state losses), ``_attention`` (attention and relation KL),
``_features`` (FSP, MMD) and ``_common`` (their shared helpers); the LLM divergences and the sparse losses are
:mod:`knowledge_distill_util.divergences` and :mod:`knowledge_distill_util.sparse_losses`, re-exported here.
"""
from .._soft_targets import REDUCTIONS
from .._vocab import VOCAB_ALIGNMENTS
from ._common import ATTENTION_MASK_THRESHOLD, Pair
from ._logits import average_logits, checked_soft_cross_entropy, kl_div, mseloss, soft_cross_entropy
from ._layer_maps import (LAYER_MAP_STRATEGIES, PATIENCE_STRATEGIES, att_distill_loss, attention_layer_map,
                          hidden_layer_map, layer_distill_loss, patience_layer_pairs, pkd_patience_loss)
from ._hidden import hidden_cosine, hidden_mse, pkd_loss
from ._attention import _masked_row_kl, attention_kl, attention_mse, relation_kl
from ._features import fsp_loss, mmd_loss

__all__ = [
    "soft_cross_entropy",
    "mseloss",
    "hidden_layer_map",
    "attention_layer_map",
    "layer_distill_loss",
    "att_distill_loss",
    "patience_layer_pairs",
    "pkd_patience_loss",
    "PATIENCE_STRATEGIES",
    "ATTENTION_MASK_THRESHOLD",
    "REDUCTIONS",
    "LAYER_MAP_STRATEGIES",
    "kl_div",
    "hidden_mse",
    "hidden_cosine",
    "pkd_loss",
    "attention_mse",
    "attention_kl",
    "relation_kl",
    "fsp_loss",
    "mmd_loss",
    "average_logits",
    "VOCAB_ALIGNMENTS",
]

# The public path in error messages, reprs and the docs: the loss registry names a registered built-in as
# ``knowledge_distill_util.functional.kl_div``, as before the split into family modules.
for _function in (soft_cross_entropy, checked_soft_cross_entropy, kl_div, mseloss, average_logits, hidden_layer_map,
                  attention_layer_map, layer_distill_loss, att_distill_loss, hidden_mse, hidden_cosine, pkd_loss,
                  attention_mse, attention_kl, relation_kl, fsp_loss, mmd_loss):
    _function.__module__ = __name__
del _function

# --------------------------------------------------------------------------------------------------
# the divergences of today's LLM distillers (their own module, built on _soft_targets; re-exported here)
# --------------------------------------------------------------------------------------------------

from ..divergences import js_divergence, reverse_kl, skew_kl, skew_reverse_kl, tv_distance, uld_loss  # noqa: E402

__all__ += ["reverse_kl", "js_divergence", "skew_kl", "skew_reverse_kl", "tv_distance", "uld_loss"]

# The sparse (top-k teacher) divergences live in their own module; exposed here with the other losses.
from ..sparse_losses import sparse_js_divergence, sparse_kl_div  # noqa: E402

__all__ += ["sparse_kl_div", "sparse_js_divergence"]
