"""DistilBERT's masked-LM distillation (recipe ``distilbert_mlm``, knowledge_distill_util/training/masked_lm.py):
the loss against a float64 numpy formula, the fused soft term against the plain one, the top-k cache at
k = V against the live teacher, bad input before anything is written, and one end-to-end run."""
import json
import math

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util.cli.pregenerate import main as pregenerate_main
from knowledge_distill_util.models import BertForMaskedLM, BertForSequenceClassification
from knowledge_distill_util.models.pretrained import save_pretrained
from knowledge_distill_util.topk_cache import cache_teacher_logits
from knowledge_distill_util.training import parse_config
from knowledge_distill_util.training.builders import load_student_weights
from knowledge_distill_util.config.schema import ConfigError
from knowledge_distill_util.training.masked_lm import (MaskedLMDistillation, TeacherMaskedLogits,
                                                       masked_lm_distill_loss, mlm_student, run_masked_lm,
                                                       save_masked_lm)
from training.conftest import TINY_STUDENT

MINILM_V = 30522  # the default vocabulary's size


def _tiny_mlm(vocab=40, layers=2, hidden=8, seed=0):
    flow.manual_seed(seed)
    return BertForMaskedLM(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                           intermediate_size=2 * hidden, max_position_embeddings=64, hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)


def _np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_the_loss_is_the_three_terms_of_distilbert():
    rng = np.random.default_rng(0)
    m, h, v, t = 3, 4, 7, 2.0
    head, weight, bias = rng.standard_normal((m, h)), rng.standard_normal((v, h)), rng.standard_normal(v)
    teacher, labels = rng.standard_normal((m, v)) * 3, np.array([1, 6, 0])
    s_hidden, t_hidden = rng.standard_normal((2, 3, h)), rng.standard_normal((2, 3, h))
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    f = lambda x: flow.tensor(x, dtype=flow.float32)  # noqa: E731
    got = masked_lm_distill_loss(f(head), f(weight), f(bias), f(teacher), flow.tensor(labels), f(s_hidden),
                                 f(t_hidden), flow.tensor(mask), alpha_ce=5.0, alpha_mlm=2.0, alpha_cos=1.0,
                                 temperature=t, chunk_size=2)
    z = head @ weight.T + bias
    log_q, log_p = _np_log_softmax(z / t), _np_log_softmax(teacher / t)
    kl = (np.exp(log_p) * (log_p - log_q)).sum() / m * t * t
    ce = -_np_log_softmax(z)[np.arange(m), labels].mean()
    cos = (s_hidden * t_hidden).sum(-1) / np.linalg.norm(s_hidden, axis=-1) / np.linalg.norm(t_hidden, axis=-1)
    cosine = ((1 - cos) * mask).sum() / mask.sum()
    want = {"kl_div": kl, "mlm": ce, "hidden_cosine": cosine, "loss": 5 * kl + 2 * ce + cosine}
    assert set(got) == set(want)
    for name, value in want.items():
        assert math.isclose(got[name].item(), value, rel_tol=1e-5), name


def test_the_fused_soft_term_equals_the_plain_one_with_its_gradients():
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(shape).astype(np.float32) for shape in ((5, 6), (11, 6), (11,), (5, 11))]

    def run(fused):
        head, weight, bias = (flow.tensor(x, requires_grad=True) for x in values[:3])
        hidden = flow.zeros(1, 2, 6)
        loss = masked_lm_distill_loss(head, weight, bias, flow.tensor(values[3]), flow.tensor([0, 1, 2, 3, 4]),
                                      hidden, hidden, flow.ones(1, 2), alpha_mlm=0.0, alpha_cos=0.0, fused=fused,
                                      chunk_size=2)["loss"]
        loss.backward()
        return [loss.numpy()] + [x.grad.numpy() for x in (head, weight, bias)]

    for fused, plain in zip(run(True), run(False)):
        np.testing.assert_allclose(fused, plain, rtol=1e-5, atol=1e-6)


def _batches(rng, rows=2, length=6, vocab=40):
    labels = np.full((rows, length), -100, np.int64)
    labels[0, [1, 3]], labels[1, 2] = [5, 9], 30
    mask = np.ones((rows, length), np.int64)
    mask[1, 5] = 0
    batch = {"input_ids": rng.integers(1, vocab, (rows, length)), "input_mask": mask,
             "token_type_ids": np.zeros((rows, length), np.int64), "masked_lm_labels": labels,
             "position": np.arange(rows, dtype=np.int64)}
    return [batch]


def test_the_cached_top_k_at_k_equal_v_gives_the_live_teachers_loss(tmp_path):
    teacher, student = _tiny_mlm(seed=0), _tiny_mlm(layers=1, seed=1)
    teacher.eval()
    data = _batches(np.random.default_rng(2))
    cfg = parse_config(["--recipe", "distilbert_mlm", "--teacher_model", str(tmp_path)])
    cache = cache_teacher_logits(TeacherMaskedLogits(teacher), data, tmp_path / "cache", top_k=40,
                                 temperature=cfg.temperature)
    assert cache[0][0].shape == (3, 40)  # the 3 masked positions
    inputs = {k: flow.tensor(v) for k, v in data[0].items()}
    live = MaskedLMDistillation(student, teacher, cfg, None, 2).eval()(**inputs)
    cached = MaskedLMDistillation(student, teacher, cfg, cache, 2).eval()(**inputs)
    assert set(live) == {"loss", "kl_div", "mlm", "hidden_cosine"}
    assert live["kl_div"].item() > 1e-3
    for name in live:  # float16 teacher logits in the cache
        assert math.isclose(cached[name].item(), live[name].item(), rel_tol=2e-3), name


@pytest.fixture(scope="module")
def mlm_workspace(tmp_path_factory):
    """A pregenerated corpus (15 % masked) and a tiny teacher with a head, of the default vocabulary."""
    root = tmp_path_factory.mktemp("mlm")
    words = "the team played football while rain fell and the band sang a song about bread".split()
    (root / "corpus.txt").write_text("".join(" ".join(words[i:i + 5 + d % 4]) + " .\n" + ("\n" if i % 3 == 2 else "")
                                             for d in range(4) for i in range(9)))
    assert pregenerate_main(["--train_corpus", str(root / "corpus.txt"), "--output_dir", str(root / "pregen"),
                             "--do_lower_case", "--max_seq_len", "32", "--epochs_to_generate", "1",
                             "--masked_lm_prob", "0.15"]) == 0
    teacher = save_masked_lm(_tiny_mlm(vocab=MINILM_V, hidden=32, seed=3), str(root / "teacher"))
    return {"root": root, "corpus": str(root / "pregen"), "teacher": teacher}


def _config(ws, tag, *flags):
    out = ws["root"] / tag
    return parse_config(["--recipe", "distilbert_mlm", "--quick", "--teacher_model", ws["teacher"], "--corpus_dir",
                         ws["corpus"], "--model_save_dir", str(out / "model"), "--result_dir", str(out / "results"),
                         *TINY_STUDENT, *flags]), out


def test_a_run_with_the_top_k_cache_saves_a_student_both_loaders_read(mlm_workspace, tmp_path):
    cfg, out = _config(mlm_workspace, "run", "--max_steps", "2", "--teacher_logits_cache", str(tmp_path / "cache"),
                       "--top_k", "5")
    results = run_masked_lm(cfg)
    assert results["steps"] == 2 and results["rows"] > 0 and results["teacher_logits_cache"] == str(tmp_path / "cache")
    assert math.isfinite(results["last"]["loss"])
    assert json.loads((tmp_path / "cache" / "header.json").read_text())["top_k"] == 5
    model_dir = out / "model"
    assert json.loads((model_dir / "model_config.json").read_text())["recipe"] == "distilbert_mlm"
    assert (model_dir / "checkpoints" / "distilbert_mlm" / "losses.csv").is_file()
    loaded = BertForMaskedLM.from_pretrained(str(model_dir))
    assert loaded.config["num_hidden_layers"] == 1 and loaded.vocab_size == MINILM_V
    # kdu-train --recipe kd --student_model DIR: everything but the (untrained) classifier
    task_student = BertForSequenceClassification(**dict(loaded.bert.config, label_num=4))
    load_student_weights(task_student, str(model_dir))
    np.testing.assert_array_equal(task_student.embeddings.word_embeddings.weight.numpy(),
                                  loaded.bert.embeddings.word_embeddings.weight.numpy())
    # the student started from the teacher's layer 0 (evenly_spaced_layers(1, 2)) and its head, then trained
    cfg2, _ = _config(mlm_workspace, "unused")
    teacher = BertForMaskedLM.from_pretrained(mlm_workspace["teacher"])
    fresh = mlm_student(cfg2, teacher)
    np.testing.assert_array_equal(fresh.cls.transform.dense.weight.numpy(), teacher.cls.transform.dense.weight.numpy())
    np.testing.assert_array_equal(fresh.bert.encoder.layer[0].output.dense.weight.numpy(),
                                  teacher.bert.encoder.layer[0].output.dense.weight.numpy())


def _headless(root):
    flow.manual_seed(0)
    encoder = BertForSequenceClassification(vocab_size=MINILM_V, hidden_size=32, num_hidden_layers=2,
                                            num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    return save_pretrained(encoder, str(root / "headless"), head=False)


@pytest.mark.parametrize("case, message", [
    ("headless", r"^--teacher_model: checkpoint .* has no masked-LM head \(no cls.predictions.bias\); use a "
                 r"pretrained BERT that has one"),
    ("vocab", r"^vocabulary .* has 30522 tokens but teacher .* has vocab_size 40; pass the teacher's --vocab_file$"),
    ("top_k", r"^--top_k must be"),
    ("cache", r"^--teacher_logits_cache: the top-k logits cache .* was written for another teacher"),
    ("auto", r"^recipe 'distilbert_mlm' has no default teacher: the shipped all-MiniLM-L6-v2 has no masked-LM head"),
])
def test_bad_input_stops_before_anything_is_written(mlm_workspace, tmp_path, case, message):
    flags = {"headless": ["--teacher_model", lambda: _headless(tmp_path)],
             "vocab": ["--teacher_model", lambda: save_masked_lm(_tiny_mlm(), str(tmp_path / "v40"))],
             "top_k": ["--teacher_logits_cache", str(tmp_path / "cache"), "--top_k", "0"],
             "auto": ["--teacher_model", "auto"],
             "cache": ["--teacher_logits_cache", lambda: _other_teachers_cache(tmp_path / "other"),
                       "--top_k", "40"]}[case]
    out = mlm_workspace["root"] / f"bad_{case}"
    with pytest.raises(ConfigError, match=message):  # --top_k 0: refused by the parser (its type), the rest by the run
        run_masked_lm(_config(mlm_workspace, f"bad_{case}", *[f() if callable(f) else f for f in flags])[0])
    assert not out.exists() and not (tmp_path / "cache").exists()


def _other_teachers_cache(path):
    cache_teacher_logits(TeacherMaskedLogits(_tiny_mlm()), _batches(np.random.default_rng(0)), path, top_k=40,
                         temperature=2.0)
    return str(path)
