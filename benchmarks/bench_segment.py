"""End-to-end segmentation speed and block-wise memory.

1. Seconds per megapixel of ``Segmenter.segment`` (normalize → tiles → network →
   decode) for each bundled model on 2 cores, on project-made synthetic images
   (median of ``--repeat`` runs after a warm-up).
2. Peak resident memory of segmenting a large synthetic image block-wise
   (``cellseg.blockwise.segment_blockwise``) for several (image size, block size)
   pairs, each in a fresh subprocess so the peak (``ru_maxrss``) is its own. The
   input is a memory-mapped TIFF written tile by tile, the output a memory-mapped
   TIFF: memory should grow with the block size, not with the image size.

    python benchmarks/bench_segment.py                         # speed + 16k x 16k block-wise
    python benchmarks/bench_segment.py --quick                 # small sizes, a smoke run
    python benchmarks/bench_segment.py --memory-only --sizes 8192,16384 --blocks 1024,2048
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_big_image(path: Path, size: int, tile: int = 2048, seed: int = 0) -> Path:
    """A size x size uint16 synthetic nuclei image written tile by tile into a memmapped TIFF."""
    import tifffile

    from cellseg.datasets.synthetic import synthetic_cells

    mm = tifffile.memmap(str(path), shape=(size, size), dtype=np.uint16, photometric="minisblack")
    k = 0
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            h, w = min(tile, size - y), min(tile, size - x)
            n = max(1, int(h * w / 2048**2 * 2000))
            img, _ = synthetic_cells((h, w), n_cells=n, seed=seed + k)
            mm[y:y + h, x:x + w] = np.clip(img * 20000, 0, 65535).astype(np.uint16)
            k += 1
    mm.flush()
    del mm
    return path


def _child_blockwise(args) -> None:
    """Run in a subprocess: segment the memmapped image block-wise and print JSON."""
    import tifffile

    from cellseg.blockwise import segment_blockwise
    from cellseg.segmenter import Segmenter

    import torch

    torch.set_num_threads(2)
    seg = Segmenter.from_pretrained(args.model, tile=512)
    img = tifffile.memmap(args.child_input, mode="r")
    t = time.perf_counter()
    out, cut = segment_blockwise(seg, img, args.child_output, block=args.child_block, margin=args.margin)
    dt = time.perf_counter() - t
    labels = tifffile.memmap(str(out), mode="r")
    n = int(labels.max())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": int(img.shape[0]), "block": args.child_block, "seconds": dt, "peak_bytes": peak,
                      "objects": n, "cut": len(cut)}))


def bench_speed(models, size: int, repeat: int) -> list[dict]:
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg.segmenter import Segmenter

    rows = []
    img, _ = synthetic_cells((size, size), n_cells=int(size * size / 2048**2 * 2000), seed=1)
    mpx = size * size / 1e6
    for name in models:
        seg = Segmenter.from_pretrained(name, tile=1024)
        seg.segment(img[:256, :256])  # warm-up: numba compile, torch init
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            res = seg.segment(img)
            times.append(time.perf_counter() - t)
        med = float(np.median(times))
        rows.append({"model": name, "size": size, "seconds": med, "s_per_mpx": med / mpx,
                     "objects": res.n_objects})
        print(f"{name:22s} {size}x{size}: {med:7.2f} s  = {med / mpx:6.2f} s/Mpx  ({res.n_objects} objects)",
              flush=True)
    return rows


def bench_memory(model: str, sizes, blocks, margin: int, workdir: Path) -> list[dict]:
    rows = []
    for size in sizes:
        src = workdir / f"synthetic_{size}.tif"
        if not src.exists():
            t = time.perf_counter()
            make_big_image(src, size)
            print(f"made {src.name} in {time.perf_counter() - t:.0f} s", flush=True)
        for block in blocks:
            out = workdir / f"labels_{size}_{block}.tif"
            cmd = [sys.executable, __file__, "--child", "--model", model, "--child-input", str(src),
                   "--child-output", str(out), "--child-block", str(block), "--margin", str(margin)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"block-wise run failed for size {size}, block {block}")
            row = json.loads(r.stdout.strip().splitlines()[-1])
            row["model"] = model
            rows.append(row)
            print(f"block-wise {size}x{size}, block {block}: peak {row['peak_bytes'] / 2**30:.2f} GiB, "
                  f"{row['seconds']:.0f} s ({row['seconds'] / (size * size / 1e6):.2f} s/Mpx), "
                  f"{row['objects']} objects, {row['cut']} cut by a block edge", flush=True)
            out.unlink(missing_ok=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="comma-separated bundled models (default: all)")
    p.add_argument("--speed-size", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sizes", default="16384", help="block-wise image sizes")
    p.add_argument("--blocks", default="2048", help="block sizes")
    p.add_argument("--margin", type=int, default=64)
    p.add_argument("--memory-model", default=None, help="model for the block-wise run (default: the default model)")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--workdir", default=None, help="where the big synthetic image goes (default: a temp dir)")
    p.add_argument("--json", default=None)
    # internal: the subprocess
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--child-input", help=argparse.SUPPRESS)
    p.add_argument("--child-output", help=argparse.SUPPRESS)
    p.add_argument("--child-block", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child_blockwise(args)
        return 0
    sys.path.insert(0, str(HERE.parent))
    from cellseg.models import default_model_name, list_models

    models = args.models.split(",") if args.models else list_models()
    if not models:
        raise SystemExit("no bundled models to benchmark")
    if args.quick:
        args.speed_size, args.repeat, args.sizes, args.blocks = 512, 1, "1024,2048", "512"
    result = {}
    if not args.memory_only:
        result["speed"] = bench_speed(models, args.speed_size, args.repeat)
    if not args.speed_only:
        work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cellseg_bench_"))
        work.mkdir(parents=True, exist_ok=True)
        result["memory"] = bench_memory(args.memory_model or default_model_name(),
                                        [int(s) for s in args.sizes.split(",")],
                                        [int(b) for b in args.blocks.split(",")], args.margin, work)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
