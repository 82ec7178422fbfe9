"""Independent numpy float64 references of the issue-11 losses, written from the formulas in the issue.

Masks are applied by **gathering the valid positions** (never by multiplying or filling, as the package
does), so that a masking bug in the package cannot be repeated here. Softmaxes are the stable
``reference.log_softmax``; ``0 * log 0`` is handled by summing only the terms with ``p_t > 0``.
"""
import math

import numpy as np

from reference import log_softmax, softmax


def _f64(x):
    return np.asarray(x, dtype=np.float64)


# --- logits -----------------------------------------------------------------------------------------


def _row_terms(s_row, t_row, ts, tt, kl):
    log_p_s = log_softmax(s_row / ts)
    log_p_t = log_softmax(t_row / tt)
    total = 0.0
    for c in range(s_row.shape[-1]):
        p = math.exp(log_p_t[c])
        if p > 0:
            total += p * ((log_p_t[c] if kl else 0.0) - log_p_s[c])
    return total


def soft_target_rows(s, t, ts=1.0, tt=1.0, kl=False, scaling=False):
    """Per-row cross entropy (or KL) ``[...]`` for scalar or per-row temperatures."""
    s, t = _f64(s), _f64(t)
    lead = s.shape[:-1]
    ts_arr = np.broadcast_to(_f64(ts), lead)
    tt_arr = np.broadcast_to(_f64(tt), lead)
    rows = np.zeros(lead)
    for idx in np.ndindex(*lead):
        rows[idx] = _row_terms(s[idx], t[idx], ts_arr[idx], tt_arr[idx], kl)
        if scaling:
            rows[idx] *= ts_arr[idx] * tt_arr[idx]
    return rows


def reduce_rows(rows, mask, reduction, classes):
    """The issue's reductions: mean = sum(m r)/(sum(m) C), batchmean = sum(m r)/sum(m), sum, none = m r."""
    rows = _f64(rows)
    m = np.ones_like(rows) if mask is None else _f64(mask)
    valid = rows[m > 0]
    if reduction == "none":
        out = np.zeros_like(rows)
        out[m > 0] = valid
        return out
    if reduction == "sum":
        return float(valid.sum())
    count = valid.size
    if count == 0:
        return 0.0
    return float(valid.sum() / (count * (classes if reduction == "mean" else 1)))


def soft_cross_entropy(s, t, ts=1.0, tt=1.0, reduction="mean", scaling=False, mask=None):
    return reduce_rows(soft_target_rows(s, t, ts, tt, False, scaling), mask, reduction, np.shape(s)[-1])


def kl_div(s, t, ts=1.0, tt=1.0, reduction="batchmean", scaling=False, mask=None):
    return reduce_rows(soft_target_rows(s, t, ts, tt, True, scaling), mask, reduction, np.shape(s)[-1])


def average_logits(teachers, weights=None):
    weights = [1.0] * len(teachers) if weights is None else list(weights)
    return sum(w * _f64(x) for w, x in zip(weights, teachers)) / sum(weights)


# --- hidden states ----------------------------------------------------------------------------------


def _valid_vectors(x, mask):
    x = _f64(x)
    flat = x.reshape(-1, x.shape[-1])
    if mask is None:
        return flat
    return flat[_f64(mask).reshape(-1) > 0]


def hidden_mse(s, t, mask=None):
    vs, vt = _valid_vectors(s, mask), _valid_vectors(t, mask)
    if vs.shape[0] == 0:
        return 0.0
    return float(((vs - vt) ** 2).sum() / (vs.shape[0] * vs.shape[1]))


def hidden_cosine(s, t, mask=None):
    vs, vt = _valid_vectors(s, mask), _valid_vectors(t, mask)
    if vs.shape[0] == 0:
        return 0.0
    losses = []
    for a, b in zip(vs, vt):
        denom = max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8)
        losses.append(1.0 - float(a @ b) / denom)
    return float(np.mean(losses))


def pkd(s, t):
    s, t = _f64(s), _f64(t)
    if s.ndim == 3:
        s, t = s[:, 0], t[:, 0]
    total = 0.0
    for a, b in zip(s, t):
        na = a / max(np.linalg.norm(a), 1e-12)
        nb = b / max(np.linalg.norm(b), 1e-12)
        total += float(((na - nb) ** 2).sum())
    return total / s.shape[0]


# --- attention and relations ------------------------------------------------------------------------


def _valid_index(mask, b, length):
    return np.arange(length) if mask is None else np.flatnonzero(_f64(mask)[b] > 0)


def attention_mse(s, t, mask=None, threshold=-100.0):
    s, t = _f64(s), _f64(t)
    s = np.where(s <= threshold, 0.0, s)
    t = np.where(t <= threshold, 0.0, t)
    batch, heads, length, _ = s.shape
    total, count = 0.0, 0
    for b in range(batch):
        idx = _valid_index(mask, b, length)
        d = s[b][:, idx][:, :, idx] - t[b][:, idx][:, :, idx]
        total += float((d ** 2).sum())
        count += heads * len(idx) ** 2
    return total / count if count else 0.0


def _row_kl(s_row, t_row):
    log_p_s, log_p_t = log_softmax(s_row), log_softmax(t_row)
    p_t = np.exp(log_p_t)
    keep = p_t > 0
    return float((p_t[keep] * (log_p_t[keep] - log_p_s[keep])).sum())


def attention_kl(s, t, mask=None):
    """KL over the valid keys only (the padded keys are removed), averaged over valid query rows."""
    s, t = _f64(s), _f64(t)
    batch, heads, length, _ = s.shape
    total, count = 0.0, 0
    for b in range(batch):
        idx = _valid_index(mask, b, length)
        for h in range(heads):
            for i in idx:
                total += _row_kl(s[b, h, i, idx], t[b, h, i, idx])
                count += 1
    return total / count if count else 0.0


def relation_scores(x, heads):
    """``[B, L, H] -> [B, R, L, L]``: head r is the column block ``r*d:(r+1)*d``."""
    x = _f64(x)
    d = x.shape[-1] // heads
    out = np.empty((x.shape[0], heads, x.shape[1], x.shape[1]))
    for r in range(heads):
        block = x[:, :, r * d:(r + 1) * d]
        out[:, r] = block @ block.transpose(0, 2, 1) / math.sqrt(d)
    return out


def relation_kl(s, t, heads, mask=None):
    return attention_kl(relation_scores(s, heads), relation_scores(t, heads), mask)


# --- FSP and MMD ------------------------------------------------------------------------------------


def fsp(student, teacher, mask=None):
    (s0, s1), (t0, t1) = [tuple(_f64(x) for x in pair) for pair in (student, teacher)]
    batch, length = s0.shape[:2]
    total, sequences = 0.0, 0
    for b in range(batch):
        idx = _valid_index(mask, b, length)
        if len(idx) == 0:
            continue
        g_s = s0[b, idx].T @ s1[b, idx] / len(idx)
        g_t = t0[b, idx].T @ t1[b, idx] / len(idx)
        total += float(((g_s - g_t) ** 2).sum())
        sequences += 1
    return total / (sequences * s0.shape[-1] * s1.shape[-1]) if sequences else 0.0


def mmd(student, teacher, mask=None):
    (s0, s1), (t0, t1) = [tuple(_f64(x) for x in pair) for pair in (student, teacher)]
    batch, length = s0.shape[:2]
    total, count = 0.0, 0
    for b in range(batch):
        idx = _valid_index(mask, b, length)
        g_s = s0[b, idx] @ s1[b, idx].T / s0.shape[-1]
        g_t = t0[b, idx] @ t1[b, idx].T / t0.shape[-1]
        total += float(((g_s - g_t) ** 2).sum())
        count += len(idx) ** 2
    return total / count if count else 0.0


# --- layer maps -------------------------------------------------------------------------------------


def teacher_layer(i, n_s, n_t, strategy):
    """The issue's f(i) on 1-based layer numbers."""
    if strategy == "uniform":
        return i * (n_t // n_s)
    if strategy == "first":
        return i
    if strategy == "last":
        return n_t - n_s + i
    return math.floor(i * n_t / n_s + 0.5)


# --- schedules --------------------------------------------------------------------------------------


def _unit(x):
    return x / max(np.linalg.norm(x), 1e-12)


def flsw_temperature(s, t, base, beta=1.0, gamma=2.0):
    s, t = _f64(s), _f64(t)
    w = np.array([(1.0 - float(_unit(a) @ _unit(b))) ** gamma for a, b in zip(s, t)])
    return base + beta * (w.mean() - w)


def cwsm_temperature(s, base, beta=1.0):
    w = 1.0 / (softmax(_f64(s)).max(axis=-1) + 1e-3)
    return base + beta * (w.mean() - w)
