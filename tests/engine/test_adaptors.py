"""Adaptors: the defaults for this package's models and plain classifiers, custom adaptors, their errors."""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import (BertForSequenceClassification, Distiller, DistillationConfig,
                                    LSTMStudentForSequenceClassification, TrainingConfig)
from knowledge_distill_util.engine.adaptors import default_adaptor

from .conftest import pair, random_data, tuple_loader


def tiny_bert(layers, seed=0):
    flow.manual_seed(seed)
    return BertForSequenceClassification(vocab_size=40, hidden_size=8, num_hidden_layers=layers, num_attention_heads=2,
                                         intermediate_size=16, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, label_num=3)


def bert_batches(rows=16, length=6, batch=8, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 40, (rows, length))
    mask = np.ones((rows, length), np.int64)
    mask[:, -2:] = 0
    segments, labels = np.zeros((rows, length), np.int64), rng.integers(0, 3, rows)
    return [(ids[i:i + batch], mask[i:i + batch], segments[i:i + batch], labels[i:i + batch])
            for i in range(0, rows, batch)]


def test_the_package_bert_pair_needs_no_adaptor(tmp_path):
    teacher, student = tiny_bert(4), tiny_bert(2, seed=1)
    config = DistillationConfig(hard_label_weight=1.0, intermediate_matches=[
        {"layer_S": 2, "layer_T": 4, "feature": "hidden", "loss": "hidden_mse"},
        {"layer_S": 1, "layer_T": 3, "feature": "attention", "loss": "attention_mse"},
        {"layer_S": "encoder.layer.0", "layer_T": "encoder.layer.1", "feature": "output", "loss": "hidden_cosine"},
    ])
    history = Distiller(teacher, student, config, TrainingConfig(str(tmp_path), max_steps=4)).train(bert_batches())
    assert {"match0_hidden_mse", "match1_attention_mse", "match2_hidden_cosine"} <= set(history)
    assert all(np.isfinite(history["loss"]))


def test_the_default_adaptor_passes_the_mask_of_a_bert_batch():
    teacher = tiny_bert(2)
    ids, mask, segments, _ = [flow.tensor(a) for a in bert_batches()[0]]
    features = default_adaptor((ids, mask, segments, None), teacher(ids, mask, segments))
    assert sorted(features) == ["attention", "hidden", "logits", "mask"] and features["mask"] is mask
    assert len(features["hidden"]) == 3 and len(features["attention"]) == 2
    dict_features = default_adaptor({"input_ids": ids, "attention_mask": mask}, {"logits": ids, "hidden_states": [ids]})
    assert dict_features["mask"] is mask and dict_features["hidden"] == [ids]


def test_the_lstm_student_needs_no_adaptor(tmp_path):
    flow.manual_seed(0)
    student = LSTMStudentForSequenceClassification(vocab_size=40, seq_length=6, hidden_size=8, intermediate_size=8,
                                                   embedding_size=8, label_num=3, hidden_dropout_prob=0.0)
    history = Distiller(tiny_bert(2), student, DistillationConfig(), TrainingConfig(str(tmp_path), max_steps=2)).train(
        bert_batches())
    assert len(history["kl_div"]) == 2


def test_a_custom_adaptor_with_feature_lists_and_extra_losses(tmp_path):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)

    def adaptor_s(batch, outputs):
        hidden = student.body[1](student.body[0](batch[0]))
        return {"logits": outputs, "hidden": [hidden], "losses": {"l2": (hidden ** 2).mean() * 0.0 + 0.5}}

    def adaptor_t(batch, outputs):
        return {"logits": outputs, "hidden": [teacher.body[1](teacher.body[0](batch[0]))]}

    config = DistillationConfig(extra_loss_weight=2.0, intermediate_matches=[
        {"layer_S": 0, "layer_T": 0, "feature": "hidden", "loss": "hidden_mse", "proj": ["linear", 32, 128]}])
    history = Distiller(teacher, student, config, TrainingConfig(str(tmp_path), max_steps=2),
                        adaptor_T=adaptor_t, adaptor_S=adaptor_s).train(tuple_loader(x, y))
    assert history["extra"] == [0.5, 0.5]
    assert history["loss"][0] == pytest.approx(history["kl_div"][0] + history["match0_hidden_mse"][0] + 1.0, rel=1e-5)


@pytest.mark.parametrize("adaptor, error, message", [
    (lambda batch, outputs: outputs, TypeError, "the student adaptor \\(adaptor_S\\) must return a dict"),
    (lambda batch, outputs: {"hidden": [outputs]}, ValueError,
     "the logit loss 'kl_div' needs the student's 'logits', but its adaptor returned only 'hidden'; return "
     "\\{'logits': ...\\} from adaptor_S"),
    (lambda batch, outputs: {"logit": outputs}, ValueError, "returned unknown key\\(s\\) 'logit'"),
])
def test_bad_student_adaptors_fail_before_anything_is_written(tmp_path, adaptor, error, message):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    distiller = Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path / "out"), max_steps=1),
                          adaptor_S=adaptor)
    with pytest.raises(error, match=message):
        distiller.train(tuple_loader(x, y))
    assert not (tmp_path / "out").exists()


def test_an_adaptor_lacking_the_feature_of_a_match_names_it(tmp_path):
    x, y = random_data()
    teacher, student = pair(inputs=8, classes=3)
    config = DistillationConfig(intermediate_matches=[
        {"layer_S": 0, "layer_T": 0, "feature": "hidden", "loss": "hidden_mse", "proj": ["linear", 32, 128]}])
    distiller = Distiller(teacher, student, config, TrainingConfig(str(tmp_path / "out"), max_steps=1))
    with pytest.raises(ValueError, match="intermediate_matches\\[0\\] \\(hidden_mse\\) needs the student's 'hidden', "
                                         "but its adaptor returned only 'logits'"):
        distiller.train(tuple_loader(x, y))
    assert not (tmp_path / "out").exists()


def test_adaptors_must_be_callable():
    teacher, student = pair()
    with pytest.raises(TypeError, match="adaptor_T must be a function adaptor\\(batch, outputs\\) -> dict"):
        Distiller(teacher, student, DistillationConfig(), TrainingConfig("x", max_steps=1), adaptor_T={"logits": 0})


def test_attention_details_of_the_package_bert_are_features():
    """``forward_kwargs`` asking for the scores and the projections: the default adaptor reads the scores as
    ``attention`` and the projections as ``query``, ``key``, ``value`` (MiniLM's features)."""
    teacher = tiny_bert(2)
    ids, mask, segments, _ = [flow.tensor(a) for a in bert_batches()[0]]
    out = teacher(ids, mask, segments, output_attention_scores=True, output_qkv=True)
    features = default_adaptor({"input_ids": ids, "input_mask": mask}, out)
    assert sorted(features) == ["attention", "hidden", "key", "logits", "mask", "query", "value"]
    assert features["attention"] is out["attention_scores"] and features["hidden"] is out["reps"]
    assert [tuple(v.shape) for v in features["value"]] == [(8, 6, 8)] * 2


def test_forward_kwargs_reach_every_model_in_training_only(tmp_path):
    """A model whose forward needs a flag: training passes ``forward_kwargs`` to the student and the teacher;
    evaluation calls the student without them."""
    class Flagged(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = flow.nn.Linear(8, 3)
            self.calls = []

        def forward(self, x, hidden_too=False):
            self.calls.append(hidden_too)
            logits = self.linear(x)
            return {"logits": logits, "hidden_states": [x, logits]} if hidden_too else logits

    flow.manual_seed(0)
    teacher, student = Flagged(), Flagged()
    config = DistillationConfig(forward_kwargs={"hidden_too": True}, intermediate_matches=[
        {"layer_S": -1, "layer_T": -1, "feature": "hidden", "loss": "hidden_mse"}])
    x, y = random_data()
    distiller = Distiller(teacher, student, config, TrainingConfig(str(tmp_path), max_steps=2))
    history = distiller.train(tuple_loader(x, y))
    assert len(history["match0_hidden_mse"]) == 2 and set(teacher.calls) == {True}
    student.calls.clear()
    distiller.evaluate(tuple_loader(x, y))
    assert student.calls and set(student.calls) == {False}


def test_a_model_refusing_the_forward_kwargs_is_one_sentence_naming_them(tmp_path):
    teacher, student = pair()
    x, y = random_data()
    config = DistillationConfig(forward_kwargs={"output_hidden_states": True})
    with pytest.raises(TypeError, match=r"^the student \(\w+\) failed on a batch of .*unexpected keyword argument "
                                        r"'output_hidden_states'; check that the batch fits the student \(shapes, "
                                        r"dtypes, device, argument names\) and that its forward takes "
                                        r"DistillationConfig.forward_kwargs \['output_hidden_states'\]$"):
        Distiller(teacher, student, config, TrainingConfig(str(tmp_path / "out"), max_steps=1)).train(
            tuple_loader(x, y))
    assert not (tmp_path / "out").exists()


def test_dict_outputs_in_hugging_face_style():
    logits = flow.ones(2, 3)
    features = default_adaptor({"features": flow.ones(2, 8)}, {"logits": logits, "hidden_states": None, "loss": 1})
    assert features == {"logits": logits}
    assert default_adaptor((flow.ones(2, 8), flow.ones(2)), (logits, flow.ones(2, 4))) == {"logits": logits}


def test_a_teacher_with_another_number_of_classes_names_both_logits(tmp_path):
    x, y = random_data()
    teacher, _ = pair(inputs=8, classes=4)
    _, student = pair(inputs=8, classes=3)
    distiller = Distiller(teacher, student, DistillationConfig(), TrainingConfig(str(tmp_path / "out"), max_steps=1))
    with pytest.raises(ValueError, match="the logit loss 'kl_div' of the student's logits \\(16, 3\\) and the "
                                         "teacher's \\(16, 4\\): "):
        distiller.train(tuple_loader(x, y))
    assert not (tmp_path / "out").exists()
