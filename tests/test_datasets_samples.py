import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cellseg.datasets import list_samples, sample
from cellseg.datasets.samples import sample_path
from cellseg.io import read_image, read_labels

REPO = Path(__file__).resolve().parents[1]


def _make_samples_module():
    spec = importlib.util.spec_from_file_location("make_samples", REPO / "data" / "make_samples.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_samples_listed_and_readable():
    assert list_samples() == ["synthetic_nuclei", "synthetic_nuclei_labels", "synthetic_nuclei_t",
                              "synthetic_nuclei_t_labels", "dsb_nuclei", "dsb_nuclei_labels", "dsb_he",
                              "dsb_he_labels"]
    im = sample("synthetic_nuclei")
    assert im.axes == "YX" and im.shape == (512, 512) and im.data.dtype == np.uint16
    assert im.pixel_size == pytest.approx({"Y": 0.5, "X": 0.5})
    lab = read_labels(sample_path("synthetic_nuclei_labels"))
    assert lab.shape == (512, 512) and len(np.unique(lab)) == 181
    assert im.data[lab > 0].mean() > im.data[lab == 0].mean() + 500
    t = sample("synthetic_nuclei_t")
    assert t.axes == "TYX" and t.shape == (5, 256, 256)
    tl = read_labels(sample_path("synthetic_nuclei_t_labels"))
    assert tl.shape == (5, 256, 256) and len(np.unique(tl[0])) == 46
    for name in list_samples():
        assert sample_path(name).stat().st_size < 1_000_000
    with pytest.raises(ValueError, match="unknown sample 'nope'.*synthetic_nuclei"):
        sample("nope")


def test_committed_samples_match_the_generator(tmp_path):
    """The shipped files are what data/make_samples.py produces (labels exactly)."""
    for fresh in _make_samples_module().make_samples(tmp_path):
        shipped = sample_path(fresh.stem)
        if "labels" in fresh.name:
            assert np.array_equal(read_labels(fresh), read_labels(shipped)), fresh.name
        else:
            a, b = read_image(fresh).data.astype(int), read_image(shipped).data.astype(int)
            assert a.shape == b.shape and np.abs(a - b).max() <= 1, fresh.name


def test_real_samples_read_as_a_user_would():
    """The DSB images are the distributed RGBA PNGs: grey ones read as grey, colour ones as YXC."""
    fl = sample("dsb_nuclei")
    assert fl.axes == "YX" and fl.shape == (520, 696)
    lab = read_labels(sample_path("dsb_nuclei_labels"))
    assert lab.shape == fl.shape and len(np.unique(lab)) == 200
    he = sample("dsb_he")
    assert he.axes == "YXC" and he.shape == (256, 320, 3)
    assert len(np.unique(read_labels(sample_path("dsb_he_labels")))) == 74


@pytest.mark.data
def test_real_samples_are_the_dsb_files(data_dir):
    """Byte for byte the DSB 2018 images named in data/make_samples.py, labels equal to the annotation."""
    mod = _make_samples_module()
    root = data_dir / "DSB2018-stage1-train-fixed"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    for name, image_id in mod.DSB_SAMPLES.items():
        assert sample_path(name).read_bytes() == (root / "images" / f"{image_id}.png").read_bytes()
        gt = read_labels(root / "masks" / f"{image_id}.tif")
        assert np.array_equal(read_labels(sample_path(f"{name}_labels")), gt)


def test_import_is_light_and_lazy():
    import subprocess
    import sys

    code = ("import sys, cellseg.datasets as d; "
            "heavy = [m for m in ('tifffile', 'scipy', 'torch', 'numba', 'PIL', 'skimage') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "assert d.synthetic_cells.__module__ == 'cellseg.datasets.synthetic'; "
            "assert 'sample' in dir(d); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
    import cellseg.datasets as d

    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        d.nonsense
