"""TinyBERT's general distillation (recipe ``tinybert_general``, knowledge_distill_util/training/general.py):
the Distiller's loss is the tinybert recipe's intermediate loss, a general student starts the tinybert
recipe, bad input stops before anything is written, and the three steps run end to end."""
import json

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.data import default_vocab_file, load_tokenizer
from knowledge_distill_util.cli.pregenerate import main as pregenerate_main
from knowledge_distill_util.engine import DistillationConfig, Distiller, TrainingConfig
from knowledge_distill_util.engine.batches import split_batch
from knowledge_distill_util.models.artifacts import save_trained
from knowledge_distill_util.training.builders import load_student_weights
from knowledge_distill_util.training import parse_config
from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training.general import (_builtin_corpus, _given_texts, layer_matches, layers_adaptor,
                                                     run_general)
from knowledge_distill_util.training.attention_objectives import tinybert_intermediate_loss
from knowledge_distill_util.cli.train import main as train_main
from training.conftest import TINY_STUDENT, recipe_args, tiny_bert


def test_layer_matches_are_tinybert_uniform_map_with_the_embeddings_first():
    matches = layer_matches(2, 6)
    assert [(m["layer_S"], m["layer_T"]) for m in matches if m["feature"] == "hidden"] == [(0, 0), (1, 3), (2, 6)]
    assert [(m["layer_S"], m["layer_T"]) for m in matches if m["feature"] == "attention"] == [(0, 2), (1, 5)]


def test_the_distiller_loss_equals_the_tinybert_intermediate_loss(tmp_path):
    teacher, student = tiny_bert(layers=4, seed=0), tiny_bert(layers=2, seed=1)
    teacher.eval()
    student.eval()
    rng = np.random.default_rng(0)
    mask = np.ones((3, 6), np.int64)
    mask[0, 4:] = 0
    batch = {"input_ids": rng.integers(1, 40, (3, 6)), "input_mask": mask, "token_type_ids": np.zeros((3, 6), np.int64)}
    config = DistillationConfig(logit_weight=0.0, hard_label_weight=0.0, intermediate_matches=layer_matches(2, 4))
    distiller = Distiller(teacher, student, config, TrainingConfig(output_dir=str(tmp_path), max_steps=1),
                          adaptor_T=layers_adaptor, adaptor_S=layers_adaptor)
    terms = distiller._step_module()(split_batch(batch, "labels", "cpu"), flow.ones(2))
    inputs = [flow.tensor(batch[k]) for k in ("input_ids", "input_mask", "token_type_ids")]
    _, s_reps, s_atts = student(*inputs)
    with flow.no_grad():
        _, t_reps, t_atts = teacher(*inputs)
    expected = tinybert_intermediate_loss(None, s_reps, t_reps, s_atts, t_atts)["loss"]
    assert abs(terms["loss"].item() - expected.item()) < 1e-5 * max(1.0, expected.item())


def test_a_general_student_gives_everything_but_its_classifier(tmp_path):
    general = tiny_bert(layers=2, seed=3, label_num=2)
    save_trained(general, str(tmp_path / "general"), {"recipe": "tinybert_general", "task_name": None})
    task_student = tiny_bert(layers=2, seed=4, label_num=4)
    classifier = task_student.classifier.weight.numpy().copy()
    load_student_weights(task_student, str(tmp_path / "general"))
    assert np.array_equal(task_student.embeddings.word_embeddings.weight.numpy(),
                          general.embeddings.word_embeddings.weight.numpy())
    assert np.array_equal(task_student.encoder.layer[1].output.dense.weight.numpy(),
                          general.encoder.layer[1].output.dense.weight.numpy())
    assert np.array_equal(task_student.classifier.weight.numpy(), classifier)
    save_trained(general, str(tmp_path / "task"), {"recipe": "kd", "task_name": "x"})
    with pytest.raises(ConfigError, match=r"differs from the configured student in \['label_num'\]"):
        load_student_weights(tiny_bert(layers=2, label_num=4), str(tmp_path / "task"))


def _config(workspace, tag, *flags):
    root = workspace["root"] / tag
    return parse_config(["--recipe", "tinybert_general", "--quick", "--teacher_model", workspace["teacher"],
                         "--model_save_dir", str(root / "model"), "--result_dir", str(root / "results"),
                         *TINY_STUDENT, *flags]), root


@pytest.mark.parametrize("flags, message", [
    (["--corpus_dir", "/nonexistent/corpus"], r"--corpus_dir /nonexistent/corpus is not a directory; pass the "
                                              r"--output_dir of scripts/pregenerate_training_data.py"),
    (["--teacher_model", "scratch"], r"--teacher_model 'scratch' is not a pretrained teacher"),
    (["--do_train", "false"], r"has no evaluation \(its student has no task\)"),
    (["--student_num_hidden_layers", "3"], r"has 2 layers, not a multiple of student_num_hidden_layers=3"),
    (["--data_dir", "/nonexistent/data", "--task_name", "sst-2"], r"the built-in corpus cannot read "
                                                                   r"/nonexistent/data"),
    (["--task_name", "sst-2"], r"--task_name without --data_dir: the built-in corpus reads the training texts"),
])
def test_bad_input_stops_before_anything_is_written(workspace, flags, message):
    cfg, root = _config(workspace, "general_bad", *flags)
    with pytest.raises(ConfigError, match=message):
        run_general(cfg)
    assert not root.exists()


def test_the_builtin_corpus_is_the_training_texts_in_documents(workspace, tmp_path):
    cfg, _ = _config(workspace, "general_builtin", "--data_dir", workspace["data"], "--task_name", workspace["task"],
                     "--result_dir", str(tmp_path))
    directory = _builtin_corpus(cfg, load_tokenizer(default_vocab_file()), _given_texts(cfg))
    text = (tmp_path / "general_corpus" / "corpus.txt").read_text()
    documents = [d for d in text.split("\n\n") if d.strip()]
    assert len(documents) > 2 and max(len(d.splitlines()) for d in documents) == 8
    rows = (tmp_path / "general_corpus" / "epoch_0.json").read_text().splitlines()
    assert directory == str(tmp_path / "general_corpus") and rows
    assert json.loads((tmp_path / "general_corpus" / "epoch_0_metrics.json").read_text())["max_seq_len"] == 32


def test_pregenerate_then_general_then_tinybert_from_the_general_student(workspace, tmp_path):
    corpus = tmp_path / "corpus.txt"
    words = "the team played football while rain fell and the band sang a song about bread".split()
    corpus.write_text("".join(" ".join(words[i:i + 5 + d % 4]) + " .\n" + ("\n" if i % 3 == 2 else "")
                              for d in range(4) for i in range(9)))
    assert pregenerate_main(["--train_corpus", str(corpus), "--output_dir", str(tmp_path / "pregen"),
                             "--do_lower_case", "--max_seq_len", "32", "--epochs_to_generate", "2"]) == 0
    cfg, root = _config(workspace, "general", "--corpus_dir", str(tmp_path / "pregen"), "--max_steps", "2")
    results = run_general(cfg)
    assert results["steps"] == 2 and results["rows"] > 0 and set(results["last"]) >= {"loss", "match0_hidden_mse"}
    model_dir = root / "model"
    meta = json.loads((model_dir / "model_config.json").read_text())
    assert meta["recipe"] == "tinybert_general" and meta["config"]["num_hidden_layers"] == 1
    assert (model_dir / "checkpoints" / "general" / "losses.csv").is_file()
    assert json.loads((root / "results" / "results_general.json").read_text())["steps"] == 2
    assert json.loads((root / "results" / "config.json").read_text())["corpus_dir"] == str(tmp_path / "pregen")
    argv = recipe_args(workspace, "tinybert", "tinybert_from_general") + [
        "--student_model", model_dir, "--max_steps", "1", "--intermediate_distill", "--do_eval", "false"]
    assert train_main([str(a) for a in argv]) == 0  # kdu-train's entry point, in this process (no start-up)
    task_student = json.loads((workspace["root"] / "tinybert_from_general" / "model" / "model_config.json").read_text())
    assert task_student["recipe"] == "tinybert" and task_student["config"]["label_num"] == 4


def test_a_general_student_copies_a_task_teacher_with_its_label_count():
    """student_init 'teacher' from a fine-tuned teacher of 4 labels (kdu-compress --quick gives its tiny teacher):
    the general student takes the teacher's classifier shape (a fixed 2 refused the copy with a traceback)."""
    from knowledge_distill_util.config.schema import TrainConfig
    from knowledge_distill_util.training.general import general_student

    teacher = tiny_bert(layers=2, seed=5, label_num=4)
    cfg = TrainConfig(recipe="tinybert_general", student_hidden_size=8, student_num_attention_heads=2,
                      student_num_hidden_layers=1, student_intermediate_size=16, seq_length=6, attention_output="probs",
                      student_init="teacher", teacher_model="t")
    student = general_student(cfg, teacher)
    assert student.config["label_num"] == 4
    assert np.array_equal(student.encoder.layer[0].output.dense.weight.numpy(),
                          teacher.encoder.layer[0].output.dense.weight.numpy())
