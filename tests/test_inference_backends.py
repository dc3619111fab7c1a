"""Inference backends (cellseg.models.inference): ONNX Runtime and bf16 against eager torch fp32,
the backend/precision checks and the --device errors of the CLI."""
import numpy as np
import pytest
import torch

from cellseg.cli import main
from cellseg.io import write_image
from cellseg.models import CellsegModel, make_config
from cellseg.models import inference as inf
from cellseg.representations import get
from cellseg.segmenter import Segmenter, SegmenterError

ort = pytest.importorskip("onnxruntime")

TINY = {"depth": 2, "width": 8, "seed": 3}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLSEG_CACHE", str(tmp_path / "cache"))  # ONNX exports go here, not to ~/.cache


def _image(seed=0, shape=(72, 88)):
    from cellseg.datasets.synthetic import synthetic_cells

    img, _ = synthetic_cells(shape, n_cells=6, seed=seed)
    return img.astype(np.float32)


@pytest.mark.parametrize("rep,cfg", [("flows", {}), ("stardist", {"n_rays": 16})])
def test_onnx_outputs_equal_torch(rep, cfg):
    m = CellsegModel(make_config(get(rep, **cfg), TINY), device="cpu")
    x = _image()
    ref = m.predict(x)
    out = m.predict(x, backend="onnx", precision="fp32")
    assert set(out) == set(ref)
    for h in ref:
        assert out[h].shape == ref[h].shape and out[h].dtype == np.float32
        np.testing.assert_allclose(out[h], ref[h], atol=1e-4, rtol=1e-4)
    # another shape runs on the same session (dynamic axes), test-time augmentation too
    sess = inf._ENGINES[m][("onnx", "fp32")].session
    x2 = _image(1, (40, 120))
    aug_ref, aug = m.predict(x2, augment=True), m.predict(x2, augment=True, backend="onnx", precision="fp32")
    assert inf._ENGINES[m][("onnx", "fp32")].session is sess
    for h in aug_ref:
        np.testing.assert_allclose(aug[h], aug_ref[h], atol=1e-4, rtol=1e-4)


def test_onnx_session_follows_the_weights(tmp_path):
    m = CellsegModel(make_config(get("distance"), TINY), device="cpu")
    x = _image()
    m.predict(x, backend="onnx", precision="fp32")
    first = inf._ENGINES[m][("onnx", "fp32")]
    with torch.no_grad():
        for p in m.network.parameters():
            p.mul_(1.01)
    out = m.predict(x, backend="onnx", precision="fp32")
    assert inf._ENGINES[m][("onnx", "fp32")] is not first  # changed weights: a new export
    for h, v in m.predict(x).items():
        np.testing.assert_allclose(out[h], v, atol=1e-4, rtol=1e-4)
    # the export is cached on disk: a fresh copy of the model loads it instead of exporting again
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))


def test_onnx_sessions_plan_no_memory_per_shape():
    """Tiles of several shapes share the arena's blocks: no memory pattern (a block per input shape,
    1.7x the memory of one call over a tiled frame); the engine's session gets these options."""
    so = inf._session_options(ort)
    assert so.enable_mem_pattern is False and so.enable_cpu_mem_arena is True
    m = CellsegModel(make_config(get("distance"), TINY), device="cpu")
    m.predict(_image(), backend="onnx", precision="fp32")
    assert inf._ENGINES[m][("onnx", "fp32")].session.get_session_options().enable_mem_pattern is False


def test_segmenter_onnx_end_to_end(tiny_model_path):
    from cellseg.models import load_model

    model = load_model(tiny_model_path, device="cpu")
    img = _image(5, (96, 96)) * 1000
    ref = Segmenter(model, backend="torch", precision="fp32", keep_outputs=True).segment(img)
    seg = Segmenter(model, backend="onnx", keep_outputs=True)
    assert seg.inference == ("onnx", "fp32")
    res = seg.segment(img)
    # outputs equal to float rounding; the labels of this model are identical
    for h, v in ref.frames[0]["outputs"].items():
        np.testing.assert_allclose(res.frames[0]["outputs"][h], v, atol=1e-4)
    assert ref.n_objects > 0
    np.testing.assert_array_equal(res.labels, ref.labels)
    # tiled: the same tiling logic on the onnx path
    tiled = Segmenter(model, backend="onnx", tile=64, margin=16).segment(img)
    assert tiled.labels.shape == img.shape and tiled.n_objects > 0


def test_bf16_runs():
    m = CellsegModel(make_config(get("flows"), TINY), device="cpu")
    x = _image()
    ref = m.predict(x)
    out = m.predict(x, backend="torch", precision="bf16")
    for h in ref:
        assert out[h].dtype == np.float32 and out[h].shape == ref[h].shape
        assert np.all(np.isfinite(out[h]))
        assert float(np.max(np.abs(out[h] - ref[h]))) < 0.1  # bfloat16 has 8 bits of mantissa
    assert Segmenter(m, backend="torch", precision="bf16").inference == ("torch", "bf16")


def test_int8_needs_ranges_and_runs_with_them():
    m = CellsegModel(make_config(get("distance"), TINY), device="cpu")
    x = _image()
    with pytest.raises(inf.InferenceError, match="int8 needs activation ranges"):
        m.predict(x, backend="onnx", precision="int8")
    rec = inf.calibrate(m, [_image(s) for s in range(3)])
    assert rec["format"] == "cellseg-int8-ranges" and rec["ranges"]
    ref, out = m.predict(x), m.predict(x, backend="auto", precision="int8")
    for h in ref:
        assert out[h].shape == ref[h].shape
        assert float(np.max(np.abs(out[h] - ref[h]))) < 0.25 * (float(np.ptp(ref[h])) + 1e-3)


def test_resolve_and_errors(monkeypatch):
    assert inf.resolve("torch", "fp32", "cpu") == ("torch", "fp32")
    assert inf.resolve("torch", None, "cpu") == ("torch", "fp32")
    assert inf.resolve("auto", "bf16", "cpu") == ("torch", "bf16")
    assert inf.resolve("auto", "int8", "cpu") == ("onnx", "int8")
    assert inf.resolve("auto", "fp32", "cpu") == ("onnx", "fp32")
    assert inf.resolve("auto", "auto", "cpu") in {("onnx", "fp32"), ("onnx", "int8"), ("torch", "fp32"),
                                                  ("torch", "bf16")}
    with pytest.raises(inf.InferenceError, match="does not run --precision bf16.*--backend torch --precision bf16"):
        inf.resolve("onnx", "bf16", "cpu")
    with pytest.raises(inf.InferenceError, match="does not run --precision int8.*--backend onnx --precision int8"):
        inf.resolve("torch", "int8", "cpu")
    with pytest.raises(inf.InferenceError, match="unknown backend 'tensorrt'"):
        inf.resolve("tensorrt", "fp32", "cpu")
    with pytest.raises(inf.InferenceError, match="unknown precision 'fp16'"):
        inf.resolve("torch", "fp16", "cpu")
    with pytest.raises(inf.InferenceError, match="onnx backend runs on the CPU"):
        inf.resolve("onnx", "fp32", "cuda")
    assert inf.resolve("auto", "auto", "cuda") == ("torch", "fp32")
    m = CellsegModel(make_config(get("distance"), TINY), device="cpu")
    with pytest.raises(SegmenterError, match="does not run --precision bf16"):
        Segmenter(m, backend="onnx", precision="bf16")
    # onnxruntime missing: a clear message for onnx, and auto falls back to torch
    monkeypatch.setattr(inf, "onnxruntime_available", lambda: False)

    def no_ort(what="the onnx backend"):
        raise inf.InferenceError(f"{what} needs the package 'onnxruntime', which is not installed: pip install "
                                 "onnxruntime")

    monkeypatch.setattr(inf, "_need_onnxruntime", no_ort)
    with pytest.raises(SegmenterError, match="needs the package 'onnxruntime'.*pip install onnxruntime"):
        Segmenter(m, backend="onnx")
    assert Segmenter(m).inference == ("torch", "fp32")
    assert inf.resolve("auto", "fp32", "cpu") == ("torch", "fp32")


def test_onnxruntime_import_error_message(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "onnxruntime" or name.startswith("onnxruntime."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    assert not inf.onnxruntime_available()
    with pytest.raises(inf.InferenceError, match="pip install onnxruntime"):
        inf.resolve("onnx", "fp32", "cpu")


def _mps_available():
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


@pytest.mark.skipif(torch.cuda.is_available() or _mps_available(), reason="needs a machine without CUDA and MPS")
def test_cli_device_errors(tiny_model_path, tmp_path, capsys):
    img = (np.random.default_rng(0).random((32, 32)) * 1000).astype(np.uint16)
    write_image(tmp_path / "in" / "a.tif", img, "YX")
    for dev, what in (("cuda", "CUDA is not available"), ("mps", "MPS is not available"),
                      ("cuda:3", "CUDA is not available"), ("tpu", "unknown device")):
        rc = main(["segment", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", str(tiny_model_path),
                   "-q", "--device", dev])
        err = capsys.readouterr().err
        assert rc == 2 and what in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    for dev in ("mps", "cuda"):
        rc = main(["train", "-r", "distance", "--data", str(tmp_path / "in"), "--out", str(tmp_path / "m.pt"),
                   "--device", dev])
        err = capsys.readouterr().err
        assert rc == 2 and "--device" in err and "not available" in err and "Traceback" not in err, err
    rc = main(["denoise", str(tmp_path / "in"), "-o", str(tmp_path / "d"), "--model", str(tiny_model_path),
               "--device", "mps"])
    err = capsys.readouterr().err
    assert rc == 2 and "MPS is not available" in err and "Traceback" not in err, err


def test_cli_backend_precision(tiny_model_path, tmp_path, capsys):
    img = (_image(2, (64, 64)) * 1000).astype(np.uint16)
    write_image(tmp_path / "in" / "a.tif", img, "YX")
    base = ["segment", str(tmp_path / "in"), "--model", str(tiny_model_path), "-q", "--no-overlay", "--no-csv"]
    rc = main(base + ["-o", str(tmp_path / "x"), "--backend", "onnx", "--precision", "bf16"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not run --precision bf16" in err and "Traceback" not in err
    rc = main(base + ["-o", str(tmp_path / "x"), "--precision", "int8"])
    err = capsys.readouterr().err
    assert rc == 2 and "no int8 activation ranges" in err and "Traceback" not in err
    if not torch.cuda.is_available():
        rc = main(base + ["-o", str(tmp_path / "x"), "--backend", "onnx", "--device", "cuda"])
        assert rc == 2 and "Traceback" not in capsys.readouterr().err
    from cellseg import io

    for b in ("torch", "onnx"):
        assert main(base + ["-o", str(tmp_path / b), "--backend", b]) == 0, capsys.readouterr().err
    np.testing.assert_array_equal(io.read_labels(tmp_path / "torch" / "a_labels.tif"),
                                  io.read_labels(tmp_path / "onnx" / "a_labels.tif"))
