"""bioimage.io model packages (format 0.5): export a cellseg model, and load one back.

:func:`export_bioimageio` writes one zip file that the bioimage.io tools (Fiji/deepImageJ,
ilastik, QuPath, ``bioimageio.core``) run as it is:

* ``rdf.yaml``: one input tensor ``image`` with named axes ``batch, channel, y, x`` (Y and X any
  multiple of the network's down-sampling factor), the model's percentile normalization as
  ``scale_range`` preprocessing (per image and channel), and one output tensor per network head
  (``prob``, ``flow``, ``dist``...: the *activated* head outputs, the same size as the input);
* the network as TorchScript (``weights_torchscript.pt``) and ONNX (``weights.onnx``, converted
  from the TorchScript one: its ``parent``);
* a test input (a crop of a real image, raw intensities, at the scale the model saw it) and the
  outputs the network gives for it;
* a cover made from cellseg's segmentation of that real image (image | labels);
* ``README.md``: the model card, the heads and how to decode them into labels (the
  representation, its tuned thresholds, the ``cellseg`` commands), with the representation's
  own documentation of its decoder;
* licence and citations from the model card (the methods and the training data);
* ``cellseg_config.json``: the full cellseg model config, so that cellseg loads the package as
  the model it came from (:func:`load_bioimageio`; ``cellseg segment --model OUT.zip``).

The decode step (watershed, polygon NMS, flow following, clustering) is not part of the
package: bioimage.io runs the network, cellseg turns its outputs into labels.

Requires the ``bioimageio`` extra (``bioimageio.spec``, ``onnx``; ``bioimageio.core`` and
``onnxruntime`` to test the package).
"""
from __future__ import annotations

import hashlib
import inspect
import io as _io
import json
import os
import re
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BioimageioError", "export_bioimageio", "load_bioimageio", "CONFIG_FILE", "INPUT_ID"]

#: the attachment holding the cellseg model config (what :func:`load_bioimageio` reads)
CONFIG_FILE = "cellseg_config.json"
#: the id of the input tensor
INPUT_ID = "image"
_TORCHSCRIPT = "weights_torchscript.pt"
_ONNX = "weights.onnx"
_ONNX_OPSET = 17
#: scale_range's eps (bioimage.io needs eps > 0; cellseg's own normalization uses 1e-20)
_EPS = 1e-6
#: largest test input side (pixels), before rounding down to the network's size multiple
_TEST_SIZE = 128
#: real bundled images tried, in order, when no image is given
_SAMPLES = ("dsb_nuclei", "dsb_he")

#: the publications a package cites, found by a pattern in its model card or by its representation
_REFERENCES = {
    "stardist": ("Schmidt U., Weigert M., Broaddus C., Myers G. Cell Detection with Star-Convex Polygons. "
                 "MICCAI 2018.", "10.1007/978-3-030-00934-2_30"),
    "cellpose": ("Stringer C., Wang T., Michaelos M., Pachitariu M. Cellpose: a generalist algorithm for "
                 "cellular segmentation. Nature Methods 18, 100-106 (2021).", "10.1038/s41592-020-01018-x"),
    "omnipose": ("Cutler K.J. et al. Omnipose: a high-precision morphology-independent solution for bacterial "
                 "cell segmentation. Nature Methods 19, 1438-1448 (2022).", "10.1038/s41592-022-01639-4"),
    "neven": ("Neven D., De Brabandere B., Proesmans M., Van Gool L. Instance Segmentation by Jointly "
              "Optimizing Spatial Embeddings and Clustering Bandwidth. CVPR 2019 (arXiv:1906.11109).",
              "10.48550/arXiv.1906.11109"),
    "naylor": ("Naylor P., Lae M., Reyal F., Walter T. Segmentation of Nuclei in Histopathology Images by Deep "
               "Regression of the Distance Map. IEEE Transactions on Medical Imaging 38, 448-459 (2019).",
               "10.1109/TMI.2018.2865709"),
    "caicedo": ("Caicedo J.C. et al. Nucleus segmentation across imaging experiments: the 2018 Data Science "
                "Bowl. Nature Methods 16, 1247-1253 (2019).", "10.1038/s41592-019-0612-7"),
    "maska": ("Maška M. et al. The Cell Tracking Challenge: 10 years of objective benchmarking. Nature Methods "
              "20, 1010-1020 (2023).", "10.1038/s41592-023-01879-y"),
    "ulman": ("Ulman V. et al. An objective comparison of cell-tracking algorithms. Nature Methods 14, "
              "1141-1152 (2017).", "10.1038/nmeth.4473"),
    "tsai": ("Tsai H.-F. et al. Usiigaci: Instance-aware cell tracking in stain-free phase contrast microscopy "
             "enabled by machine learning. SoftwareX 9, 230-237 (2019).", "10.1016/j.softx.2019.02.007"),
}
_METHOD_REFS = {"stardist": ("stardist",), "flows": ("cellpose",), "offsets": ("neven",), "distance": ("naylor",)}
#: card text → data reference
_DATA_REFS = (("Caicedo", "caicedo"), ("Maška", "maska"), ("Ulman", "ulman"), ("Tsai", "tsai"))

_CHANNEL_NAMES = {
    "flow": ("flow_y", "flow_x", "flow_z"),
    "offset": ("offset_y", "offset_x", "offset_z"),
    "sigma": ("sigma_y", "sigma_x", "sigma_z"),
}
_HEAD_TEXT = {
    ("distance", "dist"): "distance to the object's boundary, normalized to 1 at each object's centre (sigmoid)",
    ("distance", "fg"): "foreground probability (sigmoid)",
    ("stardist", "prob"): "object probability: normalized distance to the boundary (sigmoid)",
    ("stardist", "dist"): "distances (pixels) to the object's boundary along the equiangular rays (softplus)",
    ("flows", "flow"): "flow field (Y, X components) at 5x unit length, pointing to the object's centre",
    ("flows", "prob"): "cell probability (sigmoid)",
    ("flows", "dist"): "Omnipose distance field (background -5)",
    ("offsets", "offset"): "offsets (Y, X) from the pixel to its object's centre, in units of 1024 px (tanh)",
    ("offsets", "sigma"): "per-axis clustering margins (the Gaussian's log-bandwidth / 10)",
    ("offsets", "seed"): "seediness: the pixel's score as an object centre, also the foreground mask (sigmoid)",
    ("*", "denoised"): "denoised image, normalized intensities (DenoiSeg head)",
}


class BioimageioError(ValueError):
    """A model that cannot be exported, or a file that is not a package cellseg exported
    (the message names it and says why)."""


def _need(module: str, what: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise BioimageioError(f"{what} needs the package {module.split('.')[0]!r}: "
                              "pip install 'cellseg-toolkit[bioimageio]'") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- export


def _model_input(model, img, image_name: str) -> np.ndarray:
    """``(C, Y, X)`` float32: the image with the channels the model takes (as the Segmenter does)."""
    from .segmenter import Segmenter, SegmenterError

    data, axes = np.asarray(img.data), img.axes
    if any(a in axes for a in "TZ"):
        raise BioimageioError(f"{image_name}: a 2D image is needed for the test tensors and the cover, "
                              f"got axes {axes} (shape {data.shape})")
    seg = Segmenter(model)
    try:
        x, axes, _, _ = seg._select_channel(data, axes, None, getattr(img, "channel_names", None))
    except SegmenterError as exc:
        raise BioimageioError(f"{image_name}: {exc}") from None
    has_c = "C" in axes
    if has_c:
        x = np.moveaxis(x, axes.index("C"), 0)
    x = seg._match_channels(np.asarray(x, np.float32), has_c)
    return x if x.ndim == 3 else x[None]


def _choose_image(model, image) -> tuple[str, Any]:
    """The real image of the test tensors and cover: the one given, else the first bundled sample
    that looks like the model's training images (``cellseg.qc``)."""
    from . import io
    from .datasets.samples import sample, sample_path
    from .qc import image_features, unlike_training

    if image is not None:
        s = os.fspath(image)
        if s.startswith("sample:"):
            s = str(sample_path(s.split(":", 1)[1]))
        if not Path(s).is_file():
            raise BioimageioError(f"{s}: image file not found")
        try:
            return s, io.read_image(s)
        except Exception as exc:  # noqa: BLE001 - reported with the file's name
            raise BioimageioError(f"{s}: cannot read the image ({exc})") from None
    stats = model.config.get("image_stats")
    pmin, pmax = model.normalization
    for name in _SAMPLES:
        img = sample(name)
        try:
            x = _model_input(model, img, f"sample:{name}")
        except BioimageioError:
            continue
        feats = image_features(x if x.shape[0] > 1 else x[0], channel_axis=0 if x.shape[0] > 1 else None,
                               pmin=pmin, pmax=pmax)
        if not stats or not unlike_training(feats, stats):
            return f"sample:{name}", img
    raise BioimageioError(
        f"model {model.name or '?'}: none of the bundled sample images ({', '.join(_SAMPLES)}) looks like its "
        "training images; give a real image of the kind it segments with --image (image=)")


def _card_sections(text: str) -> dict[str, str]:
    out, key = {}, ""
    for line in text.splitlines():
        m = re.match(r"^##\s+(.*)", line)
        if m:
            key = m.group(1).strip()
            out[key] = ""
        elif key:
            out[key] += line + "\n"
    return {k: v.strip() for k, v in out.items()}


def _card(model, card: str | os.PathLike | None) -> str:
    if card is not None:
        p = Path(card)
        if not p.is_file():
            raise BioimageioError(f"{p}: model card not found")
        return p.read_text()
    name = model.config.get("name")
    if name:
        from .models.registry import list_models, model_card

        if name in list_models():
            try:
                return model_card(name)
            except FileNotFoundError:
                pass
    return ""


def _citations(model, terms: str) -> list[dict[str, str]]:
    rep = model.representation.name
    keys = list(_METHOD_REFS.get(rep, ()))
    if rep == "flows" and model.representation.config().get("mode") == "omnipose":
        keys.append("omnipose")
    keys += [k for pat, k in _DATA_REFS if pat in terms]
    return [{"text": _REFERENCES[k][0], "doi": _REFERENCES[k][1]} for k in dict.fromkeys(keys)]


def _software_licence() -> str:
    try:
        from importlib.metadata import metadata

        from cellseg import __distribution__

        lic = (metadata(__distribution__).get_all("License") or [""])[0]
    except Exception:  # noqa: BLE001 - not installed as a distribution
        lic = ""
    return lic.strip() or "BSD-3-Clause"


def _licence(terms: str, folder: Path) -> tuple[Any, str]:
    """SPDX id of the cellseg licence when the training data carry no restriction, else a
    licence file with the card's terms (research use only, say)."""
    spdx = _software_licence()
    if not terms or not re.search(r"research use|terms unknown|permission|non-commercial", terms, re.I):
        return spdx, f"The weights are released under {spdx}, as cellseg. Training data terms: {terms or 'n/a'}"
    text = ("# Licence and terms of use\n\n"
            f"The network code and the export format are cellseg's ({spdx}). The weights were trained on data "
            "with the terms below, which apply to their use:\n\n" + terms + "\n")
    (folder / "LICENSE.md").write_text(text)
    return "LICENSE.md", text


def _channel_names(rep: str, head: str, n: int) -> list[str]:
    names = _CHANNEL_NAMES.get(head)
    if names and n <= len(names):
        return list(names[:n])
    if rep == "stardist" and head == "dist":
        return [f"ray{k}" for k in range(n)]
    return [head] if n == 1 else [f"{head}{k}" for k in range(n)]


def _crop(x: np.ndarray, div: int) -> np.ndarray:
    """The central window of ``x`` ``(C, Y, X)``, each side a multiple of ``div`` up to ``_TEST_SIZE``."""
    out = []
    for s in x.shape[1:]:
        n = min(s, max(_TEST_SIZE, div)) // div * div
        if n < div:
            raise BioimageioError(f"the image is {x.shape[1:]} px; the network needs at least {div} px per side")
        out.append(slice((s - n) // 2, (s - n) // 2 + n))
    return np.ascontiguousarray(x[(slice(None), *out)])


def _cover(grey: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """``image | image with labels`` side by side (2:1), from a square window of the image."""
    from PIL import Image

    from .visualize import overlay

    h, w = grey.shape
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    g, lab = grey[y0:y0 + s, x0:x0 + s], labels[y0:y0 + s, x0:x0 + s]
    over = overlay(g, lab)
    plain = overlay(g, np.zeros_like(lab), alpha=0.0, outline=False)
    both = Image.fromarray(np.concatenate([plain, over], axis=1))
    if s > 384:
        both = both.resize((768, 384), Image.Resampling.LANCZOS)
    both.save(path, format="PNG")


def _demote(markdown: str) -> str:
    """Headings one level down (a card's ``# name`` becomes ``## name``)."""
    return re.sub(r"^(#+) ", r"#\1 ", markdown, flags=re.M)


def _documentation(model, card: str, heads, image_name: str, n_objects: int, licence_text: str,
                   package_name: str, file_name: str) -> str:
    rep = model.representation
    sections = _card_sections(card)
    results = "\n\n".join(f"### {k}\n\n{v}" for k, v in sections.items() if k.lower().startswith("test results"))
    pmin, pmax = model.normalization
    osize = model.config.get("object_size") or {}
    rep_doc = inspect.getdoc(sys.modules[type(rep).__module__]) or ""
    rows = "\n".join(f"| `{h.name}` | {h.channels} | {h.activation} | "
                     f"{_HEAD_TEXT.get((rep.name, h.name), _HEAD_TEXT.get(('*', h.name), ''))} |" for h in heads)
    thr = json.dumps(model.thresholds, sort_keys=True)
    size = ""
    if osize.get("diameter"):
        size = (f"\n**Object size.** The network was trained on objects about {float(osize['diameter']):g} px across "
                "(median equivalent diameter). Resample images whose objects are much larger or smaller to that "
                "size before the network (cellseg does it with `--diameter D|auto`), and the labels back.\n")
    return f"""# {package_name}

{model.config.get('description') or (card.splitlines()[2] if card.count(chr(10)) > 2 else '')}

A **{rep.name}** instance segmentation network exported by cellseg {_cellseg_version()}. The package runs the
network only; its outputs become labels in a decode step that is not a network (below).

## Input and preprocessing

`{INPUT_ID}`: axes `batch, channel, y, x`, {model.in_channels} channel(s) (grey images are repeated for a
3-channel model), Y and X multiples of {model.div_by}. Preprocessing: percentile normalization per image and
channel, `(x - p{pmin:g}) / (p{pmax:g} - p{pmin:g} + eps)` (`scale_range`, percentiles {pmin:g} and {pmax:g}).
Test-time augmentation: {'on' if model.augment else 'off'} by default in cellseg.
{size}
## Outputs

One tensor per network head, the activated outputs, each of the input's size:

| head | channels | activation | meaning |
|---|---|---|---|
{rows}

## Decode: from the outputs to labels

Representation `{rep.name}` {json.dumps(rep.config(), sort_keys=True)}, with the thresholds tuned on the
validation data:

```json
{thr}
```

With cellseg installed, on images:

```bash
cellseg segment images/*.tif -o results/ --model {file_name}
```

in Python, from the package or from outputs computed elsewhere (Fiji, ilastik, bioimageio.core):

```python
from cellseg.segmenter import Segmenter
labels = Segmenter.from_pretrained("{file_name}").segment(image).labels

from cellseg import representations
rep = representations.get("{rep.name}", **{json.dumps(rep.config(), sort_keys=True)})
outputs = {{{', '.join(f'"{h.name}": {h.name}_array' for h in heads)}}}   # (channels, Y, X) float32, batch removed
labels = rep.decode(outputs, rep.params({thr})).labels
```

The cover shows cellseg's segmentation of `{image_name}` with this model ({n_objects} objects).

### The decoder, as cellseg documents it

{rep_doc}

## Validation

The package's test tensors are a {model.in_channels}-channel crop of `{image_name}` (raw intensities, at the
scale cellseg segmented it) and the network's outputs for it; `bioimageio test` reproduces them with each weight
format. Accuracy of the labels after the decode step, from the model card:

{results or '(no test figures in the model card)'}

## Licence

{licence_text}

## Model card

{_demote(card) if card else '(no model card)'}
"""


def _cellseg_version() -> str:
    from . import __version__

    return __version__


def _check_out(out: Path) -> Path:
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise BioimageioError(f"{out}: a bioimage.io package is a .zip file")
    if out.is_dir():
        raise BioimageioError(f"{out} is a folder; give the path of the .zip file to write")
    from ._files import check_output_dir

    check_output_dir(out.parent if str(out.parent) else Path("."), "output folder")
    return out


def export_bioimageio(model, out: str | os.PathLike, *, image: str | os.PathLike | None = None,
                      card: str | os.PathLike | None = None, name: str | None = None) -> Path:
    """Write ``model`` (a :class:`~cellseg.models.CellsegModel`, a bundled name or a ``.pt`` path) as
    a bioimage.io model package (format 0.5) to ``out`` (``.zip``; atomic).

    ``image``: a real 2D image (path or ``sample:NAME``) for the test tensors and the cover;
    default the first bundled sample that looks like the model's training images (an error
    when none does). ``card``: the model card (default the bundled model's). ``name``: the
    package name (default ``cellseg <model name>``). Returns ``out``.
    """
    from .models.network import CellsegModel, load_model

    out = _check_out(Path(out))
    if not isinstance(model, CellsegModel):
        model = load_model(model, device="cpu")
    else:
        model = CellsegModel.from_payload(model.state(), device="cpu", source=model.name or "model")  # a CPU copy
    if model.ndim != 2:
        raise BioimageioError(f"model {model.name or '?'}: only 2D models can be exported (this one is {model.ndim}D)")
    spec = _need("bioimageio.spec", "bioimage.io export")
    _need("onnx", "the ONNX weights of a bioimage.io export")
    import torch

    from .preprocess import normalize_percentile
    from .scale import zoom_image
    from .segmenter import Segmenter

    image_name, img = _choose_image(model, image)
    x = _model_input(model, img, image_name)
    res = Segmenter(model).segment(img.data, axes=img.axes)
    factor = float(getattr(res, "scale", 1.0) or 1.0)
    xs = zoom_image(x, factor, 2) if factor != 1.0 else x
    test_in = _crop(xs, model.div_by)
    pmin, pmax = model.normalization
    normed = normalize_percentile(test_in, pmin, pmax, axis=(1, 2), eps=_EPS, name=image_name)

    heads = model.network.head_specs
    rep = model.representation.name
    card_text = _card(model, card)
    terms = _card_sections(card_text).get("Training data and terms", "")
    pkg_name = name or f"cellseg {model.name or 'model'}"

    net = model.network.to(torch.device("cpu"), memory_format=torch.contiguous_format).eval()
    from .models.inference import ActivatedHeads

    module = ActivatedHeads(net).eval()
    with tempfile.TemporaryDirectory(prefix="cellseg-bioimageio-") as tmp:
        d = Path(tmp)
        example = torch.from_numpy(normed[None])
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer and legacy-exporter notices about the shape check
            traced = torch.jit.trace(module, example, check_trace=False)
            traced.save(str(d / _TORCHSCRIPT))
            outs = [o.numpy() for o in traced(example)]
            dyn = {0: "batch", 2: "y", 3: "x"}
            torch.onnx.export(module, (example,), str(d / _ONNX), dynamo=False, opset_version=_ONNX_OPSET,
                              input_names=[INPUT_ID], output_names=[h.name for h in heads],
                              dynamic_axes={INPUT_ID: dyn, **{h.name: dyn for h in heads}})
        import tifffile

        np.save(d / "test_input.npy", test_in[None].astype(np.float32))
        tifffile.imwrite(d / "sample_input.tif", test_in[None].astype(np.float32), photometric="minisblack")
        for h, o in zip(heads, outs):
            np.save(d / f"test_output_{h.name}.npy", o.astype(np.float32))
            tifffile.imwrite(d / f"sample_output_{h.name}.tif", o.astype(np.float32), photometric="minisblack")
        grey = x.mean(axis=0) if x.shape[0] > 1 else x[0]
        _cover(grey, res.labels, d / "cover.png")
        licence, licence_text = _licence(terms, d)
        (d / "README.md").write_text(_documentation(model, card_text, heads, image_name, int(res.labels.max()),
                                                    licence_text, pkg_name, out.name))
        cfg = json.loads(model.state()["config"])
        (d / CONFIG_FILE).write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")

        def file(fname):
            return {"source": fname, "sha256": _sha256(d / fname)}

        space_in = [{"type": "space", "id": a, "size": {"min": model.div_by, "step": model.div_by}} for a in "yx"]
        nc = model.in_channels
        chans = ["red", "green", "blue"] if nc == 3 else [f"channel{k}" for k in range(nc)]
        summary = (model.config.get("description") or
                   (card_text.splitlines()[2].strip() if card_text.count("\n") > 2 else "") or
                   f"cellseg {rep} instance segmentation network")
        target = "nuclei" if "nucle" in (pkg_name + summary).lower() else "cells"
        rdf: dict[str, Any] = {
            "type": "model",
            "format_version": spec.model.v0_5.ModelDescr.implemented_format_version,
            "name": pkg_name,
            "description": summary[:1000],
            "authors": [{"name": "cellseg developers"}],
            "cite": _citations(model, terms),
            "license": licence if licence != "LICENSE.md" else file("LICENSE.md"),
            "documentation": file("README.md"),
            "covers": [file("cover.png")],
            "tags": ["cellseg", "instance-segmentation", "2d", target, rep, "pytorch", "torchscript", "onnx"],
            "attachments": [file(CONFIG_FILE)],
            "inputs": [{
                "id": INPUT_ID,
                "description": f"{model.in_channels}-channel 2D image, raw intensities",
                "axes": [{"type": "batch"}, {"type": "channel", "channel_names": chans}, *space_in],
                "test_tensor": file("test_input.npy"),
                "sample_tensor": file("sample_input.tif"),
                "data": {"type": "float32"},
                "preprocessing": [{"id": "scale_range", "kwargs": {
                    "axes": ["y", "x"], "min_percentile": pmin, "max_percentile": pmax, "eps": _EPS}}],
            }],
            "outputs": [{
                "id": h.name,
                "description": _HEAD_TEXT.get((rep, h.name), _HEAD_TEXT.get(("*", h.name), h.name)),
                "axes": [{"type": "batch"},
                         {"type": "channel", "channel_names": _channel_names(rep, h.name, h.channels)},
                         *[{"type": "space", "id": a, "size": {"tensor_id": INPUT_ID, "axis_id": a}} for a in "yx"]],
                "test_tensor": file(f"test_output_{h.name}.npy"),
                "sample_tensor": file(f"sample_output_{h.name}.tif"),
                "data": {"type": "float32"},
            } for h in heads],
            "weights": {
                "torchscript": {**file(_TORCHSCRIPT), "pytorch_version": torch.__version__.split("+")[0]},
                "onnx": {**file(_ONNX), "opset_version": _ONNX_OPSET, "parent": "torchscript"},
            },
            "config": {"cellseg": {
                "version": _cellseg_version(), "model": model.name, "representation": model.config["representation"],
                "thresholds": model.thresholds, "normalization": model.config["normalization"],
                "object_size": model.config.get("object_size"), "config_file": CONFIG_FILE,
                "test_image": image_name,
            }, "bioimageio": {"architecture_type": "U-Net", "task": "instance segmentation",
                              "target_structure": [target], "reproducibility_tolerance": [
                                  # the spec caps the absolute tolerance at 1% of the largest test value
                                  # (offsets are in units of 1024 px: small numbers)
                                  {"output_ids": [h.name], "relative_tolerance": 1e-3,
                                   "absolute_tolerance": min(1e-3, 0.005 * float(np.abs(o).max()))}
                                  for h, o in zip(heads, outs)]}},
        }
        descr = _validated(rdf, d)
        from ._files import atomic_write

        def write(tmp_path: Path) -> None:
            spec.save_bioimageio_package(descr, output_path=tmp_path)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atomic_write(out, write)
    return out


def _validated(rdf: dict, folder: Path):
    """The bioimage.io description of ``rdf`` (files relative to ``folder``), or an error listing
    what the specification refuses."""
    import yaml
    from bioimageio.spec import InvalidDescr, load_description

    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        descr = load_description(folder / "rdf.yaml", perform_io_checks=True)
    if isinstance(descr, InvalidDescr):
        errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in descr.validation_summary.errors[:8])
        raise BioimageioError(f"the bioimage.io description does not validate: {errors}")
    return descr


# --------------------------------------------------------------------------- load


def load_bioimageio(path: str | os.PathLike, device: Any = "auto"):
    """The :class:`~cellseg.models.CellsegModel` of a package :func:`export_bioimageio` wrote:
    its cellseg config and the TorchScript weights (sha256 checked against ``rdf.yaml``)."""
    import yaml

    from .models.network import CellsegModel, ModelFormatError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"bioimage.io package {p} does not exist")
    try:
        zf = zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFormatError(f"{p}: not a bioimage.io package (not a readable zip file: {exc})") from None
    with zf:
        names = set(zf.namelist())
        rdf_name = "rdf.yaml" if "rdf.yaml" in names else next((n for n in names if n.endswith("bioimageio.yaml")),
                                                               None)
        if rdf_name is None:
            raise ModelFormatError(f"{p}: not a bioimage.io package (no rdf.yaml)")
        try:
            rdf = yaml.safe_load(zf.read(rdf_name))
        except yaml.YAMLError as exc:
            raise ModelFormatError(f"{p}: {rdf_name} is not valid YAML ({exc})") from None
        cs = ((rdf or {}).get("config") or {}).get("cellseg") if isinstance(rdf, dict) else None
        if not isinstance(cs, dict) or cs.get("config_file") not in names:
            raise ModelFormatError(f"{p}: a bioimage.io package that cellseg did not export (no config.cellseg and "
                                   f"{CONFIG_FILE}); cellseg loads the packages 'cellseg export' writes")
        ts = ((rdf.get("weights") or {}).get("torchscript") or {})
        if ts.get("source") not in names:
            raise ModelFormatError(f"{p}: the package has no TorchScript weights file")
        blob = zf.read(ts["source"])
        if ts.get("sha256") and hashlib.sha256(blob).hexdigest() != ts["sha256"]:
            raise ModelFormatError(f"{p}: {ts['source']} does not match its sha256 in {rdf_name} (corrupted file)")
        config_text = zf.read(cs["config_file"]).decode("utf-8")
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 prefers torch.export
            module = torch.jit.load(_io.BytesIO(blob), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        raise ModelFormatError(f"{p}: cannot read {ts['source']} ({type(exc).__name__})") from None
    sd = {k[len("net."):]: v for k, v in module.state_dict().items() if k.startswith("net.")}
    return CellsegModel.from_payload({"config": config_text, "state_dict": sd}, device=device, source=str(p))



# --------------------------------------------------------------------------- command line


def add_parser(sub) -> None:
    """``cellseg export MODEL OUT.zip``."""
    p = sub.add_parser(
        "export", help="write a model as a bioimage.io package (.zip) for Fiji, ilastik, QuPath, bioimageio.core",
        description="Write a bioimage.io model package (format 0.5): rdf.yaml with named axes and the percentile "
        "normalization as preprocessing, the network as TorchScript and ONNX, test tensors and a cover from a "
        "real image, documentation of the decode step, licence and citations from the model card. "
        "'cellseg segment --model OUT.zip' loads it back.")
    p.add_argument("model", help="bundled model name ('cellseg models') or a .pt model file")
    p.add_argument("out", help="the package to write (.zip)")
    p.add_argument("--image", default=None,
                   help="a real 2D image (file or sample:NAME) for the test tensors and the cover (default: the "
                        "first bundled sample that looks like the model's training images)")
    p.add_argument("--card", default=None, help="model card (markdown; default: the bundled model's)")
    p.add_argument("--name", default=None, help="package name (default: 'cellseg MODEL')")
    p.set_defaults(func=run)


def run(args) -> int:
    from .models.network import ModelFormatError
    from .models.registry import UnknownModelError

    try:
        out = export_bioimageio(args.model, args.out, image=args.image, card=args.card, name=args.name)
    except (BioimageioError, ModelFormatError, UnknownModelError, FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} (test it with: bioimageio test {out})")
    return 0
