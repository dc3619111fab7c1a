"""Write ``benchmarks/RESULTS.md`` from the benchmarks' JSON outputs.

``benchmarks/RESULTS.in.md`` is the text (what each benchmark measures, on what data and
machine, with the command); each line of the form::

    <!-- table KIND results/FILE.json [results/FILE.json ...] -->

is replaced by the table of KIND made from the rows of those JSON files (the files that the
benchmarks' ``--json`` option wrote, kept in ``benchmarks/results/``). Kinds: ``accuracy``
(``bench_accuracy.py``), ``scale`` (``bench_scale.py``), ``size`` (``bench_size_estimate.py``),
``illumination`` (``bench_illumination.py``), ``noise`` and ``noise_on`` (``bench_noise.py``, ``--on``),
``denoiseg`` (``bench_denoiseg.py``),
``inference`` (``bench_inference.py``), ``blockwise`` (``bench_blockwise.py``).

    python -m benchmarks.make_results           # rewrite RESULTS.md
    python -m benchmarks.make_results --check   # exit 1 when RESULTS.md is not what the JSON gives
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "RESULTS.in.md"
OUTPUT = HERE / "RESULTS.md"
_DIRECTIVE = re.compile(r"^<!-- table (\w+) ((?:\S+\.json\s*)+)-->$")


def _f(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def _signed(x: float) -> str:
    return f"{x:+.3f}"


def _head(*columns: str) -> list[str]:
    """A Markdown table's header row and separator."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def table_accuracy(rows: list[dict]) -> list[str]:
    out = _head("model", "test split", "images", "AP@0.5", "AP@0.75", "AP@0.9", "mAP 0.5:0.95", "F1@0.5", "SEG",
                "s/Mpx", "training min", "refused")
    for r in rows:
        out.append(f"| `{r['model']}` | {r['split']} | {r['n_images']} | {_f(r['ap50'])} | {_f(r['ap75'])} | "
                   f"{_f(r['ap90'])} | {_f(r['map'])} | {_f(r['f1'])} | {_f(r['seg'])} | {_f(r['s_per_mpx'], 1)} | "
                   f"{_f(r.get('train_min'), 0)} | {r.get('refused', 0)} |")
    return out


def table_scale(rows: list[dict]) -> list[str]:
    out = _head("model", "test split", "images", "x0.5", "x1", "x2", "auto / given time (median; pooled)",
                "diameter given: x0.5 / x1 / x2")
    for r in rows:
        x1 = r["ap50_x1"]
        given = " / ".join(_f(r.get(f"ap50_given_x{f}")) for f in ("0.5", "1", "2"))
        out.append(f"| `{r['model']}` | {r['split']} | {r['n_images']} | {_f(r['ap50_x0.5'])} "
                   f"({_signed(r['ap50_x0.5'] - x1)}) | {_f(x1)} | {_f(r['ap50_x2'])} ({_signed(r['ap50_x2'] - x1)}) "
                   f"| {_f(r['auto_time_ratio_median'], 2)}; {_f(r['auto_time_ratio_pooled'], 2)} | {given} |")
    return out


def table_size(rows: list[dict]) -> list[str]:
    out = _head("model", "source (validation)", "images", "x0.5", "x1", "x2")
    for r in rows:
        if not r["n_images"]:
            continue
        cells = [f"{_f(r[f'median_ratio_x{f}'], 2)} ({100 * r[f'within_1.25_x{f}']:.0f}%)" for f in ("0.5", "1", "2")]
        out.append(f"| `{r['model']}` | {r['source']} | {r['n_images']} | " + " | ".join(cells) + " |")
    return out


#: the conditions of ``bench_illumination.py`` and ``bench_noise.py``, in their order
ILLUMINATION = ("as read", "gradient 2x", "gradient 3x", "vignette")
NOISE = ("as read", "gauss 5%", "gauss 10%", "gauss 20%", "poisson 30", "poisson 10")


def table_conditions(rows: list[dict], conditions: tuple[str, ...], mode: str = "auto") -> list[str]:
    """AP@0.5 per condition, off → auto (or the option forced ``"on"``: ``mode``), and how many
    images it changed."""
    out = _head("model", "split", "images", *(f"{k}: off → {mode}" for k in conditions))
    for r in rows:
        cells = [f"{_f(r[f'ap50 {k} off'])} → {_f(r[f'ap50 {k} auto'])} ({r[f'corrected {k}']})" for k in conditions]
        out.append(f"| `{r['model']}` | {r['split']} | {r['n_images']} | " + " | ".join(cells) + " |")
    return out


def table_illumination(rows: list[dict]) -> list[str]:
    return table_conditions(rows, ILLUMINATION)


def table_noise(rows: list[dict]) -> list[str]:
    return table_conditions(rows, NOISE)


def table_noise_on(rows: list[dict]) -> list[str]:
    """``bench_noise.py --on``: ``noise_filter="on"`` against ``"off"``."""
    return table_conditions(rows, NOISE, mode="on")


def table_denoiseg(rows: list[dict]) -> list[str]:
    out = _head("sigma", "annotated", "unlabelled", "model", "AP@0.5", "SEG", "PSNR denoised (dB)",
                "PSNR noisy input (dB)", "steps", "training s")
    for r in rows:
        out.append(f"| {r['sigma']:g} | {r['annotated']} | {r['unlabeled']} | {r['model']} | {_f(r['ap50'])} | "
                   f"{_f(r['seg'])} | {_f(r['psnr_denoised'], 2)} | {_f(r['psnr_input'], 2)} | {r['steps']} | "
                   f"{_f(r['train_seconds'], 0)} |")
    return out


def table_generic(rows: list[dict]) -> list[str]:
    """Any list of flat rows: one column per key, in the order of the first row."""
    if not rows:
        return []
    keys = list(rows[0])
    out = _head(*keys)
    for r in rows:
        cells = []
        for k in keys:
            v = r.get(k)
            cells.append(_f(v) if isinstance(v, float) else ("-" if v is None else str(v)))
        out.append("| " + " | ".join(cells) + " |")
    return out


TABLES: dict[str, Callable[[list[dict]], list[str]]] = {
    "accuracy": table_accuracy, "scale": table_scale, "size": table_size, "denoiseg": table_denoiseg,
    "inference": table_generic, "blockwise": table_generic, "illumination": table_illumination,
    "noise": table_noise, "noise_on": table_noise_on,
}


def load_rows(files: list[str], base: Path = HERE) -> list[dict]:
    rows: list[dict] = []
    for name in files:
        path = base / name
        data = json.loads(path.read_text())
        rows.extend(data["rows"] if isinstance(data, dict) else data)
    return rows


def render(template: str, base: Path = HERE) -> str:
    out = ["<!-- generated by `python -m benchmarks.make_results` from RESULTS.in.md and results/*.json; "
           "edit those, not this file -->"]
    for line in template.splitlines():
        m = _DIRECTIVE.match(line.strip())
        if m is None:
            out.append(line)
            continue
        kind, files = m.group(1), m.group(2).split()
        if kind not in TABLES:
            raise ValueError(f"{TEMPLATE.name}: unknown table kind {kind!r} (one of {', '.join(TABLES)})")
        out.extend(TABLES[kind](load_rows(files, base)))
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 when RESULTS.md is out of date")
    args = p.parse_args(argv)
    text = render(TEMPLATE.read_text())
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python -m benchmarks.make_results", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
