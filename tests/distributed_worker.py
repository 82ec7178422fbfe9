"""One rank of the 2-process global-tensor check, started by tests/test_distributed.py through
``python -m oneflow.distributed.launch --nproc_per_node 2 ...``.

Every rank builds the same inputs, computes each operator's loss and input gradients on local tensors
(the one-process values), then again on global tensors placed on both ranks with ``split(0)`` and with
``broadcast``, and finally one nn.Graph training step on global tensors against the same step in eager
local mode. It prints one ``DISTRIBUTED-RESULT {json}`` line with the largest absolute difference per
check and exits non-zero when any exceeds the tolerance.
"""
import argparse
import json
import os
import sys

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "3")
import oneflow as flow  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from knowledge_distill_util import (  # noqa: E402
    att_distill, layer_distill, mseloss, pred_distill, soft_cross_entropy,
)
from knowledge_distill_util import functional as KF  # noqa: E402

TOLERANCE = 1e-5  # OneFlow's global-vs-local tolerance (absolute; values and gradients are O(1))
ARGS = argparse.Namespace(temperature=2.0, teacher_temperature=3.0)
PLACEMENT = flow.placement("cpu", ranks=[0, 1])
SBPS = {"split0": flow.sbp.split(0), "broadcast": flow.sbp.broadcast}


def _inputs():
    """``{operator: (fn(student_list, teacher_list), student arrays, teacher arrays)}``; students get gradients."""
    rng = np.random.default_rng(0)

    def rand(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    mask = np.where(np.arange(3) >= 2, -10000.0, 0.0).astype(np.float32)
    return {
        "pred_distill": (lambda s, t: pred_distill(ARGS, s[0], t[0]), [rand(8, 6, scale=3)], [rand(8, 6, scale=3)]),
        "soft_cross_entropy": (lambda s, t: soft_cross_entropy(s[0], t[0], student_temperature=1.5),
                               [rand(4, 3, 7, scale=3)], [rand(4, 3, 7, scale=3)]),
        "mseloss": (lambda s, t: mseloss(s[0], s[1]), [rand(4, 3, 5), rand(4, 3, 5)], []),
        "layer_distill": (lambda s, t: layer_distill(ARGS, s, t),
                          [rand(4, 3, 5) for _ in range(3)], [rand(4, 3, 5) for _ in range(5)]),
        "att_distill": (lambda s, t: att_distill(ARGS, s, t),
                        [rand(4, 2, 3, 3, scale=3) + mask for _ in range(2)],
                        [rand(4, 2, 3, 3, scale=3) + mask for _ in range(4)]),
        **_issue_11_inputs(rand),
    }


def _issue_11_inputs(rand):
    """The issue-11 losses with masks and per-row temperatures; masks and temperatures ride in the teacher
    list (no gradient) so that they get the same placement and sbp as the data."""
    pad = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32)  # incl. an empty sequence
    temps = np.array([1.0, 2.0, 0.5, 3.0], np.float32)
    return {
        "kl_div": (lambda s, t: KF.kl_div(s[0], t[0], student_temperature=t[1], teacher_temperature=2.0,
                                          temperature_scaling=True, mask=t[2][:, 0]),
                   [rand(4, 5, scale=3)], [rand(4, 5, scale=3), temps, pad]),
        "soft_cross_entropy_masked": (
            lambda s, t: KF.soft_cross_entropy(s[0], t[0], reduction="batchmean", mask=t[1]),
            [rand(4, 3, 5, scale=3)], [rand(4, 3, 5, scale=3), pad]),
        "hidden_mse": (lambda s, t: KF.hidden_mse(s[0], t[0], mask=t[1]), [rand(4, 3, 6)], [rand(4, 3, 6), pad]),
        "hidden_cosine": (lambda s, t: KF.hidden_cosine(s[0], t[0], mask=t[1]), [rand(4, 3, 6)], [rand(4, 3, 6), pad]),
        "pkd_loss": (lambda s, t: KF.pkd_loss(s[0], t[0]), [rand(4, 3, 6)], [rand(4, 3, 6)]),
        "attention_mse": (lambda s, t: KF.attention_mse(s[0], t[0], mask=t[1]),
                          [rand(4, 2, 3, 3, scale=3)], [rand(4, 2, 3, 3, scale=3), pad]),
        "attention_kl": (lambda s, t: KF.attention_kl(s[0], t[0], mask=t[1]),
                         [rand(4, 2, 3, 3, scale=3)], [rand(4, 2, 3, 3, scale=3), pad]),
        "relation_kl": (lambda s, t: KF.relation_kl(s[0], t[0], num_relation_heads=2, mask=t[1]),
                        [rand(4, 3, 4)], [rand(4, 3, 6), pad]),
        "fsp_loss": (lambda s, t: KF.fsp_loss((s[0], s[1]), (t[0], t[1]), mask=t[2]),
                     [rand(4, 3, 4), rand(4, 3, 5)], [rand(4, 3, 4), rand(4, 3, 5), pad]),
        "mmd_loss": (lambda s, t: KF.mmd_loss((s[0], s[1]), (t[0], t[1]), mask=t[2]),
                     [rand(4, 3, 4), rand(4, 3, 4)], [rand(4, 3, 6), rand(4, 3, 6), pad]),
    }


def _loss_and_grads(fn, student, teacher, make):
    s = [make(a).requires_grad_() for a in student]
    t = [make(a) for a in teacher]
    loss = fn(s, t)
    loss.backward()
    return loss, [x.grad for x in s]


def _to_numpy(tensor):
    if tensor.is_global:
        tensor = tensor.to_global(sbp=flow.sbp.broadcast).to_local()
    return tensor.numpy()


def check_eager(results):
    for name, (fn, student, teacher) in _inputs().items():
        loss, grads = _loss_and_grads(fn, student, teacher, flow.tensor)
        for sbp_name, sbp in SBPS.items():
            g_loss, g_grads = _loss_and_grads(
                fn, student, teacher, lambda a: flow.tensor(a, placement=PLACEMENT, sbp=sbp)
            )
            diffs = [abs(_to_numpy(g_loss).item() - loss.item())]
            diffs += [float(np.abs(_to_numpy(g) - l.numpy()).max()) for g, l in zip(g_grads, grads)]
            results[f"{name}/{sbp_name}"] = max(diffs)


def _train_step(model, teacher_logits, teacher_atts, graph: bool):
    """One SGD step of all three distillation losses on a tiny linear student."""
    optimizer = flow.optim.SGD(model.parameters(), lr=0.5)

    def loss_of(m, x, t_logits, t_atts):
        logits = m(x)
        scores = (logits.unsqueeze(1).unsqueeze(-1) * logits.unsqueeze(1).unsqueeze(-2))  # [B, 1, C, C]
        return (pred_distill(ARGS, logits, t_logits) + layer_distill(ARGS, [logits, logits], [t_logits] * 3)
                + att_distill(ARGS, [scores], [t_atts, t_atts]))

    x_np = np.random.default_rng(1).standard_normal((8, 4)).astype(np.float32)
    if not graph:
        x = flow.tensor(x_np)
        loss = loss_of(model, x, teacher_logits, teacher_atts)
        loss.backward()
        optimizer.step()
        return loss

    class Step(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = model
            self.add_optimizer(optimizer)

        def build(self, x, t_logits, t_atts):
            loss = loss_of(self.model, x, t_logits, t_atts)
            loss.backward()
            return loss

    x = flow.tensor(x_np, placement=PLACEMENT, sbp=flow.sbp.split(0))
    return Step()(x, teacher_logits, teacher_atts)


def check_graph(results):
    rng = np.random.default_rng(2)
    t_logits = rng.standard_normal((8, 5)).astype(np.float32)
    t_atts = (rng.standard_normal((8, 1, 5, 5)) + np.where(np.arange(5) >= 4, -10000.0, 0.0)).astype(np.float32)
    flow.manual_seed(0)
    local = flow.nn.Linear(4, 5)
    initial = {k: v.numpy().copy() for k, v in local.state_dict().items()}
    glob = flow.nn.Linear(4, 5)
    glob.load_state_dict(local.state_dict())
    glob.to_global(placement=PLACEMENT, sbp=flow.sbp.broadcast)
    loss = _train_step(local, flow.tensor(t_logits), flow.tensor(t_atts), graph=False)
    split = flow.sbp.split(0)
    g_loss = _train_step(glob, flow.tensor(t_logits, placement=PLACEMENT, sbp=split),
                         flow.tensor(t_atts, placement=PLACEMENT, sbp=split), graph=True)
    diffs = [abs(_to_numpy(g_loss).item() - loss.item())]
    for key, value in local.state_dict().items():
        assert not np.allclose(value.numpy(), initial[key]), f"the step did not change {key}"
        diffs.append(float(np.abs(_to_numpy(glob.state_dict()[key]) - value.numpy()).max()))
    results["graph_training_step/split0"] = max(diffs)


def main() -> int:
    results = {}
    check_eager(results)
    check_graph(results)
    failed = {k: v for k, v in results.items() if not v <= TOLERANCE}
    line = "DISTRIBUTED-RESULT " + json.dumps({"rank": flow.env.get_rank(), "max_abs_diff": results,
                                              "failed": failed}) + "\n"
    # One write() of the whole line: both ranks share the launcher's stdout, and print() may write the
    # text and the newline separately (unbuffered stdout), which let the two ranks' lines interleave.
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), line.encode())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
