"""The recipes' objectives: each loss formula against a numpy float64 hand computation."""
import argparse

import numpy as np
import oneflow as flow
import pytest

import reference as ref
from knowledge_distill_util.training import kd_objectives, objective_schedules, objectives

RTOL, ATOL = 1e-5, 1e-6


def _t(array, requires_grad=False):
    return flow.tensor(np.asarray(array, dtype=np.float32), requires_grad=requires_grad)


def _ce(logits, labels):
    return float(np.mean(-ref.log_softmax(logits)[np.arange(len(labels)), labels]))


@pytest.fixture
def tensors():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(4, 3)) * 2, rng.normal(size=(4, 3)) * 2
    labels = np.array([0, 2, 1, 2])
    s_reps = [rng.normal(size=(4, 5, 6)) for _ in range(3)]          # embedding + 2 layers
    t_reps = [rng.normal(size=(4, 5, 6)) for _ in range(5)]          # embedding + 4 layers
    s_atts = [rng.normal(size=(4, 2, 5, 5)) for _ in range(2)]
    t_atts = [rng.normal(size=(4, 2, 5, 5)) for _ in range(4)]
    for att in s_atts + t_atts:
        att[..., -1] = -10000.0                                        # a masked key: zeroed by att_distill
    return dict(s=s, t=t, labels=labels, s_reps=s_reps, t_reps=t_reps, s_atts=s_atts, t_atts=t_atts)


def _call(name, args, x, **extra):
    return getattr(objectives, name.upper())(
        args, student_logits=_t(x["s"], True), teacher_logits=_t(x["t"]), labels=flow.tensor(x["labels"]),
        student_reps=[_t(r) for r in x["s_reps"]], teacher_reps=[_t(r) for r in x["t_reps"]],
        student_atts=[_t(a) for a in x["s_atts"]], teacher_atts=[_t(a) for a in x["t_atts"]], **extra)


def _check(terms, expected):
    assert set(terms) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(terms[name].numpy(), value, rtol=RTOL, atol=ATOL, err_msg=name)


def test_kd_formula(tensors):
    args = argparse.Namespace(kd_alpha=0.8, temperature=2.0)
    ce, soft = _ce(tensors["s"], tensors["labels"]), ref.pred_distill(tensors["s"], tensors["t"], 2.0, 2.0)
    _check(_call("kd", args, tensors), {"loss": 0.8 * ce + 0.2 * soft, "ce": ce, "pred_distill": soft})


def test_bilstm_formula_uses_the_opposite_alpha(tensors):
    args = argparse.Namespace(kd_alpha=0.7, temperature=1.0, teacher_temperature=3.0)
    ce, soft = _ce(tensors["s"], tensors["labels"]), ref.pred_distill(tensors["s"], tensors["t"], 1.0, 3.0)
    _check(_call("bilstm", args, tensors), {"loss": 0.3 * ce + 0.7 * soft, "ce": ce, "pred_distill": soft})


def test_bert_pkd_formula(tensors):
    args = argparse.Namespace(kd_alpha=0.2, kd_beta=10.0, temperature=1.0)
    ce, soft = _ce(tensors["s"], tensors["labels"]), ref.pred_distill(tensors["s"], tensors["t"])
    layer = sum(ref.mse(tensors["s_reps"][i], tensors["t_reps"][2 * i]) for i in range(3))  # pairs (0,0),(1,2),(2,4)
    _check(_call("bert_pkd", args, tensors),
           {"loss": 0.8 * ce + 0.2 * soft + 10.0 * layer, "ce": ce, "pred_distill": soft, "layer_distill": layer})


def test_tinybert_stages(tensors):
    args = argparse.Namespace(temperature=1.0)
    masked = [np.where(a <= -100, 0.0, a) for a in tensors["s_atts"] + tensors["t_atts"]]
    s_atts, t_atts = masked[:2], masked[2:]
    att = ref.mse(s_atts[0], t_atts[1]) + ref.mse(s_atts[1], t_atts[3])                   # layer i -> 2i + 1
    layer = ref.layer_distill(tensors["s_reps"], tensors["t_reps"])
    _check(_call("tinybert_intermediate", args, tensors),
           {"loss": att + layer, "att_distill": att, "layer_distill": layer})
    soft = ref.pred_distill(tensors["s"], tensors["t"])
    _check(_call("tinybert_pred", args, tensors), {"loss": soft, "pred_distill": soft})


def test_labels_only(tensors):
    ce = _ce(tensors["s"], tensors["labels"])
    _check(_call("labels", None, tensors), {"loss": ce, "ce": ce})


def test_regression_uses_mse_for_both_terms():
    s, t, y = np.array([[0.5], [2.0], [-1.0]]), np.array([[1.0], [1.5], [0.0]]), np.array([1.0, 2.5, -0.5])
    args = argparse.Namespace(kd_alpha=0.8, temperature=1.0)
    terms = objectives.KD(args, student_logits=_t(s), teacher_logits=_t(t), labels=_t(y))
    hard, soft = ref.mse(s[:, 0], y), ref.mse(s, t)
    _check(terms, {"loss": 0.8 * hard + 0.2 * soft, "ce": hard, "pred_distill": soft})


def test_teacher_gets_no_gradient(tensors):
    s, t = _t(tensors["s"], True), _t(tensors["t"], True)
    terms = objectives.KD(argparse.Namespace(kd_alpha=0.5, temperature=1.0), student_logits=s,
                              teacher_logits=t, labels=flow.tensor(tensors["labels"]))
    terms["loss"].backward()
    assert t.grad is None or float(np.abs(t.grad.numpy()).max()) == 0.0
    assert float(np.abs(s.grad.numpy()).max()) > 0.0



def test_objective_reads_what_its_function_names():
    assert objectives.BERT_PKD.teacher_outputs == ("logits", "reps") and objectives.BERT_PKD.reads_layers
    assert objectives.KD.can_cache_teacher_logits and not objectives.BERT_PKD.can_cache_teacher_logits
    assert objectives.LABELS.teacher_outputs == () and not objectives.LABELS.can_cache_teacher_logits
    assert objectives.TINYBERT_INTERMEDIATE.terms == ("loss", "att_distill", "layer_distill")


def _tiny(hidden, seed):
    flow.manual_seed(seed)
    from knowledge_distill_util.models import BertForSequenceClassification

    return BertForSequenceClassification(vocab_size=40, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=16, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0, label_num=3).eval()


@pytest.mark.parametrize("student_hidden", [16, 8])   # the teacher's width, then a narrower student
def test_minilm_terms_are_attention_kl_and_value_relation_kl_of_the_last_layers(student_hidden):
    import reference_peer as peer
    from knowledge_distill_util.functional import attention_kl, relation_kl
    from knowledge_distill_util.training.trainer import LossStep

    student, teacher = _tiny(student_hidden, 0), _tiny(16, 1)
    rng = np.random.default_rng(0)
    ids = flow.tensor(rng.integers(1, 40, (3, 6)))
    mask = flow.tensor(np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]))
    segments, labels = flow.zeros_like(ids), flow.tensor([0, 1, 2])
    step = LossStep(student, teacher, objectives.MINILM, argparse.Namespace())
    total, att, value = (float(x) for x in step(ids, mask, segments, labels))

    flags = dict(output_attention_scores=True, output_qkv=True)
    s, t = student(ids, mask, segments, **flags), teacher(ids, mask, segments, **flags)
    assert s.value[-1].shape[-1] == student_hidden and t.value[-1].shape[-1] == 16
    want_att = float(attention_kl(s.attention_scores[-1], t.attention_scores[-1], mask=mask))
    want_value = float(relation_kl(s.value[-1], t.value[-1], num_relation_heads=2, mask=mask))
    assert (att, value) == (want_att, want_value)
    assert total == float(np.float32(want_att) + np.float32(want_value))   # summed in float32
    assert att > 0 and value > 0
    np_mask = mask.numpy()                                     # and against the float64 references
    np.testing.assert_allclose(att, peer.attention_kl(s.attention_scores[-1].numpy(),
                                                      t.attention_scores[-1].numpy(), np_mask), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(value, peer.relation_kl(s.value[-1].numpy(), t.value[-1].numpy(), 2, np_mask),
                               rtol=1e-4, atol=1e-7)


def test_minilm_objective_reads_scores_and_values():
    assert objectives.MINILM.teacher_outputs == ("scores", "values") and objectives.MINILM.reads_attention_details
    assert objectives.MINILM_V2.teacher_outputs == ("queries", "keys", "values")
    assert objectives.MINILM_V2.reads_attention_details
    assert not objectives.MINILM.can_cache_teacher_logits and not objectives.MINILM.reads_layers
    assert not any(o.reads_attention_details for o in (objectives.KD, objectives.BERT_PKD,
                                                       objectives.TINYBERT_INTERMEDIATE, objectives.LABELS))


@pytest.mark.parametrize("layer", [-1, 0])
def test_minilm_v2_terms_are_qkv_relation_kl_of_the_chosen_teacher_layer(layer):
    import reference_peer as peer
    from knowledge_distill_util.functional import relation_kl
    from knowledge_distill_util.training.trainer import LossStep

    student, teacher = _tiny(8, 0), _tiny(16, 1)            # a narrower student
    rng = np.random.default_rng(1)
    ids = flow.tensor(rng.integers(1, 40, (3, 6)))
    mask = flow.tensor(np.array([[1] * 6, [1] * 5 + [0], [1] * 3 + [0] * 3]))
    args = argparse.Namespace(num_relation_heads=4, minilm_teacher_layer=layer)
    step = LossStep(student, teacher, objectives.MINILM_V2, args)
    total, query, key, value = (float(x) for x in step(ids, mask, flow.zeros_like(ids), flow.tensor([0, 1, 2])))

    flags = dict(output_attention_scores=True, output_qkv=True)
    s, t = student(ids, mask, flow.zeros_like(ids), **flags), teacher(ids, mask, flow.zeros_like(ids), **flags)
    want = [float(relation_kl(s[name][-1], t[name][layer], num_relation_heads=4, mask=mask))
            for name in ("query", "key", "value")]
    assert [query, key, value] == want and min(want) > 0
    assert total == float(np.float32(want[0]) + np.float32(want[1]) + np.float32(want[2]))
    for got, name in zip(want, ("query", "key", "value")):
        np.testing.assert_allclose(got, peer.relation_kl(s[name][-1].numpy(), t[name][layer].numpy(), 4,
                                                         mask.numpy()), rtol=1e-4, atol=1e-7)
    assert layer == 0 or want != [float(relation_kl(s[n][-1], t[n][0], num_relation_heads=4, mask=mask))
                                  for n in ("query", "key", "value")]   # the layer choice matters


# --------------------------------------------------------- distilbert, pkd_patience, schedules (issue 20)
def _softmax(x, temperature):
    z = np.exp(x / temperature - (x / temperature).max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _cls_unit(x):
    return x[:, 0] / np.linalg.norm(x[:, 0], axis=-1, keepdims=True)


def test_distilbert_formula(tensors):
    """5 * KL(p_t || p_s) at T 2 times T**2 (batch mean) + 2 * CE + 1 * (1 - cos) of the last hidden states
    (valid positions only): DistilBERT's alpha_ce 5, alpha_mlm 2, alpha_cos 1."""
    args = argparse.Namespace(temperature=2.0, logit_weight=5.0, hidden_weight=1.0, hard_label_weight=2.0)
    s, t, mask = tensors["s"], tensors["t"], np.array([[1, 1, 1, 0, 0]] * 4)
    p_s, p_t = _softmax(s, 2.0), _softmax(t, 2.0)
    kl = float((p_t * (np.log(p_t) - np.log(p_s))).sum(-1).mean() * 4.0)
    a, b = tensors["s_reps"][-1], tensors["t_reps"][-1]
    cos = 1 - (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    cosine = float((cos * mask).sum() / mask.sum())
    ce = _ce(s, tensors["labels"])
    _check(_call("distilbert", args, tensors, input_mask=flow.tensor(mask)),
           {"loss": 5.0 * kl + 2.0 * ce + cosine, "kl_div": kl, "ce": ce, "hidden_cosine": cosine})


@pytest.mark.parametrize("strategy, pairs", [("skip", [(1, 2)]), ("last", [(1, 3)])])
def test_pkd_patience_formula(tensors, strategy, pairs):
    """(1 - a) CE + a * soft CE at T (summed over classes, batch mean) + b * sum over the intermediate pairs of
    |s_cls/|s_cls| - t_cls/|t_cls||^2 (batch mean): student 2 layers, teacher 4."""
    args = argparse.Namespace(kd_alpha=0.7, kd_beta=500.0, temperature=10.0, pkd_strategy=strategy)
    s, t = tensors["s"], tensors["t"]
    soft = float(-(_softmax(t, 10.0) * np.log(_softmax(s, 10.0))).sum(-1).mean())
    patience = sum(float(((_cls_unit(tensors["s_reps"][i]) - _cls_unit(tensors["t_reps"][j])) ** 2).sum(-1).mean())
                   for i, j in pairs)
    ce = _ce(s, tensors["labels"])
    assert kd_objectives.pkd_layer_pairs(2, 4, strategy) == pairs
    _check(_call("pkd_patience", args, tensors),
           {"loss": 0.3 * ce + 0.7 * soft + 500.0 * patience, "ce": ce, "soft_ce": soft, "pkd_loss": patience})


def test_weight_schedules_scale_their_terms_and_constant_changes_nothing(tensors):
    """linear_decay at step 1 of 4 multiplies the soft term by 0.75; constant schedules feed no factors at all."""
    plain = argparse.Namespace(kd_alpha=0.8, temperature=2.0, logit_weight_schedule="constant")
    assert not objective_schedules.uses_weight_schedules(plain)
    decay = argparse.Namespace(kd_alpha=0.8, temperature=2.0, logit_weight_schedule="linear_decay")
    assert objective_schedules.uses_weight_schedules(decay)
    factors = flow.tensor(objective_schedules.schedule_factors(1, 4))
    assert factors.numpy().tolist() == [1.0, 0.25, 0.75]
    ce, soft = _ce(tensors["s"], tensors["labels"]), ref.pred_distill(tensors["s"], tensors["t"], 2.0, 2.0)
    _check(_call("kd", objective_schedules.ScheduledArgs(decay, factors), tensors),
           {"loss": 0.8 * ce + 0.2 * 0.75 * soft, "ce": ce, "pred_distill": soft})
    _check(_call("kd", plain, tensors), {"loss": 0.8 * ce + 0.2 * soft, "ce": ce, "pred_distill": soft})


@pytest.mark.parametrize("schedule", ["flsw", "cwsm"])
def test_temperature_schedules_give_per_row_temperatures_around_the_temperature(tensors, schedule):
    from knowledge_distill_util.schedules import cwsm_temperature, flsw_temperature

    args = argparse.Namespace(temperature=2.0, temperature_schedule=schedule)
    s, t = _t(tensors["s"]), _t(tensors["t"])
    rows = (flsw_temperature(s, t, base=2.0) if schedule == "flsw" else cwsm_temperature(s, base=2.0)).numpy()
    assert abs(rows.mean() - 2.0) < 1e-5 and rows.std() > 0
    want = float(np.mean([-(_softmax(tensors["t"][i], r) * np.log(_softmax(tensors["s"][i], r))).sum() / 3
                          for i, r in enumerate(rows)]))
    np.testing.assert_allclose(kd_objectives.soft_label_loss(args, s, t).numpy(), want, rtol=1e-5)
