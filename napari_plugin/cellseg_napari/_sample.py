"""Sample data contributions: synthetic cells made on the fly and the bundled samples."""
from __future__ import annotations

__all__ = ["synthetic_sample", "bundled_sample", "bundled_timelapse", "sample_layers"]


def synthetic_sample():
    """Seeded synthetic nuclei (256 × 256, 40 cells) made on the fly, with their ground truth."""
    from cellseg.datasets.synthetic import synthetic_cells

    image, labels = synthetic_cells((256, 256), n_cells=40, seed=0)
    return [
        (image, {"name": "synthetic cells", "metadata": {"axes": "YX"}}, "image"),
        (labels, {"name": "synthetic cells ground truth", "metadata": {"axes": "YX"}, "visible": False},
         "labels"),
    ]


def bundled_sample():
    """The bundled 512 × 512 synthetic nuclei image with its ground truth."""
    return sample_layers("synthetic_nuclei")


def bundled_timelapse():
    """The bundled 5-frame synthetic nuclei time-lapse (TYX) with its ground truth."""
    return sample_layers("synthetic_nuclei_t")


def sample_layers(name: str) -> list[tuple]:
    """Layers of the bundled sample ``name`` (``cellseg.datasets.sample``), plus
    ``<name>_labels`` as a ground-truth Labels layer when the package ships it."""
    from cellseg import datasets

    img = datasets.sample(name)
    meta = {"axes": img.axes}
    # napari's sliders name the axes (t for a time-lapse); an RGB layer's colour axis has no label
    rgb = img.axes.endswith("C") and img.data.shape[-1] in (3, 4)
    kw: dict = {"name": name, "metadata": meta, "rgb": rgb,
                "axis_labels": tuple(a.lower() for a in (img.axes[:-1] if rgb else img.axes))}
    if img.channel_names:
        meta["channel_names"] = list(img.channel_names)
    if img.pixel_size:
        meta["pixel_size"] = dict(img.pixel_size)
    layers = [(img.data, kw, "image")]
    gt_name = f"{name}_labels"
    if gt_name in datasets.list_samples():
        from cellseg.datasets.samples import sample_path
        from cellseg.io import read_labels

        gt = read_labels(sample_path(gt_name))
        gt_axes = img.axes.replace("C", "")
        layers.append((gt, {"name": f"{name} ground truth", "metadata": {"axes": gt_axes},
                            "axis_labels": tuple(a.lower() for a in gt_axes), "visible": False}, "labels"))
    return layers
