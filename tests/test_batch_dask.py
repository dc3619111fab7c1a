"""Batch runs on a real Dask LocalCluster equal the single-process run."""
import csv

import numpy as np
import pytest
import tifffile

from cellseg.batch import SegmenterSpec, expand_inputs, run_batch
from cellseg.datasets.synthetic import synthetic_cells


@pytest.mark.slow
def test_two_worker_local_cluster_equals_single_process(tmp_path, tiny_model_path):
    pytest.importorskip("dask.distributed")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        img, _ = synthetic_cells((128, 128), n_cells=12, seed=40 + i)
        tifffile.imwrite(src / f"f{i}.tif", (img * 1000).astype(np.uint16))
    files, missing = expand_inputs([src])
    assert len(files) == 3 and not missing
    spec = SegmenterSpec(model=str(tiny_model_path))
    single = run_batch(spec, files, tmp_path / "single")
    dist = run_batch(spec, files, tmp_path / "dask", workers=2)
    assert [r.status for r in single] == [r.status for r in dist] == ["done"] * 3
    total = 0
    for f in files:
        a = tifffile.imread(tmp_path / "single" / f"{f.stem}_labels.tif")
        b = tifffile.imread(tmp_path / "dask" / f"{f.stem}_labels.tif")
        total += int(a.max())
        np.testing.assert_array_equal(a, b)
        # the table is the same; scores (mean probabilities) may differ in the last float32
        # digits because workers run torch with one thread each
        ra = list(csv.DictReader(open(tmp_path / "single" / f"{f.stem}_objects.csv")))
        rb = list(csv.DictReader(open(tmp_path / "dask" / f"{f.stem}_objects.csv")))
        assert len(ra) == len(rb) == a.max()
        for x, y in zip(ra, rb):
            assert float(x.pop("score")) == pytest.approx(float(y.pop("score")), abs=1e-5)
            assert x == y
    assert total > 0


def test_expand_inputs_globs_and_missing(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"")
    (tmp_path / "b.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    files, missing = expand_inputs([tmp_path, str(tmp_path / "*.tif"), tmp_path / "nope.tif",
                                    str(tmp_path / "*.jpg")])
    assert [f.name for f in files] == ["a.tif", "b.png"]
    assert len(missing) == 2 and "nope.tif" in missing[0] and "matched no file" in missing[1]
