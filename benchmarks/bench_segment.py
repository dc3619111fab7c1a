r"""End-to-end segmentation speed and block-wise memory.

1. Seconds per megapixel of ``Segmenter.segment`` (normalize → tiles → network →
   decode) for each bundled model on 2 cores, on project-made synthetic images
   (median of ``--repeat`` runs after a warm-up).
2. Peak resident memory of segmenting a large synthetic image block-wise
   (``cellseg.blockwise.segment_blockwise``), each case in a fresh subprocess so
   the peak (``ru_maxrss``) is its own: a size scan at one block size
   (``--sizes``, ``--huge``) and a block-size sweep at one image size
   (``--sweep-size``, ``--sweep-blocks``). The input is a uint16 TIFF written
   band by band (the generator holds one 2048 x 2048 synthetic tile at a time),
   the output a TIFF written in place: memory should grow with the block size,
   not with the image size. Each case prints the peak RSS (and its anonymous /
   file-backed parts, sampled), seconds and seconds per megapixel.

    python benchmarks/bench_segment.py                          # speed + 4096/8192 scan + block sweep at 4096
    python benchmarks/bench_segment.py --quick                  # small sizes, a smoke run
    # the 16k x 16k case alone, in the background (hours on a shared 2-core machine):
    nohup nice -n 10 env OMP_NUM_THREADS=2 python benchmarks/bench_segment.py --memory-only \
        --memory-model nuclei-stardist --huge 16384 --sizes '' --sweep-blocks '' --block 2048 \
        --workdir /tmp/cellseg_bench --json /tmp/bench16k.json > runs/bench16k.log 2>&1 &
    # peak memory of the first block only, for several image and block sizes:
    python benchmarks/bench_segment.py --memory-only --sizes 8192 --block 1024 \
        --sweep-size 4096 --sweep-blocks 512,2048 --max-blocks 1

Measured on the shared 2-core machine (three trainings running, nice 10, nuclei-stardist,
tile 512, margin 64): 4096 x 4096, block 1024, full run: peak RSS 1.00 GiB (0.83 anonymous,
0.19 file-backed = the loaded libraries), 98 s/Mpx, 7375 objects, none cut by a block edge.
First block only (--max-blocks 1; the machine less loaded then): 4096^2 block 512: 0.67 GiB;
block 1024 at 8192^2: 0.97 GiB (same as the full 4096^2 run); 4096^2 block 2048: 1.23 GiB, 25 s/Mpx.
8192 x 8192, block 2048, full run (trainings finished by then): peak RSS 1.67 GiB (1.46 anonymous),
9.2 s/Mpx, 29443 objects, none cut by a block edge.

``--max-blocks N`` stops each case after N blocks (a partial run, flagged in the
output: its peak memory is that of a full run, as memory does not grow with the
number of blocks done, and its s/Mpx is over the pixels of the blocks done).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def make_big_image(path: Path, size: int, tile: int = 2048, seed: int = 0) -> Path:
    """A size x size uint16 synthetic nuclei image, written band by band into a TIFF.

    Only one ``tile`` x ``tile`` synthetic image and one band of ``tile`` rows are in
    memory at a time (the band is written through a short-lived memory map)."""
    import tifffile

    from cellseg.blockwise import MappedRows
    from cellseg.datasets.synthetic import synthetic_cells

    tmp = path.with_name(f".{path.name}.partial")
    mm = tifffile.memmap(str(tmp), shape=(size, size), dtype=np.uint16, photometric="minisblack")
    out = MappedRows(tmp, np.uint16, (size, size), int(mm.offset), mode="r+")
    del mm
    k = 0
    for y in range(0, size, tile):
        h = min(tile, size - y)
        band = np.zeros((h, size), np.uint16)
        for x in range(0, size, tile):
            w = min(tile, size - x)
            n = max(1, int(h * w / 2048**2 * 2000))
            img, _ = synthetic_cells((h, w), n_cells=n, seed=seed + k)
            band[:, x:x + w] = np.clip(img * 20000, 0, 65535).astype(np.uint16)
            k += 1
        out[y:y + h] = band
    os.replace(tmp, path)
    return path


class _MemSampler(threading.Thread):
    """Samples RssAnon / RssFile of this process (Linux /proc) every ``dt`` seconds."""

    def __init__(self, dt: float = 0.1):
        super().__init__(daemon=True)
        self.dt, self.anon, self.file, self._halt = dt, 0, 0, threading.Event()

    @staticmethod
    def read() -> tuple[int, int]:
        vals = {}
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith(("RssAnon:", "RssFile:")):
                        k, v = line.split(":")
                        vals[k] = int(v.split()[0]) * 1024
        except OSError:
            pass
        return vals.get("RssAnon", 0), vals.get("RssFile", 0)

    def run(self):
        while not self._halt.is_set():
            a, f = self.read()
            self.anon, self.file = max(self.anon, a), max(self.file, f)
            time.sleep(self.dt)

    def stop(self):
        self._halt.set()
        self.join()
        a, f = self.read()
        self.anon, self.file = max(self.anon, a), max(self.file, f)


def _child_blockwise(args) -> None:
    """Run in a subprocess: segment the input block-wise; progress to stderr, one JSON line to stdout."""
    import tifffile
    import torch

    from cellseg.blockwise import MappedRows, iter_blocks, open_output, percentile_range, run_blocks
    from cellseg.segmenter import Segmenter
    from cellseg.tiling import block_grid

    torch.set_num_threads(args.threads)
    sampler = _MemSampler()
    sampler.start()
    seg = Segmenter.from_pretrained(args.model, tile=args.tile)
    img = tifffile.memmap(args.child_input, mode="r")
    shape = tuple(img.shape)
    t = time.perf_counter()
    blocks = block_grid(shape, args.child_block, args.margin)
    total = len(blocks)
    if args.max_blocks:
        blocks = blocks[:args.max_blocks]
    done_px = sum(int(np.prod([s.stop - s.start for s in b.core])) for b in blocks)
    out = None
    if len(blocks) == total:  # the real thing: segment_blockwise (temporary output renamed at the end)
        from cellseg.blockwise import segment_blockwise

        last = {"n": 0}

        def progress(ev):
            last["n"] = ev.n_objects  # ids are 1..n_objects: no pass over the output (its pages would count)
            dt = time.perf_counter() - t
            print(f"  [{shape[0]}^2 block {args.child_block}] {ev.done}/{ev.total} blocks, {ev.n_objects} objects, "
                  f"{dt:.0f} s, ~{dt / ev.done * (ev.total - ev.done):.0f} s left", file=sys.stderr, flush=True)

        out, cut = segment_blockwise(seg, img, args.child_output, block=args.child_block, margin=args.margin,
                                     progress=progress)
        n = last["n"]
    else:
        img = MappedRows.from_memmap(img) or img  # as iter_blocks does: no file pages pile up
        rng = percentile_range(img, *seg.normalize)
        target = open_output(args.child_output, shape, (args.child_block,) * len(shape))
        last_ev = {}

        def partial_progress(ev):
            last_ev["ev"] = ev
            dt = time.perf_counter() - t
            print(f"  [{shape[0]}^2 block {args.child_block}] {ev.done}/{len(blocks)} of {total} blocks (partial run), "
                  f"{ev.n_objects} objects, {dt:.0f} s", file=sys.stderr, flush=True)

        cut = run_blocks(iter_blocks(seg, img, target, norm_range=rng, blocks=blocks), partial_progress)
        ev = last_ev["ev"]
        n = ev.n_objects
    dt = time.perf_counter() - t
    sampler.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"size": int(shape[0]), "block": args.child_block, "tile": args.tile, "seconds": dt,
                      "mpx": done_px / 1e6, "s_per_mpx": dt / (done_px / 1e6), "peak_bytes": peak,
                      "peak_anon_bytes": sampler.anon, "peak_file_bytes": sampler.file, "objects": n,
                      "cut": len(cut), "blocks_done": len(blocks), "blocks_total": total,
                      "partial": len(blocks) < total}))


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


def bench_memory(model: str, cases, margin: int, workdir: Path, tile: int, threads: int,
                 max_blocks: int | None) -> list[dict]:
    """``cases``: (size, block) pairs, each run in a fresh subprocess."""
    rows = []
    for size, block in cases:
        src = workdir / f"synthetic_{size}.tif"
        if not src.exists():
            t = time.perf_counter()
            make_big_image(src, size)
            print(f"made {src.name} in {time.perf_counter() - t:.0f} s (generator peak RSS so far "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)", flush=True)
        out = workdir / f"labels_{size}_{block}.tif"
        cmd = [sys.executable, __file__, "--child", "--model", model, "--child-input", str(src),
               "--child-output", str(out), "--child-block", str(block), "--margin", str(margin),
               "--tile", str(tile), "--threads", str(threads)]
        if max_blocks:
            cmd += ["--max-blocks", str(max_blocks)]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)  # child's progress goes to our stderr
        if r.returncode != 0:
            raise SystemExit(f"block-wise run failed for size {size}, block {block} (exit {r.returncode})")
        row = json.loads(r.stdout.strip().splitlines()[-1])
        row["model"] = model
        rows.append(row)
        part = (f" [PARTIAL: {row['blocks_done']}/{row['blocks_total']} blocks, {row['mpx']:.1f} Mpx]"
                if row["partial"] else "")
        print(f"block-wise {size}x{size}, block {block}, tile {tile}: peak RSS {row['peak_bytes'] / 2**30:.2f} GiB "
              f"(anon {row['peak_anon_bytes'] / 2**30:.2f}, file {row['peak_file_bytes'] / 2**30:.2f}), "
              f"{row['seconds']:.0f} s = {row['s_per_mpx']:.2f} s/Mpx, {row['objects']} objects, "
              f"{row['cut']} cut by a block edge{part}", flush=True)
        out.unlink(missing_ok=True)
    return rows


def _ints(s: str | None) -> list[int]:
    return [int(v) for v in (s or "").split(",") if v.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="comma-separated bundled models (default: all)")
    p.add_argument("--speed-size", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--sizes", default="4096,8192", help="block-wise image sizes scanned at --block ('' for none)")
    p.add_argument("--block", type=int, default=2048, help="block size of the size scan")
    p.add_argument("--huge", type=int, default=None, metavar="N",
                   help="also run an N x N image at --block (e.g. 16384)")
    p.add_argument("--sweep-size", type=int, default=4096, help="image size of the block-size sweep")
    p.add_argument("--sweep-blocks", default="1024,2048,4096", help="block sizes of the sweep ('' for none)")
    p.add_argument("--margin", type=int, default=64)
    p.add_argument("--tile", type=int, default=512, help="network tile size inside each block")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the block-wise runs")
    p.add_argument("--max-blocks", type=int, default=None, help="stop each block-wise case after N blocks (partial)")
    p.add_argument("--memory-model", default=None, help="model for the block-wise run (default: the default model)")
    p.add_argument("--memory-only", action="store_true")
    p.add_argument("--speed-only", action="store_true")
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--workdir", default=None, help="where the big synthetic images go (kept; default: a temp dir)")
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
    from cellseg.models import default_model_name, list_models

    models = args.models.split(",") if args.models else list_models()
    if not models:
        raise SystemExit("no bundled models to benchmark")
    if args.quick:
        args.speed_size, args.repeat, args.sizes, args.block = 512, 1, "1024,2048", 512
        args.sweep_size, args.sweep_blocks = 1024, "256,512"
    result = {}
    if not args.memory_only:
        result["speed"] = bench_speed(models, args.speed_size, args.repeat)
    if not args.speed_only:
        work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cellseg_bench_"))
        work.mkdir(parents=True, exist_ok=True)
        cases = [(s, args.block) for s in _ints(args.sizes) + ([args.huge] if args.huge else [])]
        cases += [(args.sweep_size, b) for b in _ints(args.sweep_blocks) if (args.sweep_size, b) not in cases]
        result["memory"] = bench_memory(args.memory_model or default_model_name(), cases, args.margin, work,
                                        args.tile, args.threads, args.max_blocks)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
