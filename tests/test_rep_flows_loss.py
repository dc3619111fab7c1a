"""Flows training loss (torch)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.representations.flows import Flows  # noqa: E402
from cellseg.train.losses_flows import loss  # noqa: E402


def _batch(rep, n=2):
    from cellseg.datasets.synthetic import synthetic_cells, synthetic_cells_3d

    if rep.ndim == 2:
        labs = [synthetic_cells((40, 36), n_cells=5, seed=s)[1] for s in range(n)]
    else:
        labs = [synthetic_cells_3d((8, 24, 24), n_cells=3, radius=(4, 6), seed=s)[1] for s in range(n)]
    ts = [rep.encode(lab) for lab in labs]
    return {k: torch.from_numpy(np.stack([t[k] for t in ts])) for k in ts[0]}


def _perfect(t):
    p = t["prob"].clamp(1e-4, 1 - 1e-4)
    out = {"flow": t["flow"].clone(), "prob": torch.log(p / (1 - p))}
    if "dist" in t:
        out["dist"] = t["dist"].clone()
    return out


@pytest.mark.parametrize("mode,nd", [("cellpose", 2), ("omnipose", 2), ("cellpose", 3), ("omnipose", 3)])
def test_loss_finite_lower_at_targets_and_backpropagates(mode, nd):
    rep = Flows(mode, ndim=nd)
    tg = _batch(rep)
    g = torch.Generator().manual_seed(0)
    rand = {k: torch.randn(v.shape, generator=g, requires_grad=True) for k, v in tg.items()}
    l_perfect, pp = loss(_perfect(tg), tg, rep)
    l_rand, pr = loss(rand, tg, rep)
    assert torch.isfinite(l_perfect) and torch.isfinite(l_rand) and l_perfect.ndim == 0
    assert l_perfect < l_rand
    assert pp["flow"] == 0.0 and pr["flow"] > 0.5
    assert pp["prob"] < 1e-3 < pr["prob"]
    expected = {"flow", "prob", "total"} | ({"dist"} if mode == "omnipose" else set())
    assert set(pr) == expected
    if mode == "omnipose":
        assert pp["dist"] == 0.0 and pr["dist"] > 1.0
    assert pr["total"] == pytest.approx(float(l_rand.detach()))
    l_rand.backward()
    for k in rand:
        assert rand[k].grad is not None and torch.isfinite(rand[k].grad).all() and rand[k].grad.abs().sum() > 0


def test_flow_term_is_cellpose_scale():
    rep = Flows()
    tg = _batch(rep, 1)
    out = _perfect(tg)
    out["flow"] = out["flow"] + 1.0  # every component off by 1 at the head scale
    _, parts = loss(out, tg, rep)
    assert parts["flow"] == pytest.approx(0.5)  # MSE / 2
    assert tg["flow"].abs().max() == pytest.approx(5.0, abs=1e-4)  # targets are 5x unit vectors


def test_loss_validates():
    rep = Flows("omnipose")
    tg = _batch(rep, 1)
    with pytest.raises(KeyError):
        loss({k: v for k, v in tg.items() if k != "dist"}, tg, rep)
    with pytest.raises(ValueError):
        loss({**tg, "flow": tg["flow"][:, :1]}, tg, rep)
    with pytest.raises(ValueError):
        loss({**tg, "prob": tg["prob"][0]}, tg, rep)
