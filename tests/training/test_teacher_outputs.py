"""``--cache_teacher_outputs``: the teacher's hidden states and attentions computed once per stage
(:mod:`knowledge_distill_util.training.teacher_outputs`): the losses of a cached stage equal the uncached ones
(exactly with float32, to float16 tolerance with float16) over 2 epochs, only the entries the objective reads
are kept, the log says how many MB and where, and the flag's refusals."""
import dataclasses
import logging
import os

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.models import BertForSequenceClassification
from knowledge_distill_util.training import parse_config
from knowledge_distill_util.training import teacher_outputs as cache_module
from knowledge_distill_util.config.schema import ConfigError, TrainConfig
from knowledge_distill_util.training.objectives import DISTILBERT, KD, MINILM, TINYBERT_INTERMEDIATE
from knowledge_distill_util.training.teacher_outputs import CachedLayers, reads_teacher_layers
from knowledge_distill_util.training.trainer import LossStep, TrainerConfig, train_stage
from knowledge_distill_util.training.validation import validate_config
from training.conftest import tiny_features


def _bert(layers, seed, dropout):
    flow.manual_seed(seed)
    return BertForSequenceClassification(vocab_size=40, hidden_size=8, num_hidden_layers=layers, num_attention_heads=2,
                                         intermediate_size=16, hidden_dropout_prob=dropout,
                                         attention_probs_dropout_prob=dropout, label_num=3)


def _losses(tmp_path, objective, mode="off", dtype="float16", tag="run", stop=None, resume=False):
    """Per-step terms of 2 epochs of a stage (20 rows, batch 8: the last batch filled up), a fresh student with
    dropout (a random draw by the cache would change its masks) and a 4-layer teacher; ``stop``: interrupted
    after that step (checkpoints every 2 steps); ``step.teacher_calls``: the teacher's forward passes."""
    teacher = _bert(4, 1, 0.1).eval()
    step = LossStep(_bert(2, 0, 0.1), teacher, objective, TrainConfig())
    step.teacher_calls, forward = [], teacher.forward
    teacher.forward = lambda *a, **k: step.teacher_calls.append(1) or forward(*a, **k)
    seen = []

    def on_step(i, total, terms):
        seen.append(list(terms.values()))
        if i == stop:
            raise KeyboardInterrupt

    flow.manual_seed(7)
    tcfg = TrainerConfig(num_epochs=2, learning_rate=1e-2, batch_size=8, checkpoint_every=2, resume=resume,
                         reseed_dropout=True)
    try:
        train_stage(step, tiny_features(20), tcfg, work_dir=str(tmp_path / tag), stage="s",
                    checkpoint_dir=str(tmp_path / tag / "ck"), progress=False, on_step=on_step,
                    cache_teacher_outputs=mode, cache_teacher_dtype=dtype, cache_dir=str(tmp_path / tag / "model"))
    except KeyboardInterrupt:
        pass
    return np.array(seen), step


#: The entries each objective reads of a 4-layer teacher with a 2-layer student: TinyBERT reps 0, 2, 4 (embeddings
#: first) and atts 1, 3; MiniLM the last layer's scores and values; DistilBERT the logits and the last reps.
READ = {"tinybert_intermediate_loss": ["atts_1", "atts_3", "reps_0", "reps_2", "reps_4"],
        "minilm_loss": ["scores_3", "values_3"], "distilbert_loss": ["logits", "reps_4"]}


#: TinyBERT's, MiniLM's and DistilBERT's stages are DistillationConfigs (the Distiller's cache); their formulas as
#: objectives (the custom recipe's route) exercise this cache's choice of entries.
MINILM_FORMULA = dataclasses.replace(MINILM, config=None)
AS_OBJECTIVES = [dataclasses.replace(TINYBERT_INTERMEDIATE, config=None), MINILM_FORMULA,
                 dataclasses.replace(DISTILBERT, config=None)]


@pytest.mark.parametrize("objective", AS_OBJECTIVES, ids=lambda o: o.name)
def test_cached_losses_equal_the_uncached_ones(tmp_path, objective, caplog):
    plain, _ = _losses(tmp_path, objective, tag="plain")
    exact, _ = _losses(tmp_path, objective, "memory", "float32", tag="f32")
    with caplog.at_level(logging.INFO, logger=cache_module.__name__):
        half, step = _losses(tmp_path, objective, "disk", "float16", tag="f16")
    assert len(plain) == 6  # 3 batches per epoch, 2 epochs
    np.testing.assert_array_equal(exact, plain)
    np.testing.assert_allclose(half, plain, rtol=2e-2, atol=2e-3)
    assert not np.array_equal(half, plain)  # float16 really stored
    assert [e.key for e in step.cache_layout.entries] == ["cached_teacher_" + key for key in READ[objective.name]]
    width = sum(e.size for e in step.cache_layout.entries)  # TinyBERT: 2 x [2, 6, 6] + 3 x [6, 8] = 288
    path = str(tmp_path / "f16" / "model" / "teacher_outputs.s.npy")
    shown = ", ".join(key.replace("_", "[") + "]" if "_" in key else key for key in READ[objective.name])
    assert f"stage s: teacher outputs cached once for 20 rows ({shown})" in caplog.text  # atts[1], ...
    assert f"{20 * width * 2 / 2 ** 20:.1f} MB float16 in {path}; reused every epoch" in caplog.text
    assert not os.path.exists(path)  # deleted when the stage ended
    assert len(step.teacher_calls) == 3  # once per batch of epoch 0 (the first also probed), none in the 6 steps


def test_a_resumed_cached_stage_computes_the_cache_again_and_equals_the_uninterrupted_one(tmp_path):
    full, _ = _losses(tmp_path, MINILM_FORMULA, "disk", "float32", tag="full")
    cut, _ = _losses(tmp_path, MINILM_FORMULA, "disk", "float32", tag="cut", stop=3)   # last checkpoint: step 2
    assert not os.path.exists(tmp_path / "cut" / "model" / "teacher_outputs.s.npy")  # deleted on the way out
    resumed, step = _losses(tmp_path, MINILM_FORMULA, "disk", "float32", tag="cut", resume=True)
    np.testing.assert_array_equal(np.concatenate([cut[:2], resumed]), full)
    assert len(step.teacher_calls) == 3


def test_a_layer_not_cached_is_refused_not_guessed():
    layers = CachedLayers("teacher_reps", 3, {2: flow.zeros(1)})
    assert layers[-1] is layers[2] and len(layers) == 3
    with pytest.raises(RuntimeError, match=r"teacher_reps\[0\] was not cached \(cached: \[2\]\)"):
        layers[0]
    with pytest.raises(IndexError):
        layers[3]


def test_objectives_reading_only_logits_are_left_to_the_logits_cache(tmp_path):
    assert not reads_teacher_layers(KD) and reads_teacher_layers(DISTILBERT)
    _, step = _losses(tmp_path, KD, "memory")
    assert step.cache_layout is None


def test_a_disk_cache_larger_than_the_free_space_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_free_bytes", lambda path: 1000)
    with pytest.raises(ConfigError, match=r"--cache_teacher_outputs disk: the teacher outputs of stage s need 0 MB but "
                                          r".* has 0 MB free; free some space, pass --cache_teacher_outputs memory"):
        _losses(tmp_path, AS_OBJECTIVES[0], "disk")


def test_a_disk_cache_whose_teacher_fails_midway_is_deleted(tmp_path, monkeypatch):
    """The file is created (zero-filled) before the rows are computed: a failure while filling it removes it."""
    teacher, calls = cache_module._teacher, []

    def failing(step, batch):  # the probe's call (batch 1), then batch 2 of epoch 0 fails
        calls.append(1)
        if len(calls) == 2:
            assert os.path.isfile(tmp_path / "run" / "model" / "teacher_outputs.s.npy")
            raise RuntimeError("teacher failed")
        return teacher(step, batch)

    monkeypatch.setattr(cache_module, "_teacher", failing)
    with pytest.raises(RuntimeError, match="teacher failed"):
        _losses(tmp_path, MINILM_FORMULA, "disk", "float32")
    assert os.listdir(tmp_path / "run" / "model") == []


def test_the_flag_is_refused_with_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match="cache_teacher_outputs"):
        parse_config(["--recipe", "tinybert", "--cache_teacher_outputs", "gpu"])
    out = ["--model_save_dir", str(tmp_path / "m"), "--result_dir", str(tmp_path / "r")]
    with pytest.raises(ConfigError, match=r"^--cache_teacher_dtype float32 has no effect with --cache_teacher_outputs "
                                          r"off; pass --cache_teacher_outputs memory, disk or auto"):
        validate_config(parse_config(["--recipe", "minilm", "--cache_teacher_dtype", "float32", *out]))
    with pytest.raises(ConfigError, match=r"key 'cache_teacher_outputs' \('memory'\) belongs to recipe tinybert or "):
        validate_config(parse_config(["--recipe", "kd", "--cache_teacher_outputs", "memory", *out]))
    cfg = validate_config(parse_config(["--recipe", "minilm", "--cache_teacher_outputs", "auto", *out]))
    assert (cfg.cache_teacher_outputs, cfg.cache_teacher_dtype) == ("auto", "float16")
