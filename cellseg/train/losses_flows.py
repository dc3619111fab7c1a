"""Training loss of the flow representations (Cellpose / Omnipose).

``loss(raw, targets, rep) -> (total, parts)`` with ``raw`` the PRE-activation
heads ``{"flow": (B, ndim, *sp), "prob": (B, 1, *sp)[, "dist": (B, 1, *sp)]}``
and ``targets`` the batched :meth:`Flows.encode` outputs (same names/shapes).

    total = MSE(flow) / 2 + BCE(prob) [+ dist_weight * wMSE(dist)]

* ``MSE(flow)``: mean squared error between the raw flow head (identity
  activation) and the target flows at the head scale (5 x unit vectors, 0 on
  the background), halved -- Cellpose's ``loss = MSE(y[:, :2], 5 * flows) / 2``.
* ``BCE(prob)``: binary cross-entropy with logits against the foreground
  (Cellpose's cell-probability term).
* ``wMSE(dist)`` (``rep.mode == "omnipose"`` only): mean squared error on the
  smooth-distance head against the distance target (-5 on the background), each
  pixel weighted by ``(1 + foreground) / 2`` and normalised by the mean weight
  (Omnipose's weighting of its distance loss). ``dist_weight`` defaults to 1.

``head_loss`` (``TrainConfig.loss``, see :data:`cellseg.train.losses.HEAD_LOSSES`)
replaces ``BCE(prob)`` by another loss of the prob logits against the same 0/1
foreground; the flow and distance regressions stay.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["loss", "DIST_WEIGHT", "PROBABILITY_HEAD"]

DIST_WEIGHT = 1.0
#: the head whose BCE term ``head_loss`` replaces
PROBABILITY_HEAD = "prob"


def _get(d, name, what, ndim):
    if name not in d:
        raise KeyError(f"{what}: missing {name!r}; got {sorted(d)}")
    t = d[name]
    if not isinstance(t, torch.Tensor) or t.ndim != ndim + 2:
        raise ValueError(f"{what}[{name!r}] must be a (B, C, *spatial) tensor with {ndim} spatial dims, "
                         f"got {getattr(t, 'shape', type(t))}")
    return t


def loss(raw, targets, rep, *, dist_weight: float = DIST_WEIGHT, head_loss=None):
    """Flow loss; returns ``(total scalar tensor, {"flow", "prob"[, "dist"], "total"}: floats)``."""
    nd = int(getattr(rep, "ndim", 2))
    mode = getattr(rep, "mode", "cellpose")
    rf, rp = _get(raw, "flow", "raw", nd), _get(raw, "prob", "raw", nd)
    tf, tp = _get(targets, "flow", "targets", nd), _get(targets, "prob", "targets", nd)
    if rf.shape[1] != nd or rp.shape[1] != 1:
        raise ValueError(f"raw heads must have {nd} and 1 channels, got {rf.shape[1]} and {rp.shape[1]}")
    if tuple(tf.shape) != tuple(rf.shape) or tuple(tp.shape) != tuple(rp.shape):
        raise ValueError(f"target shapes {tuple(tf.shape)}, {tuple(tp.shape)} differ from outputs "
                         f"{tuple(rf.shape)}, {tuple(rp.shape)}")
    fg = (tp > 0.5).to(rp.dtype)
    l_flow = F.mse_loss(rf, tf.to(rf.dtype)) / 2.0
    l_prob = F.binary_cross_entropy_with_logits(rp, fg) if head_loss is None else head_loss(rp, fg)
    total = l_flow + l_prob
    parts = {"flow": float(l_flow.detach()), "prob": float(l_prob.detach())}
    if mode == "omnipose":
        rd, td = _get(raw, "dist", "raw", nd), _get(targets, "dist", "targets", nd)
        if tuple(rd.shape) != tuple(rp.shape) or tuple(td.shape) != tuple(rd.shape):
            raise ValueError(f"dist head and target must have shape {tuple(rp.shape)}, got "
                             f"{tuple(rd.shape)} and {tuple(td.shape)}")
        w = (1.0 + fg) / 2.0
        l_dist = (w * (rd - td.to(rd.dtype)) ** 2).mean() / w.mean()
        total = total + dist_weight * l_dist
        parts["dist"] = float(l_dist.detach())
    parts["total"] = float(total.detach())
    return total, parts
