"""Training loss of the StarDist representation (as in Schmidt et al. 2018 / ``stardist``).

``loss(raw, targets, rep) -> (total, parts)`` with ``raw`` the PRE-activation
heads ``{"prob": (B, 1, H, W), "dist": (B, n_rays, H, W)}`` and ``targets`` the
batched :meth:`StarDist.encode` outputs (same names and shapes). StarDist 3D
(:class:`~cellseg.representations.stardist3d.StarDist3D`) uses the same loss on
``(B, C, Z, Y, X)`` tensors (means over voxels).

    total = BCE(prob) + dist_weight * L1(dist) + background_reg * reg

* ``BCE(prob)``: binary cross-entropy with logits against the normalised EDT
  target (soft labels in [0, 1]), mean over pixels.
* ``L1(dist)``: ``mean(p * |softplus(raw_dist) - d|) / mean(p)`` with ``p`` the
  probability target: the mean absolute ray error weighted by how central a
  pixel is in its object (background pixels do not count), normalised by the
  mask so that its scale does not depend on the object coverage (StarDist's
  ``masked_loss_mae`` with ``norm_by_mask``).
* ``reg``: ``mean((1 - p) * |softplus(raw_dist)|)``, a weak pull of the
  distances towards 0 away from object centres (StarDist's
  ``train_background_reg``).

``head_loss`` (``TrainConfig.loss``, see :data:`cellseg.train.losses.HEAD_LOSSES`)
replaces ``BCE(prob)`` by another loss of the prob logits against the same soft
target; the distance and regularization terms stay.

Defaults are StarDist's: ``dist_weight = 0.2`` (its ``loss_weights=(1, 0.2)``)
and ``background_reg = 1e-4``. The distance head's activation is softplus (see
``StarDist.heads``), applied here to the raw output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["loss", "DIST_WEIGHT", "BACKGROUND_REG", "PROBABILITY_HEAD"]

#: the head whose BCE term ``head_loss`` replaces
PROBABILITY_HEAD = "prob"

DIST_WEIGHT = 0.2
BACKGROUND_REG = 1e-4


def _get(d, name, what):
    if name not in d:
        raise KeyError(f"{what}: missing {name!r}; got {sorted(d)}")
    t = d[name]
    if not isinstance(t, torch.Tensor) or t.ndim not in (4, 5):
        raise ValueError(f"{what}[{name!r}] must be a (B, C, H, W) or, in 3D, (B, C, Z, Y, X) tensor, got "
                         f"{getattr(t, 'shape', type(t))}")
    return t


def loss(raw, targets, rep, *, dist_weight: float = DIST_WEIGHT, background_reg: float = BACKGROUND_REG,
         head_loss=None):
    """StarDist loss; returns ``(total scalar tensor, {"prob", "dist", "reg", "total"}: floats)``."""
    rp, rd = _get(raw, "prob", "raw"), _get(raw, "dist", "raw")
    tp, td = _get(targets, "prob", "targets"), _get(targets, "dist", "targets")
    n_rays = getattr(rep, "n_rays", rd.shape[1])
    if rp.shape[1] != 1 or rd.shape[1] != n_rays:
        raise ValueError(f"raw heads must have 1 and {n_rays} channels, got {rp.shape[1]} and {rd.shape[1]}")
    if tuple(tp.shape) != tuple(rp.shape) or tuple(td.shape) != tuple(rd.shape):
        raise ValueError(f"target shapes {tuple(tp.shape)}, {tuple(td.shape)} differ from outputs "
                         f"{tuple(rp.shape)}, {tuple(rd.shape)}")
    tp = tp.to(rp.dtype)
    td = td.to(rd.dtype)
    l_prob = F.binary_cross_entropy_with_logits(rp, tp) if head_loss is None else head_loss(rp, tp)
    d = F.softplus(rd)
    l_dist = (tp * (d - td).abs()).mean() / (tp.mean() + 1e-7)
    l_reg = ((1 - tp) * d.abs()).mean()
    total = l_prob + dist_weight * l_dist + background_reg * l_reg
    parts = {"prob": float(l_prob.detach()), "dist": float(l_dist.detach()), "reg": float(l_reg.detach()),
             "total": float(total.detach())}
    return total, parts
