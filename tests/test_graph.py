"""The operators inside nn.Graph equal eager mode, including a training step with all three losses."""
import argparse

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import att_distill, layer_distill, mseloss, pred_distill, soft_cross_entropy

pytestmark = pytest.mark.graph  # every test here compiles a graph: own process (tests/conftest.py)

GRAPH = dict(rtol=1e-5, atol=1e-5)  # OneFlow's graph-vs-eager tolerance
ARGS = argparse.Namespace(temperature=2.0, teacher_temperature=3.0)


class LossGraph(flow.nn.Graph):
    """Wraps ``fn(*tensors)`` in a graph; lists are rebuilt inside ``build`` from flat tensors."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def build(self, *tensors):
        return self.fn(*tensors)


def rand(rng, *shape):
    return flow.tensor(rng.standard_normal(shape).astype(np.float32))


def masked_scores(rng, layers):
    mask = flow.tensor(np.where(np.arange(4) >= 3, -10000.0, 0.0).astype(np.float32))
    return [rand(rng, 2, 2, 4, 4) + mask for _ in range(layers)]


@pytest.mark.parametrize("name", ["pred_distill", "soft_cross_entropy", "mseloss", "layer_distill", "att_distill"])
def test_forward_in_graph_equals_eager(name):
    rng = np.random.default_rng(0)
    cases = {
        "pred_distill": (lambda s, t: pred_distill(ARGS, s, t), [rand(rng, 4, 5), rand(rng, 4, 5)]),
        "soft_cross_entropy": (soft_cross_entropy, [rand(rng, 2, 3, 7), rand(rng, 2, 3, 7)]),
        "mseloss": (mseloss, [rand(rng, 3, 4), rand(rng, 3, 4)]),
        "layer_distill": (lambda *x: layer_distill(None, list(x[:3]), list(x[3:])),
                          [rand(rng, 2, 3, 4) for _ in range(3 + 7)]),
        "att_distill": (lambda *x: att_distill(None, list(x[:2]), list(x[2:])),
                        masked_scores(rng, 2) + masked_scores(rng, 6)),
    }
    fn, inputs = cases[name]
    np.testing.assert_allclose(LossGraph(fn)(*inputs).numpy(), fn(*inputs).numpy(), **GRAPH)


class TinyBert(flow.nn.Module):
    """Enough of a BERT to return (logits, reps, atts) with learnable attention scores."""

    def __init__(self, layers: int, hidden: int = 8, classes: int = 3):
        super().__init__()
        self.blocks = flow.nn.ModuleList([flow.nn.Linear(hidden, hidden) for _ in range(layers)])
        self.classifier = flow.nn.Linear(hidden, classes)

    def forward(self, x, mask):
        reps, atts = [x], []
        for block in self.blocks:
            scores = flow.matmul(x, x.transpose(1, 2)) / 4.0 + mask
            atts.append(scores.unsqueeze(1))
            x = flow.tanh(block(flow.matmul(flow.softmax(scores, dim=-1), x)))
            reps.append(x)
        return self.classifier(x[:, 0]), reps, atts


def total_loss(student, teacher, x, mask):
    s_logits, s_reps, s_atts = student(x, mask)
    with flow.no_grad():
        t_logits, t_reps, t_atts = teacher(x, mask)
    return pred_distill(ARGS, s_logits, t_logits) + layer_distill(ARGS, s_reps, t_reps) + att_distill(ARGS, s_atts, t_atts)


class TrainGraph(flow.nn.Graph):
    def __init__(self, student, teacher, optimizer):
        super().__init__()
        self.student, self.teacher = student, teacher  # graph attributes, or parameters never update
        self.add_optimizer(optimizer)

    def build(self, x, mask):
        loss = total_loss(self.student, self.teacher, x, mask)
        loss.backward()
        return loss


def make_models(seed: int):
    flow.manual_seed(seed)
    student, teacher = TinyBert(layers=2), TinyBert(layers=4)
    teacher.eval()
    return student, teacher


def test_training_step_with_all_three_losses_graph_equals_eager():
    rng = np.random.default_rng(1)
    x = rand(rng, 2, 5, 8)
    mask = flow.tensor(np.where(np.arange(5) >= 4, -10000.0, 0.0).astype(np.float32))

    eager_student, teacher = make_models(seed=7)
    graph_student, _ = make_models(seed=7)
    graph_student.load_state_dict(eager_student.state_dict())

    eager_opt = flow.optim.SGD(eager_student.parameters(), lr=0.1)
    graph_opt = flow.optim.SGD(graph_student.parameters(), lr=0.1)
    graph = TrainGraph(graph_student, teacher, graph_opt)

    eager_losses, graph_losses = [], []
    for _ in range(3):
        eager_opt.zero_grad()
        loss = total_loss(eager_student, teacher, x, mask)
        loss.backward()
        eager_opt.step()
        eager_losses.append(loss.item())
        graph_losses.append(graph(x, mask).item())

    np.testing.assert_allclose(graph_losses, eager_losses, **GRAPH)
    assert eager_losses[-1] < eager_losses[0], "three SGD steps should lower the distillation loss"
    for (name, p_eager), p_graph in zip(eager_student.named_parameters(), graph_student.parameters()):
        np.testing.assert_allclose(p_graph.numpy(), p_eager.numpy(), err_msg=name, **GRAPH)


class Inputs(flow.nn.Module):
    """Holds the student-side inputs as parameters so a graph SGD step (lr=1) reveals their gradient."""

    def __init__(self, arrays):
        super().__init__()
        self.count = len(arrays)
        for i, a in enumerate(arrays):
            setattr(self, f"value{i}", flow.nn.Parameter(flow.tensor(a, dtype=flow.float32)))

    def forward(self):
        return [getattr(self, f"value{i}") for i in range(self.count)]


class GradientGraph(flow.nn.Graph):
    def __init__(self, fn, inputs, optimizer):
        super().__init__()
        self.fn, self.inputs = fn, inputs
        self.add_optimizer(optimizer)

    def build(self, *teacher):
        loss = self.fn(*self.inputs(), *teacher)
        loss.backward()
        return loss


@pytest.mark.parametrize("name", ["pred_distill", "mseloss", "layer_distill", "att_distill"])
def test_graph_gradients_equal_finite_differences_of_the_reference(name):
    """Gradient inside the graph (= before - after one SGD step with lr=1, float32) against central
    differences of the numpy float64 reference (SGD has no float64 kernel in graphs)."""
    import reference as ref
    from gradcheck import numpy_numeric_grad

    rng = np.random.default_rng(2)
    cases = {  # (operator, numpy reference, student inputs, teacher inputs, shape)
        "pred_distill": (lambda s, t: pred_distill(ARGS, s, t), lambda s, t: ref.pred_distill(s, t, 2.0, 3.0), 1, 1, (3, 4)),
        "mseloss": (mseloss, ref.mse, 1, 1, (2, 3)),
        "layer_distill": (lambda *x: layer_distill(None, list(x[:3]), list(x[3:])),
                          lambda *x: ref.layer_distill(x[:3], x[3:]), 3, 5, (1, 2, 3)),
        "att_distill": (lambda *x: att_distill(None, list(x[:2]), list(x[2:])),
                        lambda *x: ref.att_distill(x[:2], x[2:]), 2, 4, (1, 2, 3, 3)),
    }
    fn, reference_fn, n_student, n_teacher, shape = cases[name]
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(n_student + n_teacher)]
    if name == "att_distill":
        for a in arrays:
            a[..., -1] = -10000.0
    inputs = Inputs(arrays[:n_student])
    graph = GradientGraph(fn, inputs, flow.optim.SGD(inputs.parameters(), lr=1.0))
    graph(*[flow.tensor(a) for a in arrays[n_student:]])
    for i in range(n_student):
        graph_grad = arrays[i] - getattr(inputs, f"value{i}").numpy()
        np.testing.assert_allclose(graph_grad, numpy_numeric_grad(reference_fn, arrays, i), rtol=1e-3, atol=1e-6,
                                   err_msg=f"student input {i}")
