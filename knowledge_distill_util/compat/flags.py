"""The original toolkit's command lines, mapped onto this package's configuration keys.

Each entry point of yejinlei/Dubhe ``model_compress/model_compress/distil`` (``examples/*/task_*.py``,
``theseus/run_classifier.py``) has a script of the same name in ``scripts/`` that calls
:func:`knowledge_distill_util.cli.original.main` with its :data:`SCRIPTS` entry. Every flag the original
defines is accepted with its original default (:data:`FLAGS`: one :class:`Flag` per flag, saying what it
sets); booleans take the original ``--flag='True'`` / ``'False'`` form and the bare ``--flag`` (meaning the
original's ``const`` of that flag: False for ``--aug_train``, ``--serve_for_online``, ``--from_scratch``); no
abbreviation is accepted. In an
evaluation-only run a training-only number given empty (``--num_epochs=``) is ignored (:data:`TRAINING_ONLY`).
The original flags are resolved first, then any of this package's own flags given on the same command line
(``--print_config``, ``--config``, ``--quick``, ``--device``, ``--max_steps``, ``--overwrite`` ...) are
applied over them, exactly as ``kdu-train`` reads them (:func:`original_argv` gives that command line).
This module is longer than ~400 lines because about half of it is the flag table (:data:`FLAGS`,
:data:`SCRIPTS`: one entry per original flag and script), which is read together with the parser built from it.

>>> values, rest, quiet = original_values(SCRIPTS["task_student_kd"], ["--kd_alpha=0.8", "--model=Glue_SST-2",
...                                                                     "--quick"])
>>> values["kd_alpha"], values["results_format"], rest, quiet
(0.8, 'original', ['--quick'], ['model'])
"""
import argparse
import dataclasses
import datetime
import logging
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .._errors import ConfigError
from ..config.schema import TrainConfig

__all__ = ["str2bool", "Flag", "FLAGS", "SCRIPTS", "TRAINING_ONLY", "OriginalScript", "build_original_parser",
           "original_values", "original_argv"]

logger = logging.getLogger(__name__)
_TRUE, _FALSE = ("yes", "true", "t", "y", "1"), ("no", "false", "f", "n", "0")


def str2bool(text: Any) -> bool:
    """The original's ``str2bool`` (quotes around the value, as ``--flag="'True'"`` leaves them, are ignored).

    >>> str2bool("'True'"), str2bool("false"), str2bool(True)
    (True, False, True)
    """
    if isinstance(text, bool):
        return text
    value = str(text).strip().strip("'\"").lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False (or yes/no, 1/0), got {text!r}")


Convert = Callable[[Any], Dict[str, Any]]


def _to(*keys: str, scale: Callable[[Any], Any] = lambda v: v) -> Convert:
    """Set each of ``keys`` to the (scaled) value."""
    return lambda value: {key: scale(value) for key in keys}


def _nothing(value: Any) -> Dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Flag:
    """One original flag: its type and default, and what it sets.

    ``sets`` maps the value to TrainConfig keys (``None``: decided by the script's ``finish`` step, which
    reads several flags together). ``no_effect``: why it is accepted without effect (logged once when
    given). ``maps_to``: the mapping in words, for the migration table. ``const``: a boolean's value when
    given bare (``--flag`` alone), the original's ``nargs='?', const=...`` of that flag: True for
    ``--do_train`` and most, False for ``--aug_train``, ``--serve_for_online`` and ``--from_scratch``.
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    maps_to: str
    sets: Optional[Convert] = None
    no_effect: str = ""
    const: bool = True

    @property
    def is_bool(self) -> bool:
        return self.type is str2bool


def _devices(name: str) -> Convert:
    """``--gpu_num_per_node`` / ``--num_nodes``: values above 1 never get here (the entry point
    :func:`knowledge_distill_util.cli.original.main` restarts the script under OneFlow's launcher and removes
    the flags first); 1 needs nothing."""
    def check(value):
        if value is not None and int(value) > 1:
            raise ConfigError(f"--{name}={value} reached the configuration inside a launched process; start the "
                              f"script itself with --{name} (it restarts under OneFlow's launcher)")
        return {}
    return check


def _dir_or_none(value):
    return value or None


_NO_XLA = "XLA is not part of OneFlow 0.9's eager/nn.Graph runtime used here"
_FLAGS: List[Flag] = [
    # what to run
    Flag("do_train", str2bool, None, "do_train (original default None = no training)",
         lambda v: {"do_train": bool(v)}),
    Flag("do_eval", str2bool, None, "do_eval (original default None = no evaluation)", lambda v: {"do_eval": bool(v)}),
    Flag("model", str, "BERT Pretrain", "accepted, no effect", _nothing,
         "it only names the original's TensorBoard summary"),
    Flag("task_name", str, "CoLA", "task_name", _to("task_name")),
    # devices (the original's InitNodes)
    Flag("gpu_num_per_node", int, 1, "processes per node: > 1 restarts the script under OneFlow's launcher",
         _devices("gpu_num_per_node")),
    Flag("num_nodes", int, 1, "nodes: > 1 restarts the script under OneFlow's launcher", _devices("num_nodes")),
    Flag("node_ips", lambda s: s.split(","), ["192.168.1.13", "192.168.1.14"],
         "the nodes' addresses for OneFlow's launcher (the first is the master)", _nothing,
         "consumed by the launcher start-up before the flags are mapped"),
    Flag("ctrl_port", int, 50051, "accepted, no effect", _nothing, "OneFlow's launcher sets the control port"),
    # optimisation
    Flag("learning_rate", float, 1e-4, "learning_rate (and stage2_learning_rate)",
         _to("learning_rate", "stage2_learning_rate")),
    Flag("weight_decay_rate", float, 0.01, "weight_decay", _to("weight_decay")),
    Flag("warmup_proportion", float, 0.1, "warmup_proportion", _to("warmup_proportion")),
    Flag("use_fp16", str2bool, False, "False: float32; True: not supported (refused)",
         lambda v: (_ for _ in ()).throw(ConfigError(
             "--use_fp16=True is not supported here; training runs in float32 (drop the flag)")) if v else {}),
    Flag("use_xla", str2bool, None, "accepted, no effect", _nothing, _NO_XLA),
    Flag("loss_print_every_n_iter", int, 10, "loss_print_every_n_iter (with --log_dir: a summary.csv row pair and a "
         "log line every n steps of an epoch; every step's losses also go to <result_dir>/<stage>_losses.csv)",
         _to("loss_print_every_n_iter")),
    Flag("model_save_every_n_iter", int, 10000, "checkpoint_every", _to("checkpoint_every")),
    Flag("model_save_dir", str, None, "model_save_dir (original default ./output/model_save-<time>)",
         _to("model_save_dir")),
    Flag("save_last_snapshot", str2bool, False, "save_last_snapshot (<model_save_dir>/snapshot_last_snapshot)",
         _to("save_last_snapshot")),
    Flag("model_load_dir", _dir_or_none, None, "teacher_model (the model fine-tuned: task_teacher, "
         "run_classifier), or the model evaluated with --do_train=False (run_classifier)", None),
    Flag("log_dir", str, "./output", "log_dir when given: <log_dir>/summary.csv as the original's (not written "
         "without the flag; logs go to stderr)", None),
    Flag("do_lower_case", str2bool, True, "accepted, no effect", _nothing,
         "OFRecord parts are tokenised already (scripts/glue_to_ofrecord.py has --do_lower_case)"),
    Flag("seq_length", int, 512, "seq_length (Distilled-BiLSTM: teacher_seq_length)", None),
    Flag("max_predictions_per_seq", int, 80, "accepted, no effect", _nothing, "a pre-training flag"),
    # the teacher / Theseus BERT (src/config.py)
    Flag("num_hidden_layers", int, 24, "teacher_num_hidden_layers", _to("teacher_num_hidden_layers")),
    Flag("num_attention_heads", int, 16, "teacher_num_attention_heads; teacher_hidden_size = 64 * heads, "
         "teacher_intermediate_size = 4 * hidden (as the original)", None),
    Flag("max_position_embeddings", int, 512, "accepted; a snapshot's own size is used", _nothing,
         "the size is read from the snapshot (a teacher from scratch gets max(512, seq_length))"),
    Flag("type_vocab_size", int, 2, "accepted; a snapshot's own size is used", _nothing,
         "the size is read from the snapshot"),
    Flag("vocab_size", int, 30522, "accepted; a snapshot's own size is used", _nothing,
         "the size is read from the snapshot or the vocabulary"),
    Flag("attention_probs_dropout_prob", float, 0.1, "teacher_attention_probs_dropout_prob",
         _to("teacher_attention_probs_dropout_prob")),
    Flag("hidden_dropout_prob", float, 0.1, "teacher_hidden_dropout_prob", _to("teacher_hidden_dropout_prob")),
    Flag("hidden_size_per_head", int, 64, "accepted, no effect", _nothing,
         "the original computes hidden = 64 * heads (or the *_hidden_size flag) and ignores it"),
    Flag("hidden_size", int, 768, "accepted, no effect", _nothing,
         "the original's teacher and Theseus use 64 * num_attention_heads"),
    # data
    Flag("num_epochs", int, 3, "num_epochs (and stage2_num_epochs)", _to("num_epochs", "stage2_num_epochs")),
    Flag("train_data_dir", _dir_or_none, None, "train_data_dir (OFRecord parts)", _to("train_data_dir")),
    Flag("train_data_prefix", str, "train.of_record-", "train_data_prefix", _to("train_data_prefix")),
    Flag("train_example_num", int, 88614, "train_example_num (read at most this many; all when fewer)",
         _to("train_example_num")),
    Flag("batch_size_per_device", int, 32, "batch_size_per_device", _to("batch_size_per_device")),
    Flag("train_data_part_num", int, 1, "train_data_part_num", _to("train_data_part_num")),
    Flag("eval_data_dir", _dir_or_none, None, "eval_data_dir (OFRecord parts)", _to("eval_data_dir")),
    Flag("eval_data_prefix", str, "eval.of_record-", "eval_data_prefix", _to("eval_data_prefix")),
    Flag("eval_example_num", int, 10833, "eval_example_num (read at most this many; all when fewer)",
         _to("eval_example_num")),
    Flag("eval_batch_size_per_device", int, 64, "eval_batch_size", _to("eval_batch_size")),
    Flag("eval_data_part_num", int, 1, "eval_data_part_num", _to("eval_data_part_num")),
    Flag("result_dir", str, "", "result_dir; empty: model_save_dir (the original's fallback)", None),
    Flag("serve_for_online", str2bool, None, "accepted: the snapshots written never hold optimizer or teacher "
         "variables (what the original's --serve_for_online removes)", _nothing,
         "snapshots written here never hold optimizer or teacher variables", const=False),
    # distillation scripts (examples/*/task_student_*.py)
    Flag("teacher_model", _dir_or_none, None, "teacher_model (this package's directory or an original snapshot)",
         _to("teacher_model")),
    Flag("student_model", _dir_or_none, None, "student_model (start the student from it: this package's directory "
         "or an original snapshot); task_student_kd, task_student_kd_lstm, task_lstm: accepted, no effect (the "
         "original builds their student from scratch and never reads it)", None),
    Flag("total_model", _dir_or_none, None, "accepted, no effect", _nothing,
         "the original merges teacher and student there before loading; they are loaded separately here"),
    Flag("train_data_dir_lstm", _dir_or_none, None, "train_data_dir_lstm (the student's word-level parts)",
         _to("train_data_dir_lstm")),
    Flag("eval_data_dir_lstm", _dir_or_none, None, "eval_data_dir_lstm", _to("eval_data_dir_lstm")),
    Flag("student_num_hidden_layers", int, 24, "student_num_hidden_layers (LSTM: no effect, one layer as the "
         "original)", None),
    Flag("student_num_attention_heads", int, 16, "student_num_attention_heads", _to("student_num_attention_heads")),
    Flag("student_max_position_embeddings", int, 512, "accepted; the teacher's size is used", _nothing,
         "the student shares the teacher's position table size"),
    Flag("student_type_vocab_size", int, 2, "accepted; the teacher's size is used", _nothing,
         "the student shares the teacher's segment vocabulary"),
    Flag("student_vocab_size", int, 30522, "BERT: the teacher's vocabulary; LSTM: student_vocab_size + 1 rows "
         "(as the original)", None),
    Flag("student_attention_probs_dropout_prob", float, 0.1, "student_attention_probs_dropout_prob",
         _to("student_attention_probs_dropout_prob")),
    Flag("student_hidden_dropout_prob", float, 0.1, "student_hidden_dropout_prob (LSTM: no effect, 0.5 as the "
         "original)", None),
    Flag("student_hidden_size_per_head", int, 64, "accepted, no effect", _nothing,
         "the original recomputes it as student_hidden_size / student_num_attention_heads"),
    Flag("student_hidden_size", int, 768, "student_hidden_size (LSTM: lstm_hidden_size = lstm_embedding_size)",
         None),
    Flag("student_seq_length", int, 32, "seq_length of the LSTM student (its *_lstm parts)", None),
    Flag("teacher_num_hidden_layers", int, 24, "teacher_num_hidden_layers", _to("teacher_num_hidden_layers")),
    Flag("teacher_num_attention_heads", int, 16, "teacher_num_attention_heads (a snapshot's head count)",
         _to("teacher_num_attention_heads")),
    Flag("teacher_max_position_embeddings", int, 512, "accepted; the snapshot's own size is used", _nothing,
         "the size is read from the snapshot"),
    Flag("teacher_type_vocab_size", int, 2, "accepted; the snapshot's own size is used", _nothing,
         "the size is read from the snapshot"),
    Flag("teacher_vocab_size", int, 30522, "accepted; the snapshot's own size is used", _nothing,
         "the size is read from the snapshot"),
    Flag("teacher_attention_probs_dropout_prob", float, 0.1, "teacher_attention_probs_dropout_prob",
         _to("teacher_attention_probs_dropout_prob")),
    Flag("teacher_hidden_dropout_prob", float, 0.1, "teacher_hidden_dropout_prob",
         _to("teacher_hidden_dropout_prob")),
    Flag("teacher_hidden_size_per_head", int, 64, "accepted, no effect", _nothing,
         "the original recomputes it as teacher_hidden_size / teacher_num_attention_heads"),
    Flag("teacher_hidden_size", int, 768, "teacher_hidden_size (a snapshot's own size is used)",
         _to("teacher_hidden_size")),
    Flag("kd_alpha", float, None, "kd_alpha (default per script: KD 0.9, Distilled-BiLSTM 0.1, BERT-PKD 0.5)",
         _to("kd_alpha")),
    Flag("kd_beta", float, 10.0, "kd_beta", _to("kd_beta")),
    Flag("from_scratch", str2bool, None, "True: the student is not read from --student_model (bare --from_scratch "
         "means False, as the original's const=False)", None, const=False),
    Flag("temperature", float, 1.0, "temperature", _to("temperature")),
    Flag("aug_train", str2bool, None, "False (also bare --aug_train, the original's const=False): the training "
         "parts; True: aug_train, the parts in --train_data_dir with its folder name's 'train' replaced by "
         "'train_aug' (scripts/data_augmentation.py, then scripts/glue_to_ofrecord.py --aug_train True)",
         lambda v: {"aug_train": bool(v)}, const=False),
    Flag("intermediate_distill", str2bool, None, "TinyBERT: with --pred_distill, stages ['combined'] (one stage: "
         "att + hidden + prediction, as the original); alone, stages ['intermediate']", None),
    Flag("pred_distill", str2bool, None, "TinyBERT: alone, stages ['pred']", None),
    # theseus/config.py
    Flag("replace_prob", float, 0.0, "replace_prob", _to("replace_prob")),
    Flag("compress_ratio", int, 1, "student_num_hidden_layers = num_hidden_layers / compress_ratio", None),
]
#: Every original flag, by name.
FLAGS: Dict[str, Flag] = {flag.name: flag for flag in _FLAGS}

_COMMON = ("do_train", "do_eval", "model", "gpu_num_per_node", "num_nodes", "node_ips", "ctrl_port", "learning_rate",
           "weight_decay_rate", "warmup_proportion", "use_fp16", "use_xla", "loss_print_every_n_iter",
           "model_save_every_n_iter", "model_save_dir", "save_last_snapshot", "model_load_dir", "log_dir",
           "do_lower_case", "seq_length", "max_predictions_per_seq", "num_hidden_layers", "num_attention_heads",
           "max_position_embeddings", "type_vocab_size", "vocab_size", "attention_probs_dropout_prob",
           "hidden_dropout_prob", "hidden_size_per_head", "hidden_size")
_DATA = ("task_name", "num_epochs", "train_data_dir", "train_data_prefix", "train_example_num",
         "batch_size_per_device", "train_data_part_num", "eval_data_dir", "eval_data_prefix", "eval_example_num",
         "eval_batch_size_per_device", "eval_data_part_num", "result_dir")
_STUDENT = tuple(f"student_{k}" for k in ("num_hidden_layers", "num_attention_heads", "max_position_embeddings",
                                          "type_vocab_size", "vocab_size", "attention_probs_dropout_prob",
                                          "hidden_dropout_prob", "hidden_size_per_head", "hidden_size"))
_TEACHER = tuple(f"teacher_{k}" for k in ("num_hidden_layers", "num_attention_heads", "max_position_embeddings",
                                          "type_vocab_size", "vocab_size", "attention_probs_dropout_prob",
                                          "hidden_dropout_prob", "hidden_size_per_head", "hidden_size"))


@dataclass(frozen=True)
class OriginalScript:
    """An original entry point: its recipe, its flags (in :data:`FLAGS`) and its own defaults."""

    name: str
    recipe: str
    flags: Tuple[str, ...]
    defaults: Dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    #: flags this script accepts without effect (flag -> why; logged once when given), besides the
    #: :data:`FLAGS` ``no_effect`` ones
    no_effect: Dict[str, str] = dataclasses.field(default_factory=dict)


_NO_STUDENT = {"student_model": "the original script builds its student from scratch and never reads --student_model "
                                "(whether the folder exists or not)"}
SCRIPTS: Dict[str, OriginalScript] = {s.name: s for s in (
    OriginalScript("task_teacher", "teacher", _COMMON + _DATA + ("serve_for_online",),
                   description="fine-tune the teacher BERT (examples/teacher_bert/task_teacher.py)"),
    OriginalScript("task_student_kd", "kd", _COMMON + _DATA[:1] + ("teacher_model", "student_model", "total_model")
                   + _DATA[1:] + _STUDENT + _TEACHER + ("kd_alpha", "temperature", "aug_train", "serve_for_online"),
                   defaults={"kd_alpha": 0.9}, description="KD (examples/knowledge_distillation/task_student_kd.py)",
                   no_effect=_NO_STUDENT),
    OriginalScript("task_student_kd_lstm", "bilstm",
                   _COMMON + ("task_name", "teacher_model", "student_model", "total_model", "num_epochs",
                              "train_data_dir", "train_data_dir_lstm", "train_data_prefix", "train_example_num",
                              "batch_size_per_device", "train_data_part_num", "eval_data_dir", "eval_data_dir_lstm",
                              "eval_data_prefix", "eval_example_num", "eval_batch_size_per_device",
                              "eval_data_part_num", "result_dir") + _STUDENT + ("student_seq_length",) + _TEACHER
                   + ("kd_alpha", "temperature", "aug_train", "serve_for_online"),
                   defaults={"kd_alpha": 0.1}, no_effect=_NO_STUDENT,
                   description="Distilled-BiLSTM (examples/distilled-bilstm/task_student_kd_lstm.py)"),
    OriginalScript("task_lstm", "lstm",
                   _COMMON + ("task_name", "student_model", "total_model", "num_epochs", "train_data_dir",
                              "train_data_dir_lstm", "train_data_prefix", "train_example_num", "batch_size_per_device",
                              "train_data_part_num", "eval_data_dir", "eval_data_dir_lstm", "eval_data_prefix",
                              "eval_example_num", "eval_batch_size_per_device", "eval_data_part_num", "result_dir")
                   + _STUDENT + ("kd_alpha", "temperature", "aug_train"),
                   defaults={"kd_alpha": 0.1}, no_effect=_NO_STUDENT,
                   description="the LSTM on the labels alone (examples/distilled-bilstm/task_lstm.py)"),
    OriginalScript("task_student_bert-pkd", "bert_pkd", _COMMON + _DATA[:1] + ("teacher_model", "student_model",
                   "total_model") + _DATA[1:] + _STUDENT + _TEACHER
                   + ("kd_alpha", "kd_beta", "from_scratch", "temperature", "aug_train", "serve_for_online"),
                   defaults={"kd_alpha": 0.5}, description="BERT-PKD (examples/bert-pkd/task_student_bert-pkd.py)"),
    OriginalScript("task_student_tinybert", "tinybert", _COMMON + _DATA[:1] + ("teacher_model", "student_model",
                   "total_model") + _DATA[1:] + _STUDENT + _TEACHER
                   + ("intermediate_distill", "pred_distill", "temperature", "aug_train", "serve_for_online"),
                   description="TinyBERT (examples/tinybert/task_student_tinybert.py)"),
    OriginalScript("run_classifier", "theseus",
                   tuple(f for f in _COMMON if f not in ("ctrl_port", "use_xla", "hidden_size")) + ("result_dir",
                   "replace_prob", "compress_ratio") + tuple(f for f in _DATA if f != "result_dir"),
                   defaults={"result_dir": "./result"},
                   description="BERT-of-Theseus, one stage (theseus/run_classifier.py)"),
)}
# task_lstm.py defines no --teacher_model: it trains the LSTM without a teacher (the ``lstm`` recipe).


#: Numeric flags an evaluation-only run (``--do_train`` false) does not use: given empty (``--num_epochs=``, as
#: run_eval_student_bert_pkd.sh and run_eval_theseus.sh pass an unset shell variable) they are ignored there,
#: with a log line; a training run refuses them as the original's argparse does.
TRAINING_ONLY = ("num_epochs", "learning_rate", "weight_decay_rate", "warmup_proportion", "train_example_num",
                 "batch_size_per_device", "train_data_part_num", "loss_print_every_n_iter", "model_save_every_n_iter",
                 "kd_alpha", "kd_beta", "temperature", "replace_prob")


class _Empty:
    """What a :data:`TRAINING_ONLY` flag given empty parses to (resolved by :func:`_resolve_empty`)."""

    def __repr__(self) -> str:
        return "<empty>"


_EMPTY = _Empty()


def _empty_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert``, but an empty (or blank) value gives :data:`_EMPTY`."""
    def parse(text: str) -> Any:
        return _EMPTY if isinstance(text, str) and not text.strip() else convert(text)
    parse.__name__ = getattr(convert, "__name__", "value")  # argparse names the type in its messages
    return parse


def _resolve_empty(script: OriginalScript, a: argparse.Namespace) -> None:
    """Replace every :data:`TRAINING_ONLY` flag given empty by its default in an evaluation-only run (logged);
    in a training run such a flag is an error, as in the original."""
    empty = [name for name in script.flags if getattr(a, name) is _EMPTY]
    for name in empty:
        if a.do_train:
            raise ConfigError(f"--{name}= is empty but this run trains (--do_train true) and uses it; give a value, "
                              f"e.g. --{name}={script.defaults.get(name, FLAGS[name].default)}")
        setattr(a, name, script.defaults.get(name, FLAGS[name].default))
        logger.info("--%s= (empty) is ignored: an evaluation-only run (--do_train false) does not use it", name)


class _ShowDefaults(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def build_original_parser(script: OriginalScript, prog: Optional[str] = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser of the script's original flags (``allow_abbrev=False``, no help flag clash:
    this package's flags are read afterwards from what is left)."""
    parser = argparse.ArgumentParser(prog=prog or f"{script.name}.py", allow_abbrev=False, add_help=False,
                                     exit_on_error=False,
                                     description=script.description, formatter_class=_ShowDefaults)
    for name in script.flags:
        flag = FLAGS[name]
        default = script.defaults.get(name, flag.default)
        extra = {"nargs": "?", "const": flag.const} if flag.is_bool else {}
        convert = _empty_or(flag.type) if name in TRAINING_ONLY else flag.type
        parser.add_argument(f"--{name}", type=convert, default=default, help=flag.maps_to, **extra)
    return parser


def _given(argv: Sequence[str], names: Sequence[str]) -> List[str]:
    """The original flags present on the command line, in order."""
    seen = []
    for arg in argv:
        if arg.startswith("--"):
            name = arg[2:].split("=", 1)[0]
            if name in names and name not in seen:
                seen.append(name)
    return seen


def _finish(script: OriginalScript, a: argparse.Namespace, values: Dict[str, Any]) -> None:
    """The mappings that read several flags together (see the :class:`Flag` ``maps_to`` texts)."""
    recipe = script.recipe
    values["model_save_dir"] = a.model_save_dir or "./output/model_save-" + datetime.datetime.now().strftime(
        "%Y-%m-%d-%H:%M:%S")
    if getattr(a, "result_dir", None) is not None:
        values["result_dir"] = a.result_dir or values["model_save_dir"]
    heads = a.num_attention_heads
    if recipe in ("teacher", "theseus"):
        values.update(teacher_num_attention_heads=heads, teacher_hidden_size=64 * heads,
                      teacher_intermediate_size=4 * 64 * heads, seq_length=a.seq_length)
        if a.model_load_dir:
            values["teacher_model"] = a.model_load_dir
        elif recipe == "teacher":
            values["teacher_model"] = "scratch"
    if recipe == "theseus":
        ratio = a.compress_ratio
        if ratio < 1 or a.num_hidden_layers % ratio:
            raise ConfigError(f"--compress_ratio={ratio} must divide --num_hidden_layers={a.num_hidden_layers} "
                              f"(each successor layer replaces compress_ratio teacher layers)")
        values.update(student_num_hidden_layers=a.num_hidden_layers // ratio, stages=["theseus"])
        if not values.get("do_train") and a.model_load_dir:
            values["student_model"] = a.model_load_dir  # the original evaluates the model it loads
    if recipe in ("kd", "bert_pkd", "tinybert"):
        values.update(seq_length=a.seq_length, student_num_hidden_layers=a.student_num_hidden_layers,
                      student_hidden_size=a.student_hidden_size,
                      student_hidden_dropout_prob=a.student_hidden_dropout_prob,
                      student_intermediate_size=4 * a.student_hidden_size if recipe == "bert_pkd" else 1200,
                      teacher_intermediate_size=4 * a.teacher_hidden_size, student_init="scratch")
        student = None if "student_model" in script.no_effect else a.student_model
        if recipe == "bert_pkd" and a.from_scratch:
            student = None
        values["student_model"] = student
    if recipe == "tinybert":
        both = bool(a.intermediate_distill) and bool(a.pred_distill)
        values["stages"] = (["combined"] if both else ["intermediate"] if a.intermediate_distill else ["pred"]
                            if a.pred_distill else None)
        if values["stages"] is None and values.get("do_train"):
            raise ConfigError("task_student_tinybert.py trains with --intermediate_distill and/or --pred_distill "
                              "(the original's loss is 0 without them); pass --intermediate_distill='True' "
                              "--pred_distill='True' for the original's one stage")
    if recipe in ("bilstm", "lstm"):
        values.update(seq_length=a.student_seq_length if hasattr(a, "student_seq_length") else a.seq_length,
                      lstm_hidden_size=a.student_hidden_size, lstm_embedding_size=a.student_hidden_size,
                      lstm_intermediate_size=400, lstm_num_layers=1, bidirectional=False, lstm_dropout_prob=0.5,
                      student_vocab_size=a.student_vocab_size + 1, student_init="scratch", student_model=None)
        if hasattr(a, "student_seq_length"):
            values["teacher_seq_length"] = a.seq_length
    values["results_format"] = "original"
    values["save_snapshot"] = True


def original_values(script: OriginalScript, argv: Sequence[str], prog: Optional[str] = None
                    ) -> Tuple[Dict[str, Any], List[str], List[str]]:
    """``(TrainConfig values, the rest of argv, the no-effect flags given)`` of an original command line."""
    parser = build_original_parser(script, prog)
    try:
        a, rest = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as error:
        raise ConfigError(" ".join(str(error).split())) from None
    _resolve_empty(script, a)
    values: Dict[str, Any] = {}
    for name in script.flags:
        flag = FLAGS[name]
        if flag.sets is not None:
            value = getattr(a, name)
            if value is not None or name in ("do_train", "do_eval"):  # None: the original does neither
                values.update(flag.sets(value))
    if "learning_rate" in values:
        values.setdefault("stage2_learning_rate", values["learning_rate"])
    _finish(script, a, values)
    if "log_dir" in script.flags and "log_dir" in _given(argv, script.flags):
        values["log_dir"] = a.log_dir  # every original run script passes it; the default ./output is not written
    quiet = [n for n in _given(argv, script.flags) if FLAGS[n].no_effect or n in script.no_effect]
    return values, rest, quiet


def _argv_of(values: Dict[str, Any]) -> List[str]:
    """``--key=value`` arguments for jsonargparse (lists as JSON; None as null)."""
    import json

    out = []
    for key, value in values.items():
        if isinstance(value, (list, dict)) or value is None:
            out.append(f"--{key}={json.dumps(value)}")
        else:
            out.append(f"--{key}={value}")
    return out


def original_argv(argv: Sequence[str], script: str, prog: Optional[str] = None) -> List[str]:
    """This package's command line (``--key=value`` of :func:`original_values`, then the rest of ``argv``) of an
    original command line of ``script`` (a :data:`SCRIPTS` name); the flags given without effect are logged.

    Raises :class:`ConfigError` (one sentence) for a bad value or an unknown flag.
    """
    entry = SCRIPTS[script]
    values, rest, quiet = original_values(entry, argv, prog)
    for name in quiet:
        logger.info("--%s is accepted and has no effect: %s", name, entry.no_effect.get(name) or FLAGS[name].no_effect)
    unknown = [r for r in rest if r.startswith("--") and r[2:].split("=", 1)[0] not in
               {f.name for f in dataclasses.fields(TrainConfig)} | {"config", "quick", "print_config", "help"}]
    if unknown:
        name = unknown[0][2:].split("=", 1)[0]
        raise ConfigError(f"unknown flag --{name} for {entry.name}.py; it accepts the original's flags "
                          f"(--help lists them) and this package's configuration keys")
    return _argv_of(values) + list(rest)
