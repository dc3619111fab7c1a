"""The public surface: lazy top-level names, every ``__all__`` resolves, star imports work."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

import cellseg

PACKAGES = ["cellseg", "cellseg.datasets", "cellseg.metrics", "cellseg.models", "cellseg.representations",
            "cellseg.train"]
HEAVY = ["torch", "numba", "numpy", "scipy", "skimage", "tifffile"]


def _modules_after(code: str) -> list[str]:
    """The HEAVY modules loaded by ``code`` in a fresh interpreter."""
    probe = f"import json, sys\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_cellseg_is_light():
    assert _modules_after("import cellseg") == []


def test_model_listing_needs_no_torch():
    loaded = _modules_after("import cellseg\ncellseg.list_models()")
    assert "torch" not in loaded and "numba" not in loaded


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_resolves(package):
    mod = importlib.import_module(package)
    assert len(set(mod.__all__)) == len(mod.__all__), "__all__ without duplicates"
    missing = [name for name in mod.__all__ if name not in dir(mod)]
    assert not missing, f"{package}.__dir__ lacks {missing}"
    for name in mod.__all__:
        assert getattr(mod, name) is not None


@pytest.mark.parametrize("package", PACKAGES)
def test_star_import(package):
    namespace: dict = {}
    exec(f"from {package} import *", namespace)
    assert set(importlib.import_module(package).__all__) <= set(namespace)


def test_top_level_names_are_the_library_objects():
    from cellseg import io, metrics, models, representations, segmenter, train

    assert cellseg.Segmenter is segmenter.Segmenter
    assert cellseg.SegmentationResult is segmenter.SegmentationResult
    assert cellseg.read_image is io.read_image
    assert cellseg.write_labels is io.write_labels
    assert cellseg.load_model is models.load_model
    assert cellseg.list_models is models.list_models
    assert cellseg.matching is metrics.matching and callable(cellseg.matching)
    assert cellseg.evaluate is metrics.evaluate
    assert cellseg.get_representation is representations.get
    assert cellseg.fit is train.fit and cellseg.TrainConfig is train.TrainConfig
    assert cellseg.representations is representations and cellseg.io is io


def test_star_import_keeps_stdlib_io():
    namespace: dict = {}
    exec("import io\nfrom cellseg import *", namespace)
    assert namespace["io"].__name__ == "io"


def test_unknown_name_raises():
    with pytest.raises(AttributeError, match="no attribute 'Segmentr'"):
        _ = cellseg.Segmentr
    with pytest.raises(ImportError):
        exec("from cellseg import Segmentr", {})


def test_the_version_has_one_source():
    """pyproject.toml takes the version from ``cellseg.__version__``; the installed metadata agrees."""
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import cellseg

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert importlib.metadata.version(cellseg.__distribution__) == cellseg.__version__


def test_the_distribution_name_is_declared_once_per_place():
    """The distribution is published as ``cellseg-toolkit`` (the import name stays ``cellseg``):
    pyproject, ``cellseg.__distribution__`` and the napari manifest (npe2 requires its name to be
    the distribution's) agree, and every manifest command id starts with it."""
    import tomllib
    from pathlib import Path

    import cellseg

    yaml = pytest.importorskip("yaml")
    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    manifest = yaml.safe_load((root / "napari_plugin" / "cellseg_napari" / "napari.yaml").read_text())
    assert project["name"] == cellseg.__distribution__ == manifest["name"] == "cellseg-toolkit"
    ids = [c["id"] for c in manifest["contributions"]["commands"]]
    assert ids and all(i.startswith(manifest["name"] + ".") for i in ids)
