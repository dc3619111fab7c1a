"""StarDist 3D: star-convex polyhedra from object probabilities and ray distances.

Weigert, Schmidt, Haase, Sugawara & Myers, *Star-convex Polyhedra for 3D
Object Detection and Segmentation in Microscopy*, WACV 2020. Every object
voxel predicts its object probability and the distances to the object
boundary along ``n_rays`` rays; the polyhedra of confident voxels are reduced
by greedy non-maximum suppression and rasterised. ``get("stardist", ndim=3)``
(or ``StarDist(ndim=3)``) builds :class:`StarDist3D`.

Conventions (those of the ``stardist`` package, so results can be compared
voxel for voxel):

* **rays** (:func:`rays_golden_spiral`, StarDist's ``Rays_GoldenSpiral``):
  ``n_rays`` points of a golden-spiral (Fibonacci) lattice on the unit sphere,
  ``(z, y, x) = (t, sqrt(1-t^2) sin(g k), sqrt(1-t^2) cos(g k))`` with ``t``
  evenly spaced in [-1, 1] and ``g = (3 - sqrt 5) pi``; with anisotropy ``a``
  (Z step over the Y/X pixel size) the points are divided by ``(a, 1, 1)``
  before the convex hull gives the triangular faces, then normalised to unit
  length: the points are squashed along Z as the objects are in voxel
  coordinates, so the rays sample a flattened object evenly. Distances are in
  voxel steps along these unit directions (voxel coordinates);
* **targets**: :func:`star_dist3d` steps along each ray in float32 from the voxel
  until the rounded position leaves the object or the image (the distance is
  the length of the rounded step vector, StarDist's ``star_dist3D``);
  :func:`edt_prob3d` is the per-object Euclidean distance transform with the Z
  step counting ``anisotropy`` pixels, divided by its maximum (StarDist's
  ``edt_prob`` with ``anisotropy``), computed at full resolution and then
  subsampled on the grid (as StarDist's 3D data generator does);
* **polyhedra**: vertices ``centre + d_k u_k`` in float32; the faces split the
  polyhedron into tetrahedra ``(centre, face)``; a voxel is inside when it is
  inside or on one of them (StarDist's ``inside_polyhedron``);
* **NMS overlap** (StarDist's): voxels inside both polyhedra divided by the
  volume of the smaller one (exact polyhedron volumes, sum of the tetrahedra).
  Candidates are visited by decreasing score (ties: raster order); a candidate
  is suppressed when its overlap with a kept polyhedron is ``> nms_thresh``.

Why rendered overlap and not exact intersection volumes: the intersection of
two non-convex star polyhedra is a general polyhedral boolean (no fan or polar
sweep as for star polygons in 2D), and the label image is voxels anyway. So the
NMS follows StarDist's bounding-sphere + rendered-overlap scheme: the same two
cheap bounds decide first (upper bound: the smaller of the outer-ball
intersection in isotropic coordinates and the product of the box overlaps;
lower bound: the inner-ball intersection), and the count of voxels inside both
polyhedra decides the remaining pairs. Voxels are found row by row (each
tetrahedron holds an interval of every row, from its four plane equations,
see ``_stardist3d_kernels``), so a count costs O(rows x faces) rather than
StarDist's O(voxels x faces). StarDist additionally tries Qhull kernel and
convex-hull intersection volumes before counting (continuous bounds); they do
not exist here, so kept sets could differ on pairs whose continuous and voxel
overlaps fall on different sides of the threshold (none did in the parity
tests and benchmarks). Plane tests are in float64 (StarDist: float32), so a
voxel within float rounding of a face may be classified differently.

Rasterisation paints polyhedra by decreasing score and never overwrites a
voxel (the best polyhedron wins, as in StarDist's ``polyhedron_to_label``).

Differences from the ``stardist`` package, on purpose: label ids are int32 (not
uint16, so ids above 65535 do not wrap), targets are channel-first, only the
``"min"`` overlap exists, and decoded distances are clipped below at 1e-3
(StarDist requires positive distances to rasterise).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, cast

import numpy as np

from ..labels import as_labels
from ._params import document, knob, validate
from .base import Decoded, HeadSpec, Representation, check_outputs, check_values

__all__ = [
    "StarDist3D",
    "StarDist3DParams",
    "rays_golden_spiral",
    "star_dist3d",
    "edt_prob3d",
    "polyhedra_volumes",
    "non_maximum_suppression_3d",
    "polyhedra_to_label",
    "candidates_3d",
]

#: smallest decoded distance (StarDist rasterises positive distances only)
MIN_DIST = 1e-3


def _k():
    from . import _stardist3d_kernels as k  # lazy: nothing compiles at import

    return k


def _normalize_grid3(grid) -> tuple[int, int, int]:
    if np.isscalar(grid):
        grid = (grid,) * 3
    grid = tuple(grid)
    if len(grid) != 3 or not all(isinstance(g, (int, np.integer)) and not isinstance(g, bool) and g >= 1
                                 for g in grid):
        raise ValueError(f"grid must be three integers >= 1 (Z, Y, X), got {grid!r}")
    return int(grid[0]), int(grid[1]), int(grid[2])


def _check_n_rays(n_rays) -> int:
    if not isinstance(n_rays, (int, np.integer)) or isinstance(n_rays, bool) or n_rays < 4:
        raise ValueError(f"n_rays must be an integer >= 4 in 3D, got {n_rays!r}")
    return int(n_rays)


def _anisotropy3(anisotropy: float | Sequence[float]) -> np.ndarray:
    # np.isscalar is a TypeGuard: it replaces the declared type instead of narrowing it
    a = np.asarray((float(cast(float, anisotropy)), 1.0, 1.0) if np.isscalar(anisotropy) else anisotropy, np.float64)
    if a.shape != (3,) or not np.all(np.isfinite(a)) or not np.all(a > 0):
        raise ValueError(f"anisotropy must be a positive number (Z step / Y-X pixel) or 3 positive numbers, "
                         f"got {anisotropy!r}")
    return a


def rays_golden_spiral(n_rays: int = 96, anisotropy: float | Sequence[float] = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Ray directions float32 ``(n_rays, 3)`` (z, y, x unit vectors) and triangular faces
    int32 ``(2 n_rays - 4, 3)`` of StarDist's ``Rays_GoldenSpiral(n_rays, anisotropy)``.

    ``anisotropy``: Z step over the Y/X pixel size (or a (z, y, x) triple, StarDist's
    form). Faces are oriented as StarDist orients them (``det(vertices[face]) <= 0``).
    """
    from scipy.spatial import ConvexHull

    n = _check_n_rays(n_rays)
    a = _anisotropy3(anisotropy)
    g = (3.0 - np.sqrt(5.0)) * np.pi
    phi = g * np.arange(n)
    z = np.linspace(-1, 1, n)
    rho = np.sqrt(1.0 - z ** 2)
    verts = np.stack([z, rho * np.sin(phi), rho * np.cos(phi)]).T / a
    faces = ConvexHull(verts).simplices
    faces = np.array([f[::-1] if np.linalg.det(verts[f]) > 0 else f for f in faces], np.int32)
    verts = verts / np.linalg.norm(verts, axis=-1, keepdims=True)
    return np.ascontiguousarray(verts, np.float32), np.ascontiguousarray(faces, np.int32)


def _check_rays(rays, faces=None):
    r = np.ascontiguousarray(rays, np.float32)
    if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] < 4 or not np.all(np.isfinite(r)):
        raise ValueError(f"rays must be finite (n_rays >= 4, 3) z, y, x directions, got {np.shape(rays)}")
    if faces is None:
        return r
    f = np.asarray(faces)
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must be integer (n_faces, 3), got {f.shape} {f.dtype}")
    if f.size and (f.min() < 0 or f.max() >= r.shape[0]):
        raise ValueError("faces index rays out of range")
    return r, np.ascontiguousarray(f, np.int32)


# ----------------------------------------------------------------------------- targets


def star_dist3d(labels: np.ndarray, rays: np.ndarray, grid=(1, 1, 1)) -> np.ndarray:
    """Distances float32 ``(n_rays, Zg, Yg, Xg)`` from every grid voxel to its object's boundary.

    ``rays`` (n_rays, 3) unit z, y, x directions (:func:`rays_golden_spiral`);
    ``Zg = (Z - 1) // gz + 1`` etc. Background voxels get 0; a ray ends where it
    leaves the object or the image. ``stardist.geometry.star_dist3D`` returns the
    transpose ``(Zg, Yg, Xg, n_rays)``.
    """
    lab = as_labels(labels, ndim=3)
    r = _check_rays(rays)
    gz, gy, gx = _normalize_grid3(grid)
    shape = tuple((s - 1) // g + 1 if s else 0 for s, g in zip(lab.shape, (gz, gy, gx)))
    out = np.zeros((r.shape[0],) + shape, np.float32)
    if out.size:
        _k().star_dist3d_kernel(np.ascontiguousarray(lab, np.int32), r, gz, gy, gx, out)
    return out


def edt_prob3d(labels: np.ndarray, anisotropy: float = 1.0, grid=(1, 1, 1)) -> np.ndarray:
    """Object probability float32 ``(Zg, Yg, Xg)``: per-object EDT (Z step = ``anisotropy``
    pixels) divided by its maximum, subsampled on the grid.

    The image border is not background (StarDist's ``edt_prob``), except for an
    image that is one object everywhere (then surrounded by background).
    """
    from .distance import normalized_distance

    lab = as_labels(labels, ndim=3)
    a = float(anisotropy)
    if not (np.isfinite(a) and a > 0):
        raise ValueError(f"anisotropy must be a positive number, got {anisotropy!r}")
    gz, gy, gx = _normalize_grid3(grid)
    p = normalized_distance(lab, a)
    return np.ascontiguousarray(p[::gz, ::gy, ::gx], np.float32)


# ----------------------------------------------------------------------------- polyhedra


def _check_polys(dist, points, rays, faces):
    dist = np.asarray(dist)
    points = np.asarray(points)
    r, f = _check_rays(rays, faces)
    if dist.ndim != 2 or dist.shape[1] != r.shape[0] or points.shape != (dist.shape[0], 3):
        raise ValueError(f"need dist (n, {r.shape[0]}) and points (n, 3), got {dist.shape} and {points.shape}")
    if not (np.all(np.isfinite(dist)) and np.all(np.isfinite(points))):
        raise ValueError("dist and points must be finite")
    if dist.size and dist.min() < 0:
        raise ValueError("distances must be non-negative")
    return np.ascontiguousarray(dist, np.float32), np.ascontiguousarray(points, np.float32), r, f


def polyhedra_volumes(dist: np.ndarray, rays: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Volumes float64 ``(n,)`` (voxel units) of the polyhedra ``dist`` (n, n_rays)."""
    d, _, r, f = _check_polys(dist, np.zeros((np.shape(dist)[0], 3)), rays, faces)
    return _k().volumes_kernel(d.astype(np.float64), r, f)


def _nms_sorted(dist, points, rays, faces, nms_thresh):
    if dist.shape[0] == 0:
        return np.zeros(0, bool), 0
    keep, n = _k().nms3d_kernel(dist, points, rays, faces, float(nms_thresh))
    return keep, int(n)


def _check_thresh(x, name):
    x = float(x)
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")
    return x


def non_maximum_suppression_3d(dist: np.ndarray, prob: np.ndarray, points: np.ndarray, rays: np.ndarray,
                               faces: np.ndarray, nms_thresh: float = 0.4) -> np.ndarray:
    """Greedy NMS of star polyhedra; returns the kept indices, best score first.

    dist (n, n_rays), prob (n,), points (n, 3) (z, y, x) centres in voxels; a candidate is
    suppressed when a better kept one overlaps it by more than ``nms_thresh`` (voxels
    inside both / volume of the smaller; see the module docstring). Ties in ``prob``:
    input order.
    """
    prob = np.asarray(prob)
    d, p, r, f = _check_polys(dist, points, rays, faces)
    if prob.shape != (d.shape[0],) or not np.all(np.isfinite(prob)):
        raise ValueError(f"prob must be finite ({d.shape[0]},), got {prob.shape}")
    nms_thresh = _check_thresh(nms_thresh, "nms_thresh")
    order = np.argsort(-prob.astype(np.float64), kind="stable")
    keep, _ = _nms_sorted(np.ascontiguousarray(d[order]), np.ascontiguousarray(p[order]), r, f, nms_thresh)
    return order[keep]


def polyhedra_to_label(dist: np.ndarray, points: np.ndarray, rays: np.ndarray, faces: np.ndarray,
                       shape: Sequence[int], prob: np.ndarray | None = None) -> np.ndarray:
    """Rasterise polyhedra into an int32 label image of ``shape`` (Z, Y, X).

    Polyhedron ``i`` gets id ``i + 1``; they are painted by decreasing ``prob``
    (ties: input order; all equal when None) and a voxel keeps the first id painted,
    so the best one wins where they overlap (StarDist's ``polyhedron_to_label``).
    """
    return _polyhedra_to_label(dist, points, rays, faces, shape, prob)[0]


def _polyhedra_to_label(dist, points, rays, faces, shape, prob=None):
    d, p, r, f = _check_polys(dist, points, rays, faces)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 0:
        raise ValueError(f"shape must be (Z, Y, X), got {shape}")
    n = d.shape[0]
    if n >= np.iinfo(np.int32).max:
        raise ValueError("too many polyhedra for int32 labels")
    if prob is None:
        order = np.arange(n)
    else:
        prob = np.asarray(prob)
        if prob.shape != (n,):
            raise ValueError(f"prob must be ({n},), got {prob.shape}")
        order = np.argsort(-prob.astype(np.float64), kind="stable")
    lab = np.zeros(shape, np.int32)
    counts = np.zeros(n + 1, np.int64)
    counts[0] = lab.size
    if n and lab.size:
        values = (order + 1).astype(np.int32)
        _k().polyhedra_to_label_kernel(np.ascontiguousarray(d[order]), np.ascontiguousarray(p[order]), r, f,
                                       values, lab, counts)
    return lab, counts


def candidates_3d(prob: np.ndarray, dist: np.ndarray, prob_thresh: float = 0.5, border: int = 2, grid=(1, 1, 1)):
    """Candidate polyhedra of dense outputs, best score first (ties: raster order).

    prob (Zg, Yg, Xg), dist (n_rays, Zg, Yg, Xg). Candidates have ``prob > prob_thresh``
    (float32 comparison) and lie at least ``border`` grid voxels from every face of the
    volume. Returns ``points`` int64 (n, 3) full-resolution (z, y, x) = grid index * grid,
    ``scores`` float32 (n,), ``dist`` float32 (n, n_rays).
    """
    prob = np.ascontiguousarray(prob, np.float32)
    dist = np.ascontiguousarray(dist, np.float32)
    if prob.ndim != 3 or dist.ndim != 4 or dist.shape[1:] != prob.shape:
        raise ValueError(f"need prob (Zg, Yg, Xg) and dist (n_rays, Zg, Yg, Xg), got {prob.shape}, {dist.shape}")
    g = np.array(_normalize_grid3(grid), np.int64)
    b = int(border)
    if b < 0:
        raise ValueError("border must be >= 0")
    mask = prob > np.float32(prob_thresh)
    if b:
        inner = np.zeros_like(mask)
        inner[b:-b, b:-b, b:-b] = True
        mask &= inner
    flat = np.flatnonzero(mask)
    scores = prob.ravel()[flat]
    order = np.argsort(-scores, kind="stable")
    flat, scores = flat[order], scores[order]
    d = _k().gather_dist3d_kernel(dist, flat.astype(np.int64))
    points = np.stack(np.unravel_index(flat, prob.shape), axis=1).astype(np.int64) * g
    return points.reshape(-1, 3), scores, d


# ----------------------------------------------------------------------------- representation


@document
@dataclass(frozen=True)
class StarDist3DParams:
    """Decoding knobs of :class:`StarDist3D`."""

    prob_thresh: float = knob(0.5, ge=0.0, le=1.0, tune=(0.2, 0.8, 7), cli="--prob-thresh",
                              help="candidates have object probability > prob_thresh (compared at float32 "
                                   "precision, the precision of the outputs)")
    nms_thresh: float = knob(0.4, ge=0.0, le=1.0, tune=(0.3, 0.5, 3), cli="--nms-thresh",
                             help="NMS: a candidate is suppressed when its overlap (voxels inside both / volume "
                                  "of the smaller) with a kept polyhedron is > nms_thresh")
    border: int = knob(2, ge=0, off=0,
                       help="candidates closer than this many grid voxels to a face of the volume are ignored "
                            "(StarDist's b; 0 keeps all)")

    def __post_init__(self):
        validate(self)


class StarDist3D(Representation):
    """Star-convex polyhedra: object probability + ``n_rays`` boundary distances (3D).

    Config: ``n_rays`` (default 96, StarDist's), ``grid`` (subsampling per axis, Z, Y, X),
    ``anisotropy`` (Z step over the Y/X pixel size: it shapes the rays and the
    probability target). ``ndim`` is always 3 (accepted so that ``get("stardist", ndim=3)``
    and ``type(rep)(**rep.config())`` work).

    Heads
        ``prob`` (1 channel, sigmoid): normalised per-object EDT.
        ``dist`` (``n_rays`` channels, softplus): distances in full-resolution voxel steps.
    encode(labels)
        ``{"prob": (1, Zg, Yg, Xg), "dist": (n_rays, Zg, Yg, Xg)}`` float32.
    decode(outputs, params, shape=None)
        candidates -> NMS -> rasterisation; ``shape`` defaults to ``(Zg*gz, Yg*gy, Xg*gx)``.
        Ids are 1..n by decreasing score (objects covered entirely by better ones are
        dropped). ``extra``: ``dist`` float32 (n, n_rays), ``points`` int64 (n, 3), ``prob``
        (n,), ``rays`` and ``faces``, ``n_candidates``.
    """

    name = "stardist"
    Params = StarDist3DParams
    ndims = (3,)
    ndim = 3

    def __init__(self, n_rays: int = 96, grid: Sequence[int] | int = (1, 1, 1), anisotropy: float = 1.0,
                 ndim: int = 3):
        if ndim != 3:
            raise ValueError(f"StarDist3D is 3D (ndim=3), got ndim={ndim!r}")
        self.n_rays = _check_n_rays(n_rays)
        self.grid = _normalize_grid3(grid)
        a = float(anisotropy)
        if not (np.isfinite(a) and a > 0):
            raise ValueError(f"anisotropy must be a positive number, got {anisotropy!r}")
        self.anisotropy = a
        self._rays: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """(directions float32 (n_rays, 3), faces int32 (n_faces, 3)), see :func:`rays_golden_spiral`."""
        if self._rays is None:
            self._rays = rays_golden_spiral(self.n_rays, self.anisotropy)
        return self._rays

    def config(self) -> dict[str, Any]:
        return {"n_rays": self.n_rays, "grid": self.grid, "anisotropy": self.anisotropy, "ndim": 3}

    def heads(self) -> tuple[HeadSpec, ...]:
        return (HeadSpec("prob", 1, "sigmoid"), HeadSpec("dist", self.n_rays, "softplus"))

    def channel_map(self, head: str, perm: tuple[int, ...], flips: tuple[bool, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Golden-spiral rays are not mapped onto each other by flips or axis swaps: only the
        identity transform is accepted for ``dist`` (no test-time augmentation)."""
        if head == "dist" and (tuple(perm) != tuple(range(len(perm))) or any(flips)):
            raise ValueError("StarDist 3D rays (golden spiral) are not closed under flips or axis swaps; "
                             "test-time augmentation is not available for this representation")
        return super().channel_map(head, perm, flips)

    def encode(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        lab = as_labels(labels, ndim=3)
        return {"prob": edt_prob3d(lab, self.anisotropy, self.grid)[None],
                "dist": star_dist3d(lab, self.rays[0], self.grid)}

    def oracle_outputs(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """What a perfect network outputs (after activation): the encoded targets."""
        return self.encode(labels)

    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None,
               shape: Sequence[int] | None = None) -> Decoded:
        p = self.params(params)
        out = check_outputs(outputs, self.heads(), ndim=3, deferred=("dist",))
        prob, dist = out["prob"][0], out["dist"]
        g = self.grid
        if shape is None:
            shape = tuple(s * gg for s, gg in zip(prob.shape, g))
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3:
            raise ValueError(f"shape must be (Z, Y, X), got {shape}")
        rays, faces = self.rays
        points, scores, d = candidates_3d(prob, dist, p.prob_thresh, p.border, g)
        check_values(d, "dist", nonnegative=True, where=" at candidate pixels")
        d = np.maximum(d, np.float32(MIN_DIST))
        pts = points.astype(np.float32)
        keep, _ = _nms_sorted(d, pts, rays, faces, p.nms_thresh)
        d, points, pts, scores = d[keep], points[keep], pts[keep], scores[keep]
        lab, counts = _polyhedra_to_label(d, pts, rays, faces, shape, scores)
        present = counts[1:] > 0
        if not present.all():
            lut = np.zeros(d.shape[0] + 1, np.int32)
            lut[1:][present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
            lab = lut[lab]
            d, points, scores = d[present], points[present], scores[present]
        scores = scores.astype(np.float32)
        return Decoded(lab, scores, {"dist": d, "points": points, "prob": scores, "rays": rays, "faces": faces,
                                     "n_candidates": int(keep.size)})
