"""StarDist: star-convex polygons from object probabilities and ray distances.

Schmidt, Weigert, Broaddus & Myers, *Cell Detection with Star-convex
Polygons*, MICCAI 2018. Every object pixel predicts its object probability
and the distances to the object boundary along ``n_rays`` equiangular rays;
the polygons of confident pixels are reduced by greedy non-maximum
suppression and rasterised.

Conventions (identical to the ``stardist`` package, so results can be compared
pixel for pixel):

* ray ``k`` has angle ``phi_k = 2*pi*k/n_rays`` and points ``(sin phi, cos phi)``
  in (row, column); polygon vertices are ``centre + d_k (sin phi_k, cos phi_k)``
  computed in float32 (:func:`dist_to_coord`);
* the overlap used by NMS is, by default, StarDist's: area of intersection
  divided by the area of the *smaller* polygon (``overlap="min"``);
  ``overlap="iou"`` uses intersection over union instead. Intersection areas
  are exact for these simple, possibly non-convex polygons: an O(n + m) polar
  sweep when both polygons are star-shaped around one of the two centres,
  otherwise the sum over one polygon's fan triangles of the other polygon
  clipped by each triangle (see ``_stardist_kernels``). StarDist itself
  truncates vertices to integers before clipping, so kept sets could differ
  on candidates whose overlap sits within that rounding of the threshold
  (none did in the parity tests and benchmarks);
* NMS visits candidates by decreasing score (ties: raster order), compares
  each only with kept polygons whose bounding boxes meet its own (uniform
  bucket grid; a box-intersection bound skips exact areas that cannot reach
  the threshold), so its cost grows with the number of candidates times the
  few kept neighbours, not with candidates squared;
* candidates are grid pixels with ``prob > prob_thresh`` at least ``border``
  grid pixels away from the image border (StarDist's ``b=2``);
* rasterisation paints polygons in increasing score order with the
  scan-conversion rule of ``skimage.draw.polygon`` (pixel centres inside, on an
  edge or on a vertex), so the label image equals
  ``stardist.geometry.polygons_to_label``.

Differences from the ``stardist`` package, on purpose: label ids are not cast
to uint16 (ids above 65535 do not wrap), and targets are channel-first.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..labels import as_labels, bounding_boxes, sequential
from ._params import document, knob, validate
from .base import Decoded, HeadSpec, Representation, check_outputs, check_values

__all__ = [
    "StarDist",
    "StarDistParams",
    "ray_angles",
    "star_dist",
    "edt_prob",
    "dist_to_coord",
    "polygon_area",
    "polygon_intersection_area",
    "non_maximum_suppression",
    "polygons_to_label",
    "candidates",
]

_OVERLAPS = ("min", "iou")


def _k():
    from . import _stardist_kernels as k  # lazy: nothing compiles at import

    return k


def _normalize_grid(grid) -> tuple[int, int]:
    if np.isscalar(grid):
        grid = (grid, grid)
    grid = tuple(grid)
    if len(grid) != 2 or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1
                                 for g in grid):
        raise ValueError(f"grid must be two integers >= 1, got {grid!r}")
    return int(grid[0]), int(grid[1])


def _check_n_rays(n_rays) -> int:
    if not isinstance(n_rays, (int, np.integer)) or isinstance(n_rays, bool) or n_rays < 3:
        raise ValueError(f"n_rays must be an integer >= 3, got {n_rays!r}")
    return int(n_rays)


def ray_angles(n_rays: int = 32) -> np.ndarray:
    """Ray angles ``2*pi*k/n_rays`` (float64), as ``stardist.geometry.ray_angles``."""
    return np.linspace(0, 2 * np.pi, _check_n_rays(n_rays), endpoint=False)


# ----------------------------------------------------------------------------- targets


def star_dist(labels: np.ndarray, n_rays: int = 32, grid=(1, 1)) -> np.ndarray:
    """Distances from every (grid) pixel to its object's boundary along ``n_rays`` rays.

    Returns float32 ``(n_rays, Hg, Wg)`` with ``Hg = (H-1)//gy + 1`` (channel
    first; ``stardist.geometry.star_dist`` returns the transpose ``(Hg, Wg, n_rays)``).
    Background pixels get 0. A ray ends where it leaves the object or the image
    (objects cut by the border end at the border, as in StarDist).
    """
    lab = as_labels(labels, ndim=2)
    n_rays = _check_n_rays(n_rays)
    gy, gx = _normalize_grid(grid)
    H, W = lab.shape
    # zeros: the kernel writes only foreground pixels (a large np.zeros is
    # calloc'ed, so pages of pure background are not even touched here)
    out = np.zeros((n_rays, (H - 1) // gy + 1 if H else 0, (W - 1) // gx + 1 if W else 0), np.float32)
    if out.size:
        _k().run_star_dist(lab, n_rays, gy, gx, out)
    return out


def edt_prob(labels: np.ndarray, grid=(1, 1)) -> np.ndarray:
    """Object probability: per-object Euclidean distance transform / its maximum.

    Float32 ``(Hg, Wg)``. The distance of an object pixel is to the nearest pixel
    of another id or background; the image border is *not* background (as
    StarDist's ``edt_prob``), except for a constant non-zero image, which is
    treated as surrounded by background. With a grid the EDT is computed on
    ``labels[::gy, ::gx]`` (as StarDist's training data generator does).
    """
    lab = as_labels(labels, ndim=2)
    gy, gx = _normalize_grid(grid)
    if (gy, gx) != (1, 1):
        lab = np.ascontiguousarray(lab[::gy, ::gx])
    if lab.size == 0:
        return np.zeros(lab.shape, np.float32)
    mx = int(lab.max())
    if mx == 0:
        return np.zeros(lab.shape, np.float32)
    if int(lab.min()) == mx:  # constant non-zero image: assume background around it
        return edt_prob(np.pad(lab, 1))[1:-1, 1:-1].copy()
    if mx > 2 * lab.size + 1024:  # huge sparse ids: compress them (same-id relation kept)
        lab, mx = sequential(lab)
    lo, hi = bounding_boxes(lab, mx)  # ids 1..mx, hi exclusive; absent: lo = hi = 0
    bb = np.full((mx + 1, 4), -1, np.int64)  # per id: min row, min col, max row, max col (inclusive)
    present = (hi > lo).all(axis=1)
    bb[1:][present] = np.concatenate([lo, hi - 1], axis=1)[present]
    ids = np.flatnonzero(bb[:, 0] >= 0).astype(np.int64)
    k = _k()
    out = np.zeros(lab.shape, np.float32)
    k.run_edt_prob(lab, bb, ids, out)
    return out


# ----------------------------------------------------------------------------- polygons


def dist_to_coord(dist: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Polygon vertices float32 ``(n, 2, n_rays)`` (rows, columns) from distances and centres.

    ``dist`` (n, n_rays), ``points`` (n, 2) integer (row, column) centres;
    bit-identical to ``stardist.geometry.dist_to_coord`` for integer points.
    """
    dist = np.asarray(dist)
    points = np.asarray(points)
    if dist.ndim != 2 or points.ndim != 2 or points.shape != (dist.shape[0], 2):
        raise ValueError(f"need dist (n, n_rays) and points (n, 2), got {dist.shape} and {points.shape}")
    if not np.issubdtype(points.dtype, np.integer):
        if not np.all(np.isfinite(points)) or not np.array_equal(points, np.round(points)):
            raise ValueError("points must be integer pixel coordinates")
    R = _check_n_rays(dist.shape[1])
    phis = ray_angles(R)
    out = np.empty((dist.shape[0], 2, R), np.float32)
    _k().dist_to_coord_kernel(np.ascontiguousarray(dist, np.float32), np.ascontiguousarray(points, np.int64),
                              np.sin(phis), np.cos(phis), out)
    return out


def _as_poly(coord, name):
    c = np.asarray(coord, np.float64)
    if c.ndim != 2 or c.shape[0] != 2 or c.shape[1] < 3:
        raise ValueError(f"{name}: expected (2, n_rays >= 3) vertex rows/columns, got {np.shape(coord)}")
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name}: vertices must be finite")
    return np.ascontiguousarray(c[0]), np.ascontiguousarray(c[1])


def polygon_area(coord: np.ndarray) -> float:
    """Shoelace area of a polygon given as (2, n) rows/columns in ray order."""
    vy, vx = _as_poly(coord, "coord")
    return float(_k().polygon_area_kernel(vx, vy))


def polygon_intersection_area(coord_a, center_a, coord_b, center_b) -> float:
    """Exact intersection area of two star polygons.

    ``coord_*`` (2, n) vertex rows/columns in increasing ray angle, star-convex
    around ``center_*`` (row, column), e.g. from :func:`dist_to_coord`.
    """
    ay, ax = _as_poly(coord_a, "coord_a")
    by, bx = _as_poly(coord_b, "coord_b")
    ca = np.asarray(center_a, np.float64).ravel()
    cb = np.asarray(center_b, np.float64).ravel()
    if ca.shape != (2,) or cb.shape != (2,):
        raise ValueError("centres must be (row, column) pairs")
    k = _k()
    scratch = k.make_scratch(max(ax.size, bx.size))
    return float(k.star_intersection_area(ax, ay, ca[1], ca[0], bx, by, cb[1], cb[0], scratch))


def _nms_coords(coords: np.ndarray, points: np.ndarray, nms_thresh: float, overlap: str):
    """NMS on float32 coords (n, 2, R) already sorted by decreasing score -> (keep mask, n exact)."""
    if coords.shape[0] == 0:
        return np.zeros(0, bool), 0
    keep, n_exact = _k().nms_kernel(np.ascontiguousarray(coords, np.float32), np.ascontiguousarray(points, np.int64),
                                    float(nms_thresh), overlap == "iou")
    return keep, int(n_exact)


def _check_thresh(x, name):
    x = float(x)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")
    return x


def non_maximum_suppression(dist: np.ndarray, prob: np.ndarray, points: np.ndarray,
                            nms_thresh: float = 0.4, overlap: str = "min") -> np.ndarray:
    """Greedy NMS of star polygons; returns the kept indices, best score first.

    dist (n, n_rays) distances, prob (n,) scores, points (n, 2) integer
    (row, column) centres (full-resolution pixels). Candidates are visited by
    decreasing score (ties: input order); one is suppressed when its overlap
    with an already kept polygon is ``> nms_thresh``. ``overlap``: ``"min"``
    (intersection / smaller area, StarDist's) or ``"iou"``.
    """
    dist = np.asarray(dist)
    prob = np.asarray(prob)
    points = np.asarray(points)
    if dist.ndim != 2 or prob.shape != (dist.shape[0],) or points.shape != (dist.shape[0], 2):
        raise ValueError(f"need dist (n, n_rays), prob (n,), points (n, 2); got {dist.shape}, {prob.shape}, "
                         f"{points.shape}")
    if overlap not in _OVERLAPS:
        raise ValueError(f"overlap must be one of {_OVERLAPS}, got {overlap!r}")
    nms_thresh = _check_thresh(nms_thresh, "nms_thresh")
    if not (np.all(np.isfinite(dist)) and np.all(np.isfinite(prob))):
        raise ValueError("dist and prob must be finite")
    if dist.size and dist.min() < 0:
        raise ValueError("distances must be non-negative")
    order = np.argsort(-prob.astype(np.float64), kind="stable")
    coords = dist_to_coord(dist[order], points[order])
    keep, _ = _nms_coords(coords, np.asarray(points)[order], nms_thresh, overlap)
    return order[keep]


def polygons_to_label(coords: np.ndarray, shape: Sequence[int], prob: np.ndarray | None = None) -> np.ndarray:
    """Rasterise polygons (n, 2, n_rays) into an int32 label image of ``shape``.

    Polygon ``i`` gets id ``i + 1``; polygons are painted by increasing ``prob``
    (stable; all equal when None), so the best one wins where they overlap. The
    pixel rule is ``skimage.draw.polygon``'s, so the result equals
    ``stardist.geometry.polygons_to_label(dist, points, shape, prob)`` for the
    coordinates of :func:`dist_to_coord`. An id can end up absent when a better
    polygon covers it completely.
    """
    return _polygons_to_label(coords, shape, prob)[0]


def _polygons_to_label(coords, shape, prob=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`polygons_to_label` and the pixel count of every id (index 0: background)."""
    coords = np.asarray(coords)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 0:
        raise ValueError(f"shape must be (H, W), got {shape}")
    if coords.ndim != 3 or coords.shape[1] != 2:
        raise ValueError(f"coords must be (n, 2, n_vertices), got {coords.shape}")
    n = coords.shape[0]
    if n >= np.iinfo(np.int32).max:
        raise ValueError("too many polygons for int32 labels")
    if not np.all(np.isfinite(coords)):
        raise ValueError("coords must be finite")
    if prob is None:
        order = np.arange(n, dtype=np.int64)
    else:
        prob = np.asarray(prob)
        if prob.shape != (n,):
            raise ValueError(f"prob must be ({n},), got {prob.shape}")
        order = np.argsort(prob, kind="stable").astype(np.int64)
    lab = np.zeros(shape, np.int32)
    counts = np.zeros(n + 1, np.int64)
    counts[0] = lab.size
    if n and lab.size:
        values = np.arange(1, n + 1, dtype=np.int32)
        _k().polygons_to_label_kernel(np.ascontiguousarray(coords, np.float32), order, values, lab, counts)
    return lab, counts


def candidates(prob: np.ndarray, dist: np.ndarray, prob_thresh: float = 0.5, border: int = 2, grid=(1, 1)):
    """Candidate polygons of dense outputs, best score first (ties: raster order).

    prob (Hg, Wg), dist (n_rays, Hg, Wg). Returns ``points`` int64 (n, 2)
    full-resolution (row, column) = grid index * grid, ``scores`` float32 (n,),
    ``dist`` float32 (n, n_rays).
    """
    prob = np.ascontiguousarray(prob, np.float32)
    dist = np.ascontiguousarray(dist, np.float32)
    if prob.ndim != 2 or dist.ndim != 3 or dist.shape[1:] != prob.shape:
        raise ValueError(f"need prob (Hg, Wg) and dist (n_rays, Hg, Wg), got {prob.shape}, {dist.shape}")
    gy, gx = _normalize_grid(grid)
    if int(border) < 0:
        raise ValueError("border must be >= 0")
    k = _k()
    # compared at float32 precision, the outputs' (as numpy compares a float32 array with a
    # Python float): a probability stored as float32(prob_thresh) is not above it
    flat, keys = k.candidates_kernel(prob, prob.view(np.uint32), np.float32(prob_thresh), int(border))
    d = k.gather_dist_kernel(dist, flat)  # gathered in raster order: cache friendly
    if flat.size < 2 ** 32:  # the raster position fits the key's low 32 bits
        keys.sort()  # unique keys: score descending, then raster position
        order = (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)
    else:
        order = np.argsort(-prob.ravel()[flat], kind="stable")
    flat, d = flat[order], d[order]
    scores = prob.ravel()[flat]
    Wg = prob.shape[1]
    points = np.empty((flat.size, 2), np.int64)
    points[:, 0] = (flat // Wg) * gy
    points[:, 1] = (flat % Wg) * gx
    return points, scores, d


# ----------------------------------------------------------------------------- representation


@document
@dataclass(frozen=True)
class StarDistParams:
    """Decoding knobs of :class:`StarDist`."""

    prob_thresh: float = knob(0.5, ge=0.0, le=1.0, tune=(0.2, 0.8, 7), cli="--prob-thresh",
                              help="candidates have object probability > prob_thresh (compared at float32 "
                                   "precision, the precision of the outputs)")
    nms_thresh: float = knob(0.4, ge=0.0, le=1.0, tune=(0.3, 0.5, 3), cli="--nms-thresh",
                             help="NMS: a candidate is suppressed when its overlap with a kept polygon is "
                                  "> nms_thresh")
    border: int = knob(2, ge=0, off=0,
                       help="candidates closer than this many grid pixels to the image border are ignored "
                            "(StarDist's b; 0 keeps all)")
    overlap: str = knob("min", choices=_OVERLAPS,
                        help="NMS overlap: 'min' intersection / smaller area (StarDist) or 'iou'")

    def __post_init__(self):
        validate(self)


class StarDist(Representation):
    """Star-convex polygons: object probability + ``n_rays`` boundary distances (2D).

    ``StarDist(ndim=3, ...)`` (and ``get("stardist", ndim=3, ...)``) returns the 3D
    polyhedra instead, :class:`~cellseg.representations.stardist3d.StarDist3D`.

    Heads
        ``prob`` (1 channel, sigmoid): normalised per-object EDT (1 at the
        object's innermost pixels, towards 0 at its boundary, 0 on background).
        ``dist`` (``n_rays`` channels, softplus: distances are non-negative and
        the activation is smooth): ray distances in full-resolution pixels.
    encode(labels)
        ``{"prob": (1, Hg, Wg), "dist": (n_rays, Hg, Wg)}`` float32, the grid
        being ``grid`` (see :func:`edt_prob`, :func:`star_dist`). The loss uses
        ``prob`` also as the weight of the distance term.
    decode(outputs, params, shape=None)
        candidates -> NMS -> rasterisation; ``shape`` is the label image shape
        (default ``(Hg*gy, Wg*gx)``). Objects entirely covered by better ones are
        dropped and ids are 1..n by decreasing score. ``extra``: ``polygons``
        float32 (n, 2, n_rays), ``points`` int64 (n, 2), ``prob`` (n,),
        ``n_candidates``. ``prob`` must be finite everywhere; ``dist`` must be
        finite and non-negative where it is read, at the candidate pixels
        (ValueError otherwise; values elsewhere do not affect the result).
    """

    name = "stardist"
    Params = StarDistParams
    ndims = (2,)

    def __new__(cls, *args, ndim: int = 2, **kwargs):
        # StarDist(ndim=3, ...) / get("stardist", ndim=3): the 3D polyhedra (another class,
        # whose config carries ndim=3, so saved 3D models come back as StarDist3D)
        if cls is StarDist and ndim == 3:
            from .stardist3d import StarDist3D

            return StarDist3D(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, n_rays: int = 32, grid: Sequence[int] | int = (1, 1), ndim: int = 2):
        if ndim != 2:
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        self.n_rays = _check_n_rays(n_rays)
        self.grid = _normalize_grid(grid)

    def config(self) -> dict[str, Any]:
        return {"n_rays": self.n_rays, "grid": self.grid}

    def heads(self) -> tuple[HeadSpec, ...]:
        return (HeadSpec("prob", 1, "sigmoid"), HeadSpec("dist", self.n_rays, "softplus"))

    def channel_map(self, head: str, perm: tuple[int, ...], flips: tuple[bool, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Ray ``k`` of the original frame is the transformed frame's ray along the transformed
        direction of ``(sin phi_k, cos phi_k)``; it must be one of the rays (flipping the rows
        needs nothing, the columns an even ``n_rays``, swapping the axes a multiple of 4)."""
        if head != "dist":
            return super().channel_map(head, perm, flips)
        if self.grid != (1, 1):
            raise ValueError(f"test-time augmentation needs grid (1, 1) (a transformed image puts the "
                             f"subsampled grid elsewhere); this model has grid {self.grid}")
        R = self.n_rays
        phi = ray_angles(R)
        u = np.stack([np.sin(phi), np.cos(phi)])  # (row, col) of every ray
        v = np.stack([u[perm[a]] * (-1.0 if flips[a] else 1.0) for a in range(2)])
        k = np.arctan2(v[0], v[1]) % (2 * np.pi) / (2 * np.pi / R)
        src = np.rint(k).astype(np.int64) % R
        if not np.allclose(k, np.rint(k), atol=1e-6):
            raise ValueError(f"this transform maps rays between the {R} ray directions; flips of the columns "
                             f"need an even n_rays, swapping the axes a multiple of 4")
        return src, np.ones(R, np.float32)

    def encode(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        lab = as_labels(labels, ndim=2)
        return {"prob": edt_prob(lab, self.grid)[None], "dist": star_dist(lab, self.n_rays, self.grid)}

    def oracle_outputs(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """What a perfect network outputs (after activation): the encoded targets."""
        return self.encode(labels)

    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None,
               shape: Sequence[int] | None = None) -> Decoded:
        p = self.params(params)
        # the distance planes are checked where they are read: at the candidates
        out = check_outputs(outputs, self.heads(), ndim=2, deferred=("dist",))
        prob, dist = out["prob"][0], out["dist"]
        gy, gx = self.grid
        if shape is None:
            shape = (prob.shape[0] * gy, prob.shape[1] * gx)
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2:
            raise ValueError(f"shape must be (H, W), got {shape}")
        points, scores, d = candidates(prob, dist, p.prob_thresh, p.border, self.grid)
        check_values(d, "dist", nonnegative=True, where=" at candidate pixels")
        coords = dist_to_coord(d, points)
        keep, _ = _nms_coords(coords, points, p.nms_thresh, p.overlap)
        coords, points, scores = coords[keep], points[keep], scores[keep]
        # ids 1..n by decreasing score; paint by increasing score (best wins)
        lab, counts = _polygons_to_label(coords, shape, prob=scores)
        present = counts[1:] > 0
        if not present.all():
            lut = np.zeros(coords.shape[0] + 1, np.int32)
            lut[1:][present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
            lab = lut[lab]
            coords, points, scores = coords[present], points[present], scores[present]
        scores = scores.astype(np.float32)
        return Decoded(lab, scores, {"polygons": coords, "points": points, "prob": scores,
                                     "n_candidates": int(keep.size)})

