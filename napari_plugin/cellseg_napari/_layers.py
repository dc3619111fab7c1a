"""napari layers of a segmentation run: the raw head outputs, StarDist polygons and the
denoised image, as LayerData tuples ``(data, kwargs, layer_type)``."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ._axes import display_axis_labels
from ._run import SegmentRun

__all__ = ["denoised_layer", "flow_to_rgb", "output_layers", "polygon_layer"]


def denoised_layer(run: SegmentRun, name: str, scale=None) -> tuple | None:
    """``(data, kwargs, "image")`` of the denoised image of ``run`` (None when it was not asked
    for): grey, on the image's grid, in the image's intensity units; it keeps a channel axis
    the model took (an RGB layer stays RGB)."""
    den = getattr(run.result, "denoised", None)
    if den is None:
        return None
    axes = run.result.axes
    if den.ndim != len(axes):  # the model took the channels: the layer's own axes (C included)
        axes = str(run.meta.get("axes", ""))
        if len(axes) != den.ndim or "C" not in axes:
            raise ValueError(f"denoised image of shape {den.shape} does not fit axes {axes!r}")
    kw = {"name": f"{name} denoised", "colormap": "gray", "metadata": {"axes": axes, "head": "denoised"}}
    c = axes.find("C")
    rgb = c == len(axes) - 1 and den.shape[c] in (3, 4)
    if rgb:
        kw["rgb"] = True
        lo, hi = float(den.min()), float(den.max())
        den = np.clip((den - lo) / (hi - lo), 0, 1).astype(np.float32) if hi > lo else np.zeros_like(den)
        del kw["colormap"]
    if scale is not None:
        sc = list(scale)
        if c >= 0 and not rgb:
            sc.insert(c, 1.0)
        kw["scale"] = tuple(sc)
    kw["axis_labels"] = display_axis_labels(axes[:-1] if rgb else axes)
    return den, kw, "image"


def _canonical(result, spatial_ndim: int) -> tuple[str, str]:
    """(canonical axes of the frame loop + space, space) as used by ``Segmenter.iter_segment``."""
    axes = result.axes
    if spatial_ndim == 3:
        space = "ZYX"
        frame_axes = [a for a in axes if a not in "ZYX"]
    else:
        space = "YX"
        frame_axes = [a for a in axes if a not in "YX"]
    order = [a for a in "TZ" if a in frame_axes] + list(space)
    return "".join(order), space


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """Colour image of a 2D flow field ``(2, Y, X)`` (dy, dx): hue = direction,
    brightness = magnitude (scaled by its 99th percentile). float32 ``(Y, X, 3)`` in [0, 1]."""
    from skimage.color import hsv2rgb

    flow = np.asarray(flow, np.float32)
    if flow.ndim != 3 or flow.shape[0] != 2:
        raise ValueError(f"flow_to_rgb expects a (2, Y, X) flow, got shape {flow.shape}")
    dy, dx = flow
    mag = np.hypot(dy, dx)
    scale = float(np.percentile(mag, 99)) if mag.size else 0.0
    hue = (np.arctan2(dy, dx) + np.pi) / (2 * np.pi)
    val = np.clip(mag / scale, 0, 1) if scale > 0 else np.zeros_like(mag)
    hsv = np.stack([hue % 1.0, np.ones_like(hue), val], axis=-1)
    return hsv2rgb(hsv).astype(np.float32)


def _stack_outputs(run: SegmentRun, head: str) -> tuple[np.ndarray, tuple[float, ...]] | None:
    """Head ``head`` of every frame as ``(C, *shape)`` in the labels' axis order, and per
    labels axis the ratio ``labels size / outputs size`` (1 for frame axes; above 1 where
    the image was shrunk to the model's object size). The outputs stay on the grid the
    network saw: a resampled run gives outputs of another spatial size than the labels."""
    res = run.result
    sp = run.segmenter.spatial_ndim
    canon, space = _canonical(res, sp)
    n_frame = len(canon) - len(space)
    frame_shape = tuple(res.labels.shape[res.axes.index(a)] for a in canon[:n_frame])
    full = None
    for fr in res.frames:
        out = fr.outputs
        if out is None or head not in out:
            continue
        a = np.asarray(out[head], np.float32)
        if full is None:
            full = np.zeros((a.shape[0],) + frame_shape + a.shape[1:], np.float32)
        full[(slice(None),) + tuple(fr.index)] = a
    if full is None:
        return None
    perm = [0] + [1 + canon.index(a) for a in res.axes]
    data = np.ascontiguousarray(np.transpose(full, perm))
    ratios = tuple(float(n) / float(m) for n, m in zip(res.labels.shape, data.shape[1:]))
    return data, ratios


def _grid_placement(scale, ratios: Sequence[float]) -> tuple[tuple | None, tuple | None]:
    """``(scale, translate)`` that put data sampled at ``ratios`` (labels pixels per data
    pixel, per axis) onto the labels' grid of layer ``scale`` (None: 1): data pixel ``i``
    lies at labels position ``(i + 0.5) * r - 0.5``, the pixel-centre convention of
    :func:`cellseg.scale.resize_labels`. ``(scale, None)`` when nothing was resampled."""
    if all(r == 1.0 for r in ratios):
        return (tuple(scale) if scale is not None else None), None
    base = tuple(float(v) for v in scale) if scale is not None else (1.0,) * len(ratios)
    return (tuple(b * r for b, r in zip(base, ratios)),
            tuple(b * (r - 1.0) / 2.0 for b, r in zip(base, ratios)))


def output_layers(run: SegmentRun, name: str, scale=None) -> list[tuple]:
    """Image layers of the raw head outputs: one channel → a single image
    ('magma' for probabilities / seeds), a 2-channel 2D flow → an RGB colour image
    (hue = direction), more channels (e.g. ray distances) → a stack with the channel
    axis first. Outputs of a resampled run stay at the model's scale and are placed
    over the image by the layers' scale and translate."""
    heads = [h.name for h in run.segmenter.rep.heads()]
    sp = run.segmenter.spatial_ndim
    layers = []
    for h in heads:
        stacked = _stack_outputs(run, h)
        if stacked is None:
            continue
        a, ratios = stacked
        lscale, ltrans = _grid_placement(scale, ratios)
        kw = {"name": f"{name} {h}", "blending": "additive", "visible": False,
              "metadata": {"axes": run.result.axes, "head": h}}
        if lscale is not None:
            kw["scale"] = lscale
        if ltrans is not None:
            kw["translate"] = ltrans
        if a.shape[0] == 1:
            data = a[0]
            kw["colormap"] = "magma"
        elif a.shape[0] == 2 and sp == 2 and "flow" in h.lower():
            flat = a.reshape(2, -1, *a.shape[-2:])
            data = np.stack([flow_to_rgb(flat[:, i]) for i in range(flat.shape[1])]).reshape(
                a.shape[1:] + (3,))
            kw["rgb"] = True
            kw["metadata"]["axes"] = run.result.axes + "C"
        else:
            data = a
            kw["colormap"] = "viridis"
            if lscale is not None:
                kw["scale"] = (1.0,) + tuple(lscale)
            if ltrans is not None:
                kw["translate"] = (0.0,) + tuple(ltrans)
            kw["metadata"]["axes"] = "C" + run.result.axes
        out_axes = kw["metadata"]["axes"]
        kw["axis_labels"] = display_axis_labels(out_axes[:-1] if kw.get("rgb") else out_axes)
        layers.append((data, kw, "image"))
    return layers


def polygon_layer(run: SegmentRun, name: str, scale=None) -> tuple | None:
    """StarDist polygons (``extra['polygons']``, ``(n, 2, n_rays)`` y/x) as a Shapes layer,
    vertices in the labels' axis order (frame index prepended for stacks). Polygons of
    a resampled run are mapped from the model's grid back onto the labels' grid."""
    res = run.result
    if run.segmenter.spatial_ndim != 2:
        return None
    canon, _ = _canonical(res, 2)
    ry = rx = 1.0
    for fr in res.frames:
        out = fr.outputs
        if out:
            grid = np.shape(next(iter(out.values())))[-2:]
            ry = res.labels.shape[res.axes.index("Y")] / grid[0]
            rx = res.labels.shape[res.axes.index("X")] / grid[1]
            break
    polys = []
    for fr in res.frames:
        p = (fr.extra or {}).get("polygons")
        if p is None:
            continue
        p = np.asarray(p, np.float32)
        if p.ndim != 3 or p.shape[1] != 2 or p.shape[0] == 0:
            continue
        idx = tuple(fr.index)
        for poly in p:
            yx = poly.T  # (n_rays, 2)
            # pixel-centre convention of cellseg.scale.resize_labels (identity when not resampled)
            if ry != 1.0 or rx != 1.0:
                yx = np.stack([(yx[:, 0] + 0.5) * ry - 0.5, (yx[:, 1] + 0.5) * rx - 0.5], axis=1)
            coords = {"Y": yx[:, 0], "X": yx[:, 1]}
            for a, i in zip(canon, idx):
                coords[a] = np.full(len(yx), i, np.float32)
            polys.append(np.stack([coords[a] for a in res.axes], axis=1))
    if not polys:
        return None
    kw = {"name": f"{name} polygons", "shape_type": "polygon", "edge_color": "yellow",
          "face_color": "transparent", "edge_width": 1, "visible": True,
          "axis_labels": display_axis_labels(res.axes)}
    if scale is not None:
        kw["scale"] = tuple(scale)
    return (polys, kw, "shapes")
