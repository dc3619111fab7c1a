"""Flow-field representations: Cellpose diffusion flows and Omnipose distance flows.

Heads (channel-first, activated outputs are what :meth:`Flows.decode` takes):

``flow`` (``ndim`` channels, identity)
    the flow field at **5x unit scale** (:data:`FLOW_SCALE`), Cellpose's
    training convention: the target is ``5 * (unit vector)`` on object pixels
    and 0 on the background. Components are in axis order ``(Y, X)`` /
    ``(Z, Y, X)``.
``prob`` (1 channel, sigmoid)
    cell probability; the target is the foreground (1 inside objects). Cellpose
    thresholds its logits at 0, i.e. ``prob_thresh = 0.5`` here.
``dist`` (1 channel, identity; ``mode="omnipose"`` only)
    Omnipose's smooth distance field: the target is the distance inside
    objects and :data:`DIST_BACKGROUND` (-5) on the background (Omnipose's
    ``dist_bg``). Decoding uses it only when ``FlowsParams.dist_thresh`` is set
    (then a pixel is foreground iff ``prob > prob_thresh`` and
    ``dist > dist_thresh``); it is trained as an auxiliary head.

Targets (``encode``)
--------------------
``mode="cellpose"`` (Stringer et al. 2021, ``masks_to_flows``): for every
object, heat is injected at its centre (the rounded mean of its pixel
coordinates if that pixel belongs to the object, else the object pixel
nearest to it; 3D: the pixel nearest to the mean) and diffused over the
object's own pixels only (2D: 9-point average, 3D: 7-point), for
``2*(h + w + 2)`` iterations (3D: ``6*(d + h + w + 3)``) where ``h x w`` is the
object's bounding box; the flow is the central-difference gradient of the heat
normalised to unit length. Unlike Cellpose, which runs all objects together
for the iteration count of the largest one and lets the gradient read the heat
of a touching neighbour, every object here is computed in isolation with its
own iteration count (``cellpose_flows(labels, niter=N)`` imposes one count).
Anisotropy is not used in this mode (as in Cellpose).

``mode="omnipose"`` (Cutler et al. 2022): per object, a smooth distance field
solving a discrete eikonal equation (2D: geometric mean of the axis-aligned
and diagonal Godunov updates; 3D: 6-neighbour update with Z spacing
``anisotropy``) by fast sweeping; pixels of other objects and the background
are at distance 0, pixels beyond the image border are not (the object is taken
to continue there). The flow is its gradient normalised to unit length (in
physical units in 3D).

Decoding (``decode``)
---------------------
1. Foreground: ``prob > prob_thresh`` (strictly).
2. Euler integration of every foreground pixel for ``niter`` steps along the
   bilinearly (trilinearly) interpolated flow, masked to the foreground and
   divided by 5; positions are clamped to the image (Cellpose
   ``steps2D_interp``); positions and arithmetic are float32, as Cellpose's
   torch tensors, and a point that comes back bit for bit to where it was one
   or two steps before stops there (the rest of its path is that cycle). A
   point also stops once its two-step displacement times the two-step moves
   left is at most :data:`FOLLOW_TOL` (0.05 px) and cannot take it out of its pixel
   (it is settling on, or oscillating ever more tightly around, a sink; see
   :func:`follow_flows`). The estimate holds while the displacement does not
   grow: on the oracle flows of the benchmark images and on the bundled
   models' outputs for their test images end points move by at most 0.08 px
   and none changes pixel (the same partitions as running every step); in
   rough fields (i.i.d. noise added to the flows) a few in 10^3 do.
   Omnipose mode integrates the unit flow scaled by its
   divergence mapped to [0, 1] (1st..99th percentile over the foreground,
   Omnipose's ``div_rescale``), with *suppressed* steps: the step is the
   running average of the current and previous flow divided by ``1 + t``, so
   particles settle on the field's ridge instead of overshooting (in 3D the Z
   step is further divided by ``anisotropy``).
3. Grouping of the end points. Cellpose: histogram of the (truncated) final
   positions; seeds are bins with more than ``seed_min_count`` points that
   are the maximum of their 5^ndim window; each seed grows by 5 steps of
   3^ndim dilation through bins with more than 2 points; where grown seeds
   overlap the seed with more points wins (ties: later raster position).
   Omnipose (an affinity grouping, in the spirit of Omnipose's
   ``affinity_seg``): neighbouring foreground pixels (face neighbours, 4- /
   6-connectivity by default) are *compatible* when their end points lie
   within ``link_dist`` and their unit flows do not pull them apart
   (``max_divergence``). Compatible pairs are linked unless both pixels are
   shallower than ``min_depth`` on the ``dist`` head (the outer ring of an
   object: where two cells touch, one-pixel annotation jaggies otherwise give
   a stray compatible pair that merges them); objects are the connected
   components, then adjacent components merge (the smaller into its best
   neighbour) while at least ``merge_frac`` of the neighbour pairs joining
   them are compatible, which gives thin necks and tips cut by the depth rule
   back to their cell; last, a component whose peak on the ``dist`` head (its
   inscribed radius) is below ``absorb_ratio`` times the peak of an adjacent
   component is a fragment of it -- a lobe or sliver cut off behind a thin
   neck -- and joins the neighbour it shares the longest contact with. No
   centre is needed, so long, curved or branched
   cells whose end points spread along a skeleton stay whole.
   Objects with more than ``max_size_fraction`` of the image's pixels are
   dropped.
4. Flow-error QC: the flows of each mask are recomputed with the encoder of
   the same mode; ``error = mean over the mask of sum_c (mu_c - flow_c/5)^2``
   (Cellpose's ``flow_error``); masks with ``error > flow_threshold`` are
   dropped (``flow_threshold <= 0`` skips the QC).
5. Holes are filled, objects with fewer than ``min_size`` pixels are dropped,
   ids are made sequential. ``scores`` = mean ``prob`` per object;
   ``extra["flow_errors"]`` = the QC error per object (NaN when skipped).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cellseg.labels import as_labels, fill_holes_inplace, sequential

from ._params import document, knob, off_value, validate
from .base import Decoded, HeadSpec, Representation, check_outputs


class _Kernels:
    """Stands for a kernel module until its first use, then puts the module in its place
    under ``alias`` (numba loads when a kernel is first needed, not at import)."""

    def __init__(self, alias: str, module: str):
        self._alias = alias
        self._module = module

    def __getattr__(self, name: str):
        mod = importlib.import_module(self._module)
        globals()[self._alias] = mod
        return getattr(mod, name)


LK: Any = _Kernels("LK", "cellseg._labels_kernels")  # pixels grouped by id, per-id sums, id maps
TK: Any = _Kernels("TK", "cellseg.representations._flows_targets_kernels")  # flow targets, flow errors
FK: Any = _Kernels("FK", "cellseg.representations._flows_follow_kernels")  # Euler integration
CK: Any = _Kernels("CK", "cellseg.representations._flows_cluster_kernels")  # grouping of end points


__all__ = [
    "Flows",
    "FlowsParams",
    "FLOW_SCALE",
    "DIST_BACKGROUND",
    "FOLLOW_TOL",
    "cellpose_flows",
    "omnipose_flows",
    "follow_flows",
    "omnipose_step_field",
    "cellpose_clusters",
    "omnipose_clusters",
    "mask_flow_errors",
]

#: the flow head predicts FLOW_SCALE * unit vectors (Cellpose's training scale)
FLOW_SCALE = 5.0
#: Omnipose's distance target on the background
DIST_BACKGROUND = -5.0
#: Cellpose-mode decoding: a point stops following the flow once the drift it has
#: left is estimated below this (pixels) and cannot change its pixel (follow_flows' tol)
FOLLOW_TOL = 0.05
_MODES = ("cellpose", "omnipose")
_EIKONAL_TOL = 1e-7  # max change of a full set of sweeps; float32 output is then exact
_EIKONAL_MAX_SWEEPS = 500
_GROW_MIN = 2  # Cellpose: seeds grow through bins with more than 2 end points
_GROW_RADIUS = 5
_SEED_POOL = 2  # 5^ndim local-maximum window


@document
@dataclass(frozen=True)
class FlowsParams:
    """Decoder knobs of :class:`Flows` (see the module docstring); ``mode`` says which
    clustering uses a knob, the others serve both."""

    prob_thresh: float = knob(0.5, ge=0.0, lt=1.0, tune=(0.1, 0.9, 9), cli="--prob-thresh",
                              help="cell probability threshold: a pixel is foreground iff prob > prob_thresh")
    flow_threshold: float = knob(0.4, tune=(0.2, 1.0, 5), cli="--flow-threshold", off=0.0,
                                 help="masks whose flow error exceeds it are dropped (<= 0: no flow-error QC)")
    niter: int = knob(200, ge=0, help="Euler steps of the flow following")
    min_size: int = knob(15, help="objects with fewer pixels (after hole filling) are dropped")
    max_size_fraction: float = knob(0.4, gt=0.0, le=1.0,
                                    help="objects larger than this fraction of the image are dropped")
    seed_min_count: int = knob(10, ge=0, mode="cellpose",
                               help="a histogram seed needs more end points than this")
    dist_thresh: float | None = knob(None, mode="omnipose",
                                     help="if set, foreground also needs dist > dist_thresh")
    link_dist: float = knob(3.0, ge=0.0, mode="omnipose",
                            help="neighbouring pixels link when their end points lie within link_dist pixels")
    max_divergence: float = knob(0.5, mode="omnipose",
                                 help="linked neighbours' unit flows separate them at a rate <= max_divergence "
                                      "(about 2 where two touching cells meet)")
    connectivity: int = knob(1, choices=(1, 2, 3), mode="omnipose",
                             help="1: face neighbours are linked; the ndim: all neighbours (diagonal-only "
                                  "contacts link too)")
    min_depth: float = knob(1.0, mode="omnipose", off=0.0,
                            help="two neighbours both with dist < min_depth are not linked directly "
                                 "(0 disables the rule)")
    merge_frac: float = knob(0.5, ge=0.0, mode="omnipose", off=2.0,
                             help="adjacent components merge when at least this fraction of the neighbour "
                                  "pairs between them is compatible (> 1 disables)")
    absorb_ratio: float = knob(0.15, ge=0.0, le=1.0, mode="omnipose", off=0.0,
                               help="a component whose peak dist is below this fraction of an adjacent "
                                    "component's peak is merged into it (0 disables; 0.15: an inscribed radius "
                                    "under 15% of the neighbour's, about 2% of its area for round shapes)")

    def __post_init__(self):
        validate(self)


# ----------------------------------------------------------------------------- helpers


def _check_ndim(ndim):
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")


# ----------------------------------------------------------------------------- targets


def cellpose_flows(labels, niter: int | None = None, ndim: int | None = None) -> np.ndarray:
    """Unit Cellpose flows (float32 ``(ndim, *shape)``, 0 on the background).

    ``labels``: 2D or 3D integer label image (any integer dtype, ids need not be
    sequential). ``niter``: diffusion iterations for every object (default: per
    object, see the module docstring).
    """
    lab, n = sequential(labels, ndim if ndim is not None else (2, 3))
    nit = 0 if niter is None else int(niter)
    if niter is not None and nit < 1:
        raise ValueError(f"niter must be >= 1, got {niter}")
    return _cellpose_flows_seq(lab, n, nit)


def _cellpose_flows_seq(lab: np.ndarray, n: int, nit: int = 0) -> np.ndarray:
    """:func:`cellpose_flows` of int32 labels already numbered 1..n (no checks)."""
    nd = lab.ndim
    out = np.zeros((nd,) + lab.shape, np.float32)
    if n == 0:
        return out
    order, offsets = LK.group_pixels(lab.ravel(), n)
    if nd == 2:
        TK.heat_flows_2d(order, offsets, lab.shape[0], lab.shape[1], nit, out)
    else:
        TK.heat_flows_3d(order, offsets, lab.shape[0], lab.shape[1], lab.shape[2], nit, out)
    return out


def omnipose_flows(labels, anisotropy: float = 1.0, ndim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Unit Omnipose flows (float32 ``(ndim, *shape)``) and the smooth distance
    (float32 ``shape``, 0 on the background). ``anisotropy``: Z spacing over the
    in-plane spacing (3D only)."""
    lab, n = sequential(labels, ndim if ndim is not None else (2, 3))
    if not (np.isfinite(anisotropy) and anisotropy > 0):
        raise ValueError(f"anisotropy must be > 0, got {anisotropy}")
    return _omnipose_flows_seq(lab, n, anisotropy)


def _omnipose_flows_seq(lab: np.ndarray, n: int, anisotropy: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`omnipose_flows` of int32 labels already numbered 1..n (no checks)."""
    nd = lab.ndim
    flow = np.zeros((nd,) + lab.shape, np.float32)
    dist = np.zeros(lab.shape, np.float32)
    if n == 0:
        return flow, dist
    order, offsets = LK.group_pixels(lab.ravel(), n)
    if nd == 2:
        TK.eikonal_flows_2d(order, offsets, lab.shape[0], lab.shape[1], _EIKONAL_TOL, _EIKONAL_MAX_SWEEPS,
                           flow, dist)
    else:
        TK.eikonal_flows_3d(order, offsets, lab.shape[0], lab.shape[1], lab.shape[2], float(anisotropy),
                           _EIKONAL_TOL, _EIKONAL_MAX_SWEEPS, flow, dist)
    return flow, dist


# ----------------------------------------------------------------------------- decoding pieces


def follow_flows(step: np.ndarray, points: np.ndarray, niter: int, suppress: bool = False,
                 tol: float = 0.0) -> np.ndarray:
    """Euler-integrate ``points`` (``(ndim, P)``, pixel coordinates) along ``step``.

    ``step``: float32 ``(ndim, *shape)`` displacement per iteration (already
    masked and scaled); points must lie inside the image. Returns float64
    ``(ndim, P)`` end points (float32 values: the integration is float32).
    ``tol`` (>= 0, without ``suppress``): a point stops early once its two-step
    displacement times the two-step moves left is at most ``tol`` pixels
    and that drift cannot take it out of its pixel; 0 (the default): only exact 1- and
    2-cycles stop it, which gives the same end points as running every step.
    See :func:`cellseg.representations._flows_follow_kernels.follow_2d` for the semantics.
    """
    step = np.ascontiguousarray(step, np.float32)
    nd = step.ndim - 1
    _check_ndim(nd)
    pts = np.ascontiguousarray(points, np.float64)
    if pts.ndim != 2 or pts.shape[0] != nd:
        raise ValueError(f"points must have shape ({nd}, P), got {pts.shape}")
    if int(niter) != niter or niter < 0:
        raise ValueError(f"niter must be a non-negative integer, got {niter!r}")
    if not (np.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if suppress and tol > 0:
        raise ValueError("tol applies to unsuppressed (Cellpose) steps only; suppressed steps run every step")
    out = np.empty_like(pts)
    if pts.shape[1] == 0:
        return out
    shape = step.shape[1:]
    if np.any(pts < 0) or np.any(pts > np.array(shape, np.float64)[:, None] - 1) or not np.isfinite(pts).all():
        raise ValueError("points must lie inside the image: 0 <= p[a] <= shape[a] - 1")
    # interleaved components plus one zero row / column per axis (always weighted 0)
    padded = np.zeros(tuple(s + 1 for s in shape) + (nd,), np.float32)
    padded[tuple(slice(0, s) for s in shape)] = np.moveaxis(step, 0, -1)
    return _follow_padded(padded, pts, niter, suppress, tol)


def _padded_step(flow: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """``flow / FLOW_SCALE`` on ``fg`` (0 elsewhere) in :func:`_follow_padded`'s
    layout, written in one pass per component (the same float32 values as
    ``flow * fg / FLOW_SCALE``)."""
    shape = fg.shape
    nd = len(shape)
    padded = np.zeros(tuple(s + 1 for s in shape) + (nd,), np.float32)
    if nd == 2:
        FK.padded_step_2d(flow, fg, np.float32(FLOW_SCALE), padded)
        return padded
    core = tuple(slice(0, s) for s in shape)
    for a in range(nd):
        np.divide(flow[a], np.float32(FLOW_SCALE), out=padded[core + (a,)], where=fg)
    return padded


def _follow_padded(padded: np.ndarray, pts: np.ndarray, niter: int, suppress: bool,
                   tol: float = 0.0) -> np.ndarray:
    """:func:`follow_flows` on a step field already in the kernels' layout (float32
    ``(*shape + 1, ndim)``, zero last row / column) and checked float64 points."""
    nd = padded.ndim - 1
    shape = tuple(s - 1 for s in padded.shape[:nd])
    out = np.empty_like(pts)
    if pts.shape[1] == 0:
        return out
    flat = padded.ravel()
    p = [pts[a].copy() for a in range(nd)]
    niter = int(niter)
    if nd == 2 and suppress:
        FK.follow_2d_suppressed(flat, shape[0], shape[1], p[0], p[1], niter, out[0], out[1])
    elif nd == 2:
        FK.follow_2d(flat, shape[0], shape[1], p[0], p[1], niter, np.float32(tol), out[0], out[1])
    elif suppress:
        FK.follow_3d_suppressed(flat, shape[0], shape[1], shape[2], p[0], p[1], p[2], niter, out[0], out[1], out[2])
    else:
        FK.follow_3d(flat, shape[0], shape[1], shape[2], p[0], p[1], p[2], niter, np.float32(tol),
                    out[0], out[1], out[2])
    return out


def omnipose_step_field(flow: np.ndarray, fg: np.ndarray, anisotropy: float = 1.0) -> np.ndarray:
    """Omnipose step field: unit flow (on ``fg``) times its divergence mapped to [0, 1].

    The divergence (``np.gradient``, voxel units) of the unit field is mapped
    linearly from its 1st..99th percentile over the foreground to [0, 1] and
    clipped (a constant divergence gives 1). In 3D the Z component is divided
    by ``anisotropy`` (physical flow -> voxel step).
    """
    fg = np.asarray(fg, bool)
    u = np.asarray(flow, np.float64) * fg
    nrm = np.sqrt((u ** 2).sum(0))
    unit = np.divide(u, nrm, out=np.zeros_like(u), where=nrm > 0)
    div = np.zeros(fg.shape)
    for a in range(unit.shape[0]):
        if fg.shape[a] > 1:
            div += np.gradient(unit[a], axis=a)
    vals = div[fg]
    scale = np.ones(fg.shape)
    if vals.size:
        lo, hi = np.percentile(vals, [1.0, 99.0])
        if hi > lo:
            scale = np.clip((div - lo) / (hi - lo), 0.0, 1.0)
    step = unit * scale
    if step.shape[0] == 3:
        step[0] /= anisotropy
    return step.astype(np.float32)


def cellpose_clusters(final: np.ndarray, shape, seed_min_count: int = 10) -> np.ndarray:
    """Cellpose grouping of end points (``(ndim, P)``, inside the image) -> seed id per point.

    Returns int32 ``(P,)``: ``rank + 1`` of the seed owning the point's bin
    (ranks by ascending count), 0 where no seed grew over it.
    """
    shape = tuple(int(s) for s in shape)
    cells = _flat_cells(np.floor(final), shape)
    shp = np.array(shape, np.int64)
    hist, seeds = CK.histogram_seeds(cells, shp, int(seed_min_count), _SEED_POOL)
    M = CK.grow_seeds(hist, shp, seeds, _GROW_MIN, _GROW_RADIUS)
    out = np.empty(cells.size, np.int32)
    CK.lookup(M, cells, out)
    return out


def omnipose_clusters(final: np.ndarray, fg: np.ndarray, flow: np.ndarray,
                      link_dist: float = FlowsParams.link_dist,
                      max_divergence: float = FlowsParams.max_divergence,
                      connectivity: int = FlowsParams.connectivity, dist=None,
                      min_depth: float = off_value(FlowsParams, "min_depth"),
                      merge_frac: float = off_value(FlowsParams, "merge_frac"),
                      absorb_ratio: float = off_value(FlowsParams, "absorb_ratio")) -> np.ndarray:
    """Omnipose-style grouping by affinity of neighbouring pixels.

    Foreground pixels (``fg``; their end points ``final``, ``(ndim, P)``, in raster
    order) that are image neighbours (8- / 26-connectivity) are linked when their
    end points lie within ``link_dist`` (Euclidean, pixels) **and** the unit flows
    ``u = flow / |flow|`` (``flow``: ``(ndim, *shape)``) do not pull them apart:
    ``(u_j - u_i) . e_ij <= max_divergence`` (``e_ij``: unit vector from pixel i
    to pixel j; two touching cells have flows pointing away from their common
    boundary, about 2 there). ``connectivity`` 1: face neighbours only, else all
    neighbours. ``dist`` (``fg.shape``, e.g. the ``dist`` head) with
    ``min_depth``: two neighbours both shallower than ``min_depth`` are not linked;
    ``merge_frac`` (<= 1): region merging of adjacent components (see
    :func:`cellseg.representations._flows_cluster_kernels.link_points`); ``absorb_ratio``
    (> 0): fragments whose peak ``dist`` is below that fraction of an adjacent
    component's peak join it (needs ``dist``). The linking defaults are
    :class:`FlowsParams`'; ``min_depth``, ``merge_frac`` and ``absorb_ratio`` default
    to the values its declarations give for "rule off" (no depth rule, no merging, no
    absorption: the plain linking), as the function also serves those rules one at a
    time. Returns the
    connected-component id of every point, ``1..k``, numbered by first pixel in
    raster order.
    """
    fg = np.asarray(fg, bool)
    final = np.ascontiguousarray(final, np.float64)
    P = int(fg.sum())
    if final.shape != (fg.ndim, P):
        raise ValueError(f"final must have shape {(fg.ndim, P)}, got {final.shape}")
    flow = np.asarray(flow)
    if flow.shape != (fg.ndim,) + fg.shape:
        raise ValueError(f"flow must have shape {(fg.ndim,) + fg.shape}, got {flow.shape}")
    u = flow[:, fg].astype(np.float64)
    nrm = np.sqrt((u ** 2).sum(0))
    u = np.ascontiguousarray(np.divide(u, nrm, out=np.zeros_like(u), where=nrm > 0))
    index = np.full(fg.size, -1, np.int64)
    index[np.flatnonzero(fg)] = np.arange(P)
    out = np.zeros(P, np.int32)
    depth = np.full(P, np.inf) if dist is None else np.asarray(dist, np.float64)[fg]
    if P:
        CK.link_points(index, np.array(fg.shape, np.int64), final, float(link_dist) ** 2, u,
                      float(max_divergence), connectivity != 1, depth, float(min_depth),
                      float(merge_frac), float(absorb_ratio), out)
    return out


def _flat_cells(pos: np.ndarray, shape) -> np.ndarray:
    pos = np.asarray(pos)
    idx = np.zeros(pos.shape[1], np.int64)
    for a, s in enumerate(shape):
        c = np.clip(pos[a], 0, s - 1).astype(np.int64)
        idx = idx * s + c
    return idx


def mask_flow_errors(labels, flow: np.ndarray, mode: str = "cellpose", anisotropy: float = 1.0) -> np.ndarray:
    """Flow error of every object of ``labels`` (ids 1..n after sequential relabel, in
    ascending id order): mean over the object of ``sum_c (mu_c - flow_c / 5)^2`` where
    ``mu`` are the unit flows of the object recomputed with the ``mode`` encoder and
    ``flow`` the predicted 5x-scaled flow. Returns float64 ``(n,)``."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    lab, n = sequential(labels, (2, 3))
    flow = np.ascontiguousarray(flow, np.float32)
    if flow.shape != (lab.ndim,) + lab.shape:
        raise ValueError(f"flow must have shape {(lab.ndim,) + lab.shape}, got {flow.shape}")
    return _flow_errors_seq(lab, n, flow, mode, anisotropy)


def _flow_errors_seq(lab: np.ndarray, n: int, flow: np.ndarray, mode: str, anisotropy: float,
                     points: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """:func:`mask_flow_errors` of int32 labels already numbered 1..n and a
    float32 C-contiguous flow of matching shape (no checks). ``points``: ``(ids,
    flat indices)`` of every labelled pixel when the caller has them (the decoder),
    so the objects' pixels are grouped without a pass over the label image."""
    if n == 0:
        return np.zeros(0)
    if mode == "cellpose" and lab.ndim == 2:  # per object, no flow image
        order, offsets = LK.group_points(*points, n) if points is not None else LK.group_pixels(lab.ravel(), n)
        out = np.empty(n)
        TK.heat_flow_errors_2d(order, offsets, lab.shape[0], lab.shape[1], flow, FLOW_SCALE, out)
        return out
    mu = _cellpose_flows_seq(lab, n) if mode == "cellpose" else _omnipose_flows_seq(lab, n, anisotropy)[0]
    C = lab.ndim
    return TK.flow_errors(lab.ravel(), mu.reshape(C, -1), flow.reshape(C, -1), FLOW_SCALE, n)


# ----------------------------------------------------------------------------- representation


class Flows(Representation):
    """Cellpose (``mode="cellpose"``) or Omnipose (``mode="omnipose"``) flow fields.

    ``ndim``: 2 (YX) or 3 (ZYX); ``anisotropy``: Z spacing / XY spacing (3D,
    used by the Omnipose distance and steps). See the module docstring for
    the heads, targets and the decoder.
    """

    name = "flows"
    Params = FlowsParams
    ndims = (2, 3)
    vector_heads = {"flow": True}

    def __init__(self, mode: str = "cellpose", ndim: int = 2, anisotropy: float = 1.0):
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        _check_ndim(ndim)
        anisotropy = float(anisotropy)
        if not (np.isfinite(anisotropy) and anisotropy > 0):
            raise ValueError(f"anisotropy must be > 0, got {anisotropy}")
        self.mode = mode
        self.ndim = int(ndim)
        self.anisotropy = anisotropy

    def config(self) -> dict[str, Any]:
        return {"mode": self.mode, "ndim": self.ndim, "anisotropy": self.anisotropy}

    def heads(self) -> tuple[HeadSpec, ...]:
        h: tuple[HeadSpec, ...] = (HeadSpec("flow", self.ndim, "identity"), HeadSpec("prob", 1, "sigmoid"))
        if self.mode == "omnipose":
            h = h + (HeadSpec("dist", 1, "identity"),)
        return h

    # -- targets
    def encode(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Targets: ``flow`` (5x unit flows), ``prob`` (foreground 0/1) and, in
        omnipose mode, ``dist`` (smooth distance, -5 on the background); all float32."""
        lab = as_labels(labels, ndim=self.ndim)
        fg = lab > 0
        if self.mode == "cellpose":
            mu = cellpose_flows(lab, ndim=self.ndim)
            dist = None
        else:
            mu, dist = omnipose_flows(lab, self.anisotropy, ndim=self.ndim)
        out = {"flow": mu * np.float32(FLOW_SCALE), "prob": fg[None].astype(np.float32)}
        if dist is not None:
            out["dist"] = np.where(fg, dist, np.float32(DIST_BACKGROUND))[None].astype(np.float32)
        return out

    def oracle_outputs(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """What a perfect network outputs (activated): the targets, prob in {0, 1}."""
        return self.encode(labels)

    # -- decoding (the knobs of this mode: FlowsParams declares each knob's mode)
    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None) -> Decoded:
        p = self.params(params)
        out = check_outputs(outputs, self.heads(), ndim=self.ndim)
        flow = out["flow"]
        prob = out["prob"][0]
        shape = prob.shape
        fg = prob > np.float32(p.prob_thresh)
        if self.mode == "omnipose" and p.dist_thresh is not None:
            fg &= out["dist"][0] > np.float32(p.dist_thresh)
        empty = Decoded(np.zeros(shape, np.int32), np.zeros(0, np.float32),
                        {"flow_errors": np.zeros(0, np.float64)})
        if not fg.any():
            return empty
        fg_idx = np.flatnonzero(fg)
        points = np.array(np.unravel_index(fg_idx, shape), np.float64)
        if self.mode == "cellpose":
            final = _follow_padded(_padded_step(flow, fg), points, p.niter, False, FOLLOW_TOL)
            ids = cellpose_clusters(final, shape, p.seed_min_count)
        else:
            step = omnipose_step_field(flow, fg, self.anisotropy)
            final = follow_flows(step, points, p.niter, suppress=True)
            ids = omnipose_clusters(final, fg, flow, p.link_dist, p.max_divergence, p.connectivity,
                                    out["dist"][0], p.min_depth, p.merge_frac, p.absorb_ratio)
        # objects over max_size_fraction go; the others are numbered 1..n in id order
        counts = np.bincount(ids)
        keep = (counts > 0) & (counts <= p.max_size_fraction * prob.size)
        keep[0] = False
        n = int(keep.sum())
        if n == 0:
            return empty
        lut = np.zeros(counts.size, np.int32)
        lut[keep] = np.arange(1, n + 1, dtype=np.int32)
        ids = lut[ids]
        lab = np.zeros(shape, np.int32)
        lab.flat[fg_idx] = ids
        errors = np.full(n, np.nan)
        if p.flow_threshold > 0:
            errors = _flow_errors_seq(lab, n, np.ascontiguousarray(flow, np.float32), self.mode, self.anisotropy,
                                      points=(ids, fg_idx))
            bad = np.concatenate([[False], errors > p.flow_threshold])
            if bad.any():
                lab.flat[fg_idx] = np.where(bad[ids], 0, ids)
        fill_holes_inplace(lab)
        # objects under min_size go, ids become 1..k again; scores = mean prob per object
        flat = lab.reshape(-1)
        counts, sums = LK.label_sums(flat, np.ascontiguousarray(prob, np.float32).reshape(-1), n)
        keep = (counts > 0) & (counts >= int(p.min_size))
        keep[0] = False
        kept = np.flatnonzero(keep)
        if kept.size == 0:
            return empty
        if kept.size < n:
            lut = np.zeros(n + 1, np.int32)
            lut[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
            LK.remap_ids(flat, lut)
        errors = errors[kept - 1]
        scores = (sums[kept] / counts[kept]).astype(np.float32)
        return Decoded(lab, scores, {"flow_errors": errors.astype(np.float64)})
