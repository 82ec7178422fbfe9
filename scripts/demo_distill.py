"""A minimal argparse-driven distillation with all three operators, on generated data (about 30 s on CPU).

A 4-layer BERT teacher learns a generated task (is the sequence dominated by "high" tokens?), then a
2-layer student with a smaller hidden size is distilled from it with
``pred_distill + layer_distill + att_distill``, exactly as an original Tianshu/Dubhe script would call them.
The losses are printed as they fall, then the accuracies of teacher and student.

    python scripts/demo_distill.py --temperature 2 --num_steps 150
"""
import argparse
import os
import time

os.environ.setdefault("GLOG_minloglevel", "3")

import numpy as np  # noqa: E402

# The package first: it picks the CPU's OpenBLAS kernels before OneFlow loads (docs/performance.md).
from knowledge_distill_util import add_distill_args, att_distill, layer_distill, pred_distill  # noqa: E402
import oneflow as flow  # noqa: E402
from knowledge_distill_util.models import BertForSequenceClassification, BertStudentForSequenceClassification  # noqa: E402

VOCAB_SIZE = 64


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seq_length", type=int, default=16)
    parser.add_argument("--num_examples", type=int, default=2048)
    parser.add_argument("--batch_size_per_device", type=int, default=64)
    parser.add_argument("--teacher_steps", type=int, default=150)
    parser.add_argument("--num_steps", type=int, default=150, help="student distillation steps")
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--print_every", type=int, default=25)
    add_distill_args(parser)  # --temperature, --teacher_temperature, --student_temperature, --kd_alpha, ...
    return parser.parse_args(argv)


def make_data(rng: np.random.Generator, num: int, seq_length: int):
    """Token ids in [1, 64); label 1 when more than half of the non-padding tokens are >= 32."""
    ids = rng.integers(1, VOCAB_SIZE, size=(num, seq_length))
    lengths = rng.integers(seq_length // 2, seq_length + 1, size=num)
    mask = (np.arange(seq_length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    labels = (((ids >= 32) * mask).sum(1) * 2 > lengths).astype(np.int64)
    return ids, mask, labels


def batches(data, batch_size: int, rng: np.random.Generator):
    ids, mask, labels = data
    while True:
        order = rng.permutation(len(labels))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            yield flow.tensor(ids[idx]), flow.tensor(mask[idx]), flow.tensor(labels[idx])


def accuracy(model, data) -> float:
    model.eval()
    ids, mask, labels = (flow.tensor(x) for x in data)
    with flow.no_grad():
        logits = model(ids, mask, flow.zeros_like(ids))[0]
    return float((logits.argmax(-1) == labels).float().mean().item())


def train_teacher(args, teacher, train, rng) -> None:
    optimizer = flow.optim.Adam(teacher.parameters(), lr=args.learning_rate)
    teacher.train()
    for step, (ids, mask, labels) in zip(range(args.teacher_steps), batches(train, args.batch_size_per_device, rng)):
        loss = flow.nn.functional.cross_entropy(teacher(ids, mask, flow.zeros_like(ids))[0], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.print_every == 0 or step == args.teacher_steps - 1:
            print(f"teacher step {step:4d}  cross entropy {loss.item():.4f}")


def distill_student(args, student, teacher, train, rng) -> None:
    optimizer = flow.optim.Adam(student.parameters(), lr=args.learning_rate)
    teacher.eval()  # no dropout; no gradients below
    student.train()
    for step, (ids, mask, _) in zip(range(args.num_steps), batches(train, args.batch_size_per_device, rng)):
        segments = flow.zeros_like(ids)
        s_logits, s_reps, s_atts = student(ids, mask, segments)
        with flow.no_grad():
            t_logits, t_reps, t_atts = teacher(ids, mask, segments)
        terms = {
            "pred": pred_distill(args, s_logits, t_logits),
            "layer": layer_distill(args, s_reps, t_reps),
            "att": att_distill(args, s_atts, t_atts),
        }
        loss = terms["pred"] + terms["layer"] + terms["att"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.print_every == 0 or step == args.num_steps - 1:
            parts = "  ".join(f"{name} {value.item():.4f}" for name, value in terms.items())
            print(f"student step {step:4d}  total {loss.item():.4f}  ({parts})")


def main(argv=None) -> None:
    args = parse_args(argv)
    flow.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train = make_data(rng, args.num_examples, args.seq_length)
    dev = make_data(rng, args.num_examples // 4, args.seq_length)
    common = dict(vocab_size=VOCAB_SIZE, seq_length=args.seq_length, max_position_embeddings=args.seq_length,
                  num_attention_heads=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, label_num=2)
    teacher = BertForSequenceClassification(hidden_size=64, num_hidden_layers=4, intermediate_size=128, **common)
    # The student is narrower (32) and shallower (2 of 4 layers); fit_dense projects its reps to 64.
    student = BertStudentForSequenceClassification(hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                                                   fit_size=64, **common)
    start = time.time()
    train_teacher(args, teacher, train, rng)
    distill_student(args, student, teacher, train, rng)
    print(f"dev accuracy: teacher {accuracy(teacher, dev):.3f}, distilled student {accuracy(student, dev):.3f} "
          f"({time.time() - start:.1f} s)")


if __name__ == "__main__":
    main()
