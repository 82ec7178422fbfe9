"""The issue-11 losses inside nn.Graph equal eager mode: every loss with masks and per-row temperatures in
one compiled graph, and a training step (KL with schedule temperatures + IntermediateMatches with a
projection) whose updated parameters equal the eager step's."""
import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import functional as KF
from knowledge_distill_util.nn import IntermediateMatches, KLDivLoss
from knowledge_distill_util.schedules import cwsm_temperature, flsw_temperature

pytestmark = pytest.mark.graph  # compiles graphs: each test in its own process (tests/conftest.py)

GRAPH = dict(rtol=1e-5, atol=1e-5)


def rand(rng, *shape, scale=1.0):
    return flow.tensor((rng.standard_normal(shape) * scale).astype(np.float32))


def all_losses(logits_s, logits_t, temps, hid_s, hid_t, att_s, att_t, val_s, val_t, mask):
    """Every new loss, with masks and per-row temperatures; returns one tensor of values."""
    row_mask = mask[:, 0]
    values = [
        KF.soft_cross_entropy(logits_s, logits_t, student_temperature=temps, teacher_temperature=2.0,
                              reduction="batchmean", temperature_scaling=True, mask=row_mask),
        KF.soft_cross_entropy(logits_s, logits_t, student_temperature=2.0, reduction="sum"),
        KF.kl_div(logits_s, logits_t, student_temperature=temps, teacher_temperature=temps, mask=row_mask),
        KF.kl_div(logits_s, logits_t, reduction="none").sum(),
        KF.hidden_mse(hid_s, hid_t, mask=mask), KF.hidden_mse(hid_s, hid_t),
        KF.hidden_cosine(hid_s, hid_t, mask=mask), KF.pkd_loss(hid_s, hid_t),
        KF.attention_mse(att_s, att_t, mask=mask), KF.attention_mse(att_s, att_t),
        KF.attention_kl(att_s, att_t, mask=mask), KF.attention_kl(att_s, att_t),
        KF.relation_kl(val_s, val_t, num_relation_heads=2, mask=mask),
        KF.fsp_loss((hid_s, hid_s), (hid_t, hid_t), mask=mask), KF.mmd_loss((hid_s, val_s), (val_t, val_t), mask=mask),
        flsw_temperature(logits_s, logits_t, 2.0).sum(), cwsm_temperature(logits_s, 2.0).sum(),
    ]
    return flow.stack(values)


class LossGraph(flow.nn.Graph):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def build(self, *tensors):
        return self.fn(*tensors)


def test_every_loss_in_graph_equals_eager():
    rng = np.random.default_rng(0)
    mask = flow.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=flow.float32)
    inputs = [rand(rng, 3, 6, scale=2), rand(rng, 3, 6, scale=2), flow.tensor([1.0, 2.0, 3.0]),
              rand(rng, 3, 4, 8), rand(rng, 3, 4, 8), rand(rng, 3, 2, 4, 4, scale=2), rand(rng, 3, 2, 4, 4, scale=2),
              rand(rng, 3, 4, 8), rand(rng, 3, 4, 12), mask]
    eager = all_losses(*inputs).numpy()
    assert np.isfinite(eager).all()
    np.testing.assert_allclose(LossGraph(all_losses)(*inputs).numpy(), eager, **GRAPH)


RECIPE = [
    {"layer_S": 1, "layer_T": 2, "feature": "hidden", "loss": "hidden_mse", "proj": ["linear", 4, 6, "gelu"]},
    {"layer_S": 0, "layer_T": 1, "feature": "attention", "loss": "attention_kl", "weight": 0.5},
    {"layer_S": 1, "layer_T": 0, "feature": "value", "loss": "relation_kl", "options": {"num_relation_heads": 2}},
]


class Student(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = flow.nn.ModuleList([flow.nn.Linear(4, 4) for _ in range(2)])
        self.head = flow.nn.Linear(4, 3)

    def forward(self, x):
        hidden = [x]
        for layer in self.layers:
            hidden.append(flow.tanh(layer(hidden[-1])))
        scores = flow.matmul(hidden[1], hidden[1].transpose(1, 2)).unsqueeze(1)
        return self.head(hidden[-1][:, 0]), {"hidden": hidden, "attention": [scores], "value": hidden}


def loss_of(student, matches, kl, x, t_logits, t_hidden, t_att, t_value, mask):
    logits, features = student(x)
    teacher = {"hidden": [t_hidden] * 3, "attention": [t_att, t_att], "value": [t_value]}
    temps = flsw_temperature(logits, t_logits, 2.0)
    return kl(logits, t_logits, student_temperature=temps, teacher_temperature=temps) + matches(
        features, teacher, mask=mask)


def test_training_step_in_graph_equals_eager():
    rng = np.random.default_rng(1)
    data = [rand(rng, 2, 3, 4), rand(rng, 2, 3), rand(rng, 2, 3, 6), rand(rng, 2, 1, 3, 3),
            rand(rng, 2, 3, 8), flow.tensor([[1, 1, 0], [1, 1, 1]], dtype=flow.float32)]
    flow.manual_seed(0)
    models = {}
    for mode in ("eager", "graph"):
        flow.manual_seed(0)
        models[mode] = (Student(), IntermediateMatches(RECIPE),
                        KLDivLoss(temperature_scaling=True))
    state = {k: v.numpy().copy() for k, v in models["eager"][0].state_dict().items()}
    models["graph"][0].load_state_dict({k: flow.tensor(v) for k, v in state.items()})
    models["graph"][1].load_state_dict(models["eager"][1].state_dict())

    student, matches, kl = models["eager"]
    opt = flow.optim.SGD(list(student.parameters()) + list(matches.parameters()), lr=0.5)
    eager_loss = loss_of(student, matches, kl, *data)
    eager_loss.backward()
    opt.step()

    g_student, g_matches, g_kl = models["graph"]
    g_opt = flow.optim.SGD(list(g_student.parameters()) + list(g_matches.parameters()), lr=0.5)

    class Step(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.student, self.matches, self.kl = g_student, g_matches, g_kl
            self.add_optimizer(g_opt)

        def build(self, *tensors):
            loss = loss_of(self.student, self.matches, self.kl, *tensors)
            loss.backward()
            return loss

    graph_loss = Step()(*data)
    np.testing.assert_allclose(graph_loss.numpy(), eager_loss.numpy(), **GRAPH)
    for (key, value), (_, g_value) in zip(matches.state_dict().items(), g_matches.state_dict().items()):
        np.testing.assert_allclose(g_value.numpy(), value.numpy(), err_msg=key, **GRAPH)
    for key, value in student.state_dict().items():
        assert not np.allclose(value.numpy(), state[key]), f"the step did not change {key}"
        np.testing.assert_allclose(g_student.state_dict()[key].numpy(), value.numpy(), err_msg=key, **GRAPH)
