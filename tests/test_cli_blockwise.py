"""``cellseg segment --block-size``: block-wise runs from the command line (cellseg.blockrun).

The labels must equal those of the Python API (``cellseg.blockwise.segment_blockwise``) with
the same segmenter, block size and margin, for a memory-mapped TIFF, a tiled compressed TIFF
and OME-Zarr 0.4/0.5 inputs; a run killed with SIGKILL must resume and redo only the blocks
it had not finished; big inputs go block-wise by themselves; bad inputs and settings are
refused with messages naming the file.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import zarr

from cellseg import blockrun, omezarr
from cellseg.blockrun import block_segmenter, block_tile, default_margin
from cellseg.blockwise import Plane, segment_blockwise
from cellseg.cli import main
from cellseg.datasets.synthetic import synthetic_cells
from cellseg.measure import object_table, table_columns
from cellseg.models import load_model
from cellseg.segmenter import Segmenter

BLOCK = 192  # a small block the tiny model allows (at least twice its default margin, 64 px)


@pytest.fixture(scope="module")
def pixels():
    img, _ = synthetic_cells((430, 470), n_cells=90, seed=3)
    return (img * 1000).astype(np.uint16)


def _with_block_tile(seg, margin, block=BLOCK):
    """``seg`` with the network tile the CLI gives blocks of ``block`` px read with ``margin``."""
    seg.tile = block_tile(block + 2 * margin, seg)
    return seg


@pytest.fixture(scope="module")
def margin(tiny_model_path):
    return default_margin(block_segmenter(Segmenter(load_model(tiny_model_path))))


@pytest.fixture(scope="module")
def seg(tiny_model_path, margin):
    """The segmenter the CLI uses for blocks: the tiny model and its network tile for blocks."""
    return _with_block_tile(Segmenter(load_model(tiny_model_path)), margin)


def _api(seg, image, out, margin, block=BLOCK):
    path, cut = segment_blockwise(seg, image, out, block=block, margin=margin)
    return (tifffile.imread(path) if str(path).endswith(".tif") else np.asarray(zarr.open_array(str(path))[...]),
            cut)


def _rows(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_tiff_labels_csv_overlay_equal_the_api(tmp_path, tiny_model_path, seg, margin, pixels, capsys):
    # the network's context plus two diameters of the objects the model was trained on, to 16 px
    d0 = load_model(tiny_model_path).config["object_size"]["diameter"]
    assert margin == -(-(blockrun.network_context(seg) + 2 * d0) // 16) * 16 == 64
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, pixels, resolution=(2.0, 2.0), resolutionunit="CENTIMETER")  # 5000 µm/px: any value
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK)]) == 0
    cap = capsys.readouterr()
    n_blocks = len(blockrun.block_grid(pixels.shape, BLOCK, margin))
    assert n_blocks == 9
    # progress: one line per block (done/total, objects so far) on stderr
    for k in range(1, n_blocks + 1):
        assert f"block {k}/{n_blocks} of {src}:" in cap.err
    assert "objects so far" in cap.err
    assert f"block-wise, 9 blocks of {BLOCK} px (margin {margin} px, network tiles of {seg.tile} px)" in cap.out
    labels = tifffile.imread(out / "big_labels.tif")
    ref, cut = _api(seg, tifffile.memmap(src, mode="r"), tmp_path / "api.tif", margin)
    assert ref.max() > 30
    np.testing.assert_array_equal(labels, ref)  # same ids, not only the same partition
    # one owner per object: ids 1..n, each one connected blob, none lost
    ids = np.unique(labels)
    assert ids[0] == 0 and np.array_equal(ids[1:], np.arange(1, ids[-1] + 1))
    # the CSV measured block by block equals the whole-image table of the same labels
    pix = {"Y": 5000.0, "X": 5000.0}
    want = object_table(labels, "YX", pixels, {}, pixel_size=pix)
    rows = _rows(out / "big_objects.csv")
    assert list(rows[0]) == list(table_columns("YX", pix))
    assert [int(r["id"]) for r in rows] == [w["id"] for w in want]
    for r, w in zip(rows, want):
        for k in ("area", "bbox_y0", "bbox_x0", "bbox_y1", "bbox_x1"):
            assert int(r[k]) == w[k], k
        for k in ("centroid_y", "centroid_x", "mean_intensity", "area_um", "centroid_x_um"):
            assert float(r[k]) == pytest.approx(w[k], rel=1e-5, abs=0.006), k
        assert r["touches_border"] == str(w["touches_border"])
        assert r["cut_by_block"] == str(int(r["id"]) in cut)
        assert 0 <= float(r["score"]) <= 1
    assert (out / "big_overlay.png").exists()
    # no work folder or temporary left; the labels keep the pixel size
    assert _hidden(out) == []
    from cellseg.io import read_image

    assert read_image(out / "big_labels.tif").pixel_size == pix
    # a rerun skips the file, as for whole-image runs
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
                 "-q"]) == 0
    assert "skipped" in capsys.readouterr().out


def test_tiled_compressed_tiff_and_a_chosen_channel(tmp_path, tiny_model_path, seg, margin, pixels, capsys):
    # a zlib-compressed tiled TIFF is read tile by tile (tifffile's zarr store), not memory-mapped
    src = tmp_path / "tiled.tif"
    tifffile.imwrite(src, pixels, tile=(64, 64), compression="zlib")
    assert blockrun.probe(src).kind == "tiff-chunked"
    ref, _ = _api(seg, pixels, tmp_path / "api.tif", margin)
    out = tmp_path / "o"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
                 "-q", "--no-csv", "--no-overlay"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "tiled_labels.tif"), ref)
    # two channels: one is chosen with --channel (a memory-mapped planar CYX file)
    two = tmp_path / "two.tif"
    tifffile.imwrite(two, np.stack([pixels[::-1], pixels]), photometric="minisblack", metadata={"axes": "CYX"})
    assert main(["segment", str(two), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
                 "-q", "--no-csv", "--no-overlay"]) == 1
    assert "two.tif: has 2 channels and a block-wise run segments one: choose it with --channel" in \
        capsys.readouterr().out
    assert main(["segment", str(two), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
                 "-q", "--no-csv", "--no-overlay", "--channel", "1"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "two_labels.tif"), ref)


def _write_ngff(path, data, version, n_levels=3):
    from tests.test_omezarr import _write_ngff as write

    return write(path, data, version, n_levels=n_levels, translation=[3.0, 4.0])


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_labels_group_equals_the_api(tmp_path, tiny_model_path, seg, margin, pixels, version):
    src = _write_ngff(tmp_path / "img.ome.zarr", pixels, version)
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
                 "-q"]) == 0
    image = omezarr.open_image(src)
    ref, _ = _api(seg, Plane(image.array(0), {0: 0}), tmp_path / "api.zarr", margin)
    lab = omezarr.read_labels(src, "cellseg", 0)
    assert lab.shape == (1, *pixels.shape)
    np.testing.assert_array_equal(lab[0], ref)
    # every level of the group: the image's shapes and transformations, sampled from level 0 as write_labels does
    lab_img = omezarr.open_image(src / "labels" / "cellseg")
    assert [lv.transforms for lv in lab_img.levels] == [lv.transforms for lv in image.levels]
    assert lab_img.multiscale_transforms == image.multiscale_transforms
    for k in (1, 2):
        lv = omezarr.read_labels(src, "cellseg", k)
        assert lv.shape == (1, *image.levels[k].shape[1:])
        np.testing.assert_array_equal(lv, omezarr._resize_nearest(lab, lv.shape))
    # the same metadata as the whole-image writer's, listed in labels/, no work folder left
    whole = tmp_path / "whole.ome.zarr"
    _write_ngff(whole, pixels, version)
    omezarr.write_labels(whole, ref, "YX")
    attrs = dict(zarr.open_group(str(src / "labels" / "cellseg"), mode="r").attrs)
    assert attrs == dict(zarr.open_group(str(whole / "labels" / "cellseg"), mode="r").attrs)
    meta = dict(zarr.open_group(str(src / "labels"), mode="r").attrs)
    assert (meta["ome"] if version == "0.5" else meta)["labels"] == ["cellseg"]
    assert _hidden(src / "labels") == [n for n in _hidden(src / "labels") if n in (".zattrs", ".zgroup")]
    assert len(_rows(out / "img_objects.csv")) == len(np.unique(ref)) - 1
    # --output-format tiff: the same labels in OUT/img_labels.tif
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
                 "-q", "--output-format", "tiff", "--no-overlay", "--overwrite"]) == 0
    np.testing.assert_array_equal(tifffile.imread(out / "img_labels.tif"), ref)


def _run_cli(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "cellseg", "segment", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_killed_run_resumes_and_redoes_only_unfinished_blocks(tmp_path, tiny_model_path, pixels):
    src = tmp_path / "big.tif"
    big = np.concatenate([pixels, pixels[::-1]], axis=1)  # 430 x 940: 15 blocks of 192
    tifffile.imwrite(src, big)
    args = [str(src), "--model", str(tiny_model_path), "--block-size", str(BLOCK), "--no-overlay"]
    ref_dir, out = tmp_path / "ref", tmp_path / "out"
    p = _run_cli([*args, "-o", str(ref_dir)])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    n = err.count(" objects so far")
    assert n == 15
    state = out / ".big_labels.tif.blockwise" / "state.json"
    p = _run_cli([*args, "-o", str(out)])
    done = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and p.poll() is None:
        try:
            done = len(json.loads(state.read_text())["counts"])
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= 4:
            p.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    k = len(json.loads(state.read_text())["counts"])  # the blocks the killed run had finished and recorded
    assert 4 <= k < n
    assert not (out / "big_labels.tif").exists()  # nothing under the final name
    p = _run_cli([*args, "-o", str(out)])
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert f"resuming the block-wise run: {k} of {n} blocks were done" in err
    redone = [line for line in err.splitlines() if "objects so far" in line]
    assert [line.split()[1] for line in redone] == [f"{i}/{n}" for i in range(k + 1, n + 1)]
    np.testing.assert_array_equal(tifffile.imread(out / "big_labels.tif"), tifffile.imread(ref_dir / "big_labels.tif"))
    assert (out / "big_objects.csv").read_text() == (ref_dir / "big_objects.csv").read_text()
    assert _hidden(out) == []


def test_interrupted_run_resumes_in_process_and_other_settings_start_over(tmp_path, tiny_model_path, seg, margin,
                                                                         pixels, monkeypatch, capsys):
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, pixels)
    out = tmp_path / "out"
    args = ["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
            "--no-overlay"]
    calls = []
    real = blockrun.segment_block

    def counting(*a, **kw):
        calls.append(kw["index"])
        if len(calls) == 5 and stop["on"]:
            raise KeyboardInterrupt
        return real(*a, **kw)

    stop = {"on": True}
    monkeypatch.setattr(blockrun, "segment_block", counting)
    assert main(args) == 130  # Ctrl-C: the blocks done are kept
    assert "rerun the same command to resume" in capsys.readouterr().err
    assert calls == [0, 1, 2, 3, 4]
    calls.clear()
    stop["on"] = False
    assert main(args) == 0
    assert calls == [4, 5, 6, 7, 8]  # only the unfinished blocks (block 4 was interrupted)
    assert "4 of them done by the interrupted earlier run" in capsys.readouterr().out
    ref, _ = _api(seg, pixels, tmp_path / "api.tif", margin)
    np.testing.assert_array_equal(tifffile.imread(out / "big_labels.tif"), ref)
    # an unfinished run with other settings is not reused: it starts over, and says why
    args[3] = str(tmp_path / "out2")
    calls.clear()
    stop["on"] = True
    assert main(args) == 130
    calls.clear()
    stop["on"] = False
    assert main([*args, "--prob-thresh", "0.6"]) == 0
    err = capsys.readouterr().err
    assert "starting over" in err and "other settings" in err and "fg_thresh" in err
    assert calls == list(range(9))
    # --overwrite does not reuse an unfinished run either
    args[3] = str(tmp_path / "out3")
    calls.clear()
    stop["on"] = True
    assert main(args) == 130
    calls.clear()
    stop["on"] = False
    assert main([*args, "--overwrite", "-q"]) == 0
    assert calls == list(range(9))
    # --block-margin changes the grid: a finished rerun redoes it all with the new margin
    calls.clear()
    assert main([*args, "--overwrite", "--block-margin", "48", "-q"]) == 0
    assert calls == list(range(9))


@pytest.mark.slow
def test_blocks_on_a_dask_cluster_equal_the_single_process_run(tmp_path, tiny_model_path, seg, margin, pixels):
    pytest.importorskip("dask.distributed")
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, pixels)
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, pixels[:96, :128])
    out = tmp_path / "dask"
    assert main(["segment", str(src), str(small), "-o", str(out), "--model", str(tiny_model_path), "--block-size",
                 str(BLOCK), "--workers", "2", "-q", "--no-overlay"]) == 0
    ref, _ = _api(seg, pixels, tmp_path / "api.tif", margin)
    np.testing.assert_array_equal(tifffile.imread(out / "big_labels.tif"), ref)
    assert (out / "small_labels.tif").exists() and (out / "small_objects.csv").exists()


def test_big_inputs_go_blockwise_by_themselves(tmp_path, tiny_model_path, pixels, monkeypatch, capsys):
    monkeypatch.setattr(blockrun, "BLOCKWISE_ABOVE_PX", 150_000)  # 430 x 470 is over it, 96 x 128 is not
    monkeypatch.setattr(blockrun, "DEFAULT_BLOCK", BLOCK)
    big, small, stack = tmp_path / "big.tif", tmp_path / "small.tif", tmp_path / "stack.tif"
    tifffile.imwrite(big, pixels)
    tifffile.imwrite(small, pixels[:96, :128])
    tifffile.imwrite(stack, np.stack([pixels, pixels]), imagej=True, metadata={"axes": "TYX"})
    out = tmp_path / "out"
    assert main(["segment", str(big), str(small), str(stack), "-o", str(out), "--model", str(tiny_model_path),
                 "--no-overlay", "-q"]) == 0
    cap = capsys.readouterr()
    notes = [line for line in cap.err.splitlines() if line.startswith("note:")]
    assert len(notes) == 2
    assert notes[0].startswith(f"note: {big}: 430 x 470 = 0 Mpx per frame, over the 0 Mpx above which cellseg "
                               "segments block-wise")
    assert "--no-blockwise loads it whole" in notes[0]
    assert f"{stack}: " in notes[1] and "loaded whole" in notes[1] and "2 time points" in notes[1]
    assert "(block-wise, 9 blocks" in cap.out
    assert cap.out.count("block-wise") == 1  # not the small file, not the stack
    assert tifffile.imread(out / "stack_labels.tif").shape == (2, *pixels.shape)
    # --no-blockwise: loaded whole, no note
    out2 = tmp_path / "out2"
    assert main(["segment", str(big), "-o", str(out2), "--model", str(tiny_model_path), "--no-overlay", "-q",
                 "--no-blockwise"]) == 0
    cap = capsys.readouterr()
    assert "note:" not in cap.err and "block-wise" not in cap.out


def test_bad_settings_and_inputs_are_refused_naming_the_file(tmp_path, tiny_model_path, margin, pixels, capsys):
    src = tmp_path / "img.tif"
    tifffile.imwrite(src, pixels)
    out = tmp_path / "out"
    base = ["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "-q"]

    def err(*extra, rc=2):
        assert main([*base, *extra]) == rc
        cap = capsys.readouterr()
        return cap.out + cap.err

    # before any work: blocks too small for the margin, a margin below the network's context, contradictions
    msg = err("--block-size", "100")
    assert f"block size of 100 px is too small for a margin of {margin} px" in msg
    assert f"--block-size {2 * margin}" in msg
    msg = err("--block-size", "192", "--block-margin", "8")
    assert "block margin of 8 px is too small: the network needs 24 px of context" in msg
    assert "contradicts" in err("--block-size", "192", "--no-blockwise")
    assert ">= 1" in err("--block-size", "0")
    assert "--ctc" in err("--block-size", "192", "--ctc", "01")
    assert not out.exists() or _hidden(out) == []
    # per file (FAILED, the batch goes on): a Z stack, a PNG, a TIFF's labels asked as zarr
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, np.stack([pixels, pixels]), imagej=True, metadata={"axes": "ZYX"})
    png = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray((pixels // 16).astype(np.uint8)).save(png)
    assert main(["segment", str(stack), str(png), "-o", str(out), "--model", str(tiny_model_path), "-q",
                 "--block-size", "192"]) == 1
    cap = capsys.readouterr()
    assert (f"FAILED {stack}: block-wise runs segment one 2D image (Y, X); this one has 2 Z slices (axes 'ZYX'"
            in cap.out)
    assert f"FAILED {png}: block-wise runs read TIFF files" in cap.out
    assert "Traceback" not in cap.out + cap.err
    assert main([*base, "--block-size", "192", "--output-format", "zarr"]) == 1
    assert "labels of a TIFF input as a TIFF" in capsys.readouterr().out
    assert _hidden(out) == []
    # two runs on one output at once: the second is refused (the work folder is locked)
    import fcntl

    work = blockrun.work_dir(out / "img_labels.tif")
    work.mkdir(parents=True)
    with open(work / "lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert main([*base, "--block-size", "192"]) == 1
    assert f"FAILED {src}: another cellseg run is segmenting it now" in capsys.readouterr().out


def test_probe_describes_the_plane_without_reading_pixels(tmp_path, pixels):
    p = tmp_path / "rgb.tif"
    tifffile.imwrite(p, np.stack([pixels] * 3, axis=-1), photometric="rgb")
    with pytest.raises(blockrun.BlockwiseError, match="has 3 channels"):
        blockrun.probe(p)
    src = blockrun.probe(p, channel=2)
    assert src.kind == "tiff" and src.shape == pixels.shape and src.fixed == ((2, 2),)
    np.testing.assert_array_equal(src.open()[10:50, 20:90], pixels[10:50, 20:90])
    z = _write_ngff(tmp_path / "img.ome.zarr", pixels, "0.5")
    src = blockrun.probe(z, level=1)
    assert src.kind == "zarr" and src.shape == (215, 235) and dict(src.pixel_size) == {"Y": 0.8, "X": 0.8}
    np.testing.assert_array_equal(src.open()[...], pixels[::2, ::2])


@pytest.mark.slow
def test_default_model_rgb_input_and_estimated_object_size(tmp_path):
    """The default model takes RGB input (grey repeated) and estimates the object size: block-wise runs
    estimate it once, on the image's centre, and the CLI equals the API."""
    img, _ = synthetic_cells((320, 300), n_cells=40, seed=5)
    img = np.clip(img * 20000, 0, 65535).astype(np.uint16)
    src = tmp_path / "n.tif"
    tifffile.imwrite(src, img)
    out = tmp_path / "out"
    from cellseg.models import default_model_name

    name = default_model_name()
    assert main(["segment", str(src), "-o", str(out), "--model", name, "--block-size", "256", "--block-margin", "96",
                 "-q", "--no-overlay", "--no-csv"]) == 0
    seg = Segmenter.from_pretrained(name)
    assert seg.scale_mode()[0] == "auto" and seg.model.in_channels == 3
    from cellseg.blockwise import fixed_scale, percentile_range

    seg.tile = block_tile(256 + 2 * 96, fixed_scale(seg, img, percentile_range(img, *seg.normalize)))
    ref, _ = _api(seg, img, tmp_path / "api.tif", 96, block=256)
    assert ref.max() > 20
    np.testing.assert_array_equal(tifffile.imread(out / "n_labels.tif"), ref)


def test_a_nuclei_model_takes_the_nuclear_stain_of_a_named_multichannel_file(tmp_path, tiny_model_path, pixels,
                                                                               capsys):
    """An OME-TIFF of two named channels and no --channel: a nuclei model segments the one named for a
    nuclear stain, whole or block-wise, measures its intensities, and says which it took."""
    from cellseg.io import write_image

    model = load_model(tiny_model_path)
    model.config["objects"] = "nuclei"
    model.save(tmp_path / "nuc.pt")
    dapi = pixels.astype(np.uint16)
    other = np.random.default_rng(1).integers(0, 4000, pixels.shape).astype(np.uint16)
    write_image(tmp_path / "two.ome.tif", np.stack([other, dapi]), "CYX", channel_names=["Phalloidin", "DAPI"])
    tifffile.imwrite(tmp_path / "dapi.tif", dapi)
    runs = {"whole": ["--no-blockwise"], "blocks": ["--block-size", str(BLOCK)]}
    for kind, extra in runs.items():
        for src in ("two.ome.tif", "dapi.tif"):
            assert main(["segment", str(tmp_path / src), "-o", str(tmp_path / kind), "--model",
                         str(tmp_path / "nuc.pt"), "-q", *extra]) == 0
        err = capsys.readouterr().err
        assert "segmented channel 1 ('DAPI', a nuclear stain) of 2" in err
        two = tifffile.imread(tmp_path / kind / "two_labels.tif")
        assert two.max() > 0
        np.testing.assert_array_equal(two, tifffile.imread(tmp_path / kind / "dapi_labels.tif"))
        with open(tmp_path / kind / "two_objects.csv") as f1, open(tmp_path / kind / "dapi_objects.csv") as f2:
            assert f1.read() == f2.read()  # intensities of the DAPI channel


def test_flat_field_on_says_block_wise_runs_do_not_correct(tmp_path, tiny_model_path, pixels, capsys):
    src = tmp_path / "big.tif"
    tifffile.imwrite(src, pixels)
    out = tmp_path / "out"
    assert main(["segment", str(src), "-o", str(out), "--model", str(tiny_model_path), "--block-size", str(BLOCK),
                 "--flat-field", "on", "--no-overlay", "--no-csv"]) == 0
    cap = capsys.readouterr()
    assert "block-wise runs do not correct uneven illumination (--flat-field on)" in cap.out + cap.err
