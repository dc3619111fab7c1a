"""Slow, obvious twins of the binary (sigmoid) losses of :mod:`cellseg.train.losses`.

Float64 NumPy, one pixel at a time from the textbook formulas, for float targets
in [0, 1] (soft targets included): ``p = 1 / (1 + exp(-x))``.

* :func:`bce_ref` — ``mean(-(t log p + (1 - t) log(1 - p)))``.
* :func:`balanced_bce_ref` — the same with class weights ``N / (2 (n_k + eps))``
  from the soft counts ``n1 = Σ t``, ``n0 = Σ (1 - t)``, normalised by the weight sum.
* :func:`dice_ref`, :func:`jaccard_ref` — per channel over batch and space,
  averaged over channels.
* :func:`focal_ref` — ``mean(-α_t (1 - p_t)^γ (t log p + (1 - t) log(1 - p)))``.
"""
from __future__ import annotations

import math

import numpy as np


def _p(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _bce(x: float, t: float) -> float:
    p = _p(x)
    return -(t * math.log(p) + (1 - t) * math.log(1 - p))


def bce_ref(logits, target) -> float:
    xs, ts = np.asarray(logits, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    return sum(_bce(x, t) for x, t in zip(xs, ts)) / len(xs)


def balanced_bce_ref(logits, target, eps: float = 1.0) -> float:
    xs, ts = np.asarray(logits, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    n1 = sum(ts)
    n0 = sum(1 - t for t in ts)
    w1 = len(ts) / (2 * (n1 + eps))
    w0 = len(ts) / (2 * (n0 + eps))
    num = den = 0.0
    for x, t in zip(xs, ts):
        w = w1 * t + w0 * (1 - t)
        num += w * _bce(x, t)
        den += w
    return num / den


def _per_channel(logits, target):
    x, t = np.asarray(logits, np.float64), np.asarray(target, np.float64)
    for c in range(x.shape[1]):
        yield x[:, c].ravel(), t[:, c].ravel()


def dice_ref(logits, target, smooth: float = 1.0) -> float:
    scores = []
    for xs, ts in _per_channel(logits, target):
        ps = [_p(v) for v in xs]
        inter = sum(p * t for p, t in zip(ps, ts))
        scores.append((2 * inter + smooth) / (sum(ps) + sum(ts) + smooth))
    return 1.0 - sum(scores) / len(scores)


def jaccard_ref(logits, target, smooth: float = 1.0) -> float:
    scores = []
    for xs, ts in _per_channel(logits, target):
        ps = [_p(v) for v in xs]
        inter = sum(p * t for p, t in zip(ps, ts))
        scores.append((inter + smooth) / (sum(ps) + sum(ts) - inter + smooth))
    return 1.0 - sum(scores) / len(scores)


def focal_ref(logits, target, gamma: float = 2.0, alpha: float | None = None) -> float:
    xs, ts = np.asarray(logits, np.float64).ravel(), np.asarray(target, np.float64).ravel()
    total = 0.0
    for x, t in zip(xs, ts):
        p = _p(x)
        pt = p * t + (1 - p) * (1 - t)
        a = 1.0 if alpha is None else alpha * t + (1 - alpha) * (1 - t)
        total += a * (1 - pt) ** gamma * _bce(x, t)
    return total / len(xs)
