"""--aug_train: kdu-train reads <data_dir>/train_aug.tsv, the original's scripts the train_aug OFRecord folder
beside --train_data_dir; a missing augmented set names the command that makes it. End to end: a tiny masked-LM
BERT -> scripts/data_augmentation.py -> scripts/glue_to_ofrecord.py --aug_train True -> task_student_tinybert.py
--aug_train=True --quick, all in this process."""
import importlib.util
import json
import os

import numpy as np
import oneflow as flow
import pytest
from safetensors.numpy import save_file

from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.models.pretrained import hf_arrays, hf_config
from knowledge_distill_util.models.snapshot import save_snapshot
from knowledge_distill_util.cli import original
from knowledge_distill_util.training import parse_config
from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training.plan import load_data

SCRIPTS = os.path.join(os.path.dirname(__file__), "..", "..", "scripts")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "great", "film", "plot",
         "fun", "dull", "story", "a", "very", ".", "awful", "nice", "acting", "music", "boring"]
ROWS = ["the movie was good .\t1", "a very dull plot\t0", "great acting and music\t1", "awful boring story\t0",
        "the film was fun\t1", "bad plot , bad acting\t0"]


def _script(name):
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), os.path.join(SCRIPTS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _task(root):
    task = root / "glue" / "SST-2"
    task.mkdir(parents=True)
    (task / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS) + "\n")
    (task / "dev.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS[:4]) + "\n")
    (root / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return task, str(root / "vocab.txt")


def _masked_lm_dir(directory):
    flow.manual_seed(0)
    encoder = BertForSequenceClassification(vocab_size=len(VOCAB), hidden_size=8, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=16, max_position_embeddings=64)
    rng = np.random.default_rng(0)
    arrays = {k: v for k, v in hf_arrays(encoder).items() if not k.startswith("classifier.")}
    arrays.update({"cls.predictions.transform.dense.weight": rng.standard_normal((8, 8)).astype(np.float32),
                   "cls.predictions.transform.dense.bias": np.zeros(8, np.float32),
                   "cls.predictions.transform.LayerNorm.weight": np.ones(8, np.float32),
                   "cls.predictions.transform.LayerNorm.bias": np.zeros(8, np.float32),
                   "cls.predictions.bias": rng.standard_normal(len(VOCAB)).astype(np.float32)})
    directory.mkdir()
    save_file(arrays, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf_config(encoder, head=False)))
    return str(directory)


def test_kdu_train_reads_train_aug_tsv_or_names_the_command(tmp_path):
    task, vocab = _task(tmp_path)
    argv = ["--recipe", "tinybert", "--data_dir", str(task), "--task_name", "SST-2", "--vocab_file", vocab,
            "--seq_length", "16"]
    with pytest.raises(ConfigError, match=r"--aug_train: .*SST-2/train_aug.tsv does not exist; make it with python "
                                          r"scripts/data_augmentation.py --glue_dir .*SST-2 --task_name SST-2"):
        load_data(parse_config(argv + ["--aug_train"]))
    (task / "train_aug.tsv").write_text("sentence\tlabel\n" + "\n".join(ROWS + ROWS[:3]) + "\n")
    assert len(load_data(parse_config(argv + ["--aug_train"])).train) == 9
    assert len(load_data(parse_config(argv)).train) == 6
    assert len(load_data(parse_config(argv + ["--aug_train", "--do_train", "false"])).dev) == 4  # eval only: no file


def test_original_tinybert_aug_train_end_to_end(tmp_path, capsys):
    task, vocab = _task(tmp_path)
    assert _script("data_augmentation").main([
        f"--model_load_dir={_masked_lm_dir(tmp_path / 'bert')}", f"--vocab_file={vocab}", "--do_lower_case",
        f"--glue_dir={tmp_path / 'glue'}", "--task_name", "SST-2", "--N", "3", "--seq_length=64"]) == 0
    augmented = (task / "train_aug.tsv").read_text().splitlines()
    rows = len(augmented) - 1
    assert rows > len(ROWS) and augmented[1] == ROWS[0]
    out = tmp_path / "glue_ofrecord" / "SST-2"
    convert = _script("glue_to_ofrecord")
    assert convert.main([f"--data_dir={task}", f"--output_dir={out}", f"--vocab_file={vocab}", "--max_seq_length=32",
                         "--do_train", "True", "--do_eval", "True", "--task_name", "SST-2"]) == 0
    flow.manual_seed(0)
    teacher = BertForSequenceClassification(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=32, max_position_embeddings=32)
    snapshot = save_snapshot(teacher, tmp_path / "teacher" / "snapshot_best", scope="teacher")
    argv = ["--do_train='True'", "--do_eval='True'", "--task_name=SST-2", f"--train_data_dir={out / 'train'}",
            f"--eval_data_dir={out / 'eval'}", f"--teacher_model={snapshot}", f"--model_save_dir={tmp_path / 'student'}",
            "--result_dir=", "--intermediate_distill='True'", "--pred_distill='True'", "--aug_train=True",
            "--student_num_hidden_layers=1", "--student_num_attention_heads=2", "--student_hidden_size=16",
            "--teacher_num_attention_heads=2", "--vocab_size", str(len(VOCAB)), "--quick", "--device=cpu"]
    with pytest.raises(ConfigError, match=r"--aug_train: .*SST-2/train_aug does not exist; make it with python "
                                          r"scripts/data_augmentation.py .* python scripts/glue_to_ofrecord.py "
                                          r"--data_dir <GLUE dir>/<task> --output_dir .*SST-2 --aug_train True"):
        load_data(original.parse_original(argv, "task_student_tinybert"))
    assert convert.main([f"--data_dir={task}", f"--output_dir={out}", f"--vocab_file={vocab}", "--max_seq_length=32",
                         "--aug_train", "True", "--task_name", "SST-2"]) == 0
    assert sorted(os.listdir(out)) == ["eval", "train", "train_aug"]
    assert os.listdir(out / "train") == ["train.of_record-0"]  # the plain parts are kept
    capsys.readouterr()
    assert original.main("task_student_tinybert", argv) == 0
    err = capsys.readouterr().err
    assert f"training on the parts in {out / 'train_aug'} (TinyBERT's augmented set)" in err
    assert f"data: sst-2 ({min(rows, 48)} train / 4 dev rows" in err  # --quick: at most 48 rows
    assert json.loads((tmp_path / "student" / "results_eval_kdu.json").read_text())["num_examples"] == 4
