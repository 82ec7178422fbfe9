"""The plan checks, before any training step, that the data's ids fit every model that reads them."""
import numpy as np
import pytest

from knowledge_distill_util.data import Features
from knowledge_distill_util.config.schema import ConfigError, TrainConfig
from knowledge_distill_util.training.plan import _check_ids_fit, check_masks_fit, prepare


class _Data:
    def __init__(self, train, dev):
        self.train, self.dev = train, dev


def _features(ids, segments):
    ids = np.asarray(ids, np.int64)
    return Features(ids, np.ones_like(ids), np.asarray(segments, np.int64), np.zeros(len(ids), np.int64))


GOOD = _features([[1, 39]], [[0, 1]])


def test_ids_inside_the_tables_pass():
    _check_ids_fit(_Data(GOOD, GOOD), {"vocab_size": 40, "type_vocab_size": 2}, "m")
    _check_ids_fit(_Data(GOOD, GOOD), {"vocab_size": 40}, "an LSTM")  # no segment table: not checked


@pytest.mark.parametrize("train, dev, message", [
    (_features([[1, 40]], [[0, 0]]), GOOD, "the train data holds token id 40 but m has vocab_size 40 (ids 0 to 39)"),
    (GOOD, _features([[-1, 3]], [[0, 0]]), "the dev data holds token id -1 but m has vocab_size 40"),
    (GOOD, _features([[1, 3]], [[0, 2]]), "the dev data holds segment id 2 but m has type_vocab_size 2 (ids 0 to 1)"),
])
def test_ids_outside_a_table_are_refused_naming_part_id_and_table(train, dev, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _check_ids_fit(_Data(train, dev), {"vocab_size": 40, "type_vocab_size": 2}, "m")


def test_prepare_refuses_a_student_vocabulary_smaller_than_the_data(workspace):
    cfg = TrainConfig(recipe="lstm", data_dir=workspace["data"], task_name=workspace["task"], seq_length=16,
                      student_vocab_size=50, lstm_embedding_size=8, lstm_hidden_size=8, lstm_intermediate_size=8,
                      model_save_dir=str(workspace["root"] / "small_vocab"), device="cpu")
    with pytest.raises(ConfigError, match=r"the train data holds token id \d+ but the lstm student has vocab_size"):
        prepare(cfg)


class _Lstm:
    ignore_padding = True


class _Bert:
    pass


def _masked(mask):
    mask = np.asarray(mask, np.int64)
    return Features(np.ones_like(mask), mask, np.zeros_like(mask), np.zeros(len(mask), np.int64))


def test_a_bilstm_mask_with_a_gap_is_refused_once_per_data_set():
    data = _Data(_masked([[1, 1, 0], [1, 0, 1]]), _masked([[1, 0, 0]]))
    with pytest.raises(ConfigError, match=r"^the training data's input_mask row 1 is \[1, 0, 1\] \(padding before or "
                                          r"between tokens, 1 such row\(s\)\); the lstm student reads the valid "
                                          r"tokens first \(1 \.\.\. 1 0 \.\.\. 0\): pad the data on the right$"):
        check_masks_fit(data, _Lstm(), "the lstm student")
    check_masks_fit(data, _Bert(), "the kd student")  # attention masks may have gaps


@pytest.mark.parametrize("model", [_Lstm(), _Bert()], ids=["lstm", "bert"])
def test_mask_values_other_than_0_1_are_refused(model):
    data = _Data(_masked([[1, 1, 0]]), _masked([[1, -3, 0]]))
    with pytest.raises(ConfigError, match=r"^the dev data's input_mask holds -3 at row 0, position 1; a mask holds 1 "
                                          r"\(token\) or 0 \(padding\): convert the data again$"):
        check_masks_fit(data, model, "the student")


def test_a_gap_in_ofrecord_masks_stops_a_bilstm_run_before_any_file(tmp_path):
    """Before: a traceback at the first step, and run_config.json left behind."""
    import os
    import subprocess
    import sys

    from knowledge_distill_util.data import write_ofrecord_parts

    ids = np.array([[101, 7, 102, 0], [101, 8, 9, 102]] * 4)
    mask = np.array([[1, 1, 1, 0], [1, 0, 1, 1]] * 4)
    write_ofrecord_parts(Features(ids, mask, np.zeros_like(ids), np.array([1, 0] * 4)), tmp_path / "train",
                         prefix="train.of_record-")
    write_ofrecord_parts(Features(ids[:2], np.ones_like(ids[:2]), np.zeros_like(ids[:2]), np.array([1, 0])),
                         tmp_path / "eval", prefix="eval.of_record-")
    done = subprocess.run(
        [sys.executable, "-m", "knowledge_distill_util", "train", "--recipe", "lstm", "--quick", "--task_name", "SST-2",
         "--seq_length", "4", "--train_data_dir", str(tmp_path / "train"), "--eval_data_dir", str(tmp_path / "eval"),
         "--bidirectional", "true", "--lstm_embedding_size", "4", "--lstm_hidden_size", "4",
         "--lstm_intermediate_size", "4", "--model_save_dir", str(tmp_path / "m"), "--result_dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=180, env=dict(os.environ, GLOG_minloglevel="3"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "error: the training data's input_mask row 1 is [1, 0, 1, 1] (padding before or between tokens, 4 such " \
           "row(s)); the lstm student reads the valid tokens first" in done.stderr
    assert not os.path.exists(tmp_path / "m" / "run_config.json")
