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


def test_output_names_keep_inputs_with_the_same_stem_apart(tmp_path):
    from cellseg.batch import output_names

    a, b = tmp_path / "a", tmp_path / "b"
    files = [a / "img.tif", a / "img.png", b / "img.tif", a / "other.ome.tif", b / "x" / "A01.tif",
             a / "x" / "A01.tif", a / "A01.tif"]
    assert output_names(files) == ["a/img_tif", "a/img_png", "b/img", "other", "b/x/A01", "a/x/A01", "a/A01"]
    assert output_names([a / "img.tif", a / "img.tiff"]) == ["img_tif", "img_tiff"]
    assert output_names([a / "one.tif", b / "two.tif"]) == ["one", "two"]
    with pytest.raises(ValueError, match=r"img_tif.tif .*same name|same name.*img_tif"):
        output_names([a / "img.tif", a / "img.png", a / "img_tif.tif"])


@pytest.mark.slow
def test_warnings_come_back_from_dask_workers(images_3, tmp_path, tiny_model_path, monkeypatch, capsys):
    """SegmentationResult.warnings reach FileResult.warnings on a Dask worker, and the CLI prints
    them per file (an in-process cluster, so that the test double reaches the workers)."""
    import pickle

    distributed = pytest.importorskip("dask.distributed")
    from cellseg.cli import main
    from cellseg.segmenter import Segmenter

    real = Segmenter.iter_segment

    def iter_segment(self, *a, **k):
        res = yield from real(self, *a, **k)
        res.warnings.append("unusual image")
        return res

    monkeypatch.setattr(Segmenter, "iter_segment", iter_segment)
    files, _ = expand_inputs([images_3])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        results = run_batch(SegmenterSpec(model=str(tiny_model_path)), files, tmp_path / "o",
                            scheduler=cluster.scheduler_address, csv=False, overlay=False)
        assert all(r.status == "done" and r.warnings[-1] == "unusual image" for r in results)
        assert pickle.loads(pickle.dumps(results[0])).warnings == results[0].warnings
        rc = main(["segment", str(images_3), "-o", str(tmp_path / "cli"), "--model", str(tiny_model_path),
                   "--scheduler", cluster.scheduler_address, "--no-csv", "--no-overlay"])
    assert rc == 0
    err = capsys.readouterr().err.splitlines()
    for f in files:
        assert f"warning: {f}: unusual image" in err


@pytest.fixture
def images_3(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        img, _ = synthetic_cells((64, 64), n_cells=6, seed=50 + i)
        tifffile.imwrite(src / f"f{i}.tif", (img * 1000).astype(np.uint16))
    return src


def test_expand_inputs_has_one_home_and_resolves_samples_when_asked():
    from cellseg import batch, io
    from cellseg.datasets.samples import sample_path

    assert batch.expand_inputs is io.expand_inputs
    files, missing = io.expand_inputs(["sample:synthetic_nuclei"], samples=True)
    assert files == [sample_path("synthetic_nuclei")] and not missing
    files, missing = io.expand_inputs(["sample:synthetic_nuclei"])  # a plain path otherwise
    assert not files and "no such file or folder" in missing[0]
