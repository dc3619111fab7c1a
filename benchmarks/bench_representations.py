"""Side-by-side benchmark of the representations against their peers.

Usage (from the repository root)::

    .venv/bin/python -m benchmarks.bench_representations [--quick] [--only rays,flows]
                                                          [--cases fluo-gt,dic-st]
                                                          [--repeat N] [--json FILE]

Cases come from :func:`benchmarks._cases.make_cases`. Every module
``benchmarks/_bench_<rep>.py`` that exists (``rays``, ``flows``, ``distance``,
``offsets``) exposes ``run(cases, repeat) -> list[dict]``; each dict is one row:

``case, operation, ours_s, peer_s`` (median seconds; ``None`` where there is no
peer), ``ap50_ours, ap75_ours, ap50_peer, ap75_peer`` (AP at IoU 0.5 / 0.75 of
the decoded labels against the ground truth; ``None`` for non-label
operations), ``equal`` (short text: the equality check of ours vs the peer),
optional ``note``. Each module warms up its numba kernels before timing.

The printed ratio is peer/ours (> 1: ours is faster).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KNOWN = ("rays", "flows", "distance", "offsets")


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(rows: list[dict]) -> str:
    head = ("case", "operation", "ours s", "peer s", "ratio", "AP50 ours", "AP75 ours",
            "AP50 peer", "AP75 peer", "equal")
    lines = []
    for r in rows:
        ours, peer = r.get("ours_s"), r.get("peer_s")
        ratio = peer / ours if (ours and peer) else None
        lines.append((
            str(r.get("case", "")), str(r.get("operation", "")),
            _fmt(ours, ".4f"), _fmt(peer, ".4f"), _fmt(ratio, ".2f") + ("x" if ratio else ""),
            _fmt(r.get("ap50_ours"), ".4f"), _fmt(r.get("ap75_ours"), ".4f"),
            _fmt(r.get("ap50_peer"), ".4f"), _fmt(r.get("ap75_peer"), ".4f"),
            str(r.get("equal", "")),
        ))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = [" | ".join(h.ljust(w) for h, w in zip(head, widths)),
           "-|-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(l, widths)) for l in lines]
    return "\n".join(out)


def available_modules() -> dict[str, object]:
    mods = {}
    here = Path(__file__).resolve().parent
    for name in KNOWN:
        if (here / f"_bench_{name}.py").exists():
            mods[name] = importlib.import_module(f"benchmarks._bench_{name}")
    return mods


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    ap.add_argument("--only", default="", help=f"comma separated subset of {','.join(KNOWN)}")
    ap.add_argument("--cases", default="",
                    help="comma separated case names (or prefixes: dsb-fluo) to run; default all")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions (median is reported)")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    from benchmarks._cases import make_cases

    mods = available_modules()
    if args.only:
        want = [w.strip() for w in args.only.split(",") if w.strip()]
        unknown = sorted(set(want) - set(KNOWN))
        if unknown:
            ap.error(f"unknown --only entries {unknown}; choose from {list(KNOWN)}")
        missing = [w for w in want if w not in mods]
        for w in missing:
            print(f"note: benchmarks/_bench_{w}.py does not exist yet; skipped", file=sys.stderr)
        mods = {k: v for k, v in mods.items() if k in want}
    if not mods:
        print("nothing to run", file=sys.stderr)
        return 1

    names = [c.strip() for c in args.cases.split(",") if c.strip()] or None
    try:
        cases = make_cases(quick=args.quick, names=names)
    except ValueError as e:
        ap.error(str(e))
    print("cases: " + ", ".join(f"{c.name} {c.labels.shape} n={c.n_objects}" for c in cases))
    print(f"threads: numba {os.environ.get('NUMBA_NUM_THREADS', 'default')}, cpus {os.cpu_count()}")
    rows: list[dict] = []
    for name, mod in mods.items():
        print(f"running {name} ...", file=sys.stderr, flush=True)
        rows += [dict(r, rep=name) for r in mod.run(cases, args.repeat)]
    print(format_table(rows))
    notes = [f"{r['case']}/{r['operation']}: {r['note']}" for r in rows if r.get("note")]
    if notes:
        print("\n".join(["notes:"] + notes))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
