"""Spatial-embedding offsets with seediness (Neven et al. 2019 / EmbedSeg), 2D and 3D.

Coordinates
-----------
A pixel at array index ``(z, y, x)`` has the *physical* position
``p = (z * anisotropy, y, x)`` (2D: ``(y, x)``) and the normalized position
``u = p / scale`` (``scale`` = 1024 by default, like EmbedSeg's grid where 1.0
spans 1024 pixels). Every instance has a centre ``c`` (normalized), the
*medoid* of its pixels: the pixel minimising the sum of Euclidean distances
(physical units) to all its pixels (ties, as far as the float64 sums tell
them apart: lowest raster index); unlike the centroid it always lies on the
object.

Heads (activated outputs, channel order = array axis order Z, Y, X)
-------------------------------------------------------------------
``offset`` (ndim channels, tanh)
    ``c - u``: pixel-to-centre vector in normalized units (an offset of
    ``o`` is ``o * scale`` pixels; tanh bounds it to ``scale`` pixels). The
    embedding of a pixel is ``e = u + offset``.
``sigma`` (ndim channels, identity)
    Per-axis margin parameter. The Gaussian of an instance with centre ``c``
    scores an embedding ``e`` as ``phi(e) = exp(-sum_d exp(10 sigma_d)
    (e_d - c_d)**2)``; ``phi > 0.5`` inside the ellipsoid of semi-axes
    ``scale * sqrt(ln 2 / exp(10 sigma_d))`` pixels (see :func:`sigma_for_radius`).
``seed`` (1 channel, sigmoid)
    Seediness: trained to equal ``phi`` of the pixel's own embedding on
    foreground, 0 on background; also the foreground mask (``seed >
    fg_thresh``) of the decoder.

Decoding (:meth:`Offsets.decode`, :class:`OffsetsParams`)
-------------------------------------------------------
Greedy clustering: mask = ``seed > fg_thresh`` (nothing if the mask has at most
``min_mask_sum`` pixels). While more than ``min_unclustered_sum`` mask pixels are
unclustered: the unclustered pixel with the highest seed (ties: lowest raster
index) is the seed; stop when its score is below ``seed_thresh``. Its embedding
and ``sigma`` define a Gaussian; the proposal is every mask pixel whose
embedding scores above 0.5 (computed as ``sum_d ... < ln 2``). The proposal is
accepted as a new object when its not yet clustered pixels number at least
``min_size`` and are more than ``new_fraction`` of the proposal; an object
takes only the not yet clustered pixels (earlier objects are never
overwritten). Either way all proposal pixels are marked clustered.
Thresholds are compared at float32 precision, the precision of the outputs
(``seed_thresh=0.7`` accepts a seed stored as ``float32(0.7)``).
``scores[i-1]`` is the seed score of object ``i``'s seed; ``extra`` holds
``seeds`` (array indices of the seed pixels, (n, ndim)) and ``centers``
(embedding of each seed in array index units, (n, ndim)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from cellseg.labels import as_labels, sequential
from cellseg.representations._params import document, knob, validate
from cellseg.representations.base import Decoded, HeadSpec, Representation, check_outputs

__all__ = ["Offsets", "OffsetsParams", "medoids", "sigma_for_radius", "radius_for_sigma", "SIGMA_GAIN"]

#: margins are exp(SIGMA_GAIN * sigma) (Neven et al. 2019 use 10)
SIGMA_GAIN = 10.0
_LN2 = math.log(2.0)


@document
@dataclass(frozen=True)
class OffsetsParams:
    """Decoder knobs of :class:`Offsets` (see the module docstring)."""

    seed_thresh: float = knob(0.5, ge=0.0, le=1.0, tune=(0.1, 0.9, 9),
                              help="clustering stops at the first seed scoring below it")
    fg_thresh: float = knob(0.5, ge=0.0, lt=1.0, tune=(0.1, 0.9, 5), cli="--prob-thresh",
                            help="foreground threshold: the mask is seed > fg_thresh")
    min_size: int = knob(10, ge=0, help="a proposal becomes an object with at least this many new pixels")
    min_unclustered_sum: int = knob(0, ge=0, help="clustering stops when at most this many mask pixels are left")
    min_mask_sum: int = knob(0, ge=0, help="nothing is found when the mask has at most this many pixels")
    new_fraction: float = knob(0.5, ge=0.0, lt=1.0,
                               help="a proposal becomes an object when more than this fraction of it is new")

    def __post_init__(self):
        validate(self)


def sigma_for_radius(radius_px, scale: float = 1024.0):
    """``sigma`` whose Gaussian is 0.5 at ``radius_px`` pixels from the centre."""
    r = np.asarray(radius_px, np.float64) / scale
    return np.log(_LN2 / r ** 2) / SIGMA_GAIN


def radius_for_sigma(sigma, scale: float = 1024.0):
    """Inverse of :func:`sigma_for_radius` (pixels)."""
    return scale * np.sqrt(_LN2 / np.exp(SIGMA_GAIN * np.asarray(sigma, np.float64)))


def _as3d(a):
    return a[None] if a.ndim == 2 else a


def medoids(labels: np.ndarray, anisotropy: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Medoid of every object of a 2D/3D label image.

    Returns ``(ids, coords)``: the object ids in increasing order (int64) and
    the array index of each one's medoid (int64 ``(n, ndim)``). The medoid
    minimises the sum of Euclidean distances, with the Z step counting
    ``anisotropy`` pixels, to the object's pixels; ties go to the lowest
    raster index.
    """
    from cellseg.representations._offsets_kernels import medoids as kernel

    lab = as_labels(labels, ndim=(2, 3))
    if not anisotropy > 0:
        raise ValueError(f"anisotropy must be > 0, got {anisotropy}")
    seq, n = sequential(lab)
    if n == 0:
        return np.zeros(0, np.int64), np.zeros((0, lab.ndim), np.int64)
    ids = np.unique(lab[lab > 0]).astype(np.int64)
    spacing = np.array([anisotropy, 1.0, 1.0] if lab.ndim == 3 else [1.0, 1.0, 1.0])
    flat = kernel(np.ascontiguousarray(_as3d(seq)), n, spacing)
    coords = np.stack(np.unravel_index(flat, lab.shape), axis=1).astype(np.int64)
    return ids, coords


class Offsets(Representation):
    """Offsets to instance medoids + per-axis margins + seediness.

    Parameters
    ----------
    ndim : 2 or 3 spatial dimensions.
    anisotropy : Z step over the Y/X pixel size (3D only).
    scale : pixels per normalized unit (default 1024; offsets reach at most
        ``scale`` pixels).
    """

    name = "offsets"
    Params = OffsetsParams
    ndims = (2, 3)
    vector_heads = {"offset": True, "sigma": False}

    def __init__(self, ndim: int = 2, anisotropy: float = 1.0, scale: float = 1024.0):
        if ndim not in self.ndims:
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        anisotropy = float(anisotropy)
        scale = float(scale)
        if not (anisotropy > 0 and np.isfinite(anisotropy)):
            raise ValueError(f"anisotropy must be a positive number, got {anisotropy}")
        if ndim == 2 and anisotropy != 1.0:
            raise ValueError("anisotropy applies to 3D only (Z spacing); use 1.0 in 2D")
        if not (scale > 0 and np.isfinite(scale)):
            raise ValueError(f"scale must be a positive number, got {scale}")
        self.ndim = int(ndim)
        self.anisotropy = anisotropy
        self.scale = scale

    def config(self) -> dict[str, Any]:
        return {"ndim": self.ndim, "anisotropy": self.anisotropy, "scale": self.scale}

    def heads(self) -> tuple[HeadSpec, ...]:
        return (
            HeadSpec("offset", self.ndim, "tanh", bias_init=0.0),
            # margins start at exp(SIGMA_GAIN * 1): a radius of ~6 px at scale 1024; with torch's
            # default init (sigma ~ 0) every pixel of a patch lies inside every margin and the
            # Lovász hinge starts on a plateau (seen: no object found after 5 epochs)
            HeadSpec("sigma", self.ndim, "identity", bias_init=1.0),
            HeadSpec("seed", 1, "sigmoid"),
        )

    # ------------------------------------------------------------ geometry
    @property
    def spacing(self) -> np.ndarray:
        """Physical step per array axis."""
        return np.array([self.anisotropy, 1.0, 1.0][-self.ndim:] if self.ndim == 3 else [1.0, 1.0])

    def grid(self, shape) -> np.ndarray:
        """Normalized coordinates ``u`` of every pixel: float32 ``(ndim, *shape)``."""
        axes = [np.arange(s, dtype=np.float64) * sp / self.scale for s, sp in zip(shape, self.spacing)]
        return np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)

    # ------------------------------------------------------------ encode
    def _encode(self, lab):
        seq, n = sequential(lab)
        nd = self.ndim
        offset = np.zeros((nd, *lab.shape), np.float32)
        center = np.zeros((1, *lab.shape), np.float32)
        centres = np.zeros((n, nd), np.float64)
        if n:
            _, coords = medoids(seq, self.anisotropy)
            centres = coords * self.spacing  # physical
            fg = seq > 0
            idx = np.nonzero(fg)
            k = seq[fg] - 1
            for d in range(nd):
                offset[d][fg] = ((centres[k, d] - idx[d] * self.spacing[d]) / self.scale).astype(np.float32)
            center[0][tuple(coords.T)] = 1.0
            if np.abs(offset).max() >= 1.0:
                raise ValueError(
                    f"an object spans more than scale={self.scale} pixels from its medoid; "
                    "offsets in tanh units cannot reach it (increase scale)"
                )
        return seq, n, offset, center, centres

    def encode(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Build the targets, all float32 channel-first.

        * ``offset`` (ndim, *sp): ``c - u`` per object pixel (normalized units), 0 on background;
        * ``instance`` (1, *sp): object ids relabelled 1..n (increasing original
          id), 0 background (exact in float32 up to 2**24 objects);
        * ``center`` (1, *sp): 1.0 at each object's medoid pixel.

        The loss (:mod:`cellseg.train.losses_offsets`) recovers each centre as
        ``u + offset`` averaged over the object, which stays right in crops that
        cut the medoid away; the seediness target is computed in the loss.
        """
        lab = as_labels(labels, ndim=self.ndim)
        seq, n, offset, center, _ = self._encode(lab)
        if n >= 2**24:
            raise ValueError("more than 2**24 objects cannot be stored exactly as float32 ids")
        return {"offset": offset, "instance": seq.astype(np.float32)[None], "center": center}

    def oracle_outputs(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """What a perfect network outputs.

        ``offset`` = the encoded offsets; ``sigma`` = per object, the same value
        on all axes giving a margin radius ``r = min(R, d/2)`` pixels (``R`` the
        equivalent radius of the object, ``d`` the distance to the nearest
        other medoid; at least 0.5), 0 on background; ``seed`` = the Gaussian
        score of each pixel's embedding around its own centre (the seediness
        target: ~1.0 on objects), 0 on background.
        """
        lab = as_labels(labels, ndim=self.ndim)
        seq, n, offset, _, centres = self._encode(lab)
        nd = self.ndim
        sigma = np.zeros((nd, *lab.shape), np.float32)
        seed = np.zeros((1, *lab.shape), np.float32)
        if n:
            counts = np.bincount(seq.ravel(), minlength=n + 1)[1:].astype(np.float64)
            vol = counts * float(np.prod(self.spacing))
            R = np.sqrt(vol / np.pi) if nd == 2 else np.cbrt(3 * vol / (4 * np.pi))
            if n > 1:
                from scipy.spatial import cKDTree

                dnn = cKDTree(centres).query(centres, k=2)[0][:, 1]
            else:
                dnn = np.full(n, np.inf)
            r = np.maximum(np.minimum(R, dnn / 2), 0.5)
            sig = sigma_for_radius(r, self.scale).astype(np.float32)
            fg = seq > 0
            k = seq[fg] - 1
            sigma[:, fg] = sig[k][None]
            u = self.grid(lab.shape)
            e = u[:, fg].astype(np.float64) + offset[:, fg]
            c = centres[k].T / self.scale
            margin = np.exp(SIGMA_GAIN * sig[k].astype(np.float64))
            seed[0][fg] = np.exp(-margin * ((e - c) ** 2).sum(0)).astype(np.float32)
        return {"offset": offset, "sigma": sigma, "seed": seed}

    # ------------------------------------------------------------ decode
    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None) -> Decoded:
        from cellseg.representations._offsets_kernels import cluster

        p = self.params(params)
        out = check_outputs(outputs, self.heads(), ndim=self.ndim)
        shape = out["seed"].shape[1:]
        seedmap = out["seed"][0]
        mask = seedmap > np.float32(p.fg_thresh)
        labels = np.zeros(shape, np.int32)
        empty = Decoded(labels, np.zeros(0, np.float32),
                        {"seeds": np.zeros((0, self.ndim), np.int64), "centers": np.zeros((0, self.ndim))})
        n_mask = int(mask.sum())
        if n_mask == 0 or n_mask <= p.min_mask_sum:
            return empty
        flat = np.flatnonzero(mask)
        where = np.unravel_index(flat, shape)
        D = self.ndim
        off = out["offset"].reshape(D, -1)
        sg = out["sigma"].reshape(D, -1)
        emb = np.empty((flat.size, D), np.float64)
        sig = np.empty((flat.size, D), np.float64)
        for d in range(D):
            emb[:, d] = where[d] * self.spacing[d] / self.scale
            emb[:, d] += off[d, flat]
            sig[:, d] = sg[d, flat]
        seed32 = seedmap.reshape(-1)[flat]
        order = np.argsort(-seed32, kind="stable").astype(np.int64)
        seed = seed32.astype(np.float64)
        ids, seeds = cluster(emb, sig, seed, order, SIGMA_GAIN, float(np.float32(p.seed_thresh)), int(p.min_size),
                             int(p.min_unclustered_sum), float(p.new_fraction), 4.0 / self.scale,
                             4 * flat.size + 4096)
        labels.reshape(-1)[flat] = ids
        seed_idx = np.stack([w[seeds] for w in where], axis=1).astype(np.int64)
        centers = emb[seeds] * self.scale / self.spacing
        return Decoded(labels, seed[seeds].astype(np.float32), {"seeds": seed_idx, "centers": centers})
