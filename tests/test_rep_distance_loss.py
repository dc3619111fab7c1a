"""Loss of the distance-map representation: finite, minimal near the targets, differentiable."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.representations.distance import DistanceMap  # noqa: E402
from cellseg.train.losses_distance import loss  # noqa: E402


def _batch(ndim=2):
    rng = np.random.default_rng(0)
    rep = DistanceMap(ndim, anisotropy=1.0 if ndim == 2 else 2.0)
    shape = (24, 28) if ndim == 2 else (10, 16, 16)
    labs = []
    for _ in range(2):
        lab = np.zeros(shape, np.int32)
        for i in range(1, 4):
            c = rng.integers(4, np.array(shape) - 4)
            sl = tuple(slice(max(0, x - 3), x + 3) for x in c)
            lab[sl] = i
        labs.append(lab)
    enc = [rep.encode(lab) for lab in labs]
    targets = {k: torch.from_numpy(np.stack([e[k] for e in enc])) for k in enc[0]}
    return rep, targets


def _logit(t, eps=1e-4):
    t = t.clamp(eps, 1 - eps)
    return torch.log(t) - torch.log1p(-t)


@pytest.mark.parametrize("ndim", [2, 3])
def test_loss_lower_at_targets_and_backpropagates(ndim):
    rep, targets = _batch(ndim)
    at_target = {k: _logit(v) for k, v in targets.items()}
    gen = torch.Generator().manual_seed(0)
    rand = {k: torch.randn(v.shape, generator=gen, requires_grad=True) for k, v in targets.items()}
    for kind in ("mse", "l1"):
        good, parts_good = loss(at_target, targets, rep, dist_loss=kind)
        bad, parts_bad = loss(rand, targets, rep, dist_loss=kind)
        assert torch.isfinite(good) and torch.isfinite(bad)
        assert set(parts_good) == {"dist", "fg"} and all(isinstance(v, float) for v in parts_good.values())
        assert good.item() < 0.01 < bad.item()
        assert parts_good["dist"] < parts_bad["dist"] and parts_good["fg"] < parts_bad["fg"]
    bad, _ = loss(rand, targets, rep)
    bad.backward()
    for v in rand.values():
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0
    # a gradient step on the random outputs lowers the loss
    with torch.no_grad():
        stepped = {k: v - 50.0 * v.grad for k, v in rand.items()}
    assert loss(stepped, targets, rep)[0].item() < bad.item()


def test_loss_weights_and_validation():
    rep, targets = _batch()
    raw = {k: torch.zeros_like(v) for k, v in targets.items()}
    total, parts = loss(raw, targets, rep, w_dist=2.0, w_fg=0.5)
    assert total.item() == pytest.approx(2.0 * parts["dist"] + 0.5 * parts["fg"], rel=1e-5)
    # fg logits 0 -> BCE = log 2 everywhere
    assert parts["fg"] == pytest.approx(np.log(2), rel=1e-5)
    with pytest.raises(KeyError):
        loss({"dist": raw["dist"]}, targets, rep)
    with pytest.raises(ValueError):
        loss({"dist": raw["dist"][:1], "fg": raw["fg"]}, targets, rep)
    with pytest.raises(ValueError):
        loss(raw, targets, rep, dist_loss="huber")
