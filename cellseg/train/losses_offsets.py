"""Training loss of the spatial-embedding representation (Neven et al. 2019).

``loss(raw, targets, rep)``: ``raw`` = pre-activation outputs ``{"offset":
(B, D, *sp), "sigma": (B, D, *sp), "seed": (B, 1, *sp)}``; ``targets`` = the
batched :meth:`Offsets.encode` targets (``offset``, ``instance``; ``center`` is
not needed). Per image and instance ``k`` (pixels ``S_k``):

* centre ``c_k`` = mean over ``S_k`` of ``u + offset target`` (the medoid,
  also when a crop cut it away);
* embedding ``e = u + tanh(raw offset)``; margin ``exp(10 * mean_{S_k} sigma)``;
  ``phi_k = exp(-sum_d margin_d (e_d - c_k,d)**2)`` on every pixel;
* instance term: Lovász hinge of the logits ``2 phi_k - 1`` against ``S_k``
  (a differentiable surrogate of the IoU of ``phi_k > 0.5`` with the object);
* smoothness term: mean over ``S_k`` of ``(sigma - mean sigma)**2`` (the mean
  detached), so one instance has one margin;
* seediness term: ``(sigmoid(raw seed) - phi_k)**2`` summed over ``S_k``
  (``phi_k`` detached; weight ``fg_weight``) plus ``sigmoid(raw seed)**2`` on
  background, divided by the number of pixels.

The seediness head has no selectable loss (no ``PROBABILITY_HEAD``;
``TrainConfig.loss`` must be ``"default"``): its target is the instance score
``phi_k`` of the current embedding, a regression, and the decoder relies on
``seed ~ phi`` to rank and threshold the seeds, which Dice, IoU or a
class-balanced cross-entropy would not keep.

Instance and smoothness terms are averaged over the instances of an image,
the total ``w_inst * inst + w_var * var + w_seed * seed`` over the batch.
``parts`` holds the three batch-mean terms as floats.

:func:`lovasz_hinge` is written from the Lovász extension of the Jaccard
loss (Berman et al. 2018): with errors sorted in decreasing order and ``k``
the rank, ``Delta_k = k / (n_pos + negatives among the first k)`` is the
Jaccard loss of the first ``k`` errors, and the loss is ``sum_k
relu(error_k) (Delta_k - Delta_{k-1})``.
"""
from __future__ import annotations

import torch

from cellseg.representations.offsets import SIGMA_GAIN

__all__ = ["loss", "lovasz_hinge"]


def lovasz_hinge(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Lovász hinge of flat ``logits`` against binary ``labels`` (same shape, any
    float/bool dtype). Returns a scalar; 0 for empty input."""
    logits = logits.reshape(-1)
    labels = labels.reshape(-1).to(logits.dtype)
    if logits.numel() == 0:
        return logits.sum() * 0.0
    errors = 1.0 - logits * (2.0 * labels - 1.0)
    errors_sorted, perm = torch.sort(errors, descending=True)
    gt = labels[perm]
    n_pos = gt.sum()
    k = torch.arange(1, gt.numel() + 1, dtype=logits.dtype, device=logits.device)
    neg_seen = torch.cumsum(1.0 - gt, 0)
    delta = k / (n_pos + neg_seen)
    grad = torch.cat([delta[:1], delta[1:] - delta[:-1]])
    return torch.dot(torch.relu(errors_sorted), grad)


def _grid(rep, shape, device, dtype):
    spacing = rep.spacing
    axes = [torch.arange(s, device=device, dtype=torch.float64) * float(sp) / rep.scale
            for s, sp in zip(shape, spacing)]
    return torch.stack(torch.meshgrid(*axes, indexing="ij")).to(dtype)


def loss(raw, targets, rep, *, w_inst: float = 1.0, w_var: float = 10.0, w_seed: float = 1.0,
         fg_weight: float = 1.0):
    """Lovász hinge on Gaussian margins + sigma smoothness + seediness regression.

    Returns ``(total, {"instance": float, "var": float, "seed": float})``.
    """
    for n in ("offset", "sigma", "seed"):
        if n not in raw:
            raise KeyError(f"missing raw output {n!r}; got {sorted(raw)}")
    for n in ("offset", "instance"):
        if n not in targets:
            raise KeyError(f"missing target {n!r}; got {sorted(targets)}")
    off_raw, sig_raw, seed_raw = raw["offset"], raw["sigma"], raw["seed"]
    B, D = off_raw.shape[:2]
    shape = tuple(off_raw.shape[2:])
    if D != rep.ndim or len(shape) != rep.ndim:
        raise ValueError(f"offset must be (B, {rep.ndim}, *{rep.ndim} spatial dims), got {tuple(off_raw.shape)}")
    if tuple(sig_raw.shape) != tuple(off_raw.shape) or tuple(seed_raw.shape) != (B, 1, *shape):
        raise ValueError("sigma must match offset's shape and seed must be (B, 1, *spatial)")
    dev, dt = off_raw.device, off_raw.dtype
    t_off = torch.as_tensor(targets["offset"], device=dev, dtype=dt)
    inst = torch.as_tensor(targets["instance"], device=dev)
    if tuple(t_off.shape) != tuple(off_raw.shape) or tuple(inst.shape) != (B, 1, *shape):
        raise ValueError("targets do not match the raw output shapes")
    u = _grid(rep, shape, dev, dt)
    n_pix = float(torch.tensor(shape).prod())
    total = off_raw.sum() * 0.0
    acc = {"instance": 0.0, "var": 0.0, "seed": 0.0}
    for b in range(B):
        emb = u + torch.tanh(off_raw[b])
        sigma = sig_raw[b]
        seed = torch.sigmoid(seed_raw[b, 0])
        lab = inst[b, 0]
        centres_all = u + t_off[b]
        ids = torch.unique(lab)
        ids = ids[ids != 0]
        bg = lab == 0
        l_seed = (seed[bg] ** 2).sum()
        l_inst = total * 0.0
        l_var = total * 0.0
        for i in ids:
            m = lab == i
            c = centres_all[:, m].mean(1)
            s_in = sigma[:, m]
            s_mean = s_in.mean(1)
            l_var = l_var + ((s_in - s_mean.detach()[:, None]) ** 2).mean()
            margin = torch.exp(SIGMA_GAIN * s_mean)
            diff = emb - c.view(D, *([1] * len(shape)))
            phi = torch.exp(-(margin.view(D, *([1] * len(shape))) * diff ** 2).sum(0))
            l_inst = l_inst + lovasz_hinge(2.0 * phi - 1.0, m)
            l_seed = l_seed + fg_weight * ((seed[m] - phi[m].detach()) ** 2).sum()
        if len(ids):
            l_inst = l_inst / len(ids)
            l_var = l_var / len(ids)
        l_seed = l_seed / n_pix
        total = total + w_inst * l_inst + w_var * l_var + w_seed * l_seed
        acc["instance"] += float(l_inst.detach()) / B
        acc["var"] += float(l_var.detach()) / B
        acc["seed"] += float(l_seed.detach()) / B
    return total / B, acc
