"""Model size fields bounded (issue 16): one sentence instead of a C++ allocate abort; KDU_ALLOW_LARGE_MODELS."""
import pytest

from knowledge_distill_util.models import BertForSequenceClassification, LSTMStudentForSequenceClassification
from knowledge_distill_util.models import _sizes
from knowledge_distill_util.models._sizes import SIZE_LIMITS, check_size

TINY = dict(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=12)


@pytest.mark.parametrize("key", sorted(SIZE_LIMITS))
def test_each_size_is_bounded_and_the_bound_is_accepted(key, monkeypatch):
    monkeypatch.delenv("KDU_ALLOW_LARGE_MODELS", raising=False)
    assert check_size(key, SIZE_LIMITS[key]) == SIZE_LIMITS[key]
    with pytest.raises(ValueError, match=rf"^{key} must be at most {SIZE_LIMITS[key]}, got {SIZE_LIMITS[key] + 1}; "
                                         r"fix the value, or set KDU_ALLOW_LARGE_MODELS=1"):
        check_size(key, SIZE_LIMITS[key] + 1)


def test_the_override_lifts_the_bound_but_not_the_type(monkeypatch):
    monkeypatch.setenv("KDU_ALLOW_LARGE_MODELS", "1")
    assert check_size("max_position_embeddings", 10 ** 6) == 10 ** 6
    with pytest.raises(TypeError, match="must be a positive integer, got True"):
        check_size("hidden_size", True)
    monkeypatch.setenv("KDU_ALLOW_LARGE_MODELS", "maybe")
    with pytest.raises(ValueError, match="environment variable KDU_ALLOW_LARGE_MODELS='maybe' must be 1 or 0"):
        check_size("hidden_size", 10 ** 6)


def test_constructors_refuse_a_position_table_of_1e12(monkeypatch):
    monkeypatch.delenv("KDU_ALLOW_LARGE_MODELS", raising=False)
    with pytest.raises(ValueError, match="^max_position_embeddings must be at most 65536, got 1000000000000"):
        BertForSequenceClassification(max_position_embeddings=10 ** 12, **TINY)
    with pytest.raises(ValueError, match="^vocab_size must be at most 1000000, got 2000000"):
        LSTMStudentForSequenceClassification(vocab_size=2_000_000)


def test_weights_beyond_the_machines_memory_are_refused(monkeypatch):
    monkeypatch.delenv("KDU_ALLOW_LARGE_MODELS", raising=False)
    monkeypatch.setattr(_sizes, "physical_memory", lambda: 1000)  # 1000 bytes: 250 float32 weights
    # (40 + 512 + 2 + 2) * 8 embeddings + 532 one layer + 72 pooler + 18 classifier = 5,070
    with pytest.raises(ValueError, match=r"^the BERT model would have 5,070 parameters \(0\.0 GiB of float32 "
                                         r"weights\), more than this machine's 0\.0 GiB of memory; fix the value"):
        BertForSequenceClassification(**TINY)
    with pytest.raises(ValueError, match=r"^the LSTM model would have [\d,]+ parameters"):
        LSTMStudentForSequenceClassification(vocab_size=40, hidden_size=4, intermediate_size=4, embedding_size=4)
    monkeypatch.setenv("KDU_ALLOW_LARGE_MODELS", "1")
    BertForSequenceClassification(**TINY)


def test_the_parameter_count_is_exact():
    from knowledge_distill_util.models.bert import bert_parameter_count

    for student in (False, True):
        model = BertForSequenceClassification(is_student=student, fit_size=10, label_num=3, **TINY)
        assert bert_parameter_count(model.config) == sum(p.numel() for p in model.parameters())


def test_dropout_stays_in_0_1():
    with pytest.raises(ValueError, match=r"hidden_dropout_prob must be a number in \[0, 1\), got 1.0"):
        BertForSequenceClassification(hidden_dropout_prob=1.0, **TINY)
    with pytest.raises(ValueError, match=r"hidden_dropout_prob must be a number in \[0, 1\), got -0.1"):
        LSTMStudentForSequenceClassification(hidden_dropout_prob=-0.1)
