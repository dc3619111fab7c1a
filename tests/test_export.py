"""bioimage.io export (cellseg.export): every bundled model's package passes bioimageio.core's own
test (the spec's validation, then the test tensors reproduced with the TorchScript and the ONNX
weights and inference at several sizes and batch sizes), a package loads back as the model it came
from (same weights, same labels from `cellseg segment --model OUT.zip`), and bad input is refused
naming the file, leaving nothing written."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import tifffile
import yaml

from cellseg import cli
from cellseg.models import list_models, load_model, model_card

pytest.importorskip("bioimageio.spec")
pytest.importorskip("onnx")
core = pytest.importorskip("bioimageio.core")
pytest.importorskip("onnxruntime")

from cellseg.export import BioimageioError, export_bioimageio, load_bioimageio  # noqa: E402

#: models whose modality no bundled sample shows (DIC, phase contrast): exported with a DIC frame
_DIC = {"cells"}


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    return {}


def _export(name, packages, tmp_path_factory, request):
    if name not in packages:
        image = None
        if name in _DIC:
            frame = request.getfixturevalue("dic_hela") / "02" / "t000.tif"
            if not frame.is_file():
                pytest.skip(f"{frame} not found (set CELLSEG_DATA to the shared data folder)")
            image = frame
        out = tmp_path_factory.mktemp("bioimageio") / f"{name}.zip"
        packages[name] = export_bioimageio(name, out, image=image)
    return packages[name]


@pytest.mark.parametrize("name", list_models())
def test_bundled_model_package_passes_bioimageio_test(name, packages, tmp_path_factory, request):
    pkg = _export(name, packages, tmp_path_factory, request)
    summary = core.test_model(str(pkg))
    failed = [f"{d.name}: {[e.msg for e in d.errors]}" for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    tested = {d.name for d in summary.details if d.status == "passed"}
    for wf in ("torchscript", "onnx"):  # both weight formats reproduce the test outputs
        assert f"Reproduce test outputs from test inputs ({wf})" in tested, sorted(tested)

    with zipfile.ZipFile(pkg) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        names = set(z.namelist())
        readme = z.read("README.md").decode()
        assert z.read("cover.png")[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_model(name, device="cpu")
    assert rdf["format_version"].startswith("0.5")
    (inp,) = rdf["inputs"]
    assert [a.get("id", a["type"]) for a in inp["axes"]] == ["batch", "channel", "y", "x"]
    assert len(inp["axes"][1]["channel_names"]) == model.in_channels
    steps = [p for p in inp["preprocessing"] if p["id"] != "ensure_dtype"]  # the spec adds float32 casts
    (pre,) = steps
    assert pre["id"] == "scale_range" and pre["kwargs"]["axes"] == ["y", "x"]
    assert (pre["kwargs"]["min_percentile"], pre["kwargs"]["max_percentile"]) == model.normalization
    assert [o["id"] for o in rdf["outputs"]] == [h.name for h in model.network.head_specs]
    assert rdf["weights"]["onnx"]["parent"] == "torchscript"
    assert {"weights.onnx", "weights_torchscript.pt", "test_input.npy"} <= names
    # the decode step, with this model's representation and tuned thresholds
    assert f"Representation `{model.representation.name}`" in readme
    assert json.dumps(model.thresholds, sort_keys=True) in readme
    assert "cellseg segment" in readme and "## Validation" in readme
    assert rdf["cite"] and all(c.get("doi") for c in rdf["cite"])
    card = model_card(name)
    if "research use" in card.lower():
        assert rdf["license"]["source"] == "LICENSE.md" and "LICENSE.md" in names
    else:
        assert rdf["license"] == "BSD-3-Clause"


@pytest.mark.parametrize("name", list_models())
def test_package_loads_as_the_same_model(name, packages, tmp_path_factory, request):
    pkg = _export(name, packages, tmp_path_factory, request)
    original, loaded = load_model(name, device="cpu"), load_model(pkg, device="cpu")
    assert loaded.config["representation"] == original.config["representation"]
    assert loaded.thresholds == original.thresholds and loaded.normalization == original.normalization
    assert loaded.config.get("object_size") == original.config.get("object_size")
    a, b = original.network.state_dict(), loaded.network.state_dict()
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_segment_with_package_gives_the_same_labels(packages, tmp_path_factory, request, tmp_path):
    pkg = _export("nuclei-stardist", packages, tmp_path_factory, request)
    runs = {}
    for tag, model in (("bundled", "nuclei-stardist"), ("package", str(pkg))):
        out = tmp_path / tag
        assert cli.main(["segment", "sample:dsb_nuclei", "-o", str(out), "--model", model, "--quiet",
                         "--no-overlay", "--no-csv"]) == 0
        runs[tag] = tifffile.imread(out / "dsb_nuclei_labels.tif")
    assert runs["bundled"].max() > 100
    np.testing.assert_array_equal(runs["package"], runs["bundled"])


def test_export_a_model_file_from_the_command_line(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "tiny.zip"
    assert cli.main(["export", str(tiny_model_path), str(out), "--image", "sample:synthetic_nuclei"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert core.test_model(str(out)).status == "passed"
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert rdf["license"] == "BSD-3-Clause"             # no model card: no data terms
    assert [c["doi"] for c in rdf["cite"]] == ["10.1109/TMI.2018.2865709"]  # the distance-map method


def test_bad_input_is_refused_naming_the_file(tiny_model_path, tmp_path, capsys):
    out = tmp_path / "m.zip"
    assert cli.main(["export", "no-such-model", str(out)]) == 2
    assert "no-such-model" in capsys.readouterr().err
    missing = tmp_path / "missing.tif"
    assert cli.main(["export", str(tiny_model_path), str(out), "--image", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    assert cli.main(["export", str(tiny_model_path), str(tmp_path / "m.tar")]) == 2
    assert "m.tar" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())                 # nothing written, no temporary left
    # a DIC model with no image given: no bundled sample looks like its training data
    with pytest.raises(BioimageioError, match="--image"):
        export_bioimageio("cells", out)
    assert not out.exists()


def test_foreign_or_damaged_packages_are_refused(tmp_path, tiny_model_path):
    from cellseg.models import ModelFormatError

    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as z:
        z.writestr("rdf.yaml", yaml.safe_dump({"type": "model", "format_version": "0.5.4", "name": "x"}))
    with pytest.raises(ModelFormatError, match="foreign.zip.*did not export"):
        load_model(foreign)
    not_zip = tmp_path / "not.zip"
    not_zip.write_text("hello")
    with pytest.raises(ModelFormatError, match="not.zip"):
        load_model(not_zip)
    good = export_bioimageio(tiny_model_path, tmp_path / "good.zip", image="sample:synthetic_nuclei")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "weights_torchscript.pt":
                data = data[:-100] + bytes(100)
            dst.writestr(item, data)
    with pytest.raises(ModelFormatError, match="sha256"):
        load_bioimageio(damaged)
