"""Independent numpy float64 references of the formulas in shared/reference/original_api.md.

Written from the formulas, not from the package: stable log-softmax, explicit uniform layer maps.
"""
import numpy as np


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(x))


def soft_cross_entropy(predicts, targets) -> float:
    """mean over all elements of -softmax(targets) * log_softmax(predicts)."""
    return float(np.mean(-softmax(targets) * log_softmax(predicts)))


def pred_distill(student, teacher, t_student=1.0, t_teacher=1.0) -> float:
    return soft_cross_entropy(np.asarray(student, np.float64) / t_student, np.asarray(teacher, np.float64) / t_teacher)


def soft_cross_entropy_grad(student, teacher, t_student=1.0, t_teacher=1.0) -> np.ndarray:
    """Closed form d loss / d student = (softmax(s/Ts) - softmax(t/Tt)) / (Ts * n)."""
    s = np.asarray(student, np.float64)
    return (softmax(s / t_student) - softmax(np.asarray(teacher, np.float64) / t_teacher)) / (t_student * s.size)


def mse(a, b) -> float:
    return float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))


def layer_distill(student_reps, teacher_reps) -> float:
    ls, lt = len(student_reps) - 1, len(teacher_reps) - 1
    k = lt // ls
    return sum(mse(student_reps[i], teacher_reps[i * k]) for i in range(ls + 1))


def att_distill(student_atts, teacher_atts) -> float:
    ls, lt = len(student_atts), len(teacher_atts)
    k = lt // ls

    def zero_masked(x):
        x = np.asarray(x, np.float64)
        return np.where(x <= -100, 0.0, x)

    return sum(mse(zero_masked(student_atts[i]), zero_masked(teacher_atts[i * k + k - 1])) for i in range(ls))
