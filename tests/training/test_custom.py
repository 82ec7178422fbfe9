"""The custom recipe's checks (``training/custom.py``), the recipe-owned keys and the multi-teacher checks: each bad
entry stops before training with one sentence naming the key and the fix."""
import json

import pytest

from knowledge_distill_util.training import parse_config
from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training.custom import check_logit_terms, resolve_matches
from knowledge_distill_util.training.plan import check_teacher_labels
from knowledge_distill_util.training.validation import validate_config

STUDENT = {"num_hidden_layers": 1, "hidden_size": 16, "num_attention_heads": 2}
TEACHER = {"num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 2}


def _match(**entry):
    return dict({"layer_S": -1, "layer_T": -1, "feature": "hidden", "loss": "hidden_mse",
                 "proj": ["linear", 16, 32]}, **entry)


def test_matches_resolve_negative_layers_against_the_models():
    (match,) = resolve_matches([_match()], STUDENT, TEACHER)
    assert (match["layer_S"], match["layer_T"]) == (1, 2)        # hidden: embeddings + layers


@pytest.mark.parametrize("entry, sentence", [
    (_match(loss="hiden_mse"), r"intermediate_matches\[0\]\['loss'\] is 'hiden_mse'; choose one of .*'hidden_mse'"),
    (_match(feature="hiddens"), r"intermediate_matches\[0\]\['feature'\] is 'hiddens'; choose one of 'hidden'"),
    (_match(layer_T=3), r"intermediate_matches\[0\]\['layer_T'\] is 3 but the teacher has 3 of these layers "
                        r"\(0 to 2, -1 the last\); pick a layer of the teacher"),
    (_match(feature="value", layer_S=1), r"\['layer_S'\] is 1 but the student has 1 of these layers"),
    (_match(proj=["conv", 16, 32]), r"\['proj'\] is \['conv', 16, 32\]; write \[linear, 16, 32\]"),
    (_match(proj=["linear", 32, 32]), r"\['proj'\] maps 32 -> 32 but the student's hidden width is 16 and the "
                                      r"teacher's 32; write \[linear, 16, 32\]"),
    (_match(proj=None), r"\(hidden_mse\) compares a student hidden of width 16 with a teacher's of width 32; add "
                        r"proj: \[linear, 16, 32\]"),
    ({"layer_S": 0, "layer_T": 0, "feature": "value", "loss": "relation_kl", "options": {"num_relation_heads": 3}},
     r"\['options'\]\['num_relation_heads'\] 3 does not divide the student's value width 16; pick a divisor of "
     r"both 16 and 32"),
    (_match(weights=2), r"intermediate_matches\[0\] has unknown key\(s\) \['weights'\]"),
])
def test_a_bad_match_is_one_sentence_naming_its_key(entry, sentence):
    with pytest.raises(ConfigError, match=sentence):
        resolve_matches([entry], STUDENT, TEACHER)


@pytest.mark.parametrize("term, sentence", [
    ({"loss": "hidden_mse"}, r"logit_terms\[0\]\['loss'\] is 'hidden_mse'; choose one of 'js_divergence', "
                             r"'kl_div', 'reverse_kl', 'skew_kl', 'skew_reverse_kl', 'soft_cross_entropy', "
                             r"'tv_distance', 'uld_loss'"),
    ({"loss": "kl_div", "schedule": "cosine"}, r"logit_terms\[0\]\['schedule'\] is 'cosine'; choose one of "
                                               r"'constant', 'linear_growth', 'linear_decay'"),
    ({"loss": "kl_div", "temperature": 0}, r"logit_terms\[0\]\['temperature'\] must be a finite number >= 0.0001"),
    ({"weight": 1.0}, r"logit_terms\[0\] names no loss"),
])
def test_a_bad_logit_term_is_one_sentence(term, sentence):
    with pytest.raises(ConfigError, match=sentence):
        check_logit_terms([term], 1.0)


def test_logit_terms_get_their_defaults():
    assert check_logit_terms([{"loss": "kl_div"}], 2.0) == [
        {"loss": "kl_div", "weight": 1.0, "temperature": 2.0, "temperature_scaling": False, "schedule": "constant",
         "temperature_schedule": "constant"}]


def test_a_file_of_another_recipe_is_refused(tmp_path):
    """configs/custom_distilbert.yaml's keys run as recipe distilbert: its intermediate_matches belong to custom."""
    path = tmp_path / "custom_like.yaml"
    path.write_text("intermediate_matches: [{layer_S: 0, layer_T: 0, feature: hidden, loss: hidden_mse}]\n")
    cfg = parse_config(["--recipe", "distilbert", "--config", str(path), "--model_save_dir", str(tmp_path / "m"),
                        "--result_dir", str(tmp_path / "r")])
    with pytest.raises(ConfigError, match=r"key 'intermediate_matches' .* belongs to recipe custom, not 'distilbert', "
                                          r"which would ignore it; run --recipe custom or drop the key"):
        validate_config(cfg, check_directories=False)


@pytest.mark.parametrize("flags, sentence", [
    (["--teacher_models", "a,b", "--teacher_weights", "1"], r"--teacher_weights has 1 entries but --teacher_models "
                                                             r"names 2 teachers; give one weight per teacher"),
    (["--teacher_models", "a", "--teacher_model", "b"], r"drop --teacher_model b"),
    (["--recipe", "kd", "--temperature_schedule", "hot"], r"--temperature_schedule must be one of constant, flsw, cwsm"),
])
def test_multi_teacher_and_schedule_keys_are_checked(tmp_path, flags, sentence):
    argv = ["--recipe", "multi_teacher_kd", *flags, "--model_save_dir", str(tmp_path / "m"), "--result_dir",
            str(tmp_path / "r")]
    with pytest.raises(ConfigError, match=sentence):
        validate_config(parse_config(argv), check_directories=False)


def test_teachers_with_other_labels_are_refused(tmp_path):
    for name, labels in (("t1", ["a", "b"]), ("t2", ["a", "b", "c"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model_config.json").write_text(json.dumps(
            {"architecture": "bert", "config": {}, "labels": labels}))
    with pytest.raises(ConfigError, match=r"--teacher_models: teacher .*t2 has 3 labels \['a', 'b', 'c'\] but teacher "
                                          r".*t1 has 2 \['a', 'b'\]; give teachers fine-tuned on the same task"):
        check_teacher_labels([str(tmp_path / "t1"), str(tmp_path / "t2")])


def _bert(hidden, seed):
    import oneflow as flow

    from knowledge_distill_util.models import BertForSequenceClassification

    flow.manual_seed(seed)
    return BertForSequenceClassification(vocab_size=40, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                         label_num=3, attention_output="scores").eval()


def test_the_custom_minilm_form_gives_minilms_loss():
    """configs/custom_minilm.yaml's matches (relation heads set to the tiny models' 2) on a student of width 8 and a
    teacher of 16: the custom objective's loss equals MiniLM's stage-1 loss on the same batch."""
    import argparse
    import os

    import numpy as np
    import oneflow as flow
    import yaml

    from knowledge_distill_util.training.custom import CUSTOM, CustomStudent
    from knowledge_distill_util.training.objectives import MINILM
    from knowledge_distill_util.training.trainer import LossStep

    path = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "custom_minilm.yaml")
    with open(path, encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    config["intermediate_matches"][1]["options"]["num_relation_heads"] = 2
    student, teacher = _bert(8, 0), _bert(16, 1)
    matches = resolve_matches(config["intermediate_matches"], student.config, teacher.config)
    custom = CustomStudent(student, matches, check_logit_terms(config["logit_terms"], 1.0))
    rng = np.random.default_rng(0)
    ids = flow.tensor(rng.integers(1, 40, (3, 6)))
    mask = flow.tensor(np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]))
    batch = (ids, mask, flow.zeros_like(ids), flow.tensor([0, 1, 2]))
    ours = LossStep(custom, teacher, CUSTOM, argparse.Namespace(hard_label_weight=0.0))(*batch)
    theirs = LossStep(student, teacher, MINILM, argparse.Namespace())(*batch)
    assert float(ours[0]) == float(theirs[0]) > 0 and float(ours[1]) == 0.0   # loss equal; no logit term


def test_a_relation_match_without_its_head_count_names_the_entry():
    from knowledge_distill_util.training.custom import CustomStudent

    entries = [_match(), {"layer_S": 0, "layer_T": 0, "feature": "value", "loss": "relation_kl"}]
    with pytest.raises(ConfigError, match=r"intermediate_matches\[1\]\['options'\] must give num_relation_heads for "
                                          r"relation_kl.*; fix that entry of intermediate_matches"):
        CustomStudent(_bert(16, 0), resolve_matches(entries, STUDENT, TEACHER), [])


def test_multi_teacher_kd_without_teachers_stops_in_the_plan(tmp_path):
    from knowledge_distill_util.training.plan import prepare

    cfg = parse_config(["--recipe", "multi_teacher_kd", "--data_dir", str(tmp_path), "--task_name", "sst-2",
                        "--model_save_dir", str(tmp_path / "m"), "--result_dir", str(tmp_path / "r")])
    with pytest.raises(ConfigError, match=r"recipe 'multi_teacher_kd' needs --teacher_models, the fine-tuned teacher "
                                          r"directories"):
        prepare(cfg)
