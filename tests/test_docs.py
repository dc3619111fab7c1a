"""The documentation: the API reference builds from the docstrings, links resolve, and
benchmarks/RESULTS.md is what the benchmarks' JSON gives."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "RESULTS.md"]


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(md):
    missing = [t for t in _LINK.findall(md.read_text()) if "://" not in t and not (md.parent / t).exists()]
    assert not missing, f"{md.relative_to(REPO)} links to missing files: {missing}"


def test_readme_is_short():
    words = len((REPO / "README.md").read_text().split())
    assert words < 1200, f"README.md has {words} words; details belong in docs/"


def test_results_md_is_generated_from_the_json():
    out = subprocess.run([sys.executable, "-m", "benchmarks.make_results", "--check"], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_make_results_tables(tmp_path):
    from benchmarks.make_results import render

    (tmp_path / "a.json").write_text('[{"model": "m", "split": "s", "n_images": 2, "ap50": 0.5, "ap75": 0.25, '
                                     '"ap90": 0.0, "map": 0.3, "f1": 0.6, "seg": 0.55, "s_per_mpx": 1.25, '
                                     '"train_min": 10.0, "refused": 0}]')
    text = render("intro\n<!-- table accuracy a.json -->\nend", base=tmp_path)
    assert "| `m` | s | 2 | 0.500 | 0.250 | 0.000 | 0.300 | 0.600 | 0.550 | 1.2 | 10 | 0 |" in text
    assert text.splitlines()[1] == "intro" and text.rstrip().endswith("end")
    with pytest.raises(ValueError, match="unknown table kind"):
        render("<!-- table nonsense a.json -->", base=tmp_path)


def test_make_results_illumination_table(tmp_path):
    from benchmarks.make_results import ILLUMINATION, render

    row = {"model": "m", "split": "s", "n_images": 3}
    for i, k in enumerate(ILLUMINATION):
        row.update({f"ap50 {k} off": 0.5 + i / 100, f"ap50 {k} auto": 0.6 + i / 100, f"corrected {k}": i})
    import json

    (tmp_path / "i.json").write_text(json.dumps([row]))
    text = render("<!-- table illumination i.json -->", base=tmp_path)
    assert "| `m` | s | 3 | 0.500 → 0.600 (0) | 0.510 → 0.610 (1) | 0.520 → 0.620 (2) | 0.530 → 0.630 (3) |" in text


@pytest.mark.skipif(importlib.util.find_spec("pdoc") is None, reason="pdoc is not installed (pip install -e .[dev])")
def test_api_reference_builds_without_warnings(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "docs" / "build_api.py"), "-o", str(tmp_path)], cwd=REPO,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    for mod in ("cellseg", "cellseg/segmenter", "cellseg/io", "cellseg/metrics/matching",
                "cellseg/representations/flows"):
        assert (tmp_path / f"{mod}.html").is_file(), mod
