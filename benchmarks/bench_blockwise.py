r"""Block-wise segmentation from the command line: peak memory, and the labels against the API's.

For each input (a memory-mapped TIFF and an OME-Zarr of ``--size`` x ``--size`` pixels):

1. ``cellseg segment INPUT --block-size B`` runs in a subprocess; its peak resident memory
   is the child's ``ru_maxrss`` (``os.wait4``: that process alone, not this one).
2. The Python API, ``cellseg.blockwise.segment_blockwise`` with the same segmenter, block
   size and margin (the margin and network tile the CLI printed), runs in another subprocess on the same
   input (the TIFF memory-mapped, the zarr level 0 as a zarr array).
3. The two label images are compared band by band (never loaded whole), and for the
   OME-Zarr every lower level of the labels group against nearest-neighbour sampling of
   level 0, as ``cellseg.omezarr.write_labels`` samples.

The input is synthetic nuclei-like content: ``cellseg.datasets.synthetic.synthetic_cells``
drawn tile by tile (2048 x 2048 tiles, 2,000 cells each, radii 6-14 px, uint16), written
band by band into an uncompressed TIFF (``bench_segment.make_big_image``; the generator
holds one tile at a time) and copied band by band into an OME-Zarr 0.5 (axes y, x; chunks
of 1024 px; a 2x mean pyramid down to 2048 px, so the labels get 4 levels).

The default model takes about 1.7 s per megapixel on 2 cores (over 15 minutes per run
at 16384 x 16384); ``--model tiny`` (the default here) trains in seconds the small
distance model of the test suite (U-Net depth 2, width 8, 90 steps on synthetic cells:
the same code path, a real network and decoder) and measures with it. Any bundled model
name or model file can be given instead.

    python benchmarks/bench_blockwise.py                # 16384^2, tiny model
    python benchmarks/bench_blockwise.py --size 4096 --json /tmp/bw.json
    python benchmarks/bench_blockwise.py --model nuclei --inputs tiff --skip-api

Measured (``python benchmarks/bench_blockwise.py --size 16384``: tiny
model, its default CPU network path ONNX Runtime fp32, blocks of 2048 px, margin 96 px, network
tiles of 796 px, 64 blocks, 80,270 objects, 2 cores shared with other jobs):

    input  size         block margin  CLI peak RSS  CLI s/Mpx  API peak RSS  objects  labels = API
    tiff   16384x16384   2048     96      1.02 GiB      0.644      0.94 GiB    80270  True
    zarr   16384x16384   2048     96      1.28 GiB      0.794      1.20 GiB    80270  True

(the OME-Zarr's 3 lower label levels equal nearest sampling of level 0; the CLI's seconds include
the CSV, the overlay and, for the OME-Zarr, the lower label levels). The default model on the TIFF,
the CLI alone (``--model nuclei --inputs tiff --skip-api``; ONNX Runtime int8, tiles of 864 px):
peak RSS 1.32 GiB, 867 s (3.23 s/Mpx), 118,396 objects. ``benchmarks/results/blockwise_16384*.json``
hold these rows.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def train_tiny(path: Path) -> Path:
    """The test suite's tiny distance model (tests/conftest.py), trained in seconds."""
    from cellseg.datasets.synthetic import synthetic_cells
    from cellseg.train import TrainConfig, fit

    pairs = [synthetic_cells((128, 128), n_cells=14, seed=s) for s in range(6)]
    cfg = TrainConfig(epochs=3, steps_per_epoch=30, batch_size=4, patch_size=64, lr=3e-3, tune_thresholds=False,
                      verbose=False, seed=0, num_threads=1)
    model = fit("distance", pairs, config=cfg, backbone={"depth": 2, "width": 8, "seed": 0})
    model.save(path)
    return path


def make_zarr(tiff: Path, path: Path, min_side: int = 2048, band: int = 1024) -> Path:
    """Copy the TIFF band by band into an OME-Zarr 0.5 image (axes y, x) with a 2x mean pyramid."""
    import shutil

    import zarr

    from cellseg.blockwise import MappedRows
    from cellseg.omezarr import _downsample_mean, open_image

    src = MappedRows.from_memmap(__import__("tifffile").memmap(str(tiff), mode="r"))
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
    shapes = [tuple(src.shape)]
    while max(shapes[-1]) > min_side:
        shapes.append(tuple((n + 1) // 2 for n in shapes[-1]))
    axes = [{"name": "y", "type": "space", "unit": "micrometer"}, {"name": "x", "type": "space", "unit": "micrometer"}]
    ms = {"axes": axes, "type": "local_mean", "datasets": [
        {"path": str(k), "coordinateTransformations": [{"type": "scale", "scale": [0.5 * 2 ** k, 0.5 * 2 ** k]}]}
        for k in range(len(shapes))]}
    g.attrs.update({"ome": {"version": "0.5", "multiscales": [ms]}})
    arrs = [g.create_array(str(k), shape=s, dtype=src.dtype, chunks=(1024, 1024), dimension_names=["y", "x"])
            for k, s in enumerate(shapes)]
    for y in range(0, src.shape[0], band):
        arrs[0][y:y + band] = src[y:y + band]
    for k in range(1, len(arrs)):
        for y in range(0, arrs[k].shape[0], band // 2):
            arrs[k][y:y + band // 2] = _downsample_mean(np.asarray(arrs[k - 1][2 * y:2 * y + band]), "YX")
    os.replace(tmp, path)
    open_image(path)  # valid NGFF
    return path


def run_child(cmd: list[str], log: Path) -> dict:
    """Run ``cmd``; its peak RSS (bytes, that process alone), seconds, exit status and stdout."""
    t = time.perf_counter()
    with open(log, "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"peak_bytes": usage.ru_maxrss * 1024, "seconds": time.perf_counter() - t, "rc": p.returncode,
            "stdout": out}


def child_api(args) -> None:
    """Subprocess: the API on the same input; prints one JSON line."""
    import torch

    from cellseg.blockwise import segment_blockwise
    from cellseg.segmenter import Segmenter

    torch.set_num_threads(args.threads)
    seg = Segmenter.from_pretrained(args.model, tile=args.child_tile, device="cpu")
    if args.child_input.endswith(".tif"):
        import tifffile

        image = tifffile.memmap(args.child_input, mode="r")
    else:
        from cellseg.omezarr import open_image

        image = open_image(args.child_input).array(0)
    last = {}
    out, cut = segment_blockwise(seg, image, args.child_output, block=args.block, margin=args.child_margin,
                                 progress=lambda ev: last.update(n=ev.n_objects))
    print(json.dumps({"objects": last.get("n", 0), "cut": len(cut)}))


def compare(a, b, band: int = 1024) -> tuple[bool, int]:
    """(equal, number of differing pixels) of two 2D arrays read band by band."""
    diff = 0
    for y in range(0, a.shape[0], band):
        diff += int(np.count_nonzero(np.asarray(a[y:y + band]).astype(np.int64) != np.asarray(b[y:y + band])))
    return diff == 0, diff


def check_levels(group: Path, band: int = 512) -> bool:
    """Every lower level of a label group equals nearest-neighbour sampling of level 0."""
    import zarr

    from cellseg.omezarr import _nearest_index

    g = zarr.open_group(str(group), mode="r")
    lv0 = g["0"]
    k = 1
    while str(k) in g:
        arr = g[str(k)]
        iy = _nearest_index(lv0.shape[0], arr.shape[0])
        ix = _nearest_index(lv0.shape[1], arr.shape[1])
        for y in range(0, arr.shape[0], band):
            if not np.array_equal(arr[y:y + band], lv0.oindex[iy[y:y + band], ix]):
                return False
        k += 1
    return k > 1


def bench_input(kind: str, src: Path, work: Path, model: str, block: int, threads: int, api_run: bool = True,
                label: str | None = None, network: str = "") -> dict:
    import tifffile
    import zarr

    from cellseg.blockwise import MappedRows

    out_dir = work / f"out_{kind}"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    os.environ.update(env)
    cmd = [sys.executable, "-m", "cellseg", "segment", str(src), "-o", str(out_dir), "--model", model,
           "--block-size", str(block), "--device", "cpu", "--overwrite"]
    print(f"[{kind}] {' '.join(cmd)}", flush=True)
    cli = run_child(cmd, work / f"cli_{kind}.log")
    if cli["rc"] != 0:
        raise SystemExit(f"cellseg segment failed (exit {cli['rc']}); see {work / f'cli_{kind}.log'}\n{cli['stdout']}")
    done = next(line for line in cli["stdout"].splitlines() if line.startswith("done "))
    margin = int(re.search(r"margin (\d+) px", done).group(1))
    tile = int(re.search(r"network tiles of (\d+) px", done).group(1))
    objects = int(re.search(r": (\d+) objects?", done).group(1))
    print(f"[{kind}] {done}", flush=True)
    if not api_run:  # the CLI's peak memory and time only
        shape = (tifffile.TiffFile(str(src)).series[0].shape if kind == "tiff"
                 else zarr.open_array(str(src / "0"), mode="r").shape)
        src_mpx = shape[0] * shape[1] / 1e6
        row = {"input": kind, "size": f"{shape[0]}x{shape[1]}", "block": block, "margin": margin,
               "model": label or model, "network": network,
               "cli_peak_gib": cli["peak_bytes"] / 2**30, "cli_seconds": cli["seconds"],
               "cli_s_per_mpx": cli["seconds"] / src_mpx, "api_peak_gib": None, "objects_cli": objects,
               "labels_equal": None, "label_levels_ok": None}
        print(f"[{kind}] {shape[0]}x{shape[1]}: CLI peak RSS {row['cli_peak_gib']:.2f} GiB, {cli['seconds']:.0f} s "
              f"({row['cli_s_per_mpx']:.2f} s/Mpx), {objects} objects (no API run: --skip-api)", flush=True)
        return row
    api_out = work / f"api_{kind}.{'tif' if kind == 'tiff' else 'zarr'}"
    cmd = [sys.executable, __file__, "--child", "--model", model, "--child-input", str(src), "--child-output",
           str(api_out), "--block", str(block), "--child-margin", str(margin), "--child-tile", str(tile),
           "--threads", str(threads)]
    print(f"[{kind}] API: segment_blockwise(Segmenter(model, tile={tile}), ..., block={block}, margin={margin})",
          flush=True)
    api = run_child(cmd, work / f"api_{kind}.log")
    if api["rc"] != 0:
        raise SystemExit(f"API run failed (exit {api['rc']}); see {work / f'api_{kind}.log'}")
    api_info = json.loads(api["stdout"].strip().splitlines()[-1])
    if kind == "tiff":
        stem = src.name[: -len(".tif")]
        a = MappedRows.from_memmap(tifffile.memmap(str(out_dir / f"{stem}_labels.tif"), mode="r"))
        levels_ok = None
    else:
        a = zarr.open_array(str(src / "labels" / "cellseg" / "0"), mode="r")
        levels_ok = check_levels(src / "labels" / "cellseg")
    b = (MappedRows.from_memmap(tifffile.memmap(str(api_out), mode="r")) if kind == "tiff"
         else zarr.open_array(str(api_out), mode="r"))
    equal, ndiff = compare(a, b)
    mpx = a.shape[0] * a.shape[1] / 1e6
    row = {"input": kind, "size": f"{a.shape[0]}x{a.shape[1]}", "block": block, "margin": margin,
           "model": label or model, "network": network,
           "cli_peak_gib": cli["peak_bytes"] / 2**30, "cli_seconds": cli["seconds"],
           "cli_s_per_mpx": cli["seconds"] / mpx, "api_peak_gib": api["peak_bytes"] / 2**30,
           "api_seconds": api["seconds"], "objects_cli": objects, "objects_api": api_info["objects"],
           "labels_equal": equal, "pixels_differing": ndiff, "label_levels_ok": levels_ok}
    print(f"[{kind}] {a.shape[0]}x{a.shape[1]}: CLI peak RSS {row['cli_peak_gib']:.2f} GiB, {cli['seconds']:.0f} s "
          f"({row['cli_s_per_mpx']:.2f} s/Mpx), {objects} objects; API peak RSS {row['api_peak_gib']:.2f} GiB, "
          f"{api['seconds']:.0f} s, {api_info['objects']} objects; labels equal: {equal} ({ndiff} pixels differ)"
          + ("" if levels_ok is None else f"; lower label levels = nearest sampling of level 0: {levels_ok}"),
          flush=True)
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--model", default="tiny", help="'tiny' (trained here in seconds), a bundled name or a model file")
    p.add_argument("--inputs", default="tiff,zarr", help="which inputs: tiff, zarr or both")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of the runs")
    p.add_argument("--skip-api", action="store_true", help="run the CLI only (its peak memory and time)")
    p.add_argument("--workdir", default=None, help="where inputs and outputs go (kept; default: a temp dir)")
    p.add_argument("--json", default=None)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child-input", help=argparse.SUPPRESS)
    p.add_argument("--child-output", help=argparse.SUPPRESS)
    p.add_argument("--child-margin", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-tile", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child_api(args)
        return 0
    from benchmarks.bench_segment import make_big_image

    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="cellseg_bench_blockwise_"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model
    if model == "tiny":
        model = str(train_tiny(work / "tiny_distance.pt"))
        print(f"trained the tiny model: {model}", flush=True)
    tiff = work / f"synthetic_{args.size}.tif"
    if not tiff.exists():
        t = time.perf_counter()
        make_big_image(tiff, args.size)
        print(f"wrote {tiff} ({tiff.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t:.0f} s", flush=True)
    from cellseg.segmenter import Segmenter

    network = " ".join(Segmenter.from_pretrained(model, device="cpu").inference)  # the default path, e.g. onnx fp32
    label = "tiny (tests' distance model)" if args.model == "tiny" else args.model
    print(f"model {label}, network path {network}", flush=True)
    rows = []
    kinds = [k.strip() for k in args.inputs.split(",") if k.strip()]
    if "tiff" in kinds:
        rows.append(bench_input("tiff", tiff, work, model, args.block, args.threads, not args.skip_api, label,
                                network))
    if "zarr" in kinds:
        zpath = work / f"synthetic_{args.size}.ome.zarr"
        if not zpath.exists():
            t = time.perf_counter()
            make_zarr(tiff, zpath)
            print(f"wrote {zpath} in {time.perf_counter() - t:.0f} s", flush=True)
        rows.append(bench_input("zarr", zpath, work, model, args.block, args.threads, not args.skip_api, label,
                                network))
    print("\ninput  size         block margin  CLI peak RSS  CLI s/Mpx  API peak RSS  objects  labels = API")
    for r in rows:
        api = "       -    " if r["api_peak_gib"] is None else f"{r['api_peak_gib']:8.2f} GiB"
        print(f"{r['input']:6s} {r['size']:12s} {r['block']:5d} {r['margin']:6d}  "
              f"{r['cli_peak_gib']:8.2f} GiB  {r['cli_s_per_mpx']:9.3f}  {api}  "
              f"{r['objects_cli']:7d}  {'-' if r['labels_equal'] is None else r['labels_equal']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["labels_equal"] in (None, True) and r["label_levels_ok"] in (None, True) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
