"""Round trip of every 3D representation on anisotropic volumes (Z step 2-4 pixels):
``decode(oracle_outputs(labels))`` finds the objects (AP@0.5 >= 0.95), with the anisotropy
given to the representation as the volume has it; StarDist 3D's own cases are in
tests/test_rep_stardist3d.py."""
from __future__ import annotations

import pytest

from cellseg.datasets.synthetic import synthetic_cells_3d
from cellseg.metrics import matching
from cellseg.representations import get


@pytest.mark.parametrize("aniso", [2.0, 3.0, 4.0])
@pytest.mark.parametrize("name, config", [("distance", {}), ("flows", {"mode": "cellpose"}),
                                          ("flows", {"mode": "omnipose"}), ("offsets", {})])
def test_round_trip_anisotropic(name, config, aniso):
    # the same in-plane radii: objects span fewer planes as the Z step grows
    _, lab = synthetic_cells_3d((int(round(48 / aniso)), 64, 64), n_cells=10, radius=(6, 10), anisotropy=aniso,
                                seed=int(aniso))
    rep = get(name, ndim=3, anisotropy=aniso, **config)
    pred = rep.decode(rep.oracle_outputs(lab)).labels
    assert lab.max() >= 8
    assert matching(lab, pred, thresh=0.5).accuracy >= 0.95
