"""Parity with cellpose.dynamics (skipped when cellpose cannot be imported)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from cellseg.representations import flows as F
from tests.reference.ref_flows import ref_ap

pytestmark = [pytest.mark.peer, pytest.mark.slow]  # importing cellpose + torch alone takes ~10 s


@pytest.fixture(scope="module")
def dyn():
    from benchmarks._peers import cellpose_dynamics

    try:
        return cellpose_dynamics()
    except Exception as e:  # pragma: no cover - depends on the environment
        pytest.skip(f"cellpose.dynamics not importable: {e}")


def _labels(seed, shape=(128, 128), n=30):
    from cellseg.datasets.synthetic import synthetic_cells

    return synthetic_cells(shape, n_cells=n, seed=seed)[1]


def _touching(lab):
    """Object pixels with a pixel of another object in their 3x3 neighbourhood."""
    big = np.iinfo(np.int32).max
    mx = ndi.maximum_filter(lab, size=3, mode="constant", cval=0)
    mn = ndi.minimum_filter(np.where(lab == 0, big, lab), size=3, mode="constant", cval=big)
    return (lab > 0) & (((mx != lab) & (mx > 0)) | ((mn != lab) & (mn < big)))


def test_cellpose_flow_targets_match_masks_to_flows(dyn):
    lab = _labels(1, (96, 96), 18)
    mu_peer, _ = dyn.masks_to_flows_gpu(lab)
    mu = F.cellpose_flows(lab)
    cos = (mu * mu_peer).sum(0)
    fg = lab > 0
    clean = fg & ~_touching(lab)
    # Cellpose's gradient reads the heat of a touching neighbour; ours keeps objects apart.
    # Everywhere else the directions agree (despite per-object iteration counts).
    assert (cos[clean] > 0.99).mean() > 0.999
    assert cos[clean].min() > 0.9
    assert (cos[fg] > 0.99).mean() > 0.95


def test_cellpose_flow_targets_match_3d(dyn):
    from cellseg.datasets.synthetic import synthetic_cells_3d

    lab = synthetic_cells_3d((10, 32, 32), n_cells=4, radius=(5, 7), seed=0, touching=0.0)[1]
    mu_peer = dyn.masks_to_flows_gpu_3d(lab)
    cos = (F.cellpose_flows(lab) * mu_peer).sum(0)[lab > 0]
    assert (cos > 0.99).mean() > 0.99


@pytest.mark.parametrize("seed", [0, 2])
def test_decode_at_least_as_good_as_compute_masks(dyn, seed):
    lab = _labels(seed, (96, 96), 18)
    rep = F.Flows()
    out = rep.oracle_outputs(lab)
    ours = rep.decode(out).labels
    cellprob = np.where(out["prob"][0] > 0.5, 10.0, -10.0).astype(np.float32)  # logits
    theirs = dyn.compute_masks(out["flow"], cellprob, niter=200, min_size=15)
    for th in (0.5, 0.75):
        assert ref_ap(lab, ours, th) >= ref_ap(lab, theirs, th)
    assert ref_ap(lab, ours, 0.5) == 1.0
