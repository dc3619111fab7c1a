"""Generic segmentation losses and the per-representation loss registry.

Conventions (all functions):

* ``logits`` are raw network outputs ``(B, C, *spatial)`` (pre-activation).
* Binary / multi-label targets are float tensors of the same shape as the
  logits (values in [0, 1]); multi-class targets are integer tensors
  ``(B, *spatial)`` with class ids in ``0..C-1``.
* ``mask`` (optional, broadcastable to the per-pixel loss, e.g. ``(B, 1, *sp)``)
  weights pixels; the mean is taken over the mask weight, so a zero mask
  excludes pixels.
* Every loss returns a scalar tensor (mean over pixels; region losses are
  computed per channel over the whole batch and averaged over channels).

Per-representation losses live in ``cellseg/train/losses_<name>.py`` (owned by
the representation modules) with the signature
``loss(raw, targets, rep) -> (total, parts)``; :data:`REPRESENTATION_LOSSES`
names the module of each representation and :func:`representation_loss` imports
it on first use (``rep.name`` selects the entry).

:data:`HEAD_LOSSES` names the losses a run may put on a representation's
probability / foreground head instead of its own (``TrainConfig.loss``,
``cellseg train --loss``); a module that has such a head names it in
``PROBABILITY_HEAD`` and takes the replacement as ``loss(..., head_loss=fn)``.
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "cross_entropy",
    "class_weights",
    "weighted_cross_entropy",
    "binary_cross_entropy",
    "balanced_binary_cross_entropy",
    "soft_dice_loss",
    "focal_loss",
    "jaccard_loss",
    "HEAD_LOSSES",
    "head_loss_fn",
    "REPRESENTATION_LOSSES",
    "representation_loss",
]

#: representation name -> the module holding its ``loss(raw, targets, rep)`` (and, for a
#: representation with a probability / foreground head, ``PROBABILITY_HEAD``); imported on first use
REPRESENTATION_LOSSES: dict[str, str] = {
    "distance": "cellseg.train.losses_distance",
    "flows": "cellseg.train.losses_flows",
    "offsets": "cellseg.train.losses_offsets",
    "stardist": "cellseg.train.losses_stardist",
}


def _masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return per_pixel.mean()
    m = torch.broadcast_to(mask.to(per_pixel.dtype), per_pixel.shape)
    return (per_pixel * m).sum() / m.sum().clamp_min(1e-12)


def _check_multiclass(logits: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if logits.ndim < 3:
        raise ValueError(f"{what}: logits must be (B, C, *spatial), got {tuple(logits.shape)}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"{what}: class targets must be an integer tensor, got {target.dtype}")
    if tuple(target.shape) != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(
            f"{what}: target shape {tuple(target.shape)} must be logits shape without the channel axis "
            f"{(logits.shape[0],) + tuple(logits.shape[2:])}"
        )


def _check_binary(logits: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if tuple(target.shape) != tuple(logits.shape):
        raise ValueError(f"{what}: target shape {tuple(target.shape)} differs from logits {tuple(logits.shape)}")


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | Sequence[float] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-class cross-entropy ``-log softmax(logits)[target]``, optionally class-weighted.

    With class weights ``w`` and no mask the result is ``Σ w[t_i]·ce_i / Σ w[t_i]``
    (the ``torch.nn.functional.cross_entropy`` convention).
    """
    _check_multiclass(logits, target, "cross_entropy")
    n = logits.shape[1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= n):
        raise ValueError(
            f"cross_entropy: class ids must be in 0..{n - 1}, got {int(target.min())}..{int(target.max())}")
    logp = F.log_softmax(logits, dim=1)
    ce = -logp.gather(1, target.long().unsqueeze(1)).squeeze(1)
    if weight is None:
        return _masked_mean(ce, None if mask is None else _squeeze_channel(mask, ce))
    w = torch.as_tensor(weight, dtype=logits.dtype, device=logits.device)
    if w.shape != (n,):
        raise ValueError(f"cross_entropy: need {n} class weights, got shape {tuple(w.shape)}")
    wp = w[target.long()]
    if mask is not None:
        wp = wp * torch.broadcast_to(_squeeze_channel(mask, ce).to(wp.dtype), wp.shape)
    return (ce * wp).sum() / wp.sum().clamp_min(1e-12)


def _squeeze_channel(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # masks are given like (B, 1, *sp) for channel-first losses; class losses have no channel axis
    if mask.ndim == like.ndim + 1 and mask.shape[1] == 1:
        return mask[:, 0]
    return mask


def class_weights(target: torch.Tensor, n_classes: int, eps: float = 1.0) -> torch.Tensor:
    """"Balanced" class weights from class frequencies: ``w_k = N / (K · (n_k + eps))``.

    ``N`` is the number of pixels, ``n_k`` the count of class ``k``; ``eps`` keeps
    absent classes finite. Equal frequencies give weights ≈ 1.
    """
    counts = torch.bincount(target.reshape(-1).long(), minlength=n_classes)[:n_classes].to(torch.float64)
    total = counts.sum()
    return (total / (n_classes * (counts + eps))).to(torch.float32)


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: str | torch.Tensor | Sequence[float] = "balanced",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Class-weighted cross-entropy; ``weight="balanced"`` derives weights from the target's class frequencies."""
    if isinstance(weight, str):
        if weight != "balanced":
            raise ValueError(f"weight must be 'balanced' or per-class weights, got {weight!r}")
        weight = class_weights(target, logits.shape[1]).to(logits.device)
    return cross_entropy(logits, target, weight=weight, mask=mask)


def binary_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    pos_weight: float | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy with logits: ``-(p_w·t·log σ(x) + (1-t)·log(1-σ(x)))``, mean over pixels."""
    _check_binary(logits, target, "binary_cross_entropy")
    pw = None
    if pos_weight is not None:
        pw = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=pw, reduction="none")
    return _masked_mean(bce, mask)


def balanced_binary_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Class-balanced binary cross-entropy with logits (foreground and background weigh the same in total).

    With the (soft) class counts ``n1 = Σ m·t``, ``n0 = Σ m·(1-t)`` over the whole tensor
    (``m`` the mask, 1 without one), ``N = n0 + n1`` and the weights of :func:`class_weights`,
    ``w_k = N / (2 (n_k + eps))``, the result is ``Σ w_i·bce_i / Σ w_i`` with
    ``w_i = m_i·(w1·t_i + w0·(1-t_i))``. For 0/1 targets and no mask this equals
    :func:`weighted_cross_entropy` (``weight="balanced"``) on the two-class logits ``(0, x)``.
    """
    _check_binary(logits, target, "balanced_binary_cross_entropy")
    t = target.to(logits.dtype)
    m = torch.ones_like(t) if mask is None else torch.broadcast_to(mask.to(t.dtype), t.shape)
    with torch.no_grad():
        n1 = (m * t).sum()
        n0 = (m * (1 - t)).sum()
        w1 = (n0 + n1) / (2 * (n1 + eps))
        w0 = (n0 + n1) / (2 * (n0 + eps))
        w = m * (w1 * t + w0 * (1 - t))
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    return (w * bce).sum() / w.sum().clamp_min(1e-12)


def _probs_and_onehot(logits, target, what):
    if target.is_floating_point() or target.dtype == torch.bool:
        _check_binary(logits, target, what)
        return torch.sigmoid(logits), target.to(logits.dtype)
    _check_multiclass(logits, target, what)
    n = logits.shape[1]
    onehot = F.one_hot(target.long(), n).movedim(-1, 1).to(logits.dtype)
    return torch.softmax(logits, dim=1), onehot


def _region_sums(p, t, mask):
    if mask is not None:
        m = torch.broadcast_to(mask.to(p.dtype), p.shape)
        p, t = p * m, t * m
    dims = [0] + list(range(2, p.ndim))
    return (p * t).sum(dims), p.sum(dims), t.sum(dims)


def soft_dice_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``1 - mean_c (2 Σ p·t + s) / (Σ p + Σ t + s)``, sums over batch and space per channel.

    ``p`` is ``sigmoid(logits)`` for float targets of the logits' shape, or
    ``softmax(logits)`` with one-hot targets for integer class targets.
    """
    p, t = _probs_and_onehot(logits, target, "soft_dice_loss")
    inter, sp, st = _region_sums(p, t, mask)
    return 1.0 - ((2 * inter + smooth) / (sp + st + smooth)).mean()


def jaccard_loss(
    logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Soft Jaccard / IoU loss ``1 - mean_c (Σ p·t + s) / (Σ p + Σ t - Σ p·t + s)`` (same inputs as Dice)."""
    p, t = _probs_and_onehot(logits, target, "jaccard_loss")
    inter, sp, st = _region_sums(p, t, mask)
    return 1.0 - ((inter + smooth) / (sp + st - inter + smooth)).mean()


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: float | Sequence[float] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Focal loss (Lin et al. 2017): ``-α_t (1 - p_t)^γ log p_t``, mean over pixels.

    Float targets (logits' shape): sigmoid, ``p_t = p·t + (1-p)(1-t)``, ``α_t = α·t + (1-α)(1-t)``
    (``alpha`` a float). Integer class targets: softmax, ``p_t`` the probability of the true class,
    ``α_t = alpha[t]`` (``alpha`` a per-class sequence). ``gamma = 0`` and no alpha gives (B)CE.
    """
    if gamma < 0:
        raise ValueError(f"focal_loss: gamma must be >= 0, got {gamma}")
    if target.is_floating_point() or target.dtype == torch.bool:
        _check_binary(logits, target, "focal_loss")
        t = target.to(logits.dtype)
        ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
        p = torch.sigmoid(logits)
        pt = p * t + (1 - p) * (1 - t)
        loss = ce * (1 - pt) ** gamma
        if alpha is not None:
            if isinstance(alpha, Sequence):
                raise TypeError(f"focal_loss: alpha must be a number for binary targets, got {alpha!r}")
            a = float(alpha)
            loss = (a * t + (1 - a) * (1 - t)) * loss
        return _masked_mean(loss, mask)
    _check_multiclass(logits, target, "focal_loss")
    logp = F.log_softmax(logits, dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)
    loss = -((1 - logp.exp()) ** gamma) * logp
    if alpha is not None:
        class_alpha = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
        if class_alpha.shape != (logits.shape[1],):
            raise ValueError(f"focal_loss: need {logits.shape[1]} class alphas, got shape {tuple(class_alpha.shape)}")
        loss = class_alpha[target.long()] * loss
    return _masked_mean(loss, None if mask is None else _squeeze_channel(mask, loss))


HeadLossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Losses selectable for a probability / foreground head: ``fn(logits (B, 1, *sp), target in [0, 1]
#: of the same shape) -> scalar``, each with its default parameters (sigmoid of the logits).
HEAD_LOSSES: dict[str, HeadLossFn] = {
    "bce": binary_cross_entropy,  # plain binary cross-entropy
    "weighted_bce": balanced_binary_cross_entropy,  # class-balanced cross-entropy
    "dice": soft_dice_loss,  # soft Dice, smooth 1
    "focal": focal_loss,  # focal, gamma 2, no alpha
    "soft_iou": jaccard_loss,  # soft Jaccard, smooth 1
}


def _sum_of(fns: Sequence[HeadLossFn]) -> HeadLossFn:
    def summed(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = fns[0](logits, target)
        for f in fns[1:]:
            total = total + f(logits, target)
        return total

    return summed


def head_loss_fn(name: str) -> HeadLossFn | None:
    """The probability-head loss called ``name``: ``None`` for ``"default"`` (the representation's
    own loss), an entry of :data:`HEAD_LOSSES`, or the sum of different entries joined by ``+``
    (``"bce+dice"``). Unknown names raise ``ValueError`` listing the choices."""
    if name == "default":
        return None
    parts = name.split("+") if isinstance(name, str) else [None]
    if not all(p in HEAD_LOSSES for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"unknown loss {name!r}; choose 'default', one of {', '.join(HEAD_LOSSES)}, "
                         "or a sum of different ones joined by '+' such as 'bce+dice'")
    fns = [HEAD_LOSSES[p] for p in parts]
    return fns[0] if len(fns) == 1 else _sum_of(fns)


LossFn = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def representation_loss(rep, head_loss: str = "default") -> LossFn:
    """``fn(raw, targets) -> (total, parts)`` for representation ``rep`` (dispatch on ``rep.name``).

    ``raw`` are the network's pre-activation outputs ``{head: (B, C, *sp)}`` and
    ``targets`` the batched :meth:`encode` outputs ``{target: (B, C, *sp)}``.
    ``head_loss`` (see :func:`head_loss_fn`) replaces the loss of the representation's
    probability / foreground head (its module's ``PROBABILITY_HEAD``); the other heads keep
    theirs. A representation without such a head accepts only ``"default"``.
    """
    replacement = head_loss_fn(head_loss)
    name = getattr(rep, "name", None)
    if not isinstance(name, str) or not name.isidentifier():
        raise TypeError(f"representation_loss needs a Representation with a name, got {rep!r}")
    modname = REPRESENTATION_LOSSES.get(name)
    if modname is None:
        raise ValueError(
            f"no training loss for representation {name!r} (losses exist for {sorted(REPRESENTATION_LOSSES)}): "
            f"write cellseg/train/losses_{name}.py with loss(raw, targets, rep) and add it to "
            f"cellseg.train.losses.REPRESENTATION_LOSSES"
        )
    mod = importlib.import_module(modname)
    fn = getattr(mod, "loss", None)
    if not callable(fn):
        raise ValueError(f"{modname} has no callable 'loss(raw, targets, rep)'")
    kw = {}
    if replacement is not None:
        if getattr(mod, "PROBABILITY_HEAD", None) is None:
            raise ValueError(f"loss {head_loss!r} replaces the loss of a probability head, and representation "
                             f"{name!r} has none (see {modname}); use loss 'default'")
        kw["head_loss"] = replacement

    def loss(raw, targets):
        return fn(raw, targets, rep, **kw)

    loss.__name__ = f"loss_{name}"
    loss.__doc__ = fn.__doc__
    return loss
