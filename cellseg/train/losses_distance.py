"""Training loss of the distance-map representation (:mod:`cellseg.representations.distance`).

``loss(raw, targets, rep)`` with ``raw`` the network's *pre-activation* outputs
``{"dist": (B, 1, *sp), "fg": (B, 1, *sp)}`` and ``targets`` the batched
:meth:`DistanceMap.encode` targets of the same shapes:

* distance term: mean squared error (``dist_loss="mse"``, default) or mean
  absolute error (``"l1"``) between ``sigmoid(raw["dist"])`` and the
  normalized distance, over all pixels (background target 0);
* foreground term: binary cross-entropy on the ``fg`` logits.

``total = w_dist * dist + w_fg * fg``; ``parts`` holds both terms as floats.
``head_loss`` (``TrainConfig.loss``, see :data:`cellseg.train.losses.HEAD_LOSSES`)
replaces the foreground BCE by another loss of the ``fg`` logits; the distance
regression stays.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["loss", "PROBABILITY_HEAD"]

#: the head whose BCE term ``head_loss`` replaces
PROBABILITY_HEAD = "fg"


def _check(raw, targets, names):
    for n in names:
        if n not in raw:
            raise KeyError(f"missing raw output {n!r}; got {sorted(raw)}")
        if n not in targets:
            raise KeyError(f"missing target {n!r}; got {sorted(targets)}")
        if tuple(raw[n].shape) != tuple(targets[n].shape):
            raise ValueError(f"{n!r}: raw shape {tuple(raw[n].shape)} != target shape {tuple(targets[n].shape)}")


def loss(raw, targets, rep=None, *, w_dist: float = 1.0, w_fg: float = 1.0, dist_loss: str = "mse",
         head_loss=None):
    """Distance regression + foreground BCE. Returns ``(total, {"dist": float, "fg": float})``."""
    if dist_loss not in ("mse", "l1"):
        raise ValueError(f"dist_loss must be 'mse' or 'l1', got {dist_loss!r}")
    _check(raw, targets, ("dist", "fg"))
    dist_logit = raw["dist"]
    t_dist = torch.as_tensor(targets["dist"], dtype=dist_logit.dtype, device=dist_logit.device)
    t_fg = torch.as_tensor(targets["fg"], dtype=raw["fg"].dtype, device=raw["fg"].device)
    pred = torch.sigmoid(dist_logit)
    if dist_loss == "mse":
        l_dist = F.mse_loss(pred, t_dist)
    else:
        l_dist = F.l1_loss(pred, t_dist)
    l_fg = F.binary_cross_entropy_with_logits(raw["fg"], t_fg) if head_loss is None else head_loss(raw["fg"], t_fg)
    total = w_dist * l_dist + w_fg * l_fg
    return total, {"dist": float(l_dist.detach()), "fg": float(l_fg.detach())}
