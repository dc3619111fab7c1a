"""Inference engines: the network of a :class:`~cellseg.models.CellsegModel` run by eager torch
(fp32, or bf16 autocast) or by ONNX Runtime (fp32, or int8), behind one call.

An engine maps one padded input ``(C, *spatial)`` (float32) to the activated head outputs
``{head: float32 (channels, *spatial)}``, exactly what :meth:`CellsegModel._forward` returns, so
tiling, test-time augmentation, resampling and the decoders are the same whatever runs the
network. Combinations:

==========  =========  =====================================================================
backend     precision  what runs
==========  =========  =====================================================================
``torch``   ``fp32``   eager torch, the reference (channels-last on the CPU)
``torch``   ``bf16``   eager torch under ``torch.autocast(bfloat16)``: convolutions in
                       bfloat16 (fast on CPUs with AVX-512 BF16 or AMX, and on GPUs)
``onnx``    ``fp32``   ONNX Runtime, CPU: the network exported once with dynamic batch and
                       spatial axes (batch norm folded into the convolutions by ORT)
``onnx``    ``int8``   ONNX Runtime, CPU: the same graph with 8-bit weights (per channel)
                       and activations (QDQ, static ranges from calibration images)
==========  =========  =====================================================================

``backend="auto"`` / ``precision="auto"`` resolve with :func:`resolve`: on the CPU, onnx int8 for
a model whose shipped int8 ranges were checked to keep AP@0.5 within 0.005 of fp32 on its test
splits (:func:`int8_is_default`; ``nuclei``), else onnx fp32 (:data:`CPU_DEFAULT`), torch fp32
when onnxruntime is missing; on CUDA/MPS torch fp32. ``benchmarks/bench_inference.py`` measured
the choice (``docs/speed.md``).

The ONNX graph is exported lazily, the first time a model runs on that backend, and kept on
the model (one session per model, backend and precision, for any input shape: the axes are
dynamic) and on disk under ``$CELLSEG_CACHE/onnx`` (``~/.cache/cellseg/onnx``), keyed by the
weights, the config and the torch/onnxruntime versions, so the next process skips the export.
A session notices changed weights (a training step, ``load_state_dict``) and is rebuilt.

int8 needs activation ranges: :func:`calibrate` measures them on normalized images (ORT's
MinMax calibration) and keeps them on the model; bundled models ship ranges measured on their
validation images (``weights/<name>.int8.json``, written by ``python
benchmarks/bench_inference.py --calibrate --models NAME``).
"""
from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import torch

from .bundled import WEIGHTS_DIR
from .module import Network

__all__ = [
    "ActivatedHeads",
    "BACKENDS",
    "PRECISIONS",
    "COMBINATIONS",
    "CPU_DEFAULT",
    "InferenceError",
    "resolve",
    "check",
    "onnxruntime_available",
    "bf16_supported",
    "TorchEngine",
    "OnnxEngine",
    "calibrate",
    "int8_ranges",
    "int8_is_default",
    "weights_fingerprint",
]

BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16", "int8")
#: the precisions each backend runs
COMBINATIONS = {"torch": ("fp32", "bf16"), "onnx": ("fp32", "int8")}
#: the CPU's default path (``backend="auto"``, ``precision="auto"``), chosen with
#: ``benchmarks/bench_inference.py``: ONNX Runtime int8 for a model whose shipped int8 ranges were
#: checked to keep AP@0.5 within 0.005 of fp32 on its test splits (``"default": true`` in
#: ``weights/<name>.int8.json``), else ONNX Runtime fp32 (the same outputs as torch fp32 to float
#: rounding); torch fp32 when onnxruntime is not installed
CPU_DEFAULT = ("onnx", "fp32")

_ONNX_OPSET = 17
_INPUT = "input"
#: the ORT calibration method used for int8 ranges
_CALIBRATION = "MinMax"


class InferenceError(ValueError):
    """A backend/precision that does not exist, does not run on the device, or needs a package
    that is not installed (the message says which and what to do)."""


def onnxruntime_available() -> bool:
    """Whether ONNX Runtime can be imported."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def bf16_supported() -> bool:
    """True when this CPU runs bfloat16 convolutions natively (AVX-512 BF16 or AMX); elsewhere
    bf16 is emulated and slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, name, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # noqa: BLE001 - private probes; absent or failing means "no"
            pass
    return False


def _need_onnxruntime(what: str = "the onnx backend"):
    try:
        import onnxruntime
    except ImportError:
        raise InferenceError(f"{what} needs the package 'onnxruntime', which is not installed: "
                             "pip install onnxruntime, or use --backend torch"
                             ) from None
    return onnxruntime


def check(backend: str | None, precision: str | None) -> tuple[str, str]:
    """Validate the names (``None`` is ``"auto"``); returns them lower-cased."""
    b = "auto" if backend is None else str(backend).strip().lower()
    p = "auto" if precision is None else str(precision).strip().lower()
    if b not in BACKENDS:
        raise InferenceError(f"unknown backend {backend!r}: use {', '.join(BACKENDS)}")
    if p not in PRECISIONS:
        raise InferenceError(f"unknown precision {precision!r}: use {', '.join(PRECISIONS)}")
    if b != "auto" and p != "auto" and p not in COMBINATIONS[b]:
        other = next(k for k, v in COMBINATIONS.items() if p in v)
        why = {("onnx", "bf16"): "ONNX Runtime has no bfloat16 convolutions on the CPU",
               ("torch", "int8"): "int8 runs through ONNX Runtime's quantized convolutions"}[(b, p)]
        raise InferenceError(f"--backend {b} does not run --precision {p} ({why}): use --backend {other} "
                             f"--precision {p}, or --backend {b} with {' or '.join(COMBINATIONS[b])}")
    return b, p


def resolve(backend: str | None = "auto", precision: str | None = "auto", device: Any = "cpu",
            int8_default: bool = False) -> tuple[str, str]:
    """The ``(backend, precision)`` that runs, for a request and a device.

    * ``auto``/``auto``: on the CPU onnx int8 when ``int8_default`` (the model's checked int8
      ranges, see :func:`int8_is_default`), else :data:`CPU_DEFAULT`; torch fp32 when
      onnxruntime is missing; on CUDA/MPS torch fp32.
    * ``auto`` with a precision: the backend that runs it (fp32: onnx on the CPU when
      onnxruntime is installed, else torch).
    * a backend with ``auto``: fp32.

    Raises :class:`InferenceError` for a combination that does not exist, ONNX on a
    GPU, or the onnx backend asked for without onnxruntime installed."""
    b, p = check(backend, precision)
    dev = torch.device(device).type if not isinstance(device, torch.device) else device.type
    ort = onnxruntime_available()
    if dev != "cpu":
        if b == "onnx":
            raise InferenceError(f"the onnx backend runs on the CPU (ONNX Runtime's CPU provider); on {dev} use "
                                 "--backend torch (or auto), or --device cpu")
        if p == "int8":
            raise InferenceError(f"int8 runs on the CPU (ONNX Runtime); on {dev} use --precision fp32 or bf16, "
                                 "or --device cpu")
        return "torch", ("fp32" if p == "auto" else p)
    if b == "auto" and p == "auto":
        b, p = ("onnx", "int8") if int8_default else CPU_DEFAULT
        if b == "onnx" and not ort:
            b, p = "torch", "fp32"
        return b, p
    if b == "auto":
        if p == "bf16":
            return "torch", p
        if p == "int8":
            _need_onnxruntime("--precision int8")
            return "onnx", p
        return ("onnx" if ort else "torch"), p
    if b == "onnx":
        _need_onnxruntime()
    return b, ("fp32" if p == "auto" else p)


def weights_fingerprint(network: torch.nn.Module) -> tuple:
    """Cheap identity of the network's current weights: each tensor's storage and version
    counter (bumped by every in-place change: optimizer steps, ``load_state_dict``)."""
    out = []
    for t in list(network.parameters()) + list(network.buffers()):
        out.append((t.data_ptr(), t._version))
    return tuple(out)


class TorchEngine:
    """Eager torch: fp32, or bf16 under ``torch.autocast`` (outputs cast back to float32)."""

    backend = "torch"

    def __init__(self, network: Network, device: torch.device, precision: str = "fp32"):
        if precision not in COMBINATIONS["torch"]:
            raise InferenceError(f"the torch backend runs {COMBINATIONS['torch']}, not {precision!r}")
        self.network = network
        self.device = torch.device(device)
        self.precision = precision
        self.ndim = int(network.ndim)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        net = self.network
        was_training = net.training
        net.eval()
        # 2D on the CPU: channels-last layout (oneDNN's faster convolutions, ~20% less time
        # for the bundled networks; outputs equal to float32 rounding), as in training
        cl = self.ndim == 2 and self.device.type == "cpu"
        bf16 = self.precision == "bf16"
        try:
            with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                t = torch.from_numpy(np.ascontiguousarray(x)[None]).to(self.device)
                if cl:
                    # Module.to takes memory_format (torch's docs), its type stubs omit it
                    net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
                    t = t.contiguous(memory_format=torch.channels_last)
                act = net.activate(net(t))
        finally:
            net.train(was_training)
        return {k: v[0].float().cpu().numpy() for k, v in act.items()}


class ActivatedHeads(torch.nn.Module):
    """The network with its heads activated, as a tuple in head order: the module that the ONNX
    backend and the bioimage.io export trace."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.names = [h.name for h in net.head_specs]

    def forward(self, x):
        act = self.net.activate(self.net(x))
        return tuple(act[n] for n in self.names)


def _cache_root() -> Path | None:
    env = os.environ.get("CELLSEG_CACHE")
    root = Path(env) if env else Path.home() / ".cache" / "cellseg"
    return root / "onnx"


def _versions() -> str:
    import onnxruntime

    return f"torch {torch.__version__}; onnxruntime {onnxruntime.__version__}; opset {_ONNX_OPSET}"


def _content_key(network: Network, extra: str = "") -> str:
    """A hash of the network's weights and structure, the export settings and the versions."""
    h = hashlib.sha256()
    h.update(_versions().encode())
    h.update(repr(network.backbone_config).encode())
    h.update(repr(network.head_specs).encode())
    h.update(str(int(network.in_channels)).encode())
    for k, v in network.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:24]


def _read_cached(path: Path | None) -> bytes | None:
    try:
        if path is None or not path.is_file():
            return None
        data = path.read_bytes()
        try:
            os.utime(path)  # recently used: kept when the cache is pruned
        except OSError:
            pass
        return data
    except OSError:
        return None


#: ONNX files kept in the cache folder (the oldest go first): every fine-tuned or test model adds one
_CACHE_KEEP = 48


def _write_cached(path: Path | None, data: bytes) -> None:
    if path is None:
        return
    try:  # a read-only or full cache folder only costs the next process an export
        from .._files import atomic_write

        atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
        files = sorted(path.parent.glob("*.onnx"), key=lambda f: f.stat().st_mtime)
        for old in files[:-_CACHE_KEEP]:
            old.unlink(missing_ok=True)
    except OSError:
        pass


def export_onnx(network: Network) -> bytes:
    """The network (heads activated) as an ONNX model (bytes), batch and spatial axes dynamic."""
    net = copy.deepcopy(network)
    # Module.to takes memory_format (torch's docs), its type stubs omit it
    net.to(torch.device("cpu"), memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    net.float().eval()
    module = ActivatedHeads(net).eval()
    side = 2 * int(net.div_by)
    example = torch.zeros((1, int(net.in_channels)) + (side,) * int(net.ndim))
    dyn = {0: "batch", **{2 + i: f"s{i}" for i in range(int(net.ndim))}}
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notices about the divisibility check
            # the TorchScript exporter (dynamo=False) writes to a file object too; the annotation names paths
            torch.onnx.export(module, (example,), buf,  # type: ignore[arg-type]
                              dynamo=False, opset_version=_ONNX_OPSET,
                              input_names=[_INPUT], output_names=list(module.names),
                              dynamic_axes={_INPUT: dyn, **{n: dyn for n in module.names}})
    except ImportError as exc:  # the exporter needs the onnx package
        raise InferenceError(f"exporting the network to ONNX needs the package {exc.name or 'onnx'!r}: "
                             "pip install onnx onnxruntime, or use --backend torch") from None
    return buf.getvalue()


def _session_options(ort):
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(torch.get_num_threads()))  # as many threads as torch uses
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # no busy-waiting between runs: the decoders and resampling that follow each network call run
    # on the same cores (end to end 5-15% faster on 2 cores, the network alone the same)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # no memory pattern: with it each new input shape (the edge tiles of a tiled run are smaller) gets
    # a planned block of its own beside the last one's: a 12 Mpx frame in 4 tiles of 3.2 Mpx raised the
    # peak RSS by 5.2 GB, one whole 4 Mpx frame by 3.0 GB (nuclei, fp32, one thread); without it the
    # arena's blocks are reused: 3.2 GB for the tiles, and a single call is as fast (13.6 s, 13.8 s)
    so.enable_mem_pattern = False
    return so


def _calibration_inputs(images: Iterable[np.ndarray], div_by: int, ndim: int, in_channels: int,
                        max_side: int = 512) -> list[np.ndarray]:
    """Normalized images ``(C?, *spatial)`` cropped to multiples of ``div_by`` (at most
    ``max_side`` a side) as network inputs ``(1, C, *spatial)``."""
    out = []
    for im in images:
        x = np.asarray(im, np.float32)
        if x.ndim == ndim:
            x = x[None]
        if x.ndim != ndim + 1 or x.shape[0] != in_channels:
            raise InferenceError(f"calibration images must be normalized ({in_channels}, *spatial) arrays for this "
                                 f"model (or spatial only for one channel), got shape {np.shape(im)}")
        sl = tuple(slice(0, min(max_side, s) // div_by * div_by) for s in x.shape[1:])
        x = x[(slice(None),) + sl]
        if min(x.shape[1:]) < div_by:
            continue
        out.append(np.ascontiguousarray(x[None]))
    if not out:
        raise InferenceError(f"no calibration image is at least {div_by} px a side")
    return out


def _preprocessed(fp32: bytes, tmp: Path) -> Path:
    """ORT's pre-processing for quantization (shape inference, batch norm folded into the
    convolutions), as a file."""
    from onnxruntime.quantization import quant_pre_process

    src, dst = tmp / "fp32.onnx", tmp / "pre.onnx"
    src.write_bytes(fp32)
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def _quantize(fp32: bytes, ranges: Mapping[str, Any] | None, inputs: list[np.ndarray] | None) -> tuple[bytes, dict]:
    """int8 QDQ model (bytes) and the activation ranges used (ORT's calibration-cache JSON): from
    ``ranges`` when given, else measured on ``inputs``."""
    _need_onnxruntime("--precision int8")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self, xs):
            self._it = iter(xs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {_INPUT: x}

    with tempfile.TemporaryDirectory(prefix="cellseg-int8-") as tmpdir:
        tmp = Path(tmpdir)
        pre = _preprocessed(fp32, tmp)
        cache = tmp / "ranges.json"
        if ranges is not None:
            cache.write_text(json.dumps(ranges))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(str(pre), str(tmp / "int8.onnx"), None if ranges is not None else _Reader(inputs),
                            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, calibrate_method=getattr(CalibrationMethod, _CALIBRATION),
                            calibration_cache_path=str(cache))
        return (tmp / "int8.onnx").read_bytes(), json.loads(cache.read_text())


def _check_ranges(ranges: Mapping[str, Any], fp32: bytes, source: str) -> None:
    """The stored ranges must name every tensor of this graph that gets quantized."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="cellseg-int8-") as tmp:
        g = onnx.load(str(_preprocessed(fp32, Path(tmp)))).graph
    names = {o for n in g.node for o in n.output} | {i.name for i in g.input}
    have = set((ranges.get("data") or ranges).keys()) if isinstance(ranges, Mapping) else set()
    missing = sorted(n for n in names if n not in have)
    if not have or len(missing) > len(names) // 2:
        raise InferenceError(f"{source}: the int8 activation ranges do not fit this network's ONNX graph (made with "
                             f"another torch/onnxruntime?); measure them again with cellseg.models.inference.calibrate")


class OnnxEngine:
    """ONNX Runtime on the CPU: the exported graph (fp32) or its int8 quantization."""

    backend = "onnx"

    def __init__(self, network: Network, precision: str = "fp32", ranges: Mapping[str, Any] | None = None,
                 calibration: Iterable[np.ndarray] | None = None, source: str = "model", cache: bool = True):
        if precision not in COMBINATIONS["onnx"]:
            raise InferenceError(f"the onnx backend runs {COMBINATIONS['onnx']}, not {precision!r}")
        ort = _need_onnxruntime()
        self.precision = precision
        self.names = [h.name for h in network.head_specs]
        self.fingerprint = weights_fingerprint(network)
        self.ranges: dict | None = None
        root = _cache_root() if cache else None
        key = _content_key(network)
        fp32_path = None if root is None else root / f"{key}.onnx"
        model = _read_cached(fp32_path)
        if model is None:
            model = export_onnx(network)
            _write_cached(fp32_path, model)
        if precision == "int8":
            if ranges is not None:
                rkey = hashlib.sha256(json.dumps(ranges, sort_keys=True).encode()).hexdigest()[:16]
                int8_path = None if root is None else root / f"{key}-int8-{rkey}.onnx"
                q = _read_cached(int8_path)
                if q is None:
                    _check_ranges(ranges, model, source)
                    q, _ = _quantize(model, ranges, None)
                    _write_cached(int8_path, q)
                self.ranges = dict(ranges)
            elif calibration is not None:
                inputs = _calibration_inputs(calibration, int(network.div_by), int(network.ndim),
                                             int(network.in_channels))
                q, self.ranges = _quantize(model, None, inputs)
            else:
                raise InferenceError(f"{source}: --precision int8 needs activation ranges, and this model has none: "
                                     "measure them on a few of your images with "
                                     "cellseg.models.inference.calibrate(model, images), or use fp32")
            model = q
        self.session = ort.InferenceSession(model, _session_options(ort), providers=["CPUExecutionProvider"])
        self.threads = int(torch.get_num_threads())

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(None, {_INPUT: np.ascontiguousarray(x, np.float32)[None]})
        return {n: np.asarray(o[0], np.float32) for n, o in zip(self.names, outs)}


_lock = threading.Lock()
#: engines per model, kept beside it rather than on it, so that copying a model (copy.deepcopy,
#: pickling for Dask workers) never meets an ONNX Runtime session
_ENGINES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def engine_for(model, backend: str, precision: str):
    """The engine of ``model`` for a resolved ``(backend, precision)``, built on first use and
    kept on the model; rebuilt when the weights (or, for ONNX, torch's thread count) changed."""
    if backend == "torch":
        return TorchEngine(model.network, model.device, precision)
    engines = _ENGINES.setdefault(model, {})
    key = (backend, precision)
    with _lock:
        eng = engines.get(key)
        fp = weights_fingerprint(model.network)
        if eng is None or eng.fingerprint != fp or eng.threads != int(torch.get_num_threads()):
            ranges = int8_ranges(model) if precision == "int8" else None
            eng = OnnxEngine(model.network, precision, ranges=ranges, source=model.name or "model")
            engines[key] = eng
    return eng


def int8_ranges(model) -> dict | None:
    """The int8 activation ranges of ``model``: those :func:`calibrate` measured on it, else the
    ones shipped for a bundled model with these weights; ``None`` when it has none."""
    ranges = model.__dict__.get("_int8_ranges")
    return ranges if ranges is not None else _bundled_ranges(model)


def _ranges_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.int8.json"


def _bundled_record(model) -> dict | None:
    """The int8 record shipped for a bundled model (``weights/<name>.int8.json``) when the
    model's weights are the bundled ones (the file records their hash); kept on the model
    while its weights stay the same."""
    name = model.name
    if not name:
        return None
    fp = weights_fingerprint(model.network)
    cached = model.__dict__.get("_bundled_int8")
    if cached is not None and cached[0] == fp:
        return cached[1]
    rec = None
    p = _ranges_path(name)
    if p.is_file():
        try:
            rec = json.loads(p.read_text())
        except ValueError:
            rec = None
        if rec is not None and rec.get("weights_sha") != _weights_sha(model.network):
            rec = None  # other weights under a bundled name (fine-tuned, a file of the same name)
    model.__dict__["_bundled_int8"] = (fp, rec)
    return rec


def _bundled_ranges(model) -> dict | None:
    rec = _bundled_record(model)
    return None if rec is None else rec.get("ranges")


def int8_is_default(model) -> bool:
    """True when int8 is ``model``'s default CPU path: its shipped ranges were checked on its test
    splits (``benchmarks/bench_inference.py --calibrate``) and kept AP@0.5 within 0.005 of fp32."""
    rec = _bundled_record(model)
    return bool(rec is not None and rec.get("default") and rec.get("ranges"))


def _weights_sha(network: torch.nn.Module) -> str:
    """Hash of the weights alone (float32 values), independent of library versions."""
    h = hashlib.sha256()
    for k, v in network.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()[:24]


def calibrate(model, images: Iterable[np.ndarray], save: str | os.PathLike | None = None) -> dict:
    """Measure int8 activation ranges for ``model`` on ``images`` (normalized as the network gets
    them: ``Segmenter.normalized``, at the model's object size when it has one; a handful to a
    few dozen images of the kind to segment) and keep them on the model, so that
    ``precision="int8"`` uses them. Returns the ranges record (JSON-able); ``save`` writes it
    (the format of the bundled ``weights/<name>.int8.json``)."""
    eng = OnnxEngine(model.network, "int8", calibration=list(images), source=model.name or "model", cache=False)
    rec = {"format": "cellseg-int8-ranges", "weights_sha": _weights_sha(model.network),
           "versions": _versions(), "method": _CALIBRATION, "ranges": eng.ranges}
    model.__dict__["_int8_ranges"] = eng.ranges
    with _lock:
        _ENGINES.setdefault(model, {})[("onnx", "int8")] = eng
    if save is not None:
        from .._files import atomic_write

        atomic_write(Path(save), lambda tmp: Path(tmp).write_text(json.dumps(rec, indent=0, sort_keys=True) + "\n"))
    return rec
