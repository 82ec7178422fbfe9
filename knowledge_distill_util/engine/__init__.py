"""The distillation engine: a :class:`Distiller` for any OneFlow teacher/student pair and any data.

- :mod:`.config`: :class:`DistillationConfig` (what to distil) and :class:`TrainingConfig` (how to train).
- :mod:`.distiller`: :class:`Distiller` (``train``, ``evaluate``, ``parameters``).
- :mod:`.batches`: dict/tuple batches split into inputs and labels; :mod:`.adaptors`: outputs as features;
  :mod:`.taps`: module outputs by path; :mod:`.matches`: one intermediate match.
- :mod:`.objective`: the loss of a step; :mod:`.teacher_cache`: the teacher's outputs cached per row
  (``TrainingConfig(cache_teacher_outputs="memory")``), stored by :mod:`.row_store` (the recipes' cache's store
  too); :mod:`.loop`: the step loop (the package's one training loop: the
  recipes of ``kdu-train`` train through it too); :mod:`.state`: seeds, data position; :mod:`.hooks`: step
  inputs, epoch-end hooks, non-finite checks; :mod:`.progress`: progress lines;
  :mod:`.run`: lock, resume, checkpoints, the loss log; :mod:`.parallel`: data-parallel under OneFlow's launcher
  (eager and ``nn.Graph``); :mod:`.evaluate`: a trained model's predictions, metrics and ``results_eval.json``.

Guide: docs/distiller.md.
"""
from .adaptors import ADAPTOR_KEYS, default_adaptor
from .config import DistillationConfig, TrainingConfig
from .distiller import Distiller

__all__ = ["Distiller", "DistillationConfig", "TrainingConfig", "default_adaptor", "ADAPTOR_KEYS"]
