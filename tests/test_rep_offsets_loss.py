"""Loss of the offsets representation: Lovász hinge against brute-force Lovász
extensions, and the full spatial-embedding loss."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cellseg.representations.offsets import Offsets  # noqa: E402
from cellseg.train.losses_offsets import loss, lovasz_hinge  # noqa: E402
from tests.reference.ref_offsets import lovasz_ref_greedy_max, lovasz_ref_integral  # noqa: E402


def _ours(logits, labels):
    return float(lovasz_hinge(torch.tensor(logits, dtype=torch.float64), torch.tensor(labels)))


@pytest.mark.parametrize("seed", range(6))
def test_lovasz_hinge_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    for _ in range(15):
        n = int(rng.integers(1, 7))
        logits = rng.normal(0, 1.5, n)
        if rng.random() < 0.3:
            logits = np.round(logits)  # ties in the errors
        labels = rng.integers(0, 2, n)
        if rng.random() < 0.15:
            labels[:] = 0  # no positives
        if rng.random() < 0.15:
            labels[:] = 1
        m = np.maximum(0, 1 - logits * (2 * labels - 1))
        ref = lovasz_ref_integral(m, labels)
        assert _ours(logits, labels) == pytest.approx(ref, abs=1e-10)
        if n <= 5:
            assert lovasz_ref_greedy_max(m, labels) == pytest.approx(ref, abs=1e-10)


def test_lovasz_hinge_edge_cases():
    # perfect margins: zero loss
    assert _ours([3.0, -2.0, 1.0], [1, 0, 1]) == 0.0
    # all errors equal e: loss = e * Jaccard loss of the whole set (1 if anything mispredicted)
    assert _ours([0.0, 0.0], [1, 0]) == pytest.approx(1.0)
    # empty input
    assert _ours([], []) == 0.0
    # gradient flows to the logits
    x = torch.tensor([0.2, -0.3, 0.9], requires_grad=True)
    lovasz_hinge(x, torch.tensor([1, 1, 0])).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def _batch(nd):
    rng = np.random.default_rng(0)
    rep = Offsets(nd, anisotropy=1.0 if nd == 2 else 2.0)
    shape = (24, 28) if nd == 2 else (8, 16, 16)
    labs = []
    for _ in range(2):
        lab = np.zeros(shape, np.int32)
        for i in range(1, 4):
            c = rng.integers(3, np.array(shape) - 3)
            lab[tuple(slice(x - 2, x + 3) for x in c)] = i
        labs.append(lab)
    enc = [rep.encode(lab) for lab in labs]
    orc = [rep.oracle_outputs(lab) for lab in labs]
    targets = {k: torch.from_numpy(np.stack([e[k] for e in enc])) for k in enc[0]}
    oracle = {k: torch.from_numpy(np.stack([o[k] for o in orc])) for k in orc[0]}
    return rep, targets, oracle


@pytest.mark.parametrize("nd", [2, 3])
def test_loss_lower_at_targets_and_backpropagates(nd):
    rep, targets, oracle = _batch(nd)
    seed = oracle["seed"].clamp(1e-4, 1 - 1e-4)
    at_target = {
        "offset": torch.atanh(oracle["offset"]),
        "sigma": oracle["sigma"],
        "seed": torch.log(seed) - torch.log1p(-seed),
    }
    good, parts = loss(at_target, targets, rep)
    assert set(parts) == {"instance", "var", "seed"} and all(isinstance(v, float) for v in parts.values())
    assert torch.isfinite(good) and parts["var"] == pytest.approx(0.0, abs=1e-10)
    gen = torch.Generator().manual_seed(1)
    for trial in range(3):
        rand = {k: torch.randn(v.shape, generator=gen, dtype=torch.float32, requires_grad=True)
                for k, v in at_target.items()}
        bad, bparts = loss(rand, targets, rep)
        assert torch.isfinite(bad) and good.item() < bad.item()
        assert parts["instance"] < bparts["instance"] and parts["seed"] < bparts["seed"]
    bad.backward()
    for v in rand.values():
        assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_loss_validation_and_crop_robust_centres():
    rep, targets, oracle = _batch(2)
    raw = {k: torch.zeros_like(v) for k, v in oracle.items()}
    with pytest.raises(KeyError):
        loss({"offset": raw["offset"], "seed": raw["seed"]}, targets, rep)
    with pytest.raises(ValueError):
        loss({**raw, "seed": raw["seed"][:, :, :5]}, targets, rep)
    with pytest.raises(ValueError):
        loss(raw, targets, Offsets(3))
    # a crop that cuts objects (and their medoids) keeps the oracle loss as low
    sl = (slice(None), slice(None), slice(0, 13), slice(None))
    seed = oracle["seed"].clamp(1e-4, 1 - 1e-4)
    at_target = {"offset": torch.atanh(oracle["offset"]), "sigma": oracle["sigma"],
                 "seed": torch.log(seed) - torch.log1p(-seed)}
    full, _ = loss(at_target, targets, rep)
    crop, _ = loss({k: v[sl] for k, v in at_target.items()}, {k: v[sl] for k, v in targets.items()}, rep)
    rand = {k: torch.randn(v[sl].shape) for k, v in at_target.items()}
    assert crop.item() < 2 * full.item() + 0.05 < loss(rand, {k: v[sl] for k, v in targets.items()}, rep)[0].item()
