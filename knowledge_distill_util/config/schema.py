"""One flat, typed training configuration, parsed by jsonargparse.

Every field of :class:`TrainConfig` is a command-line flag of the same name (``--kd_alpha``), which keeps
the original scripts' flag names. Values are resolved in this order, later winning:

1. the field defaults below (the distillation flags take theirs from
   :func:`~knowledge_distill_util.add_distill_args`);
2. the recipe's own defaults (:attr:`Recipe.defaults`: the original run script's settings);
3. the command line, left to right: ``--config FILE`` (YAML or JSON, repeatable), ``--quick`` (the
   :data:`QUICK` preset) and single flags, each overriding what came before it.

``--print_config`` prints the resolved configuration as YAML and exits. A wrong type, an unknown flag
or an unknown key in a file raises :class:`ConfigError` with one sentence. Each field's type carries its
rule (:mod:`.fields`); the parser applies it to flags and files, :func:`~knowledge_distill_util.training.validation.validate_config` to a
configuration built in Python.

The module is longer than 400 lines because :class:`TrainConfig` lists every one of the ~100 keys with its
type, default and help text, the one place the flags, ``--help`` and ``configs/*.yaml`` are made from.

>>> from knowledge_distill_util.training import RECIPES
>>> cfg = parse_config(["--kd_alpha", "0.5", "--seq_length", "16"], recipe="kd", recipes=RECIPES)
>>> cfg.recipe, cfg.kd_alpha, cfg.seq_length, cfg.temperature
('kd', 0.5, 16, 1.0)
"""
import argparse
import dataclasses
import difflib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from .._errors import ConfigError
from ..distill import add_distill_args
from ..engine.launch import FLAG as NPROC_FLAG, HELP as NPROC_HELP
from .fields import (AttentionOutput, DropoutProbability, Epochs, LearningRate, LogLevel, MixingWeight,
                     NonNegativeInteger, NonNegativeNumber, PkdStrategy, PositiveInteger, Probability, ResultsFormat,
                     Seconds, Seed, StudentInit, TeacherCacheDtype, TeacherCacheMode, Temperature,
                     TemperatureSchedule, WarmupProportion, WeightSchedule,
                     optional_inner, wanted)

__all__ = ["TrainConfig", "ConfigError", "QUICK", "known_keys", "check_known_keys", "unknown_key_sentence",
           "build_parser", "parse_config", "save_config", "format_config"]

#: The distillation flags' defaults, read from the one place that defines them (``add_distill_args``).
_DISTILL_DEFAULTS: Dict[str, Any] = vars(add_distill_args(argparse.ArgumentParser()).parse_args([]))


def _key(default, help_text: str):
    return field(default=default, metadata={"help": help_text})


@dataclass
class TrainConfig:
    """Every setting of a training run; each key is also a ``--flag`` of the same name."""

    # what to run
    recipe: str = _key("kd", "registered recipe to run (kdu-train --help lists them)")
    task_name: Optional[str] = _key(None, "GLUE task of --data_dir (sst-2, cola, ...) or the default task")
    data_dir: Optional[str] = _key(None, "GLUE-format TSV directory (train.tsv, dev.tsv)")
    vocab_file: Optional[str] = _key(None, "vocab.txt or tokenizer.json (default: the teacher's, else MiniLM's)")
    teacher_model: Optional[str] = _key(None, "fine-tuned teacher directory; for the teacher recipe: "
                                              "'auto', 'minilm', 'scratch' or a Hugging Face BERT directory")
    student_model: Optional[str] = _key(None, "start the student from this trained model directory")
    teacher_logits: Optional[str] = _key(None, "cache file of the teacher's training-set logits")
    model_save_dir: str = _key("output/model", "where the trained model and checkpoints are written")
    result_dir: str = _key("output/result", "where results, loss logs and the resolved config are written")
    do_train: bool = _key(True, "train")
    do_eval: bool = _key(True, "evaluate on the dev split and write results_eval.json")
    seed: Seed = _key(0, "seed of every random generator")
    device: Optional[str] = _key(None, "cpu, cuda or cuda:N (default: CUDA when present)")
    resume: bool = _key(False, "continue the run in model_save_dir from its newest readable checkpoint")
    overwrite: bool = _key(False, "replace a finished or interrupted run in model_save_dir instead of refusing")
    reseed_dropout: bool = _key(False, "eager mode: seed every dropout module from (seed, step) at each step, so a "
                                       "resume with dropout is exact (other masks than without it)")
    use_graph: bool = _key(False, "train with nn.Graph (static graph)")
    log_level: LogLevel = _key("INFO", "DEBUG, INFO, WARNING or ERROR")
    progress_every: Seconds = _key(30.0, "off a terminal (logs, CI), log the stage, step/total, loss, samples/s "
                                         "and ETA every N seconds (0: never); on a terminal a tqdm bar shows them")
    # optimisation
    num_epochs: Epochs = _key(3.0, "training epochs (of the first stage)")
    batch_size_per_device: PositiveInteger = _key(32, "training batch size")
    eval_batch_size: PositiveInteger = _key(64, "evaluation batch size")
    learning_rate: LearningRate = _key(5e-5, "peak learning rate (of the first stage)")
    weight_decay: NonNegativeNumber = _key(0.01, "AdamW weight decay (not on biases and LayerNorm)")
    warmup_proportion: WarmupProportion = _key(0.1, "share of the steps with a linear warm-up")
    max_steps: NonNegativeInteger = _key(0, "cap on the steps of each stage (0: no cap)")
    seq_length: PositiveInteger = _key(128, "tokens per example")
    max_train_examples: NonNegativeInteger = _key(0, "use only the first N training rows (0: all)")
    aug_train: bool = _key(False, "train on TinyBERT's augmented set: <data_dir>/train_aug.tsv (written by "
                                  "scripts/data_augmentation.py), or with --train_data_dir its train_aug sibling folder")
    max_eval_examples: NonNegativeInteger = _key(0, "use only the first N dev rows (0: all)")
    checkpoint_every: PositiveInteger = _key(100, "steps between checkpoints")
    # distillation (flags registered by knowledge_distill_util.add_distill_args)
    temperature: Temperature = _key(_DISTILL_DEFAULTS["temperature"], "softmax temperature of both logits")
    teacher_temperature: Optional[Temperature] = _key(_DISTILL_DEFAULTS["teacher_temperature"],
                                                      "teacher temperature (overrides temperature)")
    student_temperature: Optional[Temperature] = _key(_DISTILL_DEFAULTS["student_temperature"],
                                                      "student temperature (overrides temperature)")
    kd_alpha: MixingWeight = _key(_DISTILL_DEFAULTS["kd_alpha"], "weight of the soft-label term (see the recipe)")
    kd_beta: NonNegativeNumber = _key(_DISTILL_DEFAULTS["kd_beta"], "weight of the intermediate-layer term")
    intermediate_distill: bool = _key(_DISTILL_DEFAULTS["intermediate_distill"],
                                      "TinyBERT: run only the intermediate stage")
    pred_distill: bool = _key(_DISTILL_DEFAULTS["pred_distill"], "TinyBERT: run only the prediction stage")
    # two-stage recipes (TinyBERT prediction stage, Theseus successor fine-tuning)
    stage2_num_epochs: Epochs = _key(3.0, "epochs of the second stage")
    stage2_learning_rate: LearningRate = _key(5e-5, "peak learning rate of the second stage")
    replace_prob: Probability = _key(0.5, "BERT-of-Theseus: probability of using a successor block")
    num_relation_heads: PositiveInteger = _key(12, "MiniLMv2: relation heads of the query/key/value relations (must "
                                                   "divide the student's and the teacher's hidden sizes)")
    corpus_dir: Optional[str] = _key(None, "tinybert_general, distilbert_mlm: the pregenerated corpus (--output_dir of "
                                           "scripts/pregenerate_training_data.py; default: the built-in corpus, "
                                           "the training texts of --data_dir or of the default data)")
    teacher_logits_cache: Optional[str] = _key(None, "distilbert_mlm: a directory for the teacher's top-k logits "
                                                     "at the masked positions, computed once and read back for a "
                                                     "sparse KL (default: the live teacher, all V logits)")
    top_k: PositiveInteger = _key(20, "distilbert_mlm with teacher_logits_cache: teacher logits kept per masked "
                                      "position")
    cache_teacher_outputs: TeacherCacheMode = _key("off", "recipes reading the teacher's hidden states or "
                                                          "attentions: compute those teacher outputs once per "
                                                          "training row before each stage and reuse them every "
                                                          "epoch, held in 'memory', in a file under "
                                                          "model_save_dir ('disk'), or 'auto' (memory up to 1024 MB)")
    cache_teacher_dtype: TeacherCacheDtype = _key("float16", "cache_teacher_outputs: store the cached hidden states "
                                                             "and attentions as float16 (half the size, the losses "
                                                             "change slightly) or float32 (the losses unchanged)")
    minilm_teacher_layer: int = _key(-1, "MiniLMv2: the teacher layer distilled into the student's last layer "
                                         "(0-based; -1: the last; the paper takes an upper-middle layer of large "
                                         "teachers)")
    # BERT student
    student_num_hidden_layers: PositiveInteger = _key(4, "student layers")
    student_hidden_size: PositiveInteger = _key(312, "student hidden size")
    student_intermediate_size: PositiveInteger = _key(1200, "student feed-forward size")
    student_num_attention_heads: PositiveInteger = _key(12, "student attention heads")
    student_hidden_dropout_prob: DropoutProbability = _key(0.1, "student hidden dropout")
    student_attention_probs_dropout_prob: DropoutProbability = _key(0.1, "student attention dropout")
    student_init: StudentInit = _key("scratch", "'scratch' or 'teacher' (copy the teacher's layers/embeddings)")
    student_init_layers: Optional[List[int]] = _key(None, "teacher layers copied by student_init 'teacher', "
                                                          "e.g. 0,2 or '[0,2]' (YAML: [0, 2])")
    attention_output: AttentionOutput = _key("probs", "attentions the BERTs return: 'probs' or 'scores' (TinyBERT)")
    freeze_word_embeddings: bool = _key(False, "do not train the word embeddings")
    # teacher (fine-tuning, and the from-scratch teacher when no checkpoint exists)
    teacher_num_hidden_layers: PositiveInteger = _key(6, "layers of a teacher trained from scratch")
    teacher_hidden_size: PositiveInteger = _key(256, "hidden size of a teacher trained from scratch")
    teacher_intermediate_size: PositiveInteger = _key(1024, "feed-forward size of a teacher trained from scratch")
    teacher_num_attention_heads: PositiveInteger = _key(4, "attention heads of a teacher trained from scratch")
    teacher_hidden_dropout_prob: DropoutProbability = _key(0.1, "teacher hidden dropout while fine-tuning")
    teacher_attention_probs_dropout_prob: DropoutProbability = _key(0.1, "teacher attention dropout while fine-tuning")
    # (Bi)LSTM student
    lstm_embedding_size: PositiveInteger = _key(300, "LSTM student word-embedding size")
    lstm_hidden_size: PositiveInteger = _key(300, "LSTM hidden size")
    lstm_intermediate_size: PositiveInteger = _key(400, "LSTM student dense layer size")
    lstm_num_layers: PositiveInteger = _key(1, "LSTM layers")
    bidirectional: bool = _key(False, "bidirectional LSTM")
    lstm_dropout_prob: DropoutProbability = _key(0.1, "LSTM student dropout")
    student_vocab_size: Optional[PositiveInteger] = _key(None, "LSTM student vocabulary rows (default: the teacher's "
                                                               "vocabulary)")
    # the original toolkit's OFRecord data, snapshots and results (see compat/flags.py)
    train_data_dir: Optional[str] = _key(None, "OFRecord training parts (the original's glue_ofrecord/<task>/train); "
                                               "with eval_data_dir replaces --data_dir")
    train_data_prefix: str = _key("train.of_record-", "file-name prefix of the training parts")
    train_data_part_num: PositiveInteger = _key(1, "number of training part files")
    train_example_num: NonNegativeInteger = _key(0, "read the first N training records (0: all)")
    eval_data_dir: Optional[str] = _key(None, "OFRecord dev parts (the original's glue_ofrecord/<task>/eval)")
    eval_data_prefix: str = _key("eval.of_record-", "file-name prefix of the dev parts")
    eval_data_part_num: PositiveInteger = _key(1, "number of dev part files")
    eval_example_num: NonNegativeInteger = _key(0, "read the first N dev records (0: all)")
    train_data_dir_lstm: Optional[str] = _key(None, "Distilled-BiLSTM: the student's word-level training parts")
    eval_data_dir_lstm: Optional[str] = _key(None, "Distilled-BiLSTM: the student's word-level dev parts")
    teacher_seq_length: Optional[PositiveInteger] = _key(None, "tokens per example of the teacher's OFRecord parts "
                                                               "when they differ from the student's (Distilled-BiLSTM; "
                                                               "default seq_length)")
    stages: Optional[List[str]] = _key(None, "run only these stages of the recipe, e.g. intermediate,pred or "
                                             "'[pred]' (default: the recipe's choice; tinybert 'combined' is the "
                                             "original's one-stage loss)")
    save_snapshot: bool = _key(False, "also write the model as an original OneFlow snapshot "
                                      "<model_save_dir>/snapshot_best: the best epoch by dev accuracy (CoLA: MCC), "
                                      "evaluated after every epoch, as the original scripts")
    save_last_snapshot: bool = _key(False, "also write <model_save_dir>/snapshot_last_snapshot (the original's name)")
    log_dir: Optional[str] = _key(None, "write <log_dir>/summary.csv, the original's training summary (loss and "
                                        "throughput every loss_print_every_n_iter steps)")
    loss_print_every_n_iter: PositiveInteger = _key(10, "with log_dir: steps of an epoch per summary.csv row pair and "
                                                        "log line")
    results_format: ResultsFormat = _key("kdu", "'kdu' or 'original' (results_eval.json/results_train.json with the "
                                                "original's keys and strings; this package's figures in "
                                                "results_eval_kdu.json)")
    # the recipes of the PyTorch toolkits (distilbert, pkd_patience, multi_teacher_kd, custom) and schedules
    logit_weight: NonNegativeNumber = _key(1.0, "distilbert, distilbert_mlm: weight of the soft-label KL term "
                                                "(DistilBERT's alpha_ce)")
    hidden_weight: NonNegativeNumber = _key(1.0, "distilbert, distilbert_mlm: weight of the last hidden states' cosine "
                                                 "term (alpha_cos)")
    hard_label_weight: NonNegativeNumber = _key(1.0, "distilbert, distilbert_mlm, custom: weight of the cross entropy "
                                                     "with the labels (distilbert_mlm: the masked tokens; DistilBERT's "
                                                     "alpha_mlm)")
    pkd_strategy: PkdStrategy = _key("skip", "pkd_patience: teacher layers matched to the student's intermediate "
                                             "layers: 'skip' (every Lt/Ls-th) or 'last' (the last Ls - 1 before the "
                                             "top)")
    teacher_models: Optional[List[str]] = _key(None, "multi_teacher_kd: the fine-tuned teacher directories, e.g. "
                                                     "'[t1,t2]' (YAML: [t1, t2]); replaces --teacher_model")
    teacher_weights: Optional[List[float]] = _key(None, "multi_teacher_kd: one weight per teacher for the average of "
                                                        "their logits (default: equal weights)")
    logit_terms: Optional[List[Dict[str, Any]]] = _key(
        None, "custom: the logit terms, each {loss: kl_div|soft_cross_entropy, weight, temperature, "
              "temperature_scaling, schedule, temperature_schedule}")
    intermediate_matches: Optional[List[Dict[str, Any]]] = _key(
        None, "custom: the intermediate matches, each {layer_S, layer_T, feature, loss, weight, proj, options} "
              "(TextBrewer's format; -1 is the last layer)")
    temperature_schedule: TemperatureSchedule = _key("constant", "per-row temperatures of the soft-label term: "
                                                                 "'constant', 'flsw' or 'cwsm' (around --temperature)")
    logit_weight_schedule: WeightSchedule = _key("constant", "factor of the soft-label term over the steps: "
                                                             "'constant', 'linear_growth' or 'linear_decay'")
    hidden_weight_schedule: WeightSchedule = _key("constant", "factor of the intermediate (hidden, attention, "
                                                              "relation) terms over the steps: 'constant', "
                                                              "'linear_growth' or 'linear_decay'")


#: What ``--quick`` sets (tiny data, a few steps); model sizes stay as configured.
QUICK: Dict[str, Any] = dict(
    max_train_examples=48, max_eval_examples=32, max_steps=3, num_epochs=1.0, stage2_num_epochs=1.0,
    checkpoint_every=2, batch_size_per_device=8, eval_batch_size=16, seq_length=32,
)

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def known_keys() -> List[str]:
    """Sorted names of every configuration key."""
    return sorted(_FIELDS)


def unknown_key_sentence(name: str, where: str = "") -> str:
    """The one sentence for an unknown configuration key ``name`` (``where``: e.g. `` in c.yaml``), with the
    closest known key."""
    close = difflib.get_close_matches(name, known_keys(), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else "; see --help for the known keys"
    return f"unknown configuration key {name!r}{where}{hint}"


def check_known_keys(keys, where: str = "") -> None:
    """Every name of ``keys`` is a configuration key, else :class:`ConfigError` (:func:`unknown_key_sentence`,
    the first unknown name in sorted order)."""
    unknown = sorted(set(keys) - set(_FIELDS))
    if unknown:
        raise ConfigError(unknown_key_sentence(str(unknown[0]), where))


class _QuickPreset(argparse.Action):
    """``--quick``: set the :data:`QUICK` values at this point of the command line."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        for key, value in QUICK.items():
            namespace[key] = value


class _HelpFormatter(DefaultHelpFormatter):
    """jsonargparse's help layout, keeping the line breaks of the description (the recipe list)."""

    def _fill_text(self, text, width, indent):
        return "".join(indent + line for line in text.splitlines(keepends=True))


def recipe_lines(recipes, current: Optional[str] = None) -> str:
    """One line per recipe of the registry ``recipes`` (the caller's, e.g. :data:`.recipes.RECIPES`: this
    module imports no recipe): ``name  title: summary``; ``current`` is marked with ``*``."""
    names = recipes.names()
    width = max(len(n) for n in names)
    lines = []
    for name in names:
        recipe = recipes.get(name)
        mark = "*" if name == current else " "
        lines.append(f" {mark}{name:<{width}}  {recipe.title}: {recipe.summary}")
    return "\n".join(lines)


def _help_description(description: str, recipe: Optional[str], recipes) -> str:
    """The ``--help`` text above the options: what the command does and every recipe, one line each."""
    head = (description or "Train one registered compression recipe.").rstrip()
    which = (f"Showing recipe {recipe!r} (marked *) and its defaults; the other recipes"
             if recipe else "Recipes (kdu-train --recipe NAME --help shows one recipe's defaults)")
    return f"{head}\n\n{which}:\n{recipe_lines(recipes, recipe)}\n\nEvery recipe takes the options below."


def build_parser(defaults: Optional[Mapping[str, Any]] = None, prog: Optional[str] = None,
                 description: str = "", *, recipes) -> ArgumentParser:
    """A parser with one flag per key, ``--config``, ``--quick`` and ``--print_config``.

    ``defaults`` replace field defaults (a recipe's own settings); unknown keys raise :class:`ConfigError`.
    The help text lists every recipe of the registry ``recipes`` (its ``recipe`` default, if given, is marked).
    """
    defaults = dict(defaults or {})
    check_known_keys(defaults, " in recipe defaults")
    usage = f"{prog or 'kdu-train'} --recipe NAME [--config FILE] [--quick] [--KEY VALUE ...]"
    parser = ArgumentParser(prog=prog,
                            description=_help_description(description, defaults.get("recipe"), recipes),
                            usage=usage, formatter_class=_HelpFormatter, exit_on_error=False, allow_abbrev=False)
    parser.add_argument("--config", action=ActionConfigFile,
                        help="YAML or JSON file of configuration keys (later arguments win)")
    parser.add_argument("--quick", action=_QuickPreset, default=argparse.SUPPRESS, help=f"smoke run: sets {QUICK}")
    parser.add_argument(NPROC_FLAG, default=argparse.SUPPRESS, help=NPROC_HELP)  # read by kdu-train: see parse_config
    for name, spec in _FIELDS.items():
        extra = {"nargs": "?", "const": True} if spec.type is bool else {}
        parser.add_argument(f"--{name}", type=spec.type, default=defaults.get(name, spec.default),
                            help=spec.metadata["help"], **extra)
    return parser


#: List-valued keys -> the accepted forms, shown when a value does not parse.
_LIST_FORMS = {name: ("a comma-separated list of integers such as 0,2 (or '[0,2]'; null for none)"
                      if spec.type == Optional[List[int]] else
                      "a comma-separated list of numbers such as 1,3 (or '[1,3]'; null for none)"
                      if spec.type == Optional[List[float]] else
                      "a comma-separated list of names such as intermediate,pred (or '[pred]'; null for none)")
               for name, spec in _FIELDS.items()
               if spec.type in (Optional[List[int]], Optional[List[str]], Optional[List[float]])}
_OPTIONAL_FORMS = {int: "an integer", float: "a number", str: "a string"}


def _optional_form(annotation) -> str:
    """What a value of ``Optional[T]`` must be: T's rule (:func:`.fields.wanted`) or kind, "or null"."""
    inner, _ = optional_inner(annotation)
    return f"{wanted(inner) or _OPTIONAL_FORMS.get(inner, 'a value of the key type')} or null"


def _comma_lists(argv: Sequence[str]) -> List[str]:
    """``argv`` with each list flag's comma-separated value (``--student_init_layers 0,2``) in the bracketed
    form jsonargparse parses (``[0,2]``); bracketed values, ``null`` and file values stay as they are."""
    out = list(argv)
    for i, arg in enumerate(out):
        name, eq, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name not in _LIST_FORMS:
            continue
        if not eq:
            if i + 1 >= len(out):
                continue
            value = out[i + 1]
        text = value.strip()
        if not text or text.startswith(("[", "-")) or text.lower() in ("null", "none"):
            continue
        bracketed = "[" + ",".join(item.strip() for item in text.split(",")) + "]"
        if eq:
            out[i] = f"--{name}={bracketed}"
        else:
            out[i + 1] = bracketed
    return out


def _given(argv: Sequence[str], name: str) -> Optional[str]:
    """The last value given to ``--name`` on the command line (as typed), or None."""
    found = None
    for i, arg in enumerate(argv):
        if arg == f"--{name}" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
    return found


def _union_sentence(text: str, argv: Sequence[str]) -> Optional[str]:
    """jsonargparse's multi-line 'Does not validate against any of the Union subtypes' error as one sentence
    naming the key, the value (as typed on the command line, when it was) and the accepted form; None for
    another error."""
    match = re.search(r'key "(\w+)": Does not validate against any of the Union subtypes.*Given value: (.*)$', text)
    if not match or match.group(1) not in _FIELDS:
        return None
    name = match.group(1)
    value = _given(argv, name) or match.group(2).strip()
    inner, _ = optional_inner(_FIELDS[name].type)
    if hasattr(inner, "wanted"):  # Optional[a number type of .fields]: that type's own sentence
        try:
            inner(value)
        except ValueError as error:
            return f"--{name} {error}"
    return f"--{name} must be {_LIST_FORMS.get(name) or _optional_form(_FIELDS[name].type)}, got {value!r}"


def _one_sentence(error: BaseException, argv: Sequence[str]) -> str:
    """jsonargparse's (multi-line) message as one sentence, with a close match for unknown names."""
    text = " ".join(str(error).split())
    match = re.search(r"(?:Option|Key) '([^']+)' is not accepted|unrecognized arguments: --?(\S+)", text)
    if match:
        name = (match.group(1) or match.group(2)).split("=")[0].lstrip("-")
        files = _config_files(argv)
        return unknown_key_sentence(name, f" in {', '.join(files)}" if files and match.group(1) else "")
    union = _union_sentence(text, argv)
    if union:
        return union
    typed = re.search(r'Parser key "(\w+)": Expected a <class \'(\w+)\'>\. Got value: (.*)', text)
    if typed:
        return f"--{typed.group(1)} must be a {typed.group(2)}, got {typed.group(3).strip()!r}"
    ruled = re.search(r'Parser key "(\w+)": Not of type \w+: (must be .*)$', text)
    if ruled:  # a number type of .fields: its own sentence
        return f"--{ruled.group(1)} {ruled.group(2)}"
    choice = re.search(r'Parser key "(\w+)": Expected a typing\.Literal\[.*\]\. Got value: (.*)$', text)
    if choice and choice.group(1) in _FIELDS:
        name = choice.group(1)
        value = _given(argv, name) or choice.group(2).strip()
        return f"--{name} must be {wanted(_FIELDS[name].type)}, got {value!r}"
    return text.replace('Parser key "', "key \"").rstrip(".")


def _config_files(argv: Sequence[str]) -> List[str]:
    """The paths given to ``--config`` (both ``--config F`` and ``--config=F``)."""
    files = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"]
    return files + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def _check_config_files(argv: Sequence[str]) -> None:
    """Each ``--config`` file exists and parses as YAML/JSON (a mapping), or one sentence naming it."""
    import yaml

    for path in _config_files(argv):
        if path.lstrip().startswith("{"):
            continue  # an inline configuration string
        if os.path.isdir(path):
            raise ConfigError(f"--config {path!r} is a directory; pass a YAML or JSON file")
        if not os.path.isfile(path):
            raise ConfigError(f"--config {path!r} does not exist; pass an existing YAML or JSON file")
        try:
            with open(path, encoding="utf-8") as stream:
                data = yaml.safe_load(stream)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            detail = " ".join(str(error).split())
            raise ConfigError(f"--config {path} is not valid YAML or JSON ({detail}); fix the file") from None
        if data is None:
            raise ConfigError(f"--config {path} holds no configuration keys (empty, or only comments); write a "
                              f"mapping such as {{\"num_epochs\": 3}} into it or drop --config")
        if not isinstance(data, dict):
            raise ConfigError(f"--config {path} must hold one mapping of configuration keys, got a "
                              f"{type(data).__name__}; fix the file")


def _recipe_of(argv: Sequence[str], recipe: Optional[str]) -> str:
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--recipe")
    given = pre.parse_known_args(list(argv))[0].recipe
    if recipe is not None and given is not None and given != recipe:
        raise ConfigError(f"this entry point runs recipe {recipe!r} but --recipe says {given!r}; drop --recipe "
                          f"or use kdu-train --recipe {given}")
    name = recipe or given or _recipe_in_config_files(argv)
    if name is None and _wants_help(argv):
        return None
    if name is None:
        raise ConfigError("no --recipe given; name one of the registered recipes (kdu-train --help lists them)")
    return name


def _wants_help(argv: Sequence[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv)


def check_recipe_name(name: str, recipes) -> None:
    """``name`` is a recipe of the registry ``recipes``, or :class:`ConfigError` naming the closest name."""
    if name in recipes:
        return
    close = difflib.get_close_matches(str(name), recipes.names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"unknown recipe {name!r}; {hint}registered recipes: "
                      f"{', '.join(recipes.names())} (kdu-train --help describes them)")


def _recipe_in_config_files(argv: Sequence[str]) -> Optional[str]:
    """The ``recipe`` key of the last ``--config`` file that has one (``configs/kd.yaml`` runs without
    ``--recipe``); None when no file names a recipe. The files were checked by :func:`_check_config_files`."""
    import yaml

    found = None
    for path in _config_files(argv):
        if path.lstrip().startswith("{"):
            data = yaml.safe_load(path)
        else:
            with open(path, encoding="utf-8") as stream:
                data = yaml.safe_load(stream)
        if isinstance(data, dict) and isinstance(data.get("recipe"), str):
            found = data["recipe"]
    return found


def parse_config(argv: Sequence[str], recipe: Optional[str] = None, prog: Optional[str] = None,
                 description: str = "", *, recipes) -> TrainConfig:
    """Resolve a :class:`TrainConfig` from ``argv`` for ``recipe`` (or the one named by ``--recipe``), with
    the defaults of that recipe in the registry ``recipes`` (the caller's; this module imports no recipe:
    :func:`knowledge_distill_util.training.parse_config` passes :data:`.recipes.RECIPES`).

    Raises :class:`ConfigError` (one sentence) for an unknown recipe, flag, key or a wrongly typed value.
    """
    argv = list(argv)
    _check_config_files(argv)
    name = _recipe_of(argv, recipe)
    if name is None:  # --help without a recipe: every recipe, one line each, and the options
        build_parser(prog=prog, description=description, recipes=recipes).print_help()
        raise SystemExit(0)
    check_recipe_name(name, recipes)
    parser = build_parser(dict(recipes.get(name).defaults, recipe=name), prog=prog, description=description,
                          recipes=recipes)
    try:
        namespace = parser.parse_args(_comma_lists(argv))
    except argparse.ArgumentError as error:
        raise ConfigError(_one_sentence(error, argv)) from None
    if "nproc" in namespace:  # kdu-train (knowledge_distill_util.cli.main) reads and removes it before this parse
        raise ConfigError(f"{NPROC_FLAG} is read by kdu-train (python -m knowledge_distill_util train) on its command "
                          f"line only, not by this entry point or a --config file; the original scripts take "
                          f"--gpu_num_per_node N")
    values = {key: _plain(namespace[key]) for key in _FIELDS}
    if values["recipe"] != name:
        raise ConfigError(f"this run is recipe {name!r} but the configuration says recipe {values['recipe']!r}; "
                          f"fix the 'recipe' key or use kdu-train --recipe {values['recipe']}")
    return TrainConfig(**values)


def _plain(value):
    """A parsed value of a :mod:`.fields` number type (a subclass of int or float) as a plain int or float,
    so the configuration holds, saves and compares plain values."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return value


def format_config(cfg: TrainConfig) -> str:
    """The configuration as sorted ``key = value`` lines."""
    return "\n".join(f"  {k} = {v!r}" for k, v in sorted(dataclasses.asdict(cfg).items()))


def save_config(cfg: TrainConfig, directory: str, name: str = "config.json") -> str:
    """Write the resolved configuration as JSON into ``directory`` (atomically); returns the file path."""
    from .._io import atomic_write_text

    path = os.path.join(directory, name)
    atomic_write_text(path, json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
    return path
