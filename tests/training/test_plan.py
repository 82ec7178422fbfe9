"""The plan checks, before any training step, that the data's ids fit every model that reads them."""
import numpy as np
import pytest

from knowledge_distill_util.data import Features
from knowledge_distill_util.training.config import ConfigError, TrainConfig
from knowledge_distill_util.training.plan import _check_ids_fit, prepare


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
