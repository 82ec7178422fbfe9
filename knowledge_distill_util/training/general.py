"""TinyBERT's general distillation (recipe ``tinybert_general``), run on the :class:`~knowledge_distill_util.engine.Distiller`.

Task-agnostic: the student learns the teacher's attentions and hidden states on a pregenerated text corpus
(``--corpus_dir``, written by ``scripts/pregenerate_training_data.py``), with no labels and no logits, as the
original's general-distillation step and the TinyBERT paper do. The result is a general student that the
task-specific ``tinybert`` recipe starts from (``--student_model``).

The loss is the ``tinybert`` recipe's intermediate stage, ``att_distill + layer_distill``, expressed as the
Distiller's intermediate matches with the same uniform layer mapping (``k = teacher layers / student
layers``): hidden state ``i`` of the student (0: the embedding output, ``i``: layer ``i``'s output, after the
student's ``fit_dense`` when it has one) against the teacher's hidden state ``i k`` with ``hidden_mse``, and
the attention of student layer ``i`` (0-based) against teacher layer ``i k + k - 1`` with ``attention_mse``;
the adaptors return no mask, so both are the element means ``layer_distill``/``att_distill`` take.

Without ``--corpus_dir`` the corpus is built in: the training split's texts of ``--data_dir``/``--task_name``,
or of the default data (the fortunes topics, else the generated task) written to
``<result_dir>/general_corpus/data``: the texts of each label, split into sentences, in documents of 8
consecutive sentences (one a line), pregenerated (one epoch, ``max_seq_len`` = ``--seq_length``) into
``<result_dir>/general_corpus``.

The teacher (``--teacher_model``): ``auto``/``minilm`` (the pretrained all-MiniLM-L6-v2, the default), a
Hugging Face BERT directory, a model written by this package, or an original snapshot; only its encoder is read.

Outputs: ``<model_save_dir>`` holds the general student as every recipe saves its model (``model_config.json``
with ``"recipe": "tinybert_general"``, ``weights/``); the Distiller's checkpoints, ``losses.csv`` and
``losses.png`` are in ``<model_save_dir>/checkpoints/general``; ``<result_dir>/config.json`` holds the resolved
configuration and ``<result_dir>/results_general.json`` the rows, steps, seconds and last loss terms. ``--resume`` continues from the newest checkpoint. One process
(the launcher's data parallelism is not wired here).
"""
import dataclasses
import json
import logging
import math
import os
import shutil
import time
from types import SimpleNamespace
from typing import Dict, List, Optional, Sequence, Tuple

import oneflow as flow
import oneflow.nn as nn

from .._device import resolve_device
from .._io import atomic_write_json, atomic_write_text
from ..data import load_tokenizer, read_examples, get_task, prepare_default_data
from ..data.features import default_vocab_file
from ..data.pregenerate import CorpusError, PregenerateConfig, pregenerate, split_sentences
from ..data.pregenerated import PregeneratedCorpus
from ..models import BertForSequenceClassification, check_student_teacher, minilm_checkpoint_dir
from ..engine import distributed
from ..models.artifacts import MODEL_CONFIG, load_trained, save_trained
from .builders import bert_student, load_student_weights
from ..config.schema import ConfigError, TrainConfig, save_config
from .objectives import TINYBERT_INTERMEDIATE
from .recipes import _BERT_STUDENT, BuildContext, Recipe, StageSpec, register_recipe

__all__ = ["GENERAL_RECIPE", "RESULTS_FILE", "layer_matches", "general_teacher", "general_student",
           "run_general"]

logger = logging.getLogger(__name__)
GENERAL_RECIPE = "tinybert_general"
RESULTS_FILE = "results_general.json"
#: The classifier of a general student is never trained (a task student keeps its own).
GENERAL_LABELS = 2
#: Sentences per document of the built-in corpus (consecutive sentences of one label's texts).
DOCUMENT_TEXTS = 8


def layer_matches(student_layers: int, teacher_layers: int) -> List[Dict]:
    """The Distiller's intermediate matches of TinyBERT's uniform mapping (module doc).

    >>> [(m["feature"], m["layer_S"], m["layer_T"]) for m in layer_matches(2, 4)]
    [('hidden', 0, 0), ('hidden', 1, 2), ('hidden', 2, 4), ('attention', 0, 1), ('attention', 1, 3)]
    """
    k = teacher_layers // student_layers
    hidden = [{"layer_S": i, "layer_T": i * k, "feature": "hidden", "loss": "hidden_mse", "weight": 1.0}
              for i in range(student_layers + 1)]
    attention = [{"layer_S": i, "layer_T": i * k + k - 1, "feature": "attention", "loss": "attention_mse",
                  "weight": 1.0} for i in range(student_layers)]
    return hidden + attention


def layers_adaptor(batch, outputs) -> Dict:
    """``(logits, reps, atts)`` -> hidden states and attentions, no mask (element-mean losses)."""
    return {"hidden": list(outputs[1]), "attention": list(outputs[2])}


def general_teacher(cfg: TrainConfig) -> Tuple[nn.Module, str, str]:
    """``(teacher, vocabulary file, description)``: the frozen teacher of ``--teacher_model`` (module doc)."""
    from ..compat.models import load_snapshot_model, snapshot_directory

    name, overrides = cfg.teacher_model, {"attention_output": cfg.attention_output}
    if name in (None, "", "auto", "minilm"):
        try:
            name = minilm_checkpoint_dir()
        except (ImportError, FileNotFoundError) as error:
            raise ConfigError(f"--teacher_model {cfg.teacher_model or 'auto'}: {error}") from None
    elif name == "scratch" or not os.path.isdir(name):
        raise ConfigError(f"--teacher_model {name!r} is not a pretrained teacher; general distillation needs one: "
                          f"'auto' (all-MiniLM-L6-v2), a Hugging Face BERT directory, or a model written by "
                          f"kdu-train")
    vocab = cfg.vocab_file
    if os.path.isfile(os.path.join(name, MODEL_CONFIG)):
        teacher, meta = load_trained(name, "teacher", **overrides)
        vocab = vocab or meta.get("vocab_file")
        if meta["architecture"] != "bert":
            raise ConfigError(f"teacher {name} is a {meta['architecture']} model; general distillation needs a BERT")
    elif snapshot_directory(name):
        teacher, _ = load_snapshot_model(name, "teacher checkpoint", cfg.teacher_num_attention_heads, **overrides)
    else:
        try:
            teacher = BertForSequenceClassification.from_pretrained(name, label_num=GENERAL_LABELS, **overrides)
        except (ValueError, KeyError, FileNotFoundError) as error:
            raise ConfigError(f"teacher checkpoint {name} cannot be loaded: {error}") from None
        if not vocab and any(os.path.isfile(os.path.join(name, f)) for f in ("tokenizer.json", "vocab.txt")):
            vocab = name
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad = False
    return teacher, vocab or default_vocab_file(), f"teacher {name}"


def general_student(cfg: TrainConfig, teacher: nn.Module) -> BertForSequenceClassification:
    """The student of the ``student_*`` keys, shaped as the ``tinybert`` recipe shapes it for this teacher
    (``fit_dense`` to the teacher's width when the widths differ), optionally from ``--student_model``."""
    # the teacher's label count: its classifier is copied with student_init 'teacher' (and never trained)
    model = bert_student(cfg, SimpleNamespace(num_labels=teacher.config.get("label_num", GENERAL_LABELS)), teacher, True)
    try:
        check_student_teacher(model, teacher, attentions=True)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    if cfg.student_model:
        load_student_weights(model, cfg.student_model)
    return model


def _task_texts(data_dir: str, task: str) -> Tuple[List[List[str]], str]:
    """The training texts of a GLUE-format task as documents: each label's texts split into sentences, in
    documents of :data:`DOCUMENT_TEXTS` consecutive sentences; and a description."""
    try:
        examples = read_examples(data_dir, get_task(task), "train")
    except KeyError as error:
        raise ConfigError(str(error.args[0] if error.args else error)) from None
    except (ValueError, OSError) as error:
        raise ConfigError(f"the built-in corpus cannot read {data_dir}: {error}") from None
    by_label: Dict[str, List[str]] = {}
    for e in examples:
        by_label.setdefault(str(e.label), []).extend(split_sentences(" ".join(t for t in (e.text_a, e.text_b) if t)))
    documents = [group[i:i + DOCUMENT_TEXTS] for group in by_label.values()
                 for i in range(0, len(group), DOCUMENT_TEXTS)]
    return documents, f"the {len(examples)} training texts of task {task!r} in {data_dir}"


def _given_texts(cfg: TrainConfig) -> Optional[Tuple[List[List[str]], str]]:
    """The built-in corpus's documents from ``--data_dir``/``--task_name`` (read before anything is written),
    or None when neither is given (the default data is written later, under the lock)."""
    if bool(cfg.data_dir) != bool(cfg.task_name):
        given, missing = ("--data_dir", "--task_name") if cfg.data_dir else ("--task_name", "--data_dir")
        raise ConfigError(f"{given} without {missing}: the built-in corpus reads the training texts of a task; pass "
                          f"both, neither (the default data) or --corpus_dir")
    return _task_texts(cfg.data_dir, cfg.task_name) if cfg.data_dir and not cfg.corpus_dir else None


def _builtin_corpus(cfg: TrainConfig, tokenizer, texts: Optional[Tuple[List[List[str]], str]] = None,
                    name: str = "general_corpus", masked_lm_prob: float = 0.0) -> str:
    """Pregenerate the built-in corpus into ``<result_dir>/<name>`` (module doc; ``general_corpus``): ``texts``
    from :func:`_given_texts`, else the default data's; returns the directory."""
    work = os.path.join(cfg.result_dir, name)
    if texts is None:
        data_dir = os.path.join(work, "data")
        task, _ = prepare_default_data(data_dir, seed=cfg.seed)
        texts = _task_texts(data_dir, task)
    documents, origin = texts
    corpus = os.path.join(work, "corpus.txt")
    atomic_write_text(corpus, "".join("".join(f"{line}\n" for line in document) + "\n" for document in documents))
    try:
        summary = pregenerate(corpus, work, tokenizer,
                              PregenerateConfig(max_seq_len=cfg.seq_length, epochs_to_generate=1, seed=cfg.seed,
                                                masked_lm_prob=masked_lm_prob))
    except CorpusError as error:
        raise ConfigError(str(error)) from None
    logger.info("built-in corpus: %s -> %d instances in %s", origin, summary["instances"], work)
    return work


def _open_corpus(directory: str, tokenizer, cfg: TrainConfig, masked_lm: bool = False) -> PregeneratedCorpus:
    try:
        return PregeneratedCorpus(directory, tokenizer.get_vocab(), cfg.seq_length, cfg.max_train_examples,
                                  masked_lm)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _loader(corpus: PregeneratedCorpus, cfg: TrainConfig):
    from oneflow.utils.data import DataLoader

    if cfg.batch_size_per_device > len(corpus) and cfg.use_graph:
        raise ConfigError(f"--batch_size_per_device {cfg.batch_size_per_device} exceeds the corpus's {len(corpus)} "
                          f"instances, and --use_graph needs full batches; lower it")
    return DataLoader(corpus, batch_size=min(cfg.batch_size_per_device, len(corpus)), shuffle=True,
                      drop_last=cfg.use_graph, collate_fn=PregeneratedCorpus.collate)


def train_with_distiller(cfg: TrainConfig, recipe: str, teacher, student, loader, out_dir: str, distill,
                         adaptors, not_logged: Sequence[str] = ()) -> Dict:
    """Train ``student`` for ``cfg.max_steps`` (or ``cfg.num_epochs`` over ``loader``) on the ``Distiller``
    with AdamW and a linear warm-up/decay, checkpoints and resume in ``out_dir``; ``adaptors`` is
    ``(adaptor_T, adaptor_S)``. Returns ``{"steps", "seconds", "last"}``: ``last`` holds each logged term's
    last value but ``eval``, ``step``, ``lr`` and ``not_logged``. A configuration the ``Distiller`` refuses
    is a :class:`ConfigError` naming ``recipe``."""
    from ..engine import Distiller, TrainingConfig

    steps = cfg.max_steps or max(1, math.ceil(cfg.num_epochs * len(loader)))
    train = TrainingConfig(output_dir=out_dir, max_steps=steps, seed=cfg.seed, log_every=cfg.loss_print_every_n_iter,
                           checkpoint_every=cfg.checkpoint_every, resume=cfg.resume, learning_rate=cfg.learning_rate,
                           warmup_steps=int(steps * cfg.warmup_proportion), lr_schedule="linear",
                           use_graph=cfg.use_graph)
    try:
        distiller = Distiller(teacher, student, distill, train, adaptor_T=adaptors[0], adaptor_S=adaptors[1])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"recipe {recipe!r}: {error}") from None
    optimizer = flow.optim.AdamW(list(distiller.parameters()), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    began = time.monotonic()
    history = distiller.train(loader, optimizer=optimizer)
    skipped = ("eval", "step", "lr", *not_logged)
    last = {k: round(v[-1], 6) for k, v in history.items() if k not in skipped and v}
    return {"steps": steps, "seconds": round(time.monotonic() - began, 1), "last": last}


def _train(cfg: TrainConfig, teacher, student, loader, out_dir: str) -> Dict:
    from ..engine import DistillationConfig

    distill = DistillationConfig(logit_weight=0.0, hard_label_weight=0.0,
                                 intermediate_matches=layer_matches(student.config["num_hidden_layers"],
                                                                    teacher.config["num_hidden_layers"]))
    return train_with_distiller(cfg, GENERAL_RECIPE, teacher, student, loader, out_dir, distill,
                                (layers_adaptor, layers_adaptor))


def _check_resumed_rows(cfg: TrainConfig, rows: int) -> None:
    """On ``--resume``: the corpus has the instance count the run started with (``run_config.json``)."""
    path = os.path.join(cfg.model_save_dir, "run_config.json")
    if not (cfg.resume and os.path.isfile(path)):
        return
    try:
        with open(path, encoding="utf-8") as stream:
            stored = json.load(stream).get("train_data", {}).get("rows")
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path} is unreadable ({error}); restore it, or start anew with --overwrite") from None
    if stored is not None and stored != rows:
        raise ConfigError(f"--resume would continue the run in {cfg.model_save_dir} on another corpus ({stored} "
                          f"instances -> {rows}); restore the corpus the run started with, or start again with "
                          f"--overwrite")


def check_one_process_training(cfg: TrainConfig, recipe: str, task_recipe: str) -> None:
    """A task-agnostic recipe (``recipe``, its student evaluated by ``task_recipe``) trains in one process:
    :class:`ConfigError` under the launcher or with ``--do_train false``."""
    if distributed.is_distributed():
        raise ConfigError(f"recipe {recipe!r} runs in one process; start it without the launcher "
                          f"(--gpu_num_per_node 1)")
    if not cfg.do_train:
        raise ConfigError(f"recipe {recipe!r} has no evaluation (its student has no task); pass --do_train "
                          f"true, and evaluate the task student of kdu-train --recipe {task_recipe} "
                          f"--student_model DIR")


def checked_device(cfg: TrainConfig):
    """``--device`` resolved, or :class:`ConfigError` naming it."""
    try:
        return resolve_device(cfg.device)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"--device: {error}") from None


def teachers_tokenizer(vocab: str, vocab_size: int, description: str):
    """The tokenizer of ``vocab``, which must have the teacher's ``vocab_size`` tokens (:class:`ConfigError`)."""
    try:
        tokenizer = load_tokenizer(vocab)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from None
    if tokenizer.get_vocab_size() != vocab_size:
        raise ConfigError(f"vocabulary {vocab} has {tokenizer.get_vocab_size()} tokens but {description} has "
                          f"vocab_size {vocab_size}; pass the teacher's --vocab_file")
    return tokenizer


def write_configs(cfg: TrainConfig, rows: int) -> None:
    """``<result_dir>/config.json`` and ``<model_save_dir>/run_config.json`` (with the corpus's instance count,
    which a resume compares: :func:`_check_resumed_rows`)."""
    save_config(cfg, cfg.result_dir)
    atomic_write_text(os.path.join(cfg.model_save_dir, "run_config.json"),
                      json.dumps(dict(dataclasses.asdict(cfg), train_data={"rows": rows}), indent=2, sort_keys=True))


def run_general(cfg: TrainConfig) -> Dict:
    """Check everything, then distil and save the general student (module doc); returns the results dict.
    Bad input raises :class:`ConfigError` before anything is written."""
    from .run import _claim_directories, check_run_directory, seed_everything
    from .validation import validate_config

    validate_config(cfg, check_directories=False)
    check_one_process_training(cfg, GENERAL_RECIPE, "tinybert")
    check_run_directory(cfg)
    seed_everything(cfg.seed)
    device = checked_device(cfg)
    teacher, vocab, description = general_teacher(cfg)
    tokenizer = teachers_tokenizer(vocab, teacher.config["vocab_size"], description)
    student = general_student(cfg, teacher)
    corpus = _open_corpus(cfg.corpus_dir, tokenizer, cfg) if cfg.corpus_dir else None
    loader = _loader(corpus, cfg) if corpus is not None else None
    texts = _given_texts(cfg)
    if corpus is not None:
        _check_resumed_rows(cfg, len(corpus))
    locks = _claim_directories(cfg, writer=True)
    try:
        out_dir = os.path.join(cfg.model_save_dir, "checkpoints", "general")
        if not cfg.resume and os.path.isdir(out_dir):  # --overwrite (check_run_directory refused otherwise)
            shutil.rmtree(out_dir)
        if corpus is None:
            corpus = _open_corpus(_builtin_corpus(cfg, tokenizer, texts), tokenizer, cfg)
            _check_resumed_rows(cfg, len(corpus))
            loader = _loader(corpus, cfg)
        write_configs(cfg, len(corpus))
        logger.info("general distillation of %s into a %d-layer student on %d instances of %s", description,
                    student.config["num_hidden_layers"], len(corpus), corpus.directory)
        teacher.to(device)
        student.to(device)
        outcome = _train(cfg, teacher, student, loader, out_dir)
        save_trained(student, cfg.model_save_dir,
                     {"recipe": GENERAL_RECIPE, "task_name": None, "labels": None, "vocab_file": vocab,
                      "seq_length": cfg.seq_length, "origin": f"{GENERAL_RECIPE} student of {description}"})
        results = dict(recipe=GENERAL_RECIPE, corpus_dir=corpus.directory, rows=len(corpus), **outcome,
                       layers=student.config["num_hidden_layers"], hidden_size=student.config["hidden_size"],
                       origin=description)
        atomic_write_json(os.path.join(cfg.result_dir, RESULTS_FILE), results)
        logger.info("general student saved to %s (%d steps, %.1f s, last %s)", cfg.model_save_dir,
                    outcome["steps"], outcome["seconds"], outcome["last"])
        return results
    finally:
        if corpus is not None:
            corpus.close()
        for lock in locks:
            lock.release()


# Registered here, not in recipes.py: this runner imports the run module and the validation, which look
# recipes up, so the recipes module cannot import it. The package imports this module (training/__init__.py).


def _general_not_planned(ctx: BuildContext) -> nn.Module:
    raise ConfigError("recipe 'tinybert_general' runs itself (kdu-train --recipe tinybert_general); it is not built "
                      "by a plan")


register_recipe(Recipe(
    "tinybert_general", "TinyBERT general distillation", _general_not_planned,
    (StageSpec("general", TINYBERT_INTERMEDIATE),),
    defaults=dict(_BERT_STUDENT, student_num_hidden_layers=3, attention_output="probs", teacher_model="auto",
                  learning_rate=1e-4),  # 3 layers: a divisor of the default teacher's 6 (TinyBERT: 4 of BERT-base's 12)
    compared_with=None, run=run_general,
    summary="task-agnostic att_distill + layer_distill on a pregenerated text corpus (--corpus_dir, default: the "
            "data's texts), no labels; its student starts the tinybert recipe (--student_model) (Jiao et al.)"))
