"""Models for the distillation recipes: BERT teacher/student, the (Bi)LSTM student, checkpoints.

- :mod:`.bert`: ``BertForSequenceClassification`` / ``BertStudentForSequenceClassification``
  returning ``(logits, reps, atts)`` (or a ``BertOutput`` dict with Hugging Face's ``labels`` / ``output_*``
  flags, :mod:`._hf`), ``save_pretrained``, and ``fit_dense``.
- :mod:`.mlm`: ``BertForMaskedLM``, BERT with its masked-LM head (Hugging Face or original snapshot).
- :mod:`.lstm`: ``LSTMStudentForSequenceClassification`` returning logits.
- :mod:`.theseus`: ``TheseusModel``, BERT-of-Theseus's predecessor and successor with module replacement.
- :mod:`.pretrained`: Hugging Face checkpoints (``config.json`` + ``model.safetensors``), read and written.
- :mod:`.init`: student initialisation from teacher layers, ``save_model`` / ``load_model`` / ``read_state``
  (``model.safetensors``: no pickle).
"""
from ._hf import BertOutput
from .bert import BertForSequenceClassification, BertStudentForSequenceClassification, fit_dense
from .init import (
    DISTILBERT_LAYERS,
    check_student_teacher,
    init_student_from_teacher,
    load_model,
    save_model,
)
from .lstm import LSTMStudentForSequenceClassification
from .mlm import BertForMaskedLM, MaskedLMHead, NoMaskedLMHead
from .pretrained import LoadReport, load_hf_bert_weights, minilm_checkpoint_dir, read_hf_config, save_pretrained
from .snapshot import build_from_snapshot, load_snapshot, read_snapshot_config, save_snapshot

__all__ = [
    "build_from_snapshot",
    "load_snapshot",
    "read_snapshot_config",
    "save_snapshot",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertOutput",
    "MaskedLMHead",
    "NoMaskedLMHead",
    "BertStudentForSequenceClassification",
    "LSTMStudentForSequenceClassification",
    "fit_dense",
    "init_student_from_teacher",
    "check_student_teacher",
    "DISTILBERT_LAYERS",
    "save_model",
    "load_model",
    "load_hf_bert_weights",
    "read_hf_config",
    "save_pretrained",
    "minilm_checkpoint_dir",
    "LoadReport",
]
