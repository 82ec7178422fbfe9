"""Reading a pregenerated corpus (knowledge_distill_util/data/pregenerated.py): rows padded to seq_length,
every instance checked before training, each fault named with its file and line."""
import json

import numpy as np
import pytest

from knowledge_distill_util.data.pregenerated import PregeneratedCorpus

VOCAB = {"[PAD]": 0, "[CLS]": 1, "[SEP]": 2, "[MASK]": 3, "a": 4, "b": 5}


def _write(directory, instances, max_seq_len=8, count=None, epoch=0):
    directory.mkdir(exist_ok=True)
    (directory / f"epoch_{epoch}.json").write_text("".join(json.dumps(i) + "\n" for i in instances))
    (directory / f"epoch_{epoch}_metrics.json").write_text(json.dumps(
        {"num_training_examples": len(instances) if count is None else count, "max_seq_len": max_seq_len}))
    return str(directory)


def _instance(tokens=("[CLS]", "a", "[SEP]", "[MASK]", "[SEP]"), segments=(0, 0, 0, 1, 1)):
    return {"tokens": list(tokens), "segment_ids": list(segments), "is_random_next": False,
            "masked_lm_positions": [3], "masked_lm_labels": ["b"]}


def test_rows_of_every_epoch_are_padded_ids_mask_and_segments(tmp_path):
    directory = _write(tmp_path / "c", [_instance()])
    _write(tmp_path / "c", [_instance(("[CLS]", "b", "[SEP]", "a", "[SEP]"))] * 2, epoch=1)
    corpus = PregeneratedCorpus(directory, VOCAB, 8)
    assert len(corpus) == 3
    row = corpus[0]
    assert row["input_ids"].tolist() == [1, 4, 2, 3, 2, 0, 0, 0]
    assert row["input_mask"].tolist() == [1] * 5 + [0] * 3
    assert row["token_type_ids"].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]
    assert corpus[2]["input_ids"][:2].tolist() == [1, 5]
    batch = PregeneratedCorpus.collate([corpus[0], corpus[1]])
    assert batch["input_ids"].shape == (2, 8) and batch["input_ids"].dtype == np.int64
    assert len(PregeneratedCorpus(directory, VOCAB, 8, max_rows=2)) == 2
    corpus.close()


@pytest.mark.parametrize("instances, kwargs, seq_length, message", [
    ([_instance(("[CLS]", "zz", "[SEP]", "a", "[SEP]"))], {}, 8,
     r"epoch_0.json line 1: token 'zz' is not in the vocabulary \(6 tokens\)"),
    ([_instance()], {"count": 2}, 8, r"epoch_0.json holds 1 instances but .*epoch_0_metrics.json says 2"),
    ([_instance()], {"max_seq_len": 16}, 8, r"pregenerated with max_seq_len 16, longer than --seq_length 8"),
    ([_instance(segments=(0, 0, 0, 1))], {}, 8, r"line 1 needs 'tokens' and 'segment_ids' lists of one length"),
])
def test_faults_are_named_before_training(tmp_path, instances, kwargs, seq_length, message):
    with pytest.raises(ValueError, match=message):
        PregeneratedCorpus(_write(tmp_path / "c", instances, **kwargs), VOCAB, seq_length)


def test_a_directory_without_epochs_names_the_script(tmp_path):
    with pytest.raises(ValueError, match=r"holds no epoch_0.json; write it with scripts/pregenerate_training_data.py"):
        PregeneratedCorpus(str(tmp_path), VOCAB, 8)
    (tmp_path / "epoch_0.json").write_text(json.dumps(_instance()) + "\n")
    with pytest.raises(ValueError, match=r"epoch_0_metrics.json is missing"):
        PregeneratedCorpus(str(tmp_path), VOCAB, 8)


def _masked(positions, labels):
    return dict(_instance(), masked_lm_positions=positions, masked_lm_labels=labels)


def test_masked_lm_rows_hold_the_labels_at_their_positions_and_faults_are_named(tmp_path):
    corpus = PregeneratedCorpus(_write(tmp_path / "c", [_masked([3, 1], ["b", "a"])]), VOCAB, 8, masked_lm=True)
    assert corpus[0]["masked_lm_labels"].tolist() == [-100, 4, -100, 5, -100, -100, -100, -100]
    corpus.close()
    assert "masked_lm_labels" not in PregeneratedCorpus(str(tmp_path / "c"), VOCAB, 8)[0]
    for index, (instance, message) in enumerate([
            (_masked([], []), r"line 1 needs 'masked_lm_positions' and 'masked_lm_labels' lists of one non-zero"),
            (_masked([5], ["a"]), r"line 1: masked_lm_positions must be distinct token indices in \[0, 5\)"),
            (_masked([3], ["zz"]), r"line 1: masked-LM label 'zz' is not in the vocabulary")]):
        with pytest.raises(ValueError, match=message):
            PregeneratedCorpus(_write(tmp_path / f"bad{index}", [instance]), VOCAB, 8, masked_lm=True)
