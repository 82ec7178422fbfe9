"""Bad input raises a clear TypeError/ValueError naming the argument, the values and the fix."""
import argparse

import numpy as np
import oneflow as flow
import pytest

from knowledge_distill_util import att_distill, layer_distill, mseloss, pred_distill, soft_cross_entropy
from knowledge_distill_util.functional import att_distill_loss, layer_distill_loss


def zeros(*shape):
    return flow.zeros(*shape)


def reps(n, shape=(1, 2, 3)):
    return [zeros(*shape) for _ in range(n)]


@pytest.mark.parametrize("call, error, message", [
    (lambda: layer_distill(None, [], reps(3)), ValueError, r"student_reps is empty; pass one tensor per layer"),
    (lambda: layer_distill(None, reps(3), []), ValueError, r"teacher_reps is empty"),
    (lambda: att_distill(None, [], reps(4)), ValueError, r"student_atts is empty"),
    (lambda: att_distill(None, reps(2), ()), ValueError, r"teacher_atts is empty"),
])
def test_empty_lists(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_teacher_layer_count_not_a_multiple_of_the_students():
    with pytest.raises(ValueError, match=r"teacher's layers count \(teacher_reps: 12\) must be a multiple of the "
                                         r"student's \(student_reps: 5\)"):
        layer_distill(None, reps(6), reps(13))
    with pytest.raises(ValueError, match=r"\(teacher_atts: 6\) must be a multiple of the student's \(student_atts: 4\)"):
        att_distill(None, reps(4), reps(6))


def test_layer_count_errors_of_the_args_operators_name_a_call_they_can_make():
    """layer_distill(args, ...) takes no strategy: the error names the keyword call that does."""
    with pytest.raises(ValueError, match=r"divisor of 12 layers, or call knowledge_distill_util\.functional\."
                                         r"layer_distill_loss\(student_reps, teacher_reps, strategy=\"round\"\) "
                                         r"\(or layer_map=\[\.\.\.\]\) instead$"):
        layer_distill(None, reps(6), reps(13))
    with pytest.raises(ValueError, match=r"or call knowledge_distill_util\.functional\.att_distill_loss\(student_atts, "
                                         r"teacher_atts, strategy=\"round\"\)"):
        att_distill(None, reps(4), reps(6))


def test_student_with_more_layers_than_the_teacher():
    with pytest.raises(ValueError, match=r"student has more layers \(student_reps: 6\) than the teacher \(teacher_reps: 3\)"):
        layer_distill(None, reps(7), reps(4))
    with pytest.raises(ValueError, match=r"student has more layers \(student_atts: 4\) than the teacher \(teacher_atts: 2\)"):
        att_distill(None, reps(4), reps(2))


def test_student_reps_without_any_layer():
    with pytest.raises(ValueError, match=r"student_reps has no layers"):
        layer_distill(None, reps(1), reps(5))


def test_pair_with_different_shapes_names_the_pair():
    student = reps(3)
    teacher = reps(5)
    teacher[2] = zeros(1, 2, 4)  # paired with student entry 1 (k = 2)
    with pytest.raises(ValueError, match=r"student_reps\[1\] has shape \(1, 2, 3\) but teacher_reps\[2\] "
                                         r"\(its paired teacher entry\) has shape \(1, 2, 4\)"):
        layer_distill(None, student, teacher)
    with pytest.raises(ValueError, match=r"student_atts\[0\] has shape \(1, 2, 3\) but teacher_atts\[1\]"):
        att_distill(None, reps(1), [zeros(1, 2, 3), zeros(1, 3, 3)])


@pytest.mark.parametrize("call, message", [
    (lambda: soft_cross_entropy(np.zeros((2, 3)), zeros(2, 3)), r"predicts must be a oneflow.Tensor, got ndarray"),
    (lambda: mseloss(zeros(2), [0.0, 0.0]), r"rep2 must be a oneflow.Tensor, got list"),
    (lambda: layer_distill(None, zeros(3, 2), reps(3)), r"student_reps must be a list or tuple of tensors"),
    (lambda: att_distill(None, reps(1), [np.zeros((1, 2, 3))]), r"teacher_atts\[0\] \(its paired teacher entry\) must be a oneflow.Tensor"),
    (lambda: pred_distill(None, flow.zeros(2, 3, dtype=flow.int64), zeros(2, 3)),
     r"student_logits must be a floating-point tensor .* got dtype oneflow.int64; cast it with student_logits.float\(\)"),
    (lambda: mseloss(zeros(2), zeros(2).double()), r"rep1 has dtype oneflow.float32 but rep2 has dtype oneflow.float64"),
])
def test_non_tensor_or_integer_inputs(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_student_and_teacher_logits_of_different_shapes():
    with pytest.raises(ValueError, match=r"student_logits has shape \(4, 3\) but teacher_logits has shape \(4, 5\); they must be "
                                         r"equal \(no broadcasting\)"):
        pred_distill(None, zeros(4, 3), zeros(4, 5))
    with pytest.raises(ValueError, match=r"rep1 has shape \(4, 1\) but rep2 has shape \(4,\)"):
        mseloss(zeros(4, 1), zeros(4))


def test_scalar_logits():
    with pytest.raises(ValueError, match=r"predicts must have at least one dimension"):
        soft_cross_entropy(flow.tensor(1.0), flow.tensor(1.0))


def test_mismatched_devices():
    meta = flow.zeros(2, 3).to_global(placement=flow.placement("cpu", ranks=[0]), sbp=flow.sbp.broadcast)
    with pytest.raises(ValueError, match=r"predicts is local but targets is global; make both local or both global"):
        soft_cross_entropy(zeros(2, 3), meta)
    if not flow.cuda.is_available():
        pytest.skip("the cuda-vs-cpu case needs a CUDA device; this machine has none")
    with pytest.raises(ValueError, match=r"predicts \(device=cpu:0\) and targets \(device=cuda:0\) are on different devices"):
        soft_cross_entropy(zeros(2, 3), zeros(2, 3).to("cuda"))


@pytest.mark.parametrize("namespace, error, message", [
    (argparse.Namespace(temperature=0.0), ValueError, r"args.temperature must be a finite number >= 0.0001, got 0.0"),
    (argparse.Namespace(temperature=-1.0), ValueError, r"args.temperature must be a finite number >= 0.0001, got -1.0"),
    (argparse.Namespace(temperature=float("inf")), ValueError, r"args.temperature must be a finite number >= 0.0001, got inf"),
    (argparse.Namespace(temperature=float("nan")), ValueError, r"args.temperature must be a finite number >= 0.0001, got nan"),
    (argparse.Namespace(teacher_temperature=0.0), ValueError, r"args.teacher_temperature must be a finite number >= 0.0001"),
    (argparse.Namespace(student_temperature="2"), TypeError, r"args.student_temperature must be a number >= 0.0001, got '2'"),
    (argparse.Namespace(temperature=True), TypeError, r"args.temperature must be a number >= 0.0001, got True"),
])
def test_invalid_temperatures(namespace, error, message):
    with pytest.raises(error, match=message):
        pred_distill(namespace, zeros(2, 3), zeros(2, 3))


@pytest.mark.parametrize("call, message", [
    (lambda: layer_distill_loss(reps(3), reps(5), layer_map=[0, 2]), r"layer_map has 2 entries but the student list has 3"),
    (lambda: layer_distill_loss(reps(2), reps(5), layer_map=[0, 5]), r"layer_map\[1\] = 5 is not a valid index into teacher_reps \(length 5\)"),
    (lambda: att_distill_loss(reps(2), reps(4), layer_map=[0, -1]), r"layer_map\[1\] = -1 is not a valid index into teacher_atts"),
])
def test_invalid_explicit_layer_maps(call, message):
    with pytest.raises(ValueError, match=message):
        call()
