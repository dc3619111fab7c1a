"""Overlays a person can look at: image in grey, objects in colour with outlines."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["label_colors", "overlay", "save_png"]


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """``(n + 1, 3)`` uint8 colours; index 0 (background) is black."""
    rng = np.random.default_rng(seed)
    hue = rng.permutation(np.linspace(0, 1, max(n, 1), endpoint=False))[:n]
    h6 = hue * 6
    i = np.floor(h6).astype(int) % 6
    f = h6 - np.floor(h6)
    v, s = 1.0, 0.75
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = np.select(
        [i[:, None] == k for k in range(6)],
        [np.stack(c, 1) for c in [(np.full(n, v), t, np.full(n, p)), (q, np.full(n, v), np.full(n, p)),
                                   (np.full(n, p), np.full(n, v), t), (np.full(n, p), q, np.full(n, v)),
                                   (t, np.full(n, p), np.full(n, v)), (np.full(n, v), np.full(n, p), q)]],
    )
    out = np.zeros((n + 1, 3), np.uint8)
    out[1:] = np.round(rgb * 255).astype(np.uint8)
    return out


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.35, outline: bool = True) -> np.ndarray:
    """RGB uint8 overlay of 2D ``labels`` on a 2D ``image`` (percentile-stretched grey)."""
    from skimage.segmentation import find_boundaries

    img = np.asarray(image, np.float64)  # float64: any finite intensities (1e302) stay finite
    lab = np.asarray(labels)
    if img.ndim != 2 or lab.shape != img.shape:
        raise ValueError(f"overlay needs a 2D image and labels of the same shape, got {img.shape} and {lab.shape}")
    lo, hi = np.percentile(img, (1, 99.8)) if img.size else (0, 1)
    g = np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)
    rgb = np.repeat((g * 255)[..., None], 3, axis=2)
    ids, inv = np.unique(lab, return_inverse=True)
    inv = inv.reshape(lab.shape)
    cols = label_colors(len(ids) - (1 if ids[0] == 0 else 0))
    if ids[0] != 0:
        cols = cols[1:]
    c = cols[inv].astype(np.float32)
    fg = lab > 0
    rgb[fg] = (1 - alpha) * rgb[fg] + alpha * c[fg]
    if outline:
        b = find_boundaries(lab, mode="inner") & fg
        rgb[b] = c[b]
    return np.clip(rgb, 0, 255).astype(np.uint8)


def save_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as PNG atomically (the file gets the mode a plain write would)."""
    from PIL import Image

    from ._files import atomic_write

    arr = np.asarray(rgb, np.uint8)
    return atomic_write(Path(path), lambda tmp: Image.fromarray(arr).save(tmp, format="PNG"))
