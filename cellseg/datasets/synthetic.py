"""Seeded synthetic cells: star-convex, touching, never overlapping.

The generator places nuclei-like objects one after the other. Each object is a
perturbed ellipse (2D) or ellipsoid (3D): its boundary is a smooth radial
function ``r(direction)`` around its centre (an ellipse/ellipsoid radius times
``1 + sum_m a_m T_k(w_m . direction)`` with Chebyshev polynomials ``T_k``, i.e.
a few smooth low-order lobes), so every object is star-convex by construction.

Placement works on the label raster itself:

* with probability ``touching`` a new object is put *against* an existing one
  (its centre just outside that neighbour, so the two shapes would overlap);
  the new object then keeps only the pixels that are free **and** visible from
  its own centre (the straight segment centre→pixel crosses no other object).
  It is flattened against its neighbour: the two touch, never overlap, and the
  new object stays star-convex with respect to its centre;
* otherwise it is placed at a uniformly random position where it keeps a gap
  of at least ``gap`` pixels to every other object.

Objects cut by the image border are kept when enough of them is visible, like
in real data. Ids are ``1..n`` in placement order; the requested ``n_cells`` is
honoured exactly or a ``ValueError`` says how many could be placed.

Rendering (see :class:`Render`): per-cell brightness, a slightly domed profile,
multiplicative smooth texture, an uneven background (ramp + low-frequency
wave), Gaussian blur (PSF), then Poisson (shot) and Gaussian (read) noise.
Images are float32 in "normalised counts": background about 0.1, cells about
0.3–1.1 above it. They are *not* normalised; use
:func:`cellseg.preprocess.normalize_percentile` like for real data.

Everything is NumPy/SciPy (no compiled kernel) and deterministic per seed: a
2048×2048 image with 2000 cells takes a couple of seconds.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["Render", "synthetic_cells", "synthetic_cells_3d", "synthetic_stack"]

# fraction of the image area covered by cells when n_cells is None
_DEFAULT_COVERAGE_2D = 0.25
_DEFAULT_COVERAGE_3D = 0.15
_MAX_ATTEMPTS = 200  # per cell
_MIN_PIXELS = 12  # an object keeps at least this many pixels inside the image


@dataclass(frozen=True)
class Render:
    """How a synthetic label image is turned into a microscopy-like image.

    background
        mean background level.
    gradient
        amplitude of the uneven background (linear ramp plus a slow wave).
    intensity
        (low, high) range of the per-cell mean brightness above background.
    texture
        relative amplitude of the smooth multiplicative texture inside cells.
    blur
        sigma (pixels, in-plane) of the Gaussian PSF; along Z it is divided by
        the anisotropy.
    photons
        expected photon count for intensity 1.0 (sets the Poisson noise).
    read_noise
        standard deviation of additive Gaussian noise.
    """

    background: float = 0.1
    gradient: float = 0.06
    intensity: tuple[float, float] = (0.35, 1.0)
    texture: float = 0.2
    blur: float = 1.0
    photons: float = 300.0
    read_noise: float = 0.01

    def __post_init__(self):
        lo, hi = self.intensity
        if not (0 <= lo <= hi):
            raise ValueError(f"Render.intensity must be (low, high) with 0 <= low <= high, got {self.intensity}")
        for name in ("background", "gradient", "texture", "blur", "read_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"Render.{name} must be >= 0, got {getattr(self, name)}")
        if self.photons <= 0:
            raise ValueError(f"Render.photons must be > 0, got {self.photons}")


def _make_render(render) -> Render:
    if render is None:
        return Render()
    if isinstance(render, Render):
        return render
    if isinstance(render, Mapping):
        known = {f.name for f in dataclasses.fields(Render)}
        unknown = set(render) - known
        if unknown:
            raise TypeError(f"unknown Render option(s) {sorted(unknown)}; known: {sorted(known)}")
        return Render(**render)
    raise TypeError(f"render must be a Render, a mapping or None, got {type(render).__name__}")


# --------------------------------------------------------------------------- shapes


@dataclass
class _Cell:
    center: np.ndarray  # physical coordinates (z scaled by anisotropy), float64 (nd,)
    inv_m: np.ndarray  # (nd, nd) quadratic form of the ellipse(oid): r_e(u) = 1/sqrt(u M u)
    w: np.ndarray  # (m, nd) lobe directions
    k: np.ndarray  # (m,) lobe orders
    a: np.ndarray  # (m,) lobe amplitudes
    rmax: float  # bound on r(u)
    brightness: float = 1.0

    def radius(self, u: np.ndarray) -> np.ndarray:
        """Boundary radius along unit vectors ``u`` (N, nd)."""
        q = np.einsum("ni,ij,nj->n", u, self.inv_m, u)
        r = 1.0 / np.sqrt(np.maximum(q, 1e-12))
        t = np.clip(u @ self.w.T, -1.0, 1.0)  # (N, m)
        lobes = np.cos(self.k[None, :] * np.arccos(t)) @ self.a
        return r * (1.0 + lobes)


def _random_rotation(rng: np.random.Generator, nd: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((nd, nd)))
    return q * np.sign(np.diag(r))[None, :]


def _random_unit(rng: np.random.Generator, nd: int, n: int | None = None) -> np.ndarray:
    v = rng.standard_normal((nd,) if n is None else (n, nd))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _random_cell(rng, nd: int, radius: tuple[float, float], elongation: float, wobble: float) -> _Cell:
    r0 = rng.uniform(*radius)
    # semi-axes with product r0**nd (same area/volume as the sphere of radius r0)
    e = rng.uniform(1.0, elongation)
    logs = np.zeros(nd)
    logs[0] = 0.5 * math.log(e)
    logs[1] = -0.5 * math.log(e)
    if nd == 3:
        logs[2] = rng.uniform(-0.25, 0.25) * math.log(e)
        logs -= logs.mean()
    axes = r0 * np.exp(logs)
    rot = _random_rotation(rng, nd)
    inv_m = rot @ np.diag(1.0 / axes**2) @ rot.T
    m = 3
    w = _random_unit(rng, nd, m)
    k = rng.integers(2, 6, size=m).astype(np.float64)
    a = rng.uniform(-1.0, 1.0, size=m) * wobble / m
    rmax = float(axes.max() * (1.0 + np.abs(a).sum()))
    return _Cell(center=np.zeros(nd), inv_m=inv_m, w=w, k=k, a=a, rmax=rmax)


@dataclass
class _Raster:
    sl: tuple  # slices into the image
    mask: np.ndarray  # bool, shape of the image region
    rho: np.ndarray  # float32 normalised radius |d|/r(u) on the region


def _rasterize(cell: _Cell, labels: np.ndarray, spacing: np.ndarray, label_id: int, *,
               clear_gap: float | None, min_keep: float) -> _Raster | None:
    """Try to draw ``cell`` into ``labels`` (in place). Returns None when rejected.

    clear_gap: if not None, reject when any other object lies within the shape
    grown by ``clear_gap`` pixels (non-touching placement); otherwise keep the
    free pixels visible from the centre. min_keep: minimal fraction of the full
    (unclipped, untruncated) shape that must be kept.
    """
    shape = np.array(labels.shape)
    nd = len(shape)
    c_vox = cell.center / spacing
    grow = clear_gap if clear_gap is not None else 0.0
    ext = (cell.rmax + grow + 1.0) / spacing
    lo = np.floor(c_vox - ext).astype(int)
    hi = np.ceil(c_vox + ext).astype(int) + 1
    ctr_idx = np.round(c_vox).astype(int)
    if np.any(ctr_idx < 0) or np.any(ctr_idx >= shape):
        return None
    clo = np.maximum(lo, 0)
    chi = np.minimum(hi, shape)
    img_sl = tuple(slice(int(a), int(b)) for a, b in zip(clo, chi))
    loc_sl = tuple(slice(int(a - l), int(b - l)) for a, b, l in zip(clo, chi, lo))
    bshape = tuple(int(x) for x in hi - lo)

    grids = np.meshgrid(*[np.arange(l, h, dtype=np.float64) for l, h in zip(lo, hi)], indexing="ij")
    d = np.stack([(g - c) * s for g, c, s in zip(grids, c_vox, spacing)], axis=-1).reshape(-1, nd)
    dist = np.sqrt((d * d).sum(axis=1))
    u = d / np.maximum(dist, 1e-9)[:, None]
    r = cell.radius(u)
    dist = dist.reshape(bshape)
    r = r.reshape(bshape)
    inside = dist <= r
    full = int(inside.sum())
    if full == 0:
        return None

    occ = np.zeros(bshape, dtype=bool)
    occ[loc_sl] = labels[img_sl] != 0
    inimg = np.zeros(bshape, dtype=bool)
    inimg[loc_sl] = True
    ctr_loc = tuple(int(x) for x in ctr_idx - lo)
    if occ[ctr_loc]:
        return None
    if clear_gap is not None:
        if (occ & (dist <= r + clear_gap)).any():
            return None
        cand = inside & inimg
    else:
        cand = inside & ~occ & inimg
        if (occ & inside).any():
            # keep only pixels whose segment to the centre crosses no other object
            pts = np.argwhere(cand)
            cl = c_vox - lo
            delta = pts - cl[None, :]
            n = int(np.ceil(np.abs(delta).max())) + 1
            if n > 1:
                s = np.arange(1, n, dtype=np.float64) / n
                samp = np.rint(cl[None, None, :] + s[:, None, None] * delta[None, :, :]).astype(np.intp)
                for ax in range(nd):
                    np.clip(samp[..., ax], 0, bshape[ax] - 1, out=samp[..., ax])
                shadowed = occ[tuple(samp[..., ax] for ax in range(nd))].any(axis=0)
                cand[tuple(pts[shadowed].T)] = False
            lab, _ = ndi.label(cand)
            if lab[ctr_loc] == 0:
                return None
            cand = lab == lab[ctr_loc]
    kept = int(cand.sum())
    if kept < max(_MIN_PIXELS, min_keep * full) and clear_gap is None:
        return None
    if kept < _MIN_PIXELS or kept < 0.3 * full:  # too little visible inside the image
        return None
    mask = cand[loc_sl]
    labels[img_sl][mask] = label_id
    rho = (dist / np.maximum(r, 1e-9))[loc_sl].astype(np.float32)
    return _Raster(sl=img_sl, mask=mask, rho=rho)


# --------------------------------------------------------------------------- placement


def _check_common(shape, radius, touching, noise, nd, what):
    shape = tuple(int(s) for s in shape)
    if len(shape) != nd:
        raise ValueError(f"{what}: shape must have {nd} dimensions, got {shape}")
    if min(shape) < 8:
        raise ValueError(f"{what}: every dimension must be at least 8 pixels, got {shape}")
    try:
        rlo, rhi = (float(radius[0]), float(radius[1]))
    except (TypeError, IndexError):
        rlo = rhi = float(radius)
    if not (1.5 <= rlo <= rhi):
        raise ValueError(f"{what}: radius must be (low, high) with 1.5 <= low <= high, got {radius}")
    if not (0.0 <= touching <= 1.0):
        raise ValueError(f"{what}: touching must be in [0, 1], got {touching}")
    if noise < 0:
        raise ValueError(f"{what}: noise must be >= 0, got {noise}")
    return shape, (rlo, rhi)


def _default_n(shape, radius, spacing, coverage):
    lo, hi = radius
    nd = len(shape)
    # E[R^nd] for R ~ U(lo, hi)
    er = (hi ** (nd + 1) - lo ** (nd + 1)) / ((nd + 1) * (hi - lo)) if hi > lo else lo**nd
    unit = math.pi if nd == 2 else 4.0 / 3.0 * math.pi
    mean_vox = unit * er / float(np.prod(spacing))
    return max(1, int(round(coverage * float(np.prod(shape)) / mean_vox)))


def _place_cells(rng, shape, spacing, n_cells, radius, touching, elongation, wobble, gap):
    nd = len(shape)
    labels = np.zeros(shape, dtype=np.int32)
    extent = np.array(shape, dtype=np.float64) * spacing
    cells: list[_Cell] = []
    rasters: list[_Raster] = []
    for i in range(n_cells):
        placed = False
        for attempt in range(_MAX_ATTEMPTS):
            cell = _random_cell(rng, nd, radius, elongation, wobble)
            # fall back to touching placement when free space is hard to find
            touch = bool(cells) and (rng.random() < touching or attempt >= 30)
            if touch:
                j = int(rng.integers(len(cells)))
                u = _random_unit(rng, nd)
                rj = float(cells[j].radius(u[None])[0])
                r0 = float(cell.radius(-u[None])[0])
                cell.center = cells[j].center + u * (rj + rng.uniform(0.5, 0.9) * r0)
                if np.any(cell.center < 0) or np.any(cell.center >= extent - 1e-6):
                    continue
                ras = _rasterize(cell, labels, spacing, i + 1, clear_gap=None, min_keep=0.5)
            else:
                cell.center = rng.uniform(0.0, 1.0, size=nd) * (extent - 1e-6)
                ras = _rasterize(cell, labels, spacing, i + 1, clear_gap=gap, min_keep=1.0)
            if ras is not None:
                cells.append(cell)
                rasters.append(ras)
                placed = True
                break
        if not placed:
            raise ValueError(
                f"could place only {i} of {n_cells} cells in an image of shape {tuple(shape)} "
                f"with radius {radius}; lower n_cells or radius, or enlarge the image"
            )
    return labels, cells, rasters


# --------------------------------------------------------------------------- rendering


def _render(rng, labels, cells, rasters, spacing, render: Render, noise: float) -> np.ndarray:
    shape = labels.shape
    nd = len(shape)
    prof = np.zeros(shape, dtype=np.float32)
    for cell, ras in zip(cells, rasters):
        region = prof[ras.sl]
        region[ras.mask] = cell.brightness * (1.0 - 0.3 * np.minimum(ras.rho[ras.mask], 1.0) ** 2)
    if render.texture > 0:
        tex = rng.standard_normal(shape).astype(np.float32)
        tex = ndi.gaussian_filter(tex, sigma=[2.0 / s for s in spacing])
        tex /= max(float(tex.std()), 1e-6)
        prof *= np.maximum(1.0 + render.texture * tex, 0.0)
    # uneven background: a ramp along a random direction and a slow wave
    coords = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape], indexing="ij", sparse=True)
    dirn = _random_unit(rng, nd)
    freq = rng.uniform(0.5, 1.5, size=nd) * math.pi
    phase = rng.uniform(0, 2 * math.pi)
    ramp = sum(float(dirn[i]) * coords[i] for i in range(nd))
    wave = np.cos(sum(float(freq[i]) * coords[i] for i in range(nd)) + phase)
    bg = render.background + render.gradient * (ramp + 0.5 * wave)
    clean = np.maximum(bg.astype(np.float32) + prof, 0.0)
    if render.blur > 0:
        clean = ndi.gaussian_filter(clean, sigma=[render.blur / s for s in spacing])
    clean = np.maximum(clean, 0.0)
    if noise > 0:
        eff = render.photons / noise**2
        img = rng.poisson(clean.astype(np.float64) * eff).astype(np.float32) / np.float32(eff)
        if render.read_noise > 0:
            img += rng.normal(0.0, render.read_noise * noise, size=shape).astype(np.float32)
        return img
    return clean.astype(np.float32)


def _make_rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def _generate(shape, spacing, n_cells, radius, seed, touching, noise, render, elongation, wobble, gap, coverage):
    render = _make_render(render)
    rng = _make_rng(seed)
    spacing = np.asarray(spacing, dtype=np.float64)
    if n_cells is None:
        n_cells = _default_n(shape, radius, spacing, coverage)
    n_cells = int(n_cells)
    if n_cells < 0:
        raise ValueError(f"n_cells must be >= 0, got {n_cells}")
    labels, cells, rasters = _place_cells(rng, shape, spacing, n_cells, radius, touching, elongation, wobble, gap)
    for c in cells:
        c.brightness = float(rng.uniform(*render.intensity))
    image = _render(rng, labels, cells, rasters, spacing, render, noise)
    return image, labels, cells, rng, render


def _check_shape_knobs(elongation, wobble, gap):
    if elongation < 1:
        raise ValueError(f"elongation must be >= 1, got {elongation}")
    if not (0 <= wobble <= 0.6):
        raise ValueError(f"wobble must be in [0, 0.6], got {wobble}")
    if gap < 1:
        raise ValueError(f"gap must be >= 1 pixel, got {gap}")


def synthetic_cells(
    shape: Sequence[int] = (256, 256),
    n_cells: int | None = None,
    radius: tuple[float, float] = (6, 14),
    seed: int | np.random.Generator | None = 0,
    touching: float = 0.3,
    noise: float = 1.0,
    *,
    render: Render | Mapping | None = None,
    elongation: float = 1.6,
    wobble: float = 0.15,
    gap: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2D image of nuclei-like cells and its int32 label image.

    Parameters
    ----------
    shape : (Y, X)
    n_cells : number of objects (exactly; ``None``: about 25 % of the area
        covered). Raises ``ValueError`` when they do not fit.
    radius : (low, high) equivalent radius range in pixels (uniform).
    seed : int, ``np.random.Generator`` or None. Same seed, same result.
    touching : probability that a new cell is placed against an existing one
        (so roughly ``touching``–``2*touching`` of the cells touch a neighbour;
        0 gives cells separated by at least ``gap`` pixels).
    noise : scale of the Poisson + Gaussian noise (0: noise-free, 2: twice as
        noisy).
    render : :class:`Render` knobs (or a mapping of them).
    elongation : maximal ratio of the ellipse axes (>= 1).
    wobble : amplitude of the smooth boundary lobes (0 = pure ellipses).
    gap : minimal distance in pixels between cells placed as non-touching.

    Returns
    -------
    image : float32 (Y, X), labels : int32 (Y, X) with ids ``1..n_cells``.
    """
    shape, radius = _check_common(shape, radius, touching, noise, 2, "synthetic_cells")
    _check_shape_knobs(elongation, wobble, gap)
    image, labels, *_ = _generate(shape, (1.0, 1.0), n_cells, radius, seed, touching, noise, render,
                                  elongation, wobble, gap, _DEFAULT_COVERAGE_2D)
    return image, labels


def synthetic_cells_3d(
    shape: Sequence[int] = (32, 128, 128),
    n_cells: int | None = None,
    radius: tuple[float, float] = (6, 14),
    anisotropy: float = 2.0,
    seed: int | np.random.Generator | None = 0,
    touching: float = 0.3,
    noise: float = 1.0,
    *,
    render: Render | Mapping | None = None,
    elongation: float = 1.4,
    wobble: float = 0.12,
    gap: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 3D (Z, Y, X) image of nuclei-like cells and its int32 label image.

    ``radius`` is in in-plane pixels; ``anisotropy`` is the Z step over the XY
    pixel size (2.0: a sphere spans half as many slices as pixels in Y). Other
    parameters as in :func:`synthetic_cells` (``n_cells=None``: about 15 % of
    the volume covered). Star-convexity holds in physical (anisotropy-scaled)
    coordinates.
    """
    shape, radius = _check_common(shape, radius, touching, noise, 3, "synthetic_cells_3d")
    if not anisotropy > 0:
        raise ValueError(f"anisotropy must be > 0, got {anisotropy}")
    _check_shape_knobs(elongation, wobble, gap)
    image, labels, *_ = _generate(shape, (float(anisotropy), 1.0, 1.0), n_cells, radius, seed, touching, noise,
                                  render, elongation, wobble, gap, _DEFAULT_COVERAGE_3D)
    return image, labels


def synthetic_stack(
    n_frames: int = 5,
    shape: Sequence[int] = (256, 256),
    n_cells: int | None = None,
    radius: tuple[float, float] = (6, 14),
    seed: int | np.random.Generator | None = 0,
    touching: float = 0.3,
    noise: float = 1.0,
    *,
    motion: float = 1.5,
    render: Render | Mapping | None = None,
    elongation: float = 1.6,
    wobble: float = 0.15,
    gap: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A (T, Y, X) time-lapse of slowly moving cells with consistent ids.

    Frame 0 is made like :func:`synthetic_cells`. In each following frame every
    cell's centre moves by a Gaussian step of ``motion`` pixels (standard
    deviation per axis, kept inside the image) and cells are redrawn in the
    same order, so a cell that moves into a neighbour is flattened against it
    (never overlapping). Cell ``k`` has id ``k`` in every frame where it is
    visible; a cell whose centre ends up inside another one is absent from that
    frame (rare). Cells keep their brightness; texture and noise are redrawn.

    Returns images float32 (T, Y, X) and labels int32 (T, Y, X).
    """
    shape, radius = _check_common(shape, radius, touching, noise, 2, "synthetic_stack")
    _check_shape_knobs(elongation, wobble, gap)
    n_frames = int(n_frames)
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if motion < 0:
        raise ValueError(f"motion must be >= 0, got {motion}")
    spacing = np.ones(2)
    image, labels, cells, rng, knobs = _generate(shape, spacing, n_cells, radius, seed, touching, noise, render,
                                                 elongation, wobble, gap, _DEFAULT_COVERAGE_2D)
    images = np.empty((n_frames, *shape), dtype=np.float32)
    labs = np.empty((n_frames, *shape), dtype=np.int32)
    images[0], labs[0] = image, labels
    extent = np.array(shape, dtype=np.float64)
    for t in range(1, n_frames):
        lab = np.zeros(shape, dtype=np.int32)
        kept_cells, rasters = [], []
        for i, cell in enumerate(cells):
            old = cell.center.copy()
            cell.center = np.clip(old + rng.normal(0.0, motion, size=2), 0.0, extent - 1e-6)
            ras = _rasterize(cell, lab, spacing, i + 1, clear_gap=None, min_keep=0.0)
            if ras is None:  # moved into a neighbour: try staying in place
                cell.center = old
                ras = _rasterize(cell, lab, spacing, i + 1, clear_gap=None, min_keep=0.0)
            if ras is not None:
                kept_cells.append(cell)
                rasters.append(ras)
        images[t] = _render(rng, lab, kept_cells, rasters, spacing, knobs, noise)
        labs[t] = lab
    return images, labs
