"""The schedules of the recipes' objectives (:mod:`.objectives`): temperatures per row, weights per step.

Any objective: ``args.temperature_schedule`` ``flsw``/``cwsm`` gives the soft-label term per-row
temperatures (:func:`row_temperatures`); ``args.logit_weight_schedule`` / ``args.hidden_weight_schedule``
(``linear_growth``, ``linear_decay``) multiply the soft-label resp. intermediate terms by the factor fed at each
step (:class:`ScheduledArgs`, :func:`schedule_factors`). ``constant`` (the default) leaves the terms as they are.

The trainer feeds :func:`schedule_factors` as the step input ``schedule_factors`` when
:func:`uses_weight_schedules`; an objective multiplies its terms with :func:`scheduled` (or :func:`factor`).
"""
import oneflow as flow

from ..schedules import cwsm_temperature, flsw_temperature, linear_decay, linear_growth

__all__ = ["WEIGHT_SCHEDULES", "TEMPERATURE_SCHEDULES", "row_temperatures", "schedule_factors",
           "uses_weight_schedules", "ScheduledArgs", "factor", "scheduled"]


#: Loss-weight schedules, in the order of the :func:`schedule_factors` vector.
WEIGHT_SCHEDULES = ("constant", "linear_growth", "linear_decay")
#: Temperature schedules: one temperature, or per-row temperatures around it (:mod:`~knowledge_distill_util.schedules`).
TEMPERATURE_SCHEDULES = ("constant", "flsw", "cwsm")


def row_temperatures(schedule: str, student_logits: flow.Tensor, teacher_logits: flow.Tensor, t_s: float,
                     t_t: float):
    """``(T_s, T_t)``: the numbers themselves for ``"constant"``, else ``[N]`` per-row temperatures of
    ``flsw_temperature``/``cwsm_temperature`` (mean ``T_s`` resp. ``T_t``; computed on detached logits)."""
    if schedule == "constant":
        return t_s, t_t
    s = student_logits.reshape(-1, student_logits.shape[-1])
    if schedule == "flsw":
        t = teacher_logits.reshape(-1, teacher_logits.shape[-1])
        rows = [flsw_temperature(s, t, base=base) for base in (t_s, t_t)]
    else:
        rows = [cwsm_temperature(s, base=base) for base in (t_s, t_t)]
    return tuple(r.reshape(tuple(student_logits.shape[:-1])) for r in rows)


def schedule_factors(step: int, total: int):
    """``[constant, linear_growth, linear_decay]`` at ``step`` of ``total`` (float32 numpy, what the trainer
    feeds the step as ``schedule_factors``)."""
    import numpy as np

    return np.array([1.0, linear_growth(step, total), linear_decay(step, total)], dtype=np.float32)


def uses_weight_schedules(args) -> bool:
    """True when a weight schedule of ``args`` is not ``"constant"`` (the trainer then feeds the factors)."""
    names = [getattr(args, "logit_weight_schedule", "constant"), getattr(args, "hidden_weight_schedule", "constant")]
    names += [term.get("schedule", "constant") for term in (getattr(args, "logit_terms", None) or [])
              if isinstance(term, dict)]
    return any(name != "constant" for name in names)


class ScheduledArgs:
    """``args`` plus ``schedule_factors`` (a ``[3]`` tensor, :func:`schedule_factors`) for one step."""

    def __init__(self, args, factors: flow.Tensor):
        self._args = args
        self.schedule_factors = factors

    def __getattr__(self, name):
        return getattr(self._args, name)


def factor(args, schedule: str):
    """The ``[]`` factor of weight schedule ``schedule`` at this step, or None (constant, or no factors fed)."""
    factors = getattr(args, "schedule_factors", None)
    if factors is None or schedule == "constant":
        return None
    return factors[WEIGHT_SCHEDULES.index(schedule)]


def scheduled(args, kind: str, term: flow.Tensor) -> flow.Tensor:
    """``term`` times the factor of ``args.<kind>_weight_schedule`` (``kind``: ``logit`` or ``hidden``); the
    term itself when the schedule is constant (so the default numbers are exactly today's)."""
    f = factor(args, getattr(args, f"{kind}_weight_schedule", "constant"))
    return term if f is None else term * f
