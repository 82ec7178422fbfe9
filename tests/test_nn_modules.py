"""Loss Modules equal their functions, validate their options in the constructor; Projection;
IntermediateMatches built from recipe dicts (issue 11, items 12, 13)."""
import json

import numpy as np
import oneflow as flow
import pytest

import reference_peer as peer
from knowledge_distill_util import functional as KF
from knowledge_distill_util import nn as knn

F32 = dict(rtol=1.3e-6, atol=1e-5)


def rand(rng, *shape, scale=1.0):
    return flow.tensor((rng.standard_normal(shape) * scale).astype(np.float32))


def inputs(rng):
    mask = flow.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    return {
        "logits": (rand(rng, 2, 4, 7, scale=2), rand(rng, 2, 4, 7, scale=2), mask),
        "hidden": (rand(rng, 2, 4, 6), rand(rng, 2, 4, 6), mask),
        "cls": (rand(rng, 2, 6), rand(rng, 2, 6), None),
        "scores": (rand(rng, 2, 3, 4, 4, scale=2), rand(rng, 2, 3, 4, 4, scale=2), mask),
        "values": (rand(rng, 2, 4, 6), rand(rng, 2, 4, 12), mask),
        "pairs": ((rand(rng, 2, 4, 6), rand(rng, 2, 4, 6)), (rand(rng, 2, 4, 6), rand(rng, 2, 4, 6)), mask),
    }


CASES = [  # (module, function with the same options, input kind)
    (knn.SoftCrossEntropyLoss(), KF.soft_cross_entropy, "logits"),
    (knn.SoftCrossEntropyLoss(2.0, 3.0, "batchmean", True),
     lambda s, t, **kw: KF.soft_cross_entropy(s, t, student_temperature=2.0, teacher_temperature=3.0,
                                              reduction="batchmean", temperature_scaling=True, **kw), "logits"),
    (knn.KLDivLoss(), KF.kl_div, "logits"),
    (knn.KLDivLoss(4.0, 4.0, reduction="sum", temperature_scaling=True),
     lambda s, t, **kw: KF.kl_div(s, t, student_temperature=4.0, teacher_temperature=4.0, reduction="sum",
                                  temperature_scaling=True, **kw), "logits"),
    (knn.HiddenMSELoss(), KF.hidden_mse, "hidden"),
    (knn.HiddenCosineLoss(), KF.hidden_cosine, "hidden"),
    (knn.PKDLoss(), KF.pkd_loss, "cls"),
    (knn.AttentionMSELoss(), KF.attention_mse, "scores"),
    (knn.AttentionMSELoss(mask_threshold=-1.0), lambda s, t, **kw: KF.attention_mse(s, t, mask_threshold=-1.0, **kw),
     "scores"),
    (knn.AttentionKLLoss(), KF.attention_kl, "scores"),
    (knn.RelationKLLoss(num_relation_heads=3),
     lambda s, t, **kw: KF.relation_kl(s, t, num_relation_heads=3, **kw), "values"),
    (knn.FSPLoss(), KF.fsp_loss, "pairs"),
    (knn.MMDLoss(), KF.mmd_loss, "pairs"),
]


@pytest.mark.parametrize("case, use_mask", [  # PKD takes no mask (tested below)
    (i, use_mask) for i, c in enumerate(CASES) for use_mask in (False, True) if not (use_mask and c[2] == "cls")])
def test_module_equals_function(case, use_mask):
    module, fn, kind = CASES[case]
    s, t, mask = inputs(np.random.default_rng(case))[kind]
    kw = dict(mask=mask) if use_mask else {}
    assert module(s, t, **kw).item() == fn(s, t, **kw).item()


def test_soft_target_modules_take_per_row_temperatures_in_forward():
    rng = np.random.default_rng(0)
    s, t = rand(rng, 4, 5), rand(rng, 4, 5)
    temps = flow.tensor([1.0, 2.0, 3.0, 4.0])
    module = knn.KLDivLoss(2.0, 2.0, temperature_scaling=True)
    np.testing.assert_allclose(
        module(s, t, student_temperature=temps, teacher_temperature=temps).item(),
        KF.kl_div(s, t, student_temperature=temps, teacher_temperature=temps, temperature_scaling=True).item(), **F32)


def test_modules_are_reprs_of_their_options_and_default_reductions():
    assert knn.SoftCrossEntropyLoss().reduction == "mean"
    assert knn.KLDivLoss().reduction == "batchmean"
    assert repr(knn.RelationKLLoss(12)) == "RelationKLLoss(num_relation_heads=12)"
    assert "mask_threshold=-100.0" in repr(knn.AttentionMSELoss())


@pytest.mark.parametrize("make, error, message", [
    (lambda: knn.KLDivLoss(reduction="avg"), ValueError, r"reduction must be one of 'mean', 'batchmean', 'sum', 'none'; got 'avg'"),
    (lambda: knn.SoftCrossEntropyLoss(student_temperature=0), ValueError, r"student_temperature must be a finite number >= 0.0001"),
    (lambda: knn.SoftCrossEntropyLoss(teacher_temperature="2"), TypeError, r"teacher_temperature must be a number >= 0.0001"),
    (lambda: knn.KLDivLoss(temperature_scaling=1), TypeError, r"temperature_scaling must be True or False, got 1"),
    (lambda: knn.RelationKLLoss(0), ValueError, r"num_relation_heads must be a positive integer, got 0"),
    (lambda: knn.RelationKLLoss(2.5), TypeError, r"num_relation_heads must be a positive integer, got 2.5"),
    (lambda: knn.AttentionMSELoss(mask_threshold="low"), TypeError, r"mask_threshold must be a number"),
    (lambda: knn.Projection(4, 8, activation="swish"), ValueError,
     r"activation must be one of 'relu', 'tanh', 'gelu'; got 'swish'"),
    (lambda: knn.Projection(0, 8), ValueError, r"in_features must be a positive integer, got 0"),
    (lambda: knn.Projection(4, 8.0), TypeError, r"out_features must be a positive integer, got 8.0"),
])
def test_constructor_validation(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_pkd_module_refuses_a_mask():
    with pytest.raises(ValueError, match=r"PKDLoss compares \[CLS\] vectors.*it takes no mask; pass mask=None"):
        knn.PKDLoss()(flow.zeros(2, 3), flow.zeros(2, 3), mask=flow.ones(2))


@pytest.mark.parametrize("activation, fn", [(None, lambda x: x), ("relu", lambda x: np.maximum(x, 0)),
                                            ("tanh", np.tanh), ("gelu", None)])
def test_projection(activation, fn):
    from math import erf
    flow.manual_seed(0)
    proj = knn.Projection(4, 3, activation=activation)
    x = np.random.default_rng(1).standard_normal((2, 5, 4)).astype(np.float32)
    linear = x.astype(np.float64) @ proj.linear.weight.numpy().T.astype(np.float64) + proj.linear.bias.numpy()
    if fn is None:
        fn = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    np.testing.assert_allclose(proj(flow.tensor(x)).numpy(), fn(linear), rtol=1e-5, atol=1e-6)
    assert len(list(proj.parameters())) == 2


# --- IntermediateMatches -----------------------------------------------------------------------------

RECIPE = json.loads("""[
  {"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "weight": 1.0, "proj": ["linear", 4, 6]},
  {"layer_S": 0, "layer_T": 1, "feature": "attention", "loss": "attention_kl", "weight": 0.5},
  {"layer_S": 0, "layer_T": 0, "feature": "value", "loss": "relation_kl", "options": {"num_relation_heads": 2}},
  {"layer_S": [0, 1], "layer_T": [0, 2], "feature": "hidden", "loss": "fsp_loss", "weight": 2.0,
   "proj": ["linear", 4, 6, "tanh"]},
  {"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "pkd_loss", "weight": 3.0, "proj": ["linear", 4, 6]}
]""")


def features(rng):
    student = {"hidden": [rand(rng, 2, 3, 4) for _ in range(2)],
               "attention": [rand(rng, 2, 2, 3, 3)],
               "value": [rand(rng, 2, 3, 4)]}
    teacher = {"hidden": [rand(rng, 2, 3, 6) for _ in range(3)],
               "attention": [rand(rng, 2, 2, 3, 3) for _ in range(2)],
               "value": [rand(rng, 2, 3, 8)]}
    return student, teacher


@pytest.mark.parametrize("use_mask", [False, True])
def test_intermediate_matches_is_the_weighted_sum(use_mask):
    flow.manual_seed(0)
    matches = knn.IntermediateMatches(RECIPE)
    student, teacher = features(np.random.default_rng(2))
    mask = flow.tensor([[1, 1, 0], [1, 0, 0]]) if use_mask else None
    p0, p3, p4 = matches.projections["0"], matches.projections["3"], matches.projections["4"]
    kw = dict(mask=mask)
    want = (KF.hidden_mse(p0(student["hidden"][1]), teacher["hidden"][2], **kw)
            + 0.5 * KF.attention_kl(student["attention"][0], teacher["attention"][1], **kw)
            + KF.relation_kl(student["value"][0], teacher["value"][0], num_relation_heads=2, **kw)
            + 2.0 * KF.fsp_loss((p3(student["hidden"][0]), p3(student["hidden"][1])),
                                (teacher["hidden"][0], teacher["hidden"][2]), **kw)
            + 3.0 * KF.pkd_loss(p4(student["hidden"][1]), teacher["hidden"][2]))
    np.testing.assert_allclose(matches(student, teacher, mask=mask).item(), want.item(), **F32)


def test_intermediate_matches_projections_are_trained():
    flow.manual_seed(0)
    matches = knn.IntermediateMatches(RECIPE)
    assert sorted(matches.projections.keys()) == ["0", "3", "4"]
    assert len(list(matches.parameters())) == 6
    optimizer = flow.optim.SGD(matches.parameters(), lr=0.1)
    student, teacher = features(np.random.default_rng(3))
    before = matches.projections["0"].linear.weight.numpy().copy()
    matches(student, teacher).backward()
    optimizer.step()
    assert not np.allclose(before, matches.projections["0"].linear.weight.numpy())


def test_a_projection_of_another_width_than_the_student_names_the_fix():
    matches = knn.IntermediateMatches([{"layer_S": 0, "layer_T": 0, "feature": "hidden", "loss": "hidden_mse",
                                        "proj": ["linear", 6, 8]}])
    student, teacher = {"hidden": [flow.zeros(2, 3, 4)]}, {"hidden": [flow.zeros(2, 3, 8)]}
    with pytest.raises(ValueError, match=r"^matches\[0\]\['proj'\] maps 6 features to 8, but the student's tensor has "
                                         r"4 \(shape \(2, 3, 4\)\); use \[\"linear\", 4, 8\]$"):
        matches(student, teacher)
    with pytest.raises(ValueError, match=r"the student's tensor has 8 \(shape \(2, 3, 8\)\); drop the proj \(it has the "
                                         r"projection's output width already\)$"):  # e.g. a student with fit_dense
        matches({"hidden": [flow.zeros(2, 3, 8)]}, teacher)


def test_intermediate_matches_reference_value_of_one_entry():
    """An independent check of one entry against the numpy reference (no projection)."""
    matches = knn.IntermediateMatches([{"layer_S": 0, "layer_T": 1, "feature": "attention", "loss": "attention_kl",
                                        "weight": 0.25}])
    student, teacher = features(np.random.default_rng(4))
    mask = np.array([[1, 1, 0], [1, 1, 1]])
    got = matches(student, teacher, mask=flow.tensor(mask)).item()
    want = 0.25 * peer.attention_kl(student["attention"][0].numpy(), teacher["attention"][1].numpy(), mask)
    np.testing.assert_allclose(got, want, **F32)


def entry(**changes):
    base = {"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


@pytest.mark.parametrize("matches, error, message", [
    ([], ValueError, r"matches is empty"),
    ({"layer_S": 1}, TypeError, r"matches must be a list of dicts"),
    ([entry(), "hidden_mse"], TypeError, r"matches\[1\] must be a dict with keys layer_S, layer_T, feature, loss"),
    ([entry(loss="hiden_mse")], ValueError, r"matches\[0\]\['loss'\] must be one of .*'hidden_mse'.*; got 'hiden_mse'"),
    ([entry(feature="hiddens")], ValueError,
     r"matches\[0\]\['feature'\] must be one of 'hidden', 'attention', 'value', 'query', 'key'; got 'hiddens'"),
    ([entry(layer_T=None)], ValueError, r"matches\[0\] lacks the key\(s\) 'layer_T'"),
    ([entry(layer_s=1)], ValueError, r"matches\[0\] has unknown key\(s\) 'layer_s'; valid keys: layer_S"),
    ([entry(layer_S=-1)], ValueError, r"matches\[0\]\['layer_S'\] must be a layer index \(an integer >= 0\), got -1"),
    ([entry(loss="fsp_loss")], ValueError, r"matches\[0\]\['layer_S'\] must be a pair \[i, j\]"),
    ([entry(weight="1")], ValueError, r"matches\[0\]\['weight'\] must be a finite number, got '1'"),
    ([entry(proj=["conv", 4, 6])], ValueError, r"matches\[0\]\['proj'\]\[0\] must be one of 'linear'; got 'conv'"),
    ([entry(proj=["linear", 4])], ValueError, r"matches\[0\]\['proj'\] must be \[\"linear\", in_features"),
    ([entry(proj=["linear", 4, 6, "swish"])], ValueError,
     r"matches\[0\]\['proj'\] is invalid: activation must be one of 'relu', 'tanh', 'gelu'; got 'swish'"),
    ([entry(loss="relation_kl")], ValueError, r"matches\[0\]\['options'\] must give num_relation_heads for relation_kl"),
    ([entry(options={"heads": 2})], ValueError,
     r"matches\[0\]\['options'\] has unknown option\(s\) 'heads' for hidden_mse; valid options: none"),
])
def test_intermediate_matches_rejects_bad_entries(matches, error, message):
    with pytest.raises(error, match=message):
        knn.IntermediateMatches(matches)


def test_intermediate_matches_bad_features_in_forward():
    matches = knn.IntermediateMatches([entry(layer_S=5)])
    student, teacher = features(np.random.default_rng(5))
    with pytest.raises(ValueError, match=r"matches\[0\]\['layer_S'\] = 5 is out of range: "
                                         r"student_features\['hidden'\] has 2 layers"):
        matches(student, teacher)
    matches = knn.IntermediateMatches([entry(feature="query")])
    with pytest.raises(ValueError, match=r"matches\[0\] needs student_features\['query'\], but student_features has "
                                         r"'hidden', 'attention', 'value'"):
        matches(student, teacher)
