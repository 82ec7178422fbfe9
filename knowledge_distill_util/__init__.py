"""knowledge_distill_util: knowledge-distillation operators for OneFlow.

A drop-in replacement for the Tianshu/Dubhe ``knowledge_distill_util``: the same names, signatures and
numbers on modern OneFlow tensors (eager and ``nn.Graph``, any device).

- :mod:`knowledge_distill_util.functional`: the pure tensor math (explicit keyword arguments).
- :mod:`knowledge_distill_util.distill`: the original ``(args, student, teacher)`` operators.
- :mod:`knowledge_distill_util.models`: BERT teacher/student, the (Bi)LSTM student, checkpoints.
- :mod:`knowledge_distill_util.nn`: the losses as Modules, ``Projection``, ``IntermediateMatches``.
- :mod:`knowledge_distill_util.schedules`: per-row temperature and loss-weight schedules.
- :mod:`knowledge_distill_util.engine`: ``Distiller``, ``DistillationConfig``, ``TrainingConfig`` (any model).
- ``get_loss``/``register_loss``/``available_losses``: the loss registry (names from configuration).
- ``cache_teacher_logits``/``TopKLogits``: the teacher's top-k logits on disk (:mod:`knowledge_distill_util.topk_cache`),
  read by the sparse losses ``functional.sparse_kl_div``/``sparse_js_divergence``.
"""
import os as _os
from importlib import metadata as _metadata

# OneFlow logs its start-up (no InfiniBand, CUDA driver) through glog: quiet by default, before its import.
_os.environ.setdefault("GLOG_minloglevel", "3")

from ._cpu import set_openblas_coretype as _set_openblas_coretype
from ._startup import bound_oneflow_start as _bound_oneflow_start, quiet_ibverbs_notice as _quiet_ibverbs_notice

# OneFlow's bundled OpenBLAS reads OPENBLAS_CORETYPE when its library loads: the CPU's kernel set, unless the user
# set one or KDU_OPENBLAS_CORETYPE=keep (see _cpu.py); inherited by every process a run starts.
_set_openblas_coretype()
_start_watcher = _bound_oneflow_start()  # under the launcher: no endless wait for an unreachable master
with _quiet_ibverbs_notice():  # OneFlow's "libibverbs not available" line, and only it, is dropped
    import oneflow as _oneflow  # noqa: E402,F401  (the import that connects to the master)

if _start_watcher is not None:
    _start_watcher.started()

from .distill import add_distill_args, att_distill, layer_distill, pred_distill, resolve_temperatures
from .functional import mseloss, soft_cross_entropy
from .fused_linear import fused_linear_distill_loss
from .registry import available_losses, get_loss, register_loss
from .models import (
    BertForSequenceClassification,
    BertStudentForSequenceClassification,
    LSTMStudentForSequenceClassification,
    fit_dense,
    init_student_from_teacher,
    load_model,
    save_model,
)
from .engine import DistillationConfig, Distiller, TrainingConfig
from .topk_cache import TopKLogits, cache_teacher_logits

__all__ = [
    "pred_distill",
    "layer_distill",
    "att_distill",
    "soft_cross_entropy",
    "mseloss",
    "fused_linear_distill_loss",
    "get_loss",
    "register_loss",
    "available_losses",
    "add_distill_args",
    "resolve_temperatures",
    "BertForSequenceClassification",
    "BertStudentForSequenceClassification",
    "LSTMStudentForSequenceClassification",
    "fit_dense",
    "init_student_from_teacher",
    "save_model",
    "load_model",
    "Distiller",
    "DistillationConfig",
    "TrainingConfig",
    "cache_teacher_logits",
    "TopKLogits",
]
try:
    __version__ = _metadata.version("knowledge_distill_util")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "0+unknown"
