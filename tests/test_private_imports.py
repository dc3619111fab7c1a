"""No module of cellseg (or of its napari plugin) imports another module's private names.

A name with a leading underscore is private to the module that defines it; a module with a
leading underscore (``cellseg/_files.py``, ``cellseg/train/_x.py``) is private to the package
that holds it. The exceptions: the numba kernel modules (``_*_kernels``, ``cellseg._numba``),
``cellseg._files`` and the representations' ``_params`` may be imported from anywhere, and a
public name may be bound to a private alias (``from x import y as _y``).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: package name -> the folder that holds it
ROOTS = {"cellseg": REPO / "cellseg", "cellseg_napari": REPO / "napari_plugin" / "cellseg_napari"}

#: private modules any module may import (and take any name from)
ALLOWED_MODULES = {"cellseg._numba", "cellseg._files", "cellseg._labels_kernels", "cellseg.representations._params"}
KERNELS = re.compile(r"_\w+_kernels")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of the module in ``path`` and whether it is a package (``__init__.py``)."""
    for pkg, root in ROOTS.items():
        if path.is_relative_to(root):
            parts = [pkg, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                return ".".join(parts[:-1]), True
            return ".".join(parts), False
    raise ValueError(f"{path} is in neither package")


def _is_module(dotted: str) -> bool:
    pkg, *rest = dotted.split(".")
    base = ROOTS[pkg].joinpath(*rest)
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _ours(dotted: str) -> bool:
    return dotted.split(".")[0] in ROOTS


def _module_problem(target: str, importer: str) -> str | None:
    """Why ``importer`` may not import the module ``target`` (``None`` when it may)."""
    if target in ALLOWED_MODULES or KERNELS.fullmatch(target.rsplit(".", 1)[-1]):
        return None
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            home = ".".join(parts[:i])  # the package the private module belongs to
            if importer != home and not importer.startswith(home + "."):
                return f"imports the private module {target} (private to {home})"
    return None


def problems(source: str, importer: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, message)`` for each private import in the source of the module ``importer``."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name) and (why := _module_problem(alias.name, importer)):
                    out.append((node.lineno, why))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = importer.split(".") if is_package else importer.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source_mod = ".".join(base + ([node.module] if node.module else []))
            else:
                source_mod = node.module or ""
            if not _ours(source_mod):
                continue
            if why := _module_problem(source_mod, importer):
                out.append((node.lineno, why))
                continue
            if source_mod in ALLOWED_MODULES or KERNELS.fullmatch(source_mod.rsplit(".", 1)[-1]):
                continue
            for alias in node.names:
                sub = f"{source_mod}.{alias.name}"
                if _is_module(sub):
                    if why := _module_problem(sub, importer):
                        out.append((node.lineno, why))
                elif _private(alias.name):
                    out.append((node.lineno, f"imports the private name {alias.name} from {source_mod}"))
    return sorted(out)


def _files() -> list[Path]:
    return sorted(p for root in ROOTS.values() for p in root.rglob("*.py"))


def test_no_module_imports_private_names_of_another():
    found = []
    for path in _files():
        name, is_package = module_name(path)
        for line, why in problems(path.read_text(encoding="utf-8"), name, is_package):
            found.append(f"{path.relative_to(REPO)}:{line}: {why}")
    assert not found, "private imports:\n" + "\n".join(found)


@pytest.mark.parametrize("importer,is_package,source", [
    ("cellseg.denoise", False, "def f():\n    from .segmenter import _drain\n"),
    ("cellseg.metrics.ctc", False, "from cellseg.metrics.matching import OverlapTable, _pairs\n"),
    ("cellseg.representations._params", False, "from . import _REGISTRY\n"),
    ("cellseg.cli", False, "from .train import _cli as train_cli\n"),
    ("cellseg.cli", False, "import cellseg.train._cli\n"),
    ("cellseg_napari._run", False, "from cellseg.segmenter import _resolve_axes\n"),
    ("cellseg_napari._widgets", True, "from .._axes import _LETTERS\n"),
])
def test_private_imports_are_found(importer, is_package, source):
    assert [line for line, _ in problems(source, importer, is_package)] == [source.count("\n")]


@pytest.mark.parametrize("importer,is_package,source", [
    ("cellseg.cli", False, "from ._denoise_cli import add_parser\nfrom .segment_run import cli_message as _msg\n"),
    ("cellseg.metrics", True, "from cellseg._lazy import lazy_exports\n"),
    ("cellseg.representations.stardist", False, "from . import _stardist_kernels as k\n"),
    ("cellseg.omezarr", False, "from ._files import _HOST, atomic_write\n"),
    ("cellseg_napari._params", False, "from cellseg.representations._params import knob_of\n"),
    ("cellseg_napari._widgets.train", False, "from .._models import CUSTOM_MODEL\n"),
    ("cellseg.io", False, "import cellseg.labels as _labels\nfrom numpy import _core\n"),
])
def test_allowed_imports_pass(importer, is_package, source):
    assert problems(source, importer, is_package) == []
