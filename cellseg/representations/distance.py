"""Distance-map representation (Naylor et al. 2019 style), 2D and 3D.

Heads
-----
``dist`` (1 channel, sigmoid)
    For every object pixel, the Euclidean distance to the nearest pixel that
    does not belong to the same object (background *or* a touching neighbour),
    divided by the maximum of that distance over the object, so every object
    peaks at exactly 1.0 and falls towards ``1/max`` on its outline; 0 on
    background. Distances use physical spacing: in 3D the Z step is
    ``anisotropy`` times the Y/X pixel size. The image border is *not* an
    object boundary (an object cut by the crop continues beyond it; the
    convention of StarDist's ``edt_prob``), except in the degenerate image
    that is one single object everywhere, where the border is used.
``fg`` (1 channel, sigmoid)
    Foreground probability (1 on any object, 0 on background).

Decoding (:meth:`DistanceMap.decode`, knobs in :class:`DistanceParams`)
-------------------------------------------------------------------------
1. foreground = ``fg > fg_thresh``;
2. the distance map is smoothed with a Gaussian of ``smooth_sigma`` pixels
   (Z sigma divided by ``anisotropy``) and set to 0 off the foreground;
3. markers = the h-maxima of the smoothed map (regional maxima with a dynamic
   of at least ``h``; :func:`h_maxima`, a numba union-find that gives what
   :func:`skimage.morphology.h_maxima` gives, several times faster) on the foreground
   where the map exceeds ``marker_thresh``; marker pieces whose closest pixels
   are at most ``min_distance`` apart (physical units) form one marker
   (``0``: no merging);
4. marker-based watershed of the negated map restricted to the foreground
   (numba priority flood, face connectivity; foreground pieces that hold no
   marker stay background);
5. objects smaller than ``min_size`` pixels are removed, ids made 1..n.

Thresholds are compared at float32 precision, the precision of the outputs.
``scores[i-1]`` is the mean foreground probability over object ``i``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cellseg.labels import as_labels, sequential
from cellseg.representations._params import document, knob, validate
from cellseg.representations.base import Decoded, HeadSpec, Representation, check_outputs

__all__ = ["DistanceMap", "DistanceParams", "normalized_distance", "watershed", "h_maxima"]


@document
@dataclass(frozen=True)
class DistanceParams:
    """Decoder knobs of :class:`DistanceMap` (see the module docstring)."""

    fg_thresh: float = knob(0.5, ge=0.0, lt=1.0, tune=(0.1, 0.9, 9), cli="--prob-thresh",
                            help="foreground probability threshold: a pixel is foreground iff fg > fg_thresh")
    smooth_sigma: float = knob(1.0, ge=0.0, help="Gaussian smoothing of the distance map (pixels; 0: none)")
    h: float = knob(0.3, gt=0.0, help="markers are the h-maxima of the smoothed map: maxima with a dynamic >= h")
    marker_thresh: float = knob(0.3, ge=0.0, lt=1.0, tune=(0.1, 0.8, 5),
                                help="markers lie where the smoothed distance map exceeds it")
    min_distance: float = knob(0.0, ge=0.0, off=0.0,
                               help="marker pieces at most this far apart (physical units) form one marker "
                                    "(0: no merging)")
    min_size: int = knob(10, ge=0, off=0, help="objects with fewer pixels are removed")

    def __post_init__(self):
        validate(self)


def _spacing(ndim: int, anisotropy: float) -> np.ndarray:
    return np.array([anisotropy, 1.0, 1.0] if ndim == 3 else [1.0, 1.0, 1.0], np.float64)


def _as3d(a: np.ndarray) -> np.ndarray:
    return a[None] if a.ndim == 2 else a


def normalized_distance(labels: np.ndarray, anisotropy: float = 1.0) -> np.ndarray:
    """Per-object distance to the object boundary, divided by its maximum.

    labels : integer label image (2D or 3D, any integer dtype, non-sequential
        ids fine). Returns float32 of the same shape in [0, 1]: 0 on
    background, exactly 1.0 at the innermost pixel(s) of every object. In 3D,
    the Z step counts ``anisotropy`` Y/X pixels. See the module docstring for
    the border convention.
    """
    from cellseg.representations._distance_kernels import label_edt_sq, object_max

    lab = as_labels(labels, ndim=(2, 3))
    if not anisotropy > 0:
        raise ValueError(f"anisotropy must be > 0, got {anisotropy}")
    seq, n = sequential(lab)
    if n == 0:
        return np.zeros(lab.shape, np.float32)
    seq3 = np.ascontiguousarray(_as3d(seq))
    spacing = _spacing(lab.ndim, anisotropy)
    d2 = label_edt_sq(seq3, spacing)
    if np.isinf(d2).any():
        # the whole image is one object: the image border is its boundary
        padded = np.pad(seq3, [(0, 0) if (k == 0 and seq3.shape[0] == 1) else (1, 1) for k in range(3)])
        d2 = label_edt_sq(np.ascontiguousarray(padded), spacing)
        sl = tuple(slice(0, 1) if (k == 0 and seq3.shape[0] == 1) else slice(1, -1) for k in range(3))
        d2 = np.ascontiguousarray(d2[sl])
    d = np.sqrt(d2)
    mx = object_max(seq3, d, n)
    mx[0] = 1.0
    out = d / mx[seq3]
    return out.reshape(lab.shape).astype(np.float32)


def watershed(image: np.ndarray, markers: np.ndarray, mask: np.ndarray | None = None,
              connectivity: int = 1) -> np.ndarray:
    """Marker-based watershed of ``image`` (flooded from low to high values).

    Same semantics as ``skimage.segmentation.watershed(image, markers,
    mask=mask, connectivity=connectivity)`` for ``connectivity`` 1 (faces) or
    ``image.ndim`` (full): markers outside the mask are dropped, mask pixels not
    reachable from a marker stay 0, ties between equal values are flooded first
    in first out. Returns int32 labels.
    """
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be 2D or 3D, got shape {img.shape}")
    if not np.issubdtype(img.dtype, np.number) or np.issubdtype(img.dtype, np.complexfloating):
        raise TypeError(f"image must be real numeric, got {img.dtype}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or infinite values")
    mk = as_labels(markers, name="markers")
    if mk.shape != img.shape:
        raise ValueError(f"markers shape {mk.shape} != image shape {img.shape}")
    if mask is None:
        m = np.ones(img.shape, np.uint8)
    else:
        m = np.asarray(mask)
        if m.shape != img.shape:
            raise ValueError(f"mask shape {m.shape} != image shape {img.shape}")
        m = m.view(np.uint8) if m.dtype == bool else (m != 0).view(np.uint8)
    if connectivity not in (1, img.ndim):
        raise ValueError(f"connectivity must be 1 or {img.ndim}, got {connectivity}")
    return _watershed(np.asarray(img, np.float64), mk, m, connectivity != 1)


def _watershed(img: np.ndarray, markers: np.ndarray, mask: np.ndarray, full: bool) -> np.ndarray:
    """Kernel call on validated arrays: float64 image, int32 markers, uint8/bool mask."""
    from cellseg.representations._distance_kernels import watershed_flood

    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    out = watershed_flood(
        np.ascontiguousarray(_as3d(img)),
        np.ascontiguousarray(_as3d(markers)),
        np.ascontiguousarray(_as3d(mask)),
        bool(full),
    )
    return out.reshape(img.shape)


def h_maxima(image: np.ndarray, h: float, connectivity: int | None = None) -> np.ndarray:
    """Binary mask (bool) of the h-maxima of a 2D/3D image.

    A pixel ``x`` is in the mask iff ``f(x)`` is the maximum of the connected
    component of ``{f > f(x) - h}`` containing it, i.e. the regional maxima of
    the reconstruction by dilation of ``f - h`` under ``f`` (what
    :func:`skimage.morphology.h_maxima` returns, without its float-resolution
    slack: a maximum whose dynamic is exactly ``h`` is kept). ``connectivity``:
    1 (faces) or ``image.ndim`` (default, all neighbours, like skimage). All
    False when ``h`` exceeds the image's value range.
    """
    from cellseg.representations._distance_kernels import hmaxima

    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be 2D or 3D, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise TypeError(f"image must be real numeric, got {img.dtype}")
    h = float(h)
    if not h > 0:
        raise ValueError(f"h must be > 0, got {h}")
    connectivity = img.ndim if connectivity is None else connectivity
    if connectivity not in (1, img.ndim):
        raise ValueError(f"connectivity must be 1 or {img.ndim}, got {connectivity}")
    f = np.ascontiguousarray(_as3d(img), np.float64)
    if f.size == 0:
        return np.zeros(img.shape, bool)
    if not np.all(np.isfinite(f)):
        raise ValueError("image contains NaN or infinite values")
    flat = f.ravel()
    lo = flat.min()
    if h > float(flat.max()) - float(lo):
        return np.zeros(img.shape, bool)
    idx = np.flatnonzero(flat > lo)
    order = idx[np.argsort(-flat[idx], kind="stable")].astype(np.int64)
    out = hmaxima(f, order, h, connectivity != 1)
    return out.reshape(img.shape).astype(bool)


class DistanceMap(Representation):
    """Normalized distance map + foreground → markers → watershed.

    Parameters
    ----------
    ndim : 2 or 3 spatial dimensions.
    anisotropy : Z step over the Y/X pixel size (3D only; must be 1.0 in 2D).
    """

    name = "distance"
    Params = DistanceParams
    ndims = (2, 3)

    def __init__(self, ndim: int = 2, anisotropy: float = 1.0):
        if ndim not in self.ndims:
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        anisotropy = float(anisotropy)
        if not anisotropy > 0 or not np.isfinite(anisotropy):
            raise ValueError(f"anisotropy must be a positive number, got {anisotropy}")
        if ndim == 2 and anisotropy != 1.0:
            raise ValueError("anisotropy applies to 3D only (Z spacing); use 1.0 in 2D")
        self.ndim = int(ndim)
        self.anisotropy = anisotropy

    def config(self) -> dict[str, Any]:
        return {"ndim": self.ndim, "anisotropy": self.anisotropy}

    def heads(self) -> tuple[HeadSpec, ...]:
        return (HeadSpec("dist", 1, "sigmoid"), HeadSpec("fg", 1, "sigmoid"))

    def encode(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Targets: ``dist`` (1, *spatial) normalized distance, ``fg`` (1, *spatial)
        foreground (1.0 / 0.0), both float32."""
        lab = as_labels(labels, ndim=self.ndim)
        dist = normalized_distance(lab, self.anisotropy)
        return {"dist": dist[None], "fg": (lab > 0).astype(np.float32)[None]}

    def oracle_outputs(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """What a perfect network outputs: the encoded targets themselves."""
        return self.encode(labels)

    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None) -> Decoded:
        p = self.params(params)
        out = check_outputs(outputs, self.heads(), ndim=self.ndim)
        fgp = out["fg"][0]
        dist = out["dist"][0].astype(np.float64)
        fg = fgp > np.float32(p.fg_thresh)
        if p.smooth_sigma > 0:
            from scipy import ndimage as ndi  # scipy loads at the first decode, not at import

            sig = (p.smooth_sigma / self.anisotropy, p.smooth_sigma, p.smooth_sigma)[-self.ndim:]
            dist = ndi.gaussian_filter(dist, sigma=sig, mode="nearest")
        dist = np.where(fg, dist, 0.0)
        markers = self._markers(dist, fg, p)
        lab = _watershed(-dist, markers, fg, False)
        if p.min_size > 0 and lab.max() > 0:
            counts = np.bincount(lab.ravel())
            small = counts < p.min_size
            small[0] = False
            lab[small[lab]] = 0
        lab, n = sequential(lab)
        if n:
            sums = np.bincount(lab.ravel(), weights=fgp.ravel().astype(np.float64), minlength=n + 1)
            cnt = np.bincount(lab.ravel(), minlength=n + 1)
            scores = (sums[1:] / cnt[1:]).astype(np.float32)
        else:
            scores = np.zeros(0, np.float32)
        return Decoded(lab.astype(np.int32), scores, {"markers": markers})

    def _markers(self, dist: np.ndarray, fg: np.ndarray, p: DistanceParams) -> np.ndarray:
        if not fg.any():
            return np.zeros(dist.shape, np.int32)
        from scipy import ndimage as ndi

        cand = h_maxima(dist, p.h) & fg & (dist > float(np.float32(p.marker_thresh)))
        full = ndi.generate_binary_structure(dist.ndim, dist.ndim)
        markers, n = ndi.label(cand, structure=full)
        if p.min_distance > 0 and n > 1:
            from scipy.sparse import coo_matrix
            from scipy.sparse.csgraph import connected_components
            from scipy.spatial import cKDTree

            spacing = _spacing(self.ndim, self.anisotropy)[-self.ndim:]
            where = np.argwhere(cand)
            piece = markers[tuple(where.T)] - 1
            pairs = cKDTree(where * spacing).query_pairs(r=float(p.min_distance), output_type="ndarray")
            if len(pairs):
                a, b = piece[pairs[:, 0]], piece[pairs[:, 1]]
                graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
                _, comp = connected_components(graph, directed=False)
                # renumber merged pieces 1..m in order of first piece
                _, first = np.unique(comp, return_index=True)
                rank = np.empty(len(first), np.int32)
                rank[np.argsort(first)] = np.arange(1, len(first) + 1, dtype=np.int32)
                lut = np.zeros(n + 1, np.int32)
                lut[1:] = rank[comp]
                markers = lut[markers]
        return markers.astype(np.int32)
