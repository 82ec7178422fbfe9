"""DistilBERT's masked-LM distillation (recipe ``distilbert_mlm``), run on the :class:`~knowledge_distill_util.engine.Distiller`.

Task-agnostic, as Hugging Face's ``examples/research_projects/distillation/distiller.py``: a student BERT with
a masked-LM head learns a teacher BERT's masked-LM predictions on a pregenerated text corpus
(``--corpus_dir``, written by ``scripts/pregenerate_training_data.py``; pass ``--masked_lm_prob 0.15``, the
default 0 masks one token per instance). With ``M`` masked positions in the batch (the corpus's
``masked_lm_positions``), ``T`` the temperature, ``z_S``/``z_T`` the student's/teacher's logits ``[M, V]``
there and ``y`` the masked tokens' ids::

    loss = alpha_ce * T^2 * KL(softmax(z_T / T) || softmax(z_S / T)) / M            (logit_weight, "kl_div")
         + alpha_mlm * mean_M CE(z_S, y)                                            (hard_label_weight, "mlm")
         + alpha_cos * hidden_cosine(h_S, h_T, mask=input_mask)                     (hidden_weight, "hidden_cosine")

``h_S``/``h_T`` are the last hidden states ``[B, L, H]`` (padding excluded). The soft term runs through
:func:`~knowledge_distill_util.fused_linear.fused_linear_distill_loss` on the student head's transformed
hidden states ``[M, H]`` with the decoder tied to the word embeddings ``[V, H]`` and its bias ``[V]``, so the
student's ``[M, V]`` logits are never built for it; the hard term builds them (``alpha_mlm`` 0 skips it).
Defaults: ``alpha_ce`` 5, ``alpha_mlm`` 2, ``alpha_cos`` 1, ``T`` 2 (DistilBERT's).

``--teacher_logits_cache DIR`` (with ``--top_k``, default 20): the teacher's logits at the masked positions are
computed once by :func:`~knowledge_distill_util.topk_cache.cache_teacher_logits` (resumable; refused for
another teacher or corpus) and the soft term becomes
:func:`~knowledge_distill_util.sparse_losses.sparse_kl_div` (``missing="zero"``, the same ``T^2`` and mean
over ``M``) of the student's logits against the cached top-k; the teacher then runs only for ``h_T`` when
``alpha_cos`` > 0. With ``top_k`` = V it is the dense soft term (float16 teacher logits). The data order
repeats: the rows are read in one fixed permutation (seeded by ``--seed``) in every epoch, with or without
the cache.

The teacher (``--teacher_model``) needs a masked-LM head (:class:`~knowledge_distill_util.models.BertForMaskedLM`):
a Hugging Face BERT directory with ``cls.predictions.*``, an original snapshot with ``cls-predictions-*``, or a
student written by this recipe. There is no ``auto`` teacher: the shipped all-MiniLM-L6-v2 has no head. The
student has the teacher's width and ``student_num_hidden_layers`` layers; with ``student_init 'teacher'`` (the
default) it starts from the teacher's embeddings, its evenly spaced layers
(:func:`~.recipes.evenly_spaced_layers`: every other layer for half the depth) and its head.

Outputs: ``<model_save_dir>`` holds the student as every recipe saves its model (``model_config.json`` with
``"recipe": "distilbert_mlm"``, ``weights/``: the encoder, which ``kdu-train --recipe kd --student_model DIR``
starts from) and in Hugging Face's ``BertForMaskedLM`` layout (``config.json``, ``model.safetensors`` with
``cls.predictions.*``: ``BertForMaskedLM.from_pretrained(DIR)``). Checkpoints, ``losses.csv`` and
``losses.png`` are in ``<model_save_dir>/checkpoints/distilbert_mlm``; ``<result_dir>/config.json`` and
``<result_dir>/results_distilbert_mlm.json`` (rows, steps, seconds, the last terms). ``--resume`` continues;
one process, eager mode.

The loss and the module the Distiller trains are in :mod:`.masked_lm_objective` (re-exported here); this module
builds the teacher and the student, reads the corpus, runs and saves.
"""
import logging
import os
import shutil
from typing import Dict

import numpy as np
import oneflow.nn as nn

from .._io import atomic_write_file, atomic_write_json
from ..data.features import default_vocab_file
from ..data.pregenerated import PregeneratedCorpus
from ..models import BertForMaskedLM, NoMaskedLMHead
from ..models.artifacts import MODEL_CONFIG, save_trained
from ..models.pretrained import hf_arrays, hf_config
from ..models.mlm import HF_HEAD_NAMES
from .builders import load_student_weights, student_layers
from ..config.schema import ConfigError, TrainConfig
from .general import (_builtin_corpus, _check_resumed_rows, _given_texts, _open_corpus, check_one_process_training,
                      checked_device, teachers_tokenizer, train_with_distiller, write_configs)
from .masked_lm_objective import (MaskedLMDistillation, NoTeacher, TeacherMaskedLogits, masked_lm_distill_loss,
                                  student_adaptor, teacher_adaptor)
from .objectives import DISTILBERT
from .recipes import _BERT_STUDENT, BuildContext, Recipe, StageSpec, evenly_spaced_layers, register_recipe

__all__ = ["MLM_RECIPE", "RESULTS_FILE", "masked_lm_distill_loss", "MaskedLMDistillation", "TeacherMaskedLogits",
           "mlm_teacher", "mlm_student", "save_masked_lm", "run_masked_lm"]

logger = logging.getLogger(__name__)
MLM_RECIPE = "distilbert_mlm"
RESULTS_FILE = "results_distilbert_mlm.json"
#: The built-in corpus's masking rate (DistilBERT's ``mlm_mask_prop``).
MASKED_LM_PROB = 0.15
_NO_AUTO = ("recipe 'distilbert_mlm' has no default teacher: the shipped all-MiniLM-L6-v2 has no masked-LM head; "
            "pass --teacher_model DIR, a BERT with one (a Hugging Face BertForMaskedLM/BertForPreTraining directory "
            "with cls.predictions.*, an original snapshot with cls-predictions-*, or a distilbert_mlm student)")


# ------------------------------------------------------------------------------------------- the models

def mlm_teacher(cfg: TrainConfig):
    """``(teacher BertForMaskedLM, vocabulary file, description)`` of ``--teacher_model`` (module doc)."""
    from ..compat.models import snapshot_directory

    name = cfg.teacher_model
    if name in (None, "", "auto", "minilm"):
        raise ConfigError(_NO_AUTO)
    if name == "scratch" or not os.path.isdir(name):
        raise ConfigError(f"--teacher_model {name!r} is not a directory; {_NO_AUTO.split('; ', 1)[1]}")
    overrides = {"attention_output": cfg.attention_output}
    vocab = cfg.vocab_file
    try:
        if os.path.isfile(os.path.join(name, "config.json")):
            teacher = BertForMaskedLM.from_pretrained(name, **overrides)
        elif snapshot_directory(name):
            teacher = BertForMaskedLM.from_snapshot(snapshot_directory(name), cfg.teacher_num_attention_heads,
                                                    **overrides)
        elif os.path.isfile(os.path.join(name, MODEL_CONFIG)):
            raise NoMaskedLMHead(f"{name} holds a kdu-train model without a masked-LM head (only distilbert_mlm "
                                 f"students keep theirs); pass a BERT with a masked-LM head")
        else:
            raise NoMaskedLMHead(f"{name} is neither a Hugging Face BERT directory nor an original snapshot; pass a "
                                 f"BERT with a masked-LM head")
    except NoMaskedLMHead as error:
        raise ConfigError(f"--teacher_model: {error}") from None
    except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
        raise ConfigError(f"--teacher_model {name} cannot be loaded: {error}") from None
    if not vocab and any(os.path.isfile(os.path.join(name, f)) for f in ("tokenizer.json", "vocab.txt")):
        vocab = name
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad = False
    return teacher, vocab or default_vocab_file(), f"teacher {name}"


def mlm_student(cfg: TrainConfig, teacher: BertForMaskedLM) -> BertForMaskedLM:
    """The student: the teacher's configuration with ``student_num_hidden_layers`` layers and the student
    dropouts; ``student_init 'teacher'``: the teacher's embeddings, evenly spaced layers (or
    ``student_init_layers``) and head; ``--student_model``: a saved student's encoder (and, from a
    ``distilbert_mlm`` student, its head)."""
    from ..models.init import init_student_from_teacher

    tconf, layers = teacher.config, cfg.student_num_hidden_layers
    config = dict(tconf, num_hidden_layers=layers, hidden_dropout_prob=cfg.student_hidden_dropout_prob,
                  attention_probs_dropout_prob=cfg.student_attention_probs_dropout_prob, seq_length=cfg.seq_length,
                  is_student=False)
    student = BertForMaskedLM(**config)
    if cfg.student_init == "teacher":
        chosen = student_layers(cfg, tconf["num_hidden_layers"],
                                default=evenly_spaced_layers(layers, tconf["num_hidden_layers"]))
        init_student_from_teacher(student.bert, teacher.bert, chosen)
        student.cls.load_state_dict(teacher.cls.state_dict())
    if cfg.student_model:
        if os.path.isfile(os.path.join(cfg.student_model, "config.json")) and \
                os.path.isfile(os.path.join(cfg.student_model, MODEL_CONFIG)):
            try:
                saved = BertForMaskedLM.from_pretrained(cfg.student_model, **{"attention_output": cfg.attention_output})
            except ValueError:
                saved = None
            if saved is not None and saved.config["num_hidden_layers"] == layers:
                student.cls.load_state_dict(saved.cls.state_dict())
        load_student_weights(student.bert, cfg.student_model)
    return student


def save_masked_lm(model: BertForMaskedLM, directory: str) -> str:
    """Write ``config.json`` + ``model.safetensors`` in Hugging Face's ``BertForMaskedLM`` layout (the encoder
    under ``bert.*``, the head under ``cls.predictions.*``), each file atomically; returns ``directory``."""
    from safetensors.numpy import save

    arrays = {k: v for k, v in hf_arrays(model.bert, head=True).items() if not k.startswith("classifier.")}
    head = {k: np.ascontiguousarray(v.detach().cpu().numpy()) for k, v in model.cls.named_parameters()}
    arrays.update({HF_HEAD_NAMES[k]: v for k, v in head.items()})
    data = save(arrays, metadata={"format": "pt"})
    config = hf_config(model.bert, head=False)
    config["architectures"] = ["BertForMaskedLM"]
    os.makedirs(directory, exist_ok=True)
    atomic_write_file(os.path.join(directory, "model.safetensors"), lambda stream: stream.write(data),
                      size=len(data))
    atomic_write_json(os.path.join(directory, "config.json"), config)
    return directory


# ------------------------------------------------------------------------------------------------ running

class _FixedOrder:
    """The corpus rows in one seeded permutation (the same in every epoch), each with its ``position``."""

    def __init__(self, corpus: PregeneratedCorpus, seed: int):
        self.corpus = corpus
        self.order = np.random.default_rng(seed).permutation(len(corpus))

    def __len__(self) -> int:
        return len(self.corpus)

    def __getitem__(self, index: int) -> Dict[str, np.ndarray]:
        return dict(self.corpus[int(self.order[index])], position=np.array(index, dtype=np.int64))


def _loader(corpus: PregeneratedCorpus, cfg: TrainConfig):
    from oneflow.utils.data import DataLoader

    return DataLoader(_FixedOrder(corpus, cfg.seed), batch_size=min(cfg.batch_size_per_device, len(corpus)),
                      shuffle=False, collate_fn=PregeneratedCorpus.collate)


def _check(cfg: TrainConfig) -> None:
    check_one_process_training(cfg, MLM_RECIPE, "kd")
    if cfg.use_graph:
        raise ConfigError(f"recipe {MLM_RECIPE!r} runs in eager mode (its masked positions vary per batch); drop "
                          f"--use_graph")
    if not (cfg.logit_weight > 0 or cfg.hard_label_weight > 0 or cfg.hidden_weight > 0):
        raise ConfigError("--logit_weight, --hard_label_weight and --hidden_weight are all 0: nothing to train; give "
                          "one of them a weight > 0")
    if cfg.teacher_logits_cache and os.path.exists(cfg.teacher_logits_cache) and \
            not os.path.isdir(cfg.teacher_logits_cache):
        raise ConfigError(f"--teacher_logits_cache {cfg.teacher_logits_cache} exists and is not a directory; choose "
                          f"a directory for the cache")


def _check_cache(cfg: TrainConfig, teacher) -> None:
    """An existing ``--teacher_logits_cache`` was written for this teacher, ``top_k`` and temperature (checked
    before anything is written; its corpus is checked when it is read)."""
    from ..topk_cache import _read_header, _refuse_other, teacher_fingerprint

    if not cfg.teacher_logits_cache or not os.path.isdir(cfg.teacher_logits_cache):
        return
    path = os.path.abspath(cfg.teacher_logits_cache)
    try:
        header = _read_header(path)
        if header is not None:
            _refuse_other(path, header, cfg.top_k, float(cfg.temperature),
                          teacher_fingerprint(TeacherMaskedLogits(teacher)))
    except ValueError as error:
        raise ConfigError(f"--teacher_logits_cache: {error}") from None


def _teacher_cache(cfg: TrainConfig, teacher, loader):
    """The top-k logits cache of ``--teacher_logits_cache`` (built, resumed or reused), or None."""
    from ..topk_cache import cache_teacher_logits

    if not cfg.teacher_logits_cache:
        return None
    try:
        return cache_teacher_logits(TeacherMaskedLogits(teacher), loader, cfg.teacher_logits_cache, top_k=cfg.top_k,
                                    temperature=cfg.temperature)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--teacher_logits_cache {cfg.teacher_logits_cache}: {error}") from None


def _train(cfg: TrainConfig, model: MaskedLMDistillation, loader, out_dir: str) -> Dict:
    from ..engine import DistillationConfig

    outcome = train_with_distiller(cfg, MLM_RECIPE, NoTeacher().eval(), model, loader, out_dir,
                                   DistillationConfig(logit_weight=0.0, hard_label_weight=0.0),
                                   (teacher_adaptor, student_adaptor), not_logged=("extra",))
    outcome["last"].update({k: round(v.item(), 6) for k, v in getattr(model, "last_terms", {}).items() if k != "loss"})
    return outcome


def _teacher_and_tokenizer(cfg: TrainConfig):
    """``(teacher, vocab file, its description, tokenizer)``, checked: the vocabulary is the teacher's, ``--top_k``
    fits it, and an existing ``--teacher_logits_cache`` was written for this teacher."""
    teacher, vocab, description = mlm_teacher(cfg)
    tokenizer = teachers_tokenizer(vocab, teacher.vocab_size, description)
    if cfg.teacher_logits_cache and cfg.top_k > teacher.vocab_size:
        raise ConfigError(f"--top_k {cfg.top_k} exceeds {description}'s vocabulary of {teacher.vocab_size}; pass "
                          f"--top_k between 1 and {teacher.vocab_size}")
    _check_cache(cfg, teacher)
    return teacher, vocab, description, tokenizer


def _save(cfg: TrainConfig, student: BertForMaskedLM, vocab: str, description: str, corpus, cache,
          outcome: Dict) -> Dict:
    """Write the student (both layouts) and ``<result_dir>/results_distilbert_mlm.json``; returns the results."""
    meta = {"recipe": MLM_RECIPE, "task_name": None, "labels": None, "vocab_file": vocab,
            "seq_length": cfg.seq_length, "origin": f"{MLM_RECIPE} student of {description}"}
    save_masked_lm(student, cfg.model_save_dir)
    save_trained(student.bert, cfg.model_save_dir, meta)
    results = dict(recipe=MLM_RECIPE, corpus_dir=corpus.directory, rows=len(corpus), **outcome,
                   layers=student.config["num_hidden_layers"], hidden_size=student.config["hidden_size"],
                   teacher_logits_cache=cache.path if cache is not None else None, origin=description)
    atomic_write_json(os.path.join(cfg.result_dir, RESULTS_FILE), results)
    logger.info("masked-LM student saved to %s (%d steps, %.1f s, last %s)", cfg.model_save_dir,
                outcome["steps"], outcome["seconds"], outcome["last"])
    return results


def run_masked_lm(cfg: TrainConfig) -> Dict:
    """Check everything, then distil and save the student (module doc); returns the results dict. Bad input
    raises :class:`ConfigError` before anything is written."""
    from .run import _claim_directories, check_run_directory, seed_everything
    from .validation import validate_config

    validate_config(cfg, check_directories=False)
    _check(cfg)
    check_run_directory(cfg)
    seed_everything(cfg.seed)
    device = checked_device(cfg)
    teacher, vocab, description, tokenizer = _teacher_and_tokenizer(cfg)
    student = mlm_student(cfg, teacher)
    corpus = _open_corpus(cfg.corpus_dir, tokenizer, cfg, masked_lm=True) if cfg.corpus_dir else None
    texts = _given_texts(cfg)
    if corpus is not None:
        _check_resumed_rows(cfg, len(corpus))
    locks = _claim_directories(cfg, writer=True)
    try:
        out_dir = os.path.join(cfg.model_save_dir, "checkpoints", MLM_RECIPE)
        if not cfg.resume and os.path.isdir(out_dir):  # --overwrite (check_run_directory refused otherwise)
            shutil.rmtree(out_dir)
        if corpus is None:
            corpus = _open_corpus(_builtin_corpus(cfg, tokenizer, texts, "mlm_corpus", MASKED_LM_PROB), tokenizer,
                                  cfg, masked_lm=True)
            _check_resumed_rows(cfg, len(corpus))
        loader = _loader(corpus, cfg)
        write_configs(cfg, len(corpus))
        teacher.to(device)
        student.to(device)
        cache = _teacher_cache(cfg, teacher, loader)
        logger.info("masked-LM distillation of %s into a %d-layer student on %d instances of %s%s", description,
                    student.config["num_hidden_layers"], len(corpus), corpus.directory,
                    f" (top-{cfg.top_k} logits cached in {cache.path})" if cache is not None else "")
        model = MaskedLMDistillation(student, teacher, cfg, cache, loader.batch_size)
        outcome = _train(cfg, model, loader, out_dir)
        return _save(cfg, student, vocab, description, corpus, cache, outcome)
    finally:
        if corpus is not None:
            corpus.close()
        for lock in locks:
            lock.release()


def _mlm_not_planned(ctx: BuildContext) -> nn.Module:
    raise ConfigError("recipe 'distilbert_mlm' runs itself (kdu-train --recipe distilbert_mlm); it is not built by "
                      "a plan")


register_recipe(Recipe(
    MLM_RECIPE, "DistilBERT masked-LM distillation", _mlm_not_planned, (StageSpec(MLM_RECIPE, DISTILBERT),),
    defaults=dict(_BERT_STUDENT, student_num_hidden_layers=6, student_init="teacher", teacher_model=None,
                  temperature=2.0, logit_weight=5.0, hard_label_weight=2.0, hidden_weight=1.0, learning_rate=5e-4),
    compared_with=None, run=run_masked_lm,
    summary="alpha_ce (logit_weight) * T^2 KL over the vocabulary at the masked positions (fused kernel, or the "
            "top-k --teacher_logits_cache) + alpha_mlm (hard_label_weight) * masked-LM CE + alpha_cos "
            "(hidden_weight) * hidden_cosine, on a pregenerated corpus; teacher with a masked-LM head, student from "
            "every other teacher layer (Sanh et al.)"))
