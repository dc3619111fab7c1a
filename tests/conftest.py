"""Shared fixtures.

* ``data_dir``: the real annotated data (``$CELLSEG_DATA``, default ``../shared/data``
  relative to the repository root); tests that need it are skipped with a clear
  reason when it is absent.
* napari viewer guard from ../shared/STACK.md: with no X display, tests that need
  a Qt viewer are skipped instead of aborting the whole process.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_VIEWER_FIXTURES = {"make_napari_viewer", "make_napari_viewer_proxy"}


def cellseg_data_dir() -> Path:
    return Path(os.environ.get("CELLSEG_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = cellseg_data_dir()
    if not d.is_dir():
        pytest.skip(f"real data not found at {d} (set CELLSEG_DATA to the shared data folder)")
    return d


def _need(d: Path, sub: str) -> Path:
    p = d / sub
    if not p.exists():
        pytest.skip(f"{p} not found (set CELLSEG_DATA to the shared data folder)")
    return p


@pytest.fixture(scope="session")
def dic_hela(data_dir) -> Path:
    return _need(data_dir, "DIC-C2DH-HeLa")


@pytest.fixture(scope="session")
def fluo_hela(data_dir) -> Path:
    return _need(data_dir, "Fluo-N2DL-HeLa")


@pytest.fixture(scope="session")
def dsb2018(data_dir) -> Path:
    return _need(data_dir, "DSB2018-stage1-train-fixed")


@pytest.hookimpl(trylast=True)  # after pytest-xvfb's pytest_configure set DISPLAY
def pytest_sessionstart(session):
    os.environ["QT_QPA_PLATFORM"] = "xcb" if os.environ.get("DISPLAY") else "offscreen"


def pytest_collection_modifyitems(config, items):
    """Tests that use a napari viewer get the ``gui`` marker (``-m "not gui"`` leaves them
    out) and are skipped when there is no X display."""
    display = os.environ.get("DISPLAY")
    skip = pytest.mark.skip(reason="no X display: apt-get install xvfb (pytest-xvfb starts it)")
    for item in items:
        if _VIEWER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.gui)
            if not display:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory):
    """A small distance-map model trained for a few dozen steps on synthetic cells.

    Good enough to find the bright blobs of the synthetic generator, fast to train
    (seconds), and a real network: used by the Segmenter, tiling, block-wise and
    CLI tests.
    """
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg.train import TrainConfig, fit

    pairs = [synthetic_cells((128, 128), n_cells=14, seed=s) for s in range(6)]
    # one torch thread: tiny tensors gain nothing from two, and OpenMP spinning costs a lot on a
    # busy 2-core machine
    cfg = TrainConfig(epochs=3, steps_per_epoch=30, batch_size=4, patch_size=64, lr=3e-3, tune_thresholds=False,
                      verbose=False, seed=0, num_threads=1)
    model = fit("distance", pairs, config=cfg, backbone={"depth": 2, "width": 8, "seed": 0})
    path = tmp_path_factory.mktemp("tiny_model") / "tiny_distance.pt"
    model.save(path)
    return path
