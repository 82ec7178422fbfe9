r"""Temperature and loss-weight schedules.

**Per-row temperatures** (pass the result as ``student_temperature``/``teacher_temperature`` of
:func:`~knowledge_distill_util.functional.soft_cross_entropy` or
:func:`~knowledge_distill_util.functional.kl_div`). Both take ``[N, C]`` logits, compute a per-row
weight :math:`w` on **detached** logits, and return ``[N]`` temperatures

.. math::
    T_n = \text{base} + \beta \, (\bar w - w_n), \qquad \bar w = \frac{1}{N} \sum_n w_n

so that the mean temperature is ``base``. A large ``beta`` can make some :math:`T_n \le 0`, which the
losses refuse with a clear error.

**Weight schedules** ``f(step, total)`` give a loss weight in ``[0, 1]``.

Example::

    >>> import oneflow as flow
    >>> from knowledge_distill_util.schedules import cwsm_temperature, linear_decay
    >>> cwsm_temperature(flow.zeros(2, 4), base=2.0).tolist()  # equal confidence: every row gets base
    [2.0, 2.0]
    >>> linear_decay(25, 100)
    0.75
"""
import math
from numbers import Real

import oneflow as flow
import oneflow.nn.functional as F

from ._checks import check_float_tensor, check_ndim, check_pair

__all__ = ["flsw_temperature", "cwsm_temperature", "constant", "linear_growth", "linear_decay"]


def _check_number(name: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def _as_float32_if_half(x: flow.Tensor) -> flow.Tensor:
    return x.float() if x.dtype in (flow.float16, flow.bfloat16) else x


def _centred(w: flow.Tensor, base: float, beta: float) -> flow.Tensor:
    return base + beta * (w.mean() - w)


def flsw_temperature(student_logits: flow.Tensor, teacher_logits: flow.Tensor, base: float,
                     beta: float = 1.0, gamma: float = 2.0) -> flow.Tensor:
    r"""Per-row temperatures from the student-teacher disagreement (FLSW-style).

    .. math::
        w_n = \left(1 - \frac{s_n}{\max(\lVert s_n\rVert, 10^{-12})} \cdot
              \frac{t_n}{\max(\lVert t_n\rVert, 10^{-12})}\right)^\gamma

    (``1 - cos`` is clamped at 0 against rounding), then :math:`T_n = \text{base} + \beta(\bar w - w_n)`:
    rows where the student disagrees more get a lower temperature.

    Args:
        student_logits, teacher_logits: ``[N, C]`` of equal shape (detached here).
        base: the mean temperature (> 0). beta: the spread. gamma: the exponent (>= 0).

    Returns:
        ``[N]`` temperatures (float32 for half inputs).

    >>> import oneflow as flow
    >>> s = flow.tensor([[1.0, 0.0], [1.0, 0.0]])
    >>> t = flow.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> flsw_temperature(s, t, base=2.0, gamma=1.0).tolist()  # w = [0, 1], mean 0.5
    [2.5, 1.5]
    """
    check_pair("student_logits", student_logits, "teacher_logits", teacher_logits)
    check_ndim("student_logits", student_logits, (2,), "[N, C]")
    base = _check_number("base", base, positive=True)
    beta = _check_number("beta", beta)
    gamma = _check_number("gamma", gamma)
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    s = _as_float32_if_half(student_logits).detach()
    t = _as_float32_if_half(teacher_logits).detach()
    cos = (F.normalize(s, p=2.0, dim=-1, eps=1e-12) * F.normalize(t, p=2.0, dim=-1, eps=1e-12)).sum(dim=-1)
    w = flow.pow(flow.clamp(1.0 - cos, min=0.0), gamma)
    return _centred(w, base, beta)


def cwsm_temperature(student_logits: flow.Tensor, base: float, beta: float = 1.0) -> flow.Tensor:
    r"""Per-row temperatures from the student's confidence (CWSM-style).

    .. math::
        w_n = \frac{1}{\max_c \operatorname{softmax}(s_n)_c + 10^{-3}}, \qquad
        T_n = \text{base} + \beta(\bar w - w_n)

    Args:
        student_logits: ``[N, C]`` (detached here).
        base: the mean temperature (> 0). beta: the spread.

    Returns:
        ``[N]`` temperatures.

    >>> import oneflow as flow
    >>> [round(x, 4) for x in cwsm_temperature(flow.tensor([[0.0, 0.0], [9.0, 0.0]]), base=2.0).tolist()]
    [1.5016, 2.4984]
    """
    check_float_tensor("student_logits", student_logits)
    check_ndim("student_logits", student_logits, (2,), "[N, C]")
    base = _check_number("base", base, positive=True)
    beta = _check_number("beta", beta)
    s = _as_float32_if_half(student_logits).detach()
    w = 1.0 / (F.softmax(s, dim=-1).max(dim=-1)[0] + 1e-3)
    return _centred(w, base, beta)


def _fraction(step, total) -> float:
    step = _check_number("step", step)
    total = _check_number("total", total, positive=True)
    return min(1.0, max(0.0, step / total))


def constant(step: float, total: float) -> float:
    """Weight 1.0 at every step (``step`` and ``total`` are still validated).

    >>> constant(3, 10)
    1.0
    """
    _fraction(step, total)
    return 1.0


def linear_growth(step: float, total: float) -> float:
    """``step / total`` clamped to ``[0, 1]``.

    >>> linear_growth(5, 20), linear_growth(30, 20)
    (0.25, 1.0)
    """
    return _fraction(step, total)


def linear_decay(step: float, total: float) -> float:
    """``1 - step / total`` clamped to ``[0, 1]``.

    >>> linear_decay(5, 20), linear_decay(-1, 20)
    (0.75, 1.0)
    """
    return 1.0 - _fraction(step, total)
