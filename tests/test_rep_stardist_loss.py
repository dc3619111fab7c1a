"""StarDist training loss (torch)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.representations.stardist import StarDist  # noqa: E402
from cellseg.train.losses_stardist import loss  # noqa: E402


def _batch(rep, n=2):
    from cellseg.datasets.synthetic import synthetic_cells

    ts = [rep.encode(synthetic_cells((48, 40), n_cells=6, seed=s)[1]) for s in range(n)]
    return {k: torch.from_numpy(np.stack([t[k] for t in ts])) for k in ts[0]}


def _inverse_activation(t):
    p = t["prob"].clamp(1e-4, 1 - 1e-4)
    d = t["dist"].clamp_min(1e-3)
    return {"prob": torch.log(p / (1 - p)), "dist": d + torch.log(-torch.expm1(-d))}  # logit, softplus^-1


def test_loss_finite_lower_at_targets_and_backpropagates():
    rep = StarDist(n_rays=8)
    tg = _batch(rep)
    perfect = _inverse_activation(tg)
    np.testing.assert_allclose(torch.nn.functional.softplus(perfect["dist"]).numpy(),
                               tg["dist"].clamp_min(1e-3).numpy(), rtol=1e-4, atol=1e-5)
    g = torch.Generator().manual_seed(0)
    rand = {k: torch.randn(v.shape, generator=g, requires_grad=True) for k, v in tg.items()}
    l_perfect, parts_p = loss(perfect, tg, rep)
    l_rand, parts_r = loss(rand, tg, rep)
    assert torch.isfinite(l_perfect) and torch.isfinite(l_rand)
    assert l_perfect.ndim == 0
    assert l_perfect < l_rand
    assert parts_p["dist"] < 1e-3 < parts_r["dist"]
    assert parts_p["prob"] < parts_r["prob"]
    assert set(parts_r) == {"prob", "dist", "reg", "total"}
    assert parts_r["total"] == pytest.approx(float(l_rand.detach()))
    l_rand.backward()
    for k in rand:
        assert rand[k].grad is not None and torch.isfinite(rand[k].grad).all() and rand[k].grad.abs().sum() > 0


def test_dist_term_ignores_background_and_weights():
    rep = StarDist(n_rays=4)
    tg = _batch(rep, 1)
    base = _inverse_activation(tg)
    bg = (tg["prob"] == 0).expand_as(tg["dist"])
    shifted = {"prob": base["prob"], "dist": torch.where(bg, base["dist"] + 5.0, base["dist"])}
    _, p0 = loss(base, tg, rep)
    _, p1 = loss(shifted, tg, rep)
    assert p1["dist"] == pytest.approx(p0["dist"], abs=1e-6)  # background rays are not in the L1 term
    assert p1["reg"] > p0["reg"]  # but are pulled towards 0 by the regulariser
    t0, _ = loss(base, tg, rep, dist_weight=0.0, background_reg=0.0)
    assert float(t0) == pytest.approx(p0["prob"], rel=1e-6)


def test_loss_validates_and_dispatches():
    from cellseg.train.losses import representation_loss

    rep = StarDist(n_rays=8)
    tg = _batch(rep, 1)
    raw = {k: torch.zeros_like(v) for k, v in tg.items()}
    total, parts = representation_loss(rep)(raw, tg)
    assert torch.isfinite(total) and parts["total"] == pytest.approx(float(total))
    with pytest.raises(KeyError):
        loss({"prob": raw["prob"]}, tg, rep)
    with pytest.raises(ValueError):
        loss({"prob": raw["prob"], "dist": raw["dist"][:, :4]}, tg, rep)
