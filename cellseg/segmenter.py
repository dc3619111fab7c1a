"""The Segmenter: normalize → tile → network → decode, for single images and stacks.

:meth:`Segmenter.iter_segment` is a generator that yields :class:`Progress`
events and *returns* a :class:`SegmentationResult`, so the CLI's progress bars
and napari's thread worker share one code path (napari's ``thread_worker``
passes the generator's return value to ``returned``). :meth:`Segmenter.segment`
drives it to the end.

Stacks:

* ``T`` axes: frame by frame; ``link=True`` relabels so that a cell keeps its id
  from one frame to the next (greedy IoU matching above ``link_iou``).
* ``Z`` axes: a 3D model segments the volume at once; a 2D model segments slice
  by slice and the slices are stitched by IoU (``stitch_iou``).
* ``C`` axes: ``channel`` picks one channel by index or name (OME channel
  names) when the model takes one channel. Colour samples whose channels are
  equal (grey stored as RGB) are read as grey; a model that takes 3 channels
  (RGB) gets grey images repeated and RGBA images without alpha.

Scale: a model records the object size of its training data
(``config["object_size"]["diameter"]``, px). With ``diameter=D`` (the objects'
diameter in the image, px), ``"auto"`` (estimated by a first pass, see
:meth:`Segmenter.estimate_diameter`) or a ``pixel_size`` the model can use, each
frame is resampled by ``model_diameter / D``, segmented, and the labels are
mapped back onto the input grid (:func:`cellseg.scale.resize_labels`), so the
labels always have the input's shape. Decode thresholds in pixels (``min_size``)
apply at the model's scale.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generator, Mapping, Protocol, Sequence, TypeVar, runtime_checkable

import numpy as np

from .labels import link_by_iou

if TYPE_CHECKING:
    from .representations.base import Decoded, Representation

_T = TypeVar("_T")

__all__ = ["Segmenter", "Progress", "SegmentationResult", "FrameResult", "SegmenterError", "TRANSFORMS", "Predictor",
           "RoutedPredictor", "MAX_PIXELS", "NUCLEAR_STAINS", "nuclear_channel",
           "nuclear_channel_note", "segments_nuclei"]

#: the most pixels (voxels for a 3D model) one network call reads when no tile is given: a larger frame
#: (after resampling to the model's object size) goes through the network in tiles of at most this,
#: context margins included (:func:`cellseg.tiling.budget_tile`). The memory of a call grows with its
#: pixels: on the CPU, per megapixel, 0.75 GB for ``nuclei`` and ``nuclei-flows`` and 0.39 GB for
#: ``cells`` with ONNX Runtime fp32 (the default path), 0.55 and 0.31 GB with torch fp32 (rise of the
#: peak RSS over one whole-frame call of 4 Mpx, one thread); 4 Mpx keeps a call near 3 GB.
MAX_PIXELS = 4_000_000


@runtime_checkable
class Predictor(Protocol):
    """What :class:`Segmenter` needs from a model: :class:`cellseg.models.CellsegModel` is one, and
    so is any stand-in with these members (test doubles whose outputs are known).

    ``config`` holds ``ndim`` (2 or 3) and optionally ``normalization`` (``pmin``/``pmax``),
    ``object_size``, ``image_stats``, ``name``, ``augment`` and ``denoise``; ``thresholds`` are
    the default decode parameters; ``div_by`` the multiple the network's input sizes must be;
    ``receptive_field`` the size (px) of the window each output pixel depends on.
    ``predict(image, augment=...)`` returns the activated head outputs ``{head: (C, *spatial)}``
    of one normalized frame ``(C?, *spatial)``.

    A model that also chooses its engine is a :class:`RoutedPredictor`; the others run as
    torch fp32 and get ``augment`` from ``config["augment"]`` (default ``False``).
    """

    @property
    def representation(self) -> Representation: ...

    @property
    def config(self) -> Mapping[str, Any]: ...

    @property
    def thresholds(self) -> Mapping[str, Any]: ...

    @property
    def in_channels(self) -> int: ...

    @property
    def div_by(self) -> int: ...

    @property
    def receptive_field(self) -> int: ...

    def predict(self, image: np.ndarray, augment: bool | None = None) -> dict[str, np.ndarray]: ...


@runtime_checkable
class RoutedPredictor(Predictor, Protocol):
    """A :class:`Predictor` that picks what runs its network (:mod:`cellseg.models.inference`):
    ``inference_path(backend, precision)`` resolves a request to the ``(backend, precision)``
    that runs on its device, and ``predict`` takes them; ``augment`` is its default for
    test-time augmentation."""

    @property
    def augment(self) -> bool: ...

    def inference_path(self, backend: str | None = None, precision: str | None = None) -> tuple[str, str]: ...

    def predict(self, image: np.ndarray, augment: bool | None = None, backend: str = "torch",
                precision: str = "fp32") -> dict[str, np.ndarray]: ...


class SegmenterError(ValueError):
    """Unusable input for segmentation (axes, channels, empty image...)."""


@dataclass
class Progress:
    """A progress event: ``stage`` is 'predict' or 'decode' (per frame) or 'link'."""

    stage: str
    done: int
    total: int
    frame: int = 0
    n_frames: int = 1
    message: str = ""

    @property
    def fraction(self) -> float:
        f = (self.frame + (self.done / max(self.total, 1))) / max(self.n_frames, 1)
        return float(min(1.0, f))


@dataclass(frozen=True, slots=True)
class FrameResult:
    """One 2D/3D frame of a :class:`SegmentationResult`.

    ``index`` is the frame's position in the stack (in ``canon_axes`` order, ``()`` for a single
    image), ``scores`` the decoder's score per object in decode order, ``id_scores`` the score of
    each object by its id in the result's labels, ``extra`` the decoder's extras (e.g. StarDist
    polygons), ``outputs`` the head outputs when the segmenter kept them (``keep_outputs``, for
    re-decoding; else ``None``) and ``empty`` is true for a constant frame, which was not segmented.

    The mapping spelling of earlier versions reads the same fields: ``frame["index"]``,
    ``frame.get("outputs")``, ``"outputs" in frame`` (false when the outputs were not kept) and
    ``"empty" in frame`` (true for a constant frame only).
    """

    index: tuple[int, ...]
    scores: np.ndarray
    extra: dict[str, Any]
    id_scores: dict[int, float]
    outputs: dict[str, np.ndarray] | None = None
    empty: bool = False

    def keys(self) -> list[str]:
        """The keys of the mapping spelling: the fields, ``outputs`` only when kept, ``empty`` only when true."""
        keys = ["index", "scores", "extra", "id_scores"]
        if self.outputs is not None:
            keys.append("outputs")
        if self.empty:
            keys.append("empty")
        return keys

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self.keys() else default


@dataclass
class SegmentationResult:
    """Labels (int32, axes = input axes without C) and what produced them.

    ``frames`` holds a :class:`FrameResult` per 2D/3D frame segmented: ``index`` (the
    position in the stack), ``scores`` (per object), ``id_scores`` (per object, by id in
    ``labels``), ``extra`` (decoder extras, e.g. StarDist polygons) and, when
    ``keep_outputs`` was set, ``outputs`` (the head outputs, for re-decoding).
    """

    labels: np.ndarray
    axes: str
    frames: list[FrameResult] = field(default_factory=list)
    params: Any = None
    #: frame axes + spatial axes in the order frames were indexed (``frames[i]["index"]``)
    canon_axes: str = ""
    link: bool = False
    link_iou: float = 0.3
    stitch_iou: float = 0.3
    #: the factor each frame was resampled by before the network (1.0: none) and the
    #: object diameter (px, input grid) it assumed (``None`` when no size was used)
    scale: float = 1.0
    diameter: float | None = None
    #: whether the frames were corrected for uneven illumination (``Segmenter(flat_field=...)``)
    flat_field: bool = False
    #: whether the frames' pixel-wise noise was filtered (``Segmenter(noise_filter=...)``)
    noise_filter: bool = False
    #: the index of the one channel of the image that was segmented (given, or chosen: a channel named
    #: for a nuclear stain, the grey image of a pseudo-coloured one, a composite's blue channel); None
    #: when the image has no channel axis or all its channels went to the model
    channel: int | None = None
    #: things the user should know about this result (the image looks unlike the model's
    #: training data, the object size is outside what resampling can bridge...); the CLI
    #: prints them per file and napari shows them
    warnings: list[str] = field(default_factory=list)
    #: with ``Segmenter(denoise=True)``: the denoised image (float32, the input's intensity units,
    #: the axes of the image the model was given, i.e. ``axes`` plus ``C`` unless one channel was
    #: picked; see :mod:`cellseg.denoise`); None otherwise
    denoised: np.ndarray | None = None

    @property
    def n_objects(self) -> int:
        return int(len(np.unique(self.labels[self.labels > 0])))

    def scores(self) -> dict[int, float]:
        out: dict[int, float] = {}
        for fr in self.frames:
            out.update(fr.id_scores)
        return out


def resolve_axes(image: np.ndarray, axes: str | None) -> str:
    """The axes string of ``image`` (``axes`` checked and upper-cased; ``None`` means YX for a 2D image)."""
    if axes is None:
        if image.ndim == 2:
            return "YX"
        raise SegmenterError(
            f"image has shape {image.shape}: say which axes it has (axes='ZYX', 'TYX', 'CYX', 'YXC', ...)"
        )
    axes = axes.upper().replace("S", "C")
    if len(axes) != image.ndim:
        raise SegmenterError(f"axes {axes!r} do not match an image with {image.ndim} dimensions {image.shape}")
    if len(set(axes)) != len(axes) or not set(axes) <= set("TZCYX"):
        raise SegmenterError(f"axes {axes!r}: letters must be unique and from T, Z, C, Y, X")
    if "Y" not in axes or "X" not in axes:
        raise SegmenterError(f"axes {axes!r} must contain Y and X")
    return axes


#: intensity transforms after the percentile normalization (values below 0 clip to 0 for the
#: non-linear ones; 1 stays 1)
TRANSFORMS = {
    "linear": lambda x: x,
    "sqrt": lambda x: np.sqrt(np.maximum(x, 0, dtype=np.float32)),
    "log": lambda x: (np.log1p(np.float32(99) * np.maximum(x, 0, dtype=np.float32)) / np.float32(np.log(100.0))
                      ).astype(np.float32),
}


#: the choices of ``Segmenter(flat_field=...)`` and ``cellseg segment --flat-field``
FLAT_FIELD_MODES = ("auto", "on", "off")
#: the choices of ``Segmenter(noise_filter=...)`` and ``cellseg segment --noise-filter``
NOISE_FILTER_MODES = ("auto", "on", "off")


#: channel-name words of nuclear stains and markers (whole words ignoring case, hyphenated pairs
#: joined: ``SiR-DNA`` is ``sirdna``); any word starting with ``nuc`` counts too (nuclei, NucBlue)
NUCLEAR_STAINS = frozenset({"dapi", "hoechst", "h33342", "h33258", "h2b", "draq5", "draq7", "sirdna", "dna",
                            "propidium"})


def nuclear_channel(names: Sequence[str] | None, n: int | None = None) -> int | None:
    """The index of the one channel whose name names a nuclear stain or marker (``DAPI``,
    ``Hoechst 33342``, ``H2B-GFP``, ``SiR-DNA``, ``DRAQ5``, ``NucBlue``, ``nuclei``...);
    None when no channel or several do, or when ``n`` (the image's channels) is given and the
    names are not one per channel.

    >>> nuclear_channel(["Phalloidin", "DAPI", "GFP"]), nuclear_channel(["H2B-mCherry", "tubulin"])
    (1, 0)
    >>> nuclear_channel(["GFP", "RFP"]) is None, nuclear_channel(["DAPI", "Hoechst"]) is None
    (True, True)
    """
    import re

    if not names or (n is not None and len(names) != n):
        return None
    hits = []
    for i, name in enumerate(names):
        words = [w for w in re.split(r"[^a-z0-9]+", str(name).casefold()) if w]
        words += [a + b for a, b in zip(words, words[1:])]
        if any(w in NUCLEAR_STAINS or w.startswith("nuc") for w in words):
            hits.append(i)
    return hits[0] if len(hits) == 1 else None


def nuclear_channel_note(i: int, names: Sequence[str], option: str = "channel= (--channel)") -> str:
    """What a result says when a nuclei model chose channel ``i`` by its name."""
    return f"segmented channel {i} ({names[i]!r}, a nuclear stain) of {len(names)}; choose another with {option}"


def segments_nuclei(segmenter: Any) -> bool:
    """Whether a segmenter's model segments nuclei (``config["objects"] == "nuclei"``, as the
    bundled ``nuclei`` models): given an image of several named channels and no channel, it
    takes the one :func:`nuclear_channel` names."""
    config = getattr(getattr(segmenter, "model", None), "config", None) or {}
    return config.get("objects") == "nuclei"


def _equal_channels(image: np.ndarray, c: int) -> bool:
    """True when the colour channels (the first three) along axis ``c`` are identical."""
    first = np.take(image, 0, axis=c)
    return all(np.array_equal(first, np.take(image, i, axis=c)) for i in (1, 2))


#: a colour channel whose intensity range (1-99.8 percentiles) is below this fraction of the strongest
#: channel's holds nothing (JPEG compression leaves a little in the empty channels of a pseudo-coloured image)
EMPTY_CHANNEL = 0.02
#: channels whose pixels correlate at least this much hold the same grey image (at other gains and offsets)
SAME_CHANNEL_CORR = 0.98


def _colour_sample(image: np.ndarray, c: int) -> np.ndarray | None:
    """The colour channels of an RGB image (or RGBA with a constant alpha) along axis ``c`` as
    ``(3, N)`` float32 rows: a sample of about a million pixels per channel (a few frames of a
    stack, every k-th pixel of each), plenty to tell what they hold, and no copy of a large stack.
    None for other channel counts and for four channels of data."""
    n = image.shape[c]
    if n not in (3, 4):
        return None
    x = np.moveaxis(np.asarray(image), c, 0)  # a view
    lead = x.ndim - 3
    frames = int(np.prod(x.shape[1:1 + lead])) if lead > 0 else 1
    sel: list[slice] = [slice(None)]
    for ax in range(1, 1 + lead):
        sel.append(slice(None, None, max(1, x.shape[ax] // 2)) if frames > 4 else slice(None))
    per = max(1, int(np.prod([len(range(*s.indices(x.shape[i + 1]))) for i, s in enumerate(sel[1:])])))
    k = max(1, int(math.sqrt(x.shape[-2] * x.shape[-1] * per / 1_000_000)))
    sample = x[tuple(sel) + (slice(None, None, k), slice(None, None, k))]
    if n == 4:
        if not np.all(sample[3] == sample[3].flat[0]):
            return None  # four channels of data, not RGBA
        sample = sample[:3]
    return sample.reshape(3, -1).astype(np.float32)


def pseudo_colour_channel(image: np.ndarray, c: int) -> int | None:
    """The channel that holds a colour image's one grey image, when it is a pseudo-coloured grey image:
    RGB (or RGBA with a constant alpha) along axis ``c`` in which at least one colour channel is empty
    (its 1-99.8 percentile range under :data:`EMPTY_CHANNEL` of the strongest channel's) and every other
    one correlates with the strongest at :data:`SAME_CHANNEL_CORR` or more: a fluorescence image saved
    with its colour table (DAPI in blue, GFP in green, a magenta LUT). Returns the strongest channel's
    index, else None (real colour, or grey in all three channels, which the per-channel normalization
    already makes grey).

    >>> import numpy as np
    >>> g = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    >>> z = np.zeros_like(g)
    >>> pseudo_colour_channel(np.stack([z, z, g], -1), 2), pseudo_colour_channel(np.stack([g, z, g], 0), 0)
    (2, 0)
    >>> pseudo_colour_channel(np.stack([g, g[::-1], z], -1), 2) is None   # two different images
    True
    """
    flat = _colour_sample(image, c)
    if flat is None:
        return None
    lo, hi = np.percentile(flat, [1.0, 99.8], axis=1)
    return _one_grey_image(flat, hi - lo)


def _one_grey_image(flat: np.ndarray, rng: np.ndarray) -> int | None:
    """:func:`pseudo_colour_channel` of a colour sample ``flat`` ``(3, N)`` whose channels' 1-99.8
    percentile ranges are ``rng``."""
    strongest = int(np.argmax(rng))
    if rng[strongest] <= 0:
        return None
    empty = rng < EMPTY_CHANNEL * rng[strongest]
    if not empty.any():
        return None
    ref = flat[strongest] - flat[strongest].mean()
    for ch in np.flatnonzero(~empty):
        if ch == strongest:
            continue
        other = flat[ch] - flat[ch].mean()
        denom = float(np.sqrt(np.dot(ref, ref) * np.dot(other, other)))
        if denom == 0 or float(np.dot(ref, other)) / denom < SAME_CHANNEL_CORR:
            return None
    return strongest


#: a fluorescence stain's channel has a dark background: its median lies in the lowest quarter of its
#: 1-99.8 percentile range (at most 0.19 on the 487 DSB fluorescence training and validation images;
#: at least 0.38 in the blue channel of every H&E and stained-brightfield image of the annotated sets)
DARK_BACKGROUND = 0.25
#: without a blue channel, a composite is told by a stain whose median lies in the lowest tenth of its
#: range (99% of the DSB fluorescence training and validation images do; no channel of any H&E or
#: stained-brightfield image of the annotated sets lies under 0.25)
DARKEST_BACKGROUND = 0.1
#: a colour channel holds a stain of a composite when its range is at least this fraction of the strongest's
COMPOSITE_STAIN = 0.1


def fluorescence_composite(image: np.ndarray, c: int) -> tuple[bool, int | None]:
    """Whether a colour image along axis ``c`` (RGB, or RGBA with a constant alpha) is a composite of
    several fluorescence stains, and its nuclear channel: ``(True, 2)`` when its blue channel holds a
    stain on a dark background and another channel holds a different one (DAPI or Hoechst in blue,
    the convention of fluorescence composites, with a cytoplasm or membrane stain in green or red);
    ``(True, None)`` when red and green hold different stains, one of them on a very dark
    background (:data:`DARKEST_BACKGROUND`), and blue is empty (no channel to choose by
    convention); ``(False, None)`` for everything else: grey stored as RGB, one grey image in
    colour (:func:`pseudo_colour_channel`), and stained samples in transmitted light (H&E,
    brightfield), whose blue channel has a bright background.

    A stain holds a range of at least :data:`COMPOSITE_STAIN` of the strongest channel's; its
    background is dark when its median lies in the lowest :data:`DARK_BACKGROUND` of its 1-99.8
    percentile range.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> nuc, cyto = (rng.random((2, 64, 64)) > 0.8) * 200.0
    >>> fluorescence_composite(np.stack([0 * nuc, cyto, nuc], -1), 2)
    (True, 2)
    >>> fluorescence_composite(np.stack([255 - nuc, 255 - cyto, 255 - nuc], -1), 2)   # bright background
    (False, None)
    """
    flat = _colour_sample(image, c)
    if flat is None:
        return False, None
    lo, hi = np.percentile(flat, [1.0, 99.8], axis=1)
    rng = hi - lo
    if rng.max() <= 0:
        return False, None
    stain = rng >= COMPOSITE_STAIN * rng.max()
    if int(stain.sum()) < 2 or _one_grey_image(flat, rng) is not None:
        return False, None
    med = np.median(flat, axis=1)
    dark = (med - lo) < DARK_BACKGROUND * np.maximum(rng, 1e-12)
    if stain[2]:
        if not dark[2] or all(np.array_equal(flat[2], flat[i]) for i in np.flatnonzero(stain) if i != 2):
            return False, None
        return True, 2
    return bool(((med - lo) < DARKEST_BACKGROUND * np.maximum(rng, 1e-12))[stain].any()), None


def _frame_option(name: str, value: str | bool, modes: Sequence[str], does: str, model: Predictor) -> str:
    """An ``auto``/``on``/``off`` option of the 2D frame preprocessing (``flat_field``,
    ``noise_filter``): a bool read as ``"on"``/``"off"``, anything else refused, and ``"on"``
    refused for a 3D model."""
    if isinstance(value, bool):
        value = "on" if value else "off"
    if value not in modes:
        raise SegmenterError(f"{name} must be one of {list(modes)}, got {value!r}")
    if value == "on" and int(model.config.get("ndim", 2)) != 2:
        raise SegmenterError(f"{name}='on' {does} 2D frames; this model segments 3D volumes")
    return value


def _default_augment(model: Predictor) -> bool:
    """A model's default for test-time augmentation: its own (:class:`RoutedPredictor`), else
    ``config["augment"]``."""
    if isinstance(model, RoutedPredictor):
        return bool(model.augment)
    return bool(model.config.get("augment", False))


def drain(gen: Generator[Any, None, _T]) -> _T:
    """Run a generator to the end and return its value."""
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value


def _texture_window(x: np.ndarray, sp: int, max_side: int) -> tuple[slice, ...]:
    """The ``max_side``-sized window (spatial slices) of ``x (C?, *sp)`` with the largest
    intensity spread, from a coarse grid of candidates; the whole frame when it fits, or
    when it has at most twice the window's pixels (a pass over the whole frame can then be
    the result, see :meth:`Segmenter.estimate_diameter`)."""
    shape = x.shape[x.ndim - sp:]
    if all(n <= max_side for n in shape) or math.prod(shape) <= 2 * max_side ** sp:
        return tuple(slice(0, n) for n in shape)
    grey = x if x.ndim == sp else x.mean(axis=0)
    best = -1.0
    best_win: tuple[slice, ...] | None = None
    starts = [sorted({0, max(0, (n - max_side) // 2), max(0, n - max_side)}) for n in shape]
    for st in np.ndindex(*[len(s) for s in starts]):
        win = tuple(slice(starts[a][i], starts[a][i] + min(max_side, shape[a])) for a, i in enumerate(st))
        sub = grey[win][tuple(slice(None, None, 4) for _ in range(sp))]
        v = float(np.std(sub))
        if best_win is None or v > best:  # (the first window when every spread is NaN)
            best, best_win = v, win
    assert best_win is not None  # there is at least one candidate
    return best_win


class Segmenter:
    """Segment images with a :class:`cellseg.models.CellsegModel`.

    Parameters
    ----------
    model : CellsegModel, or any :class:`Predictor` (a stand-in with known outputs)
    params : decode parameter overrides (mapping or the representation's Params);
        defaults are the model's tuned thresholds.
    tile : tile size in pixels (per spatial axis, or one int), the window each network call
        reads (its core plus ``margin`` on each side). ``None`` (the default): frames of up to
        ``max_pixels`` go through the network at once, larger ones in tiles chosen for that
        budget (:func:`cellseg.tiling.budget_tile`). ``0``: the whole frame at once, whatever
        its size. With the default ``blend`` and ``margin``, tiles give the labels of the
        whole-frame run (their outputs differ by float rounding only).
    margin : context per side for tiles; default from the receptive field.
    max_pixels : the most pixels (voxels for a 3D model) one network call reads when ``tile``
        is None (default ``None``: :data:`MAX_PIXELS`); counted after resampling to the model's object
        size (``diameter``), so a frame enlarged 8x is tiled even when the image is small. The
        network's memory follows it (about 0.75 GB per Mpx for the bundled ``nuclei`` models on
        ONNX Runtime, see :data:`MAX_PIXELS`); the frame, its head outputs and the decode are
        still held whole (block-wise runs, :mod:`cellseg.blockwise`, bound those too).
    normalize : ``(pmin, pmax)`` percentiles; default the model's.
    blend : ``'crop'`` (default; equals the untiled run) or ``'linear'``.
    keep_outputs : keep head outputs in the result (for re-decoding).
    augment : test-time augmentation (mean over the 8 flips/transposes of each tile,
        8x the network time); default the model's choice (``model.augment``).
    diameter : the objects' diameter in the image (px), ``"auto"`` (estimate it), or
        ``"off"`` (segment at the image's own scale); default the model's choice
        (``config["object_size"]["default"]``; ``"off"`` for models without a size).
    pixel_size : the image's pixel size (µm/px); used when the model records its object
        size in µm (or its pixel size), and then it wins over ``diameter="auto"``.
    transform : intensity transform after the percentile normalization: ``"linear"``
        (none, the default), ``"sqrt"`` or ``"log"`` (``log(1 + 99 x) / log(100)``): both
        lift dim objects next to very bright ones (a field with a wide intensity range).
    flat_field : correction for uneven illumination before everything else (the size estimate
        included), 2D models only: ``"auto"`` (the default) divides each frame by its
        illumination (:func:`cellseg.preprocess.flat_field`) when the corrected frame has a
        bright background (transmitted light: brightfield, H&E and other stains;
        :func:`cellseg.preprocess.bright_background`), and leaves other frames (fluorescence) as
        they are; ``"on"`` corrects every frame, ``"off"`` none. A stack is decided once, by its first
        frame with content. Block-wise runs, which normalize every block with one range for the
        image, do not correct.
    noise_filter : filtering of pixel-wise noise before the size estimate and the network, 2D
        models only: ``"auto"`` (the default) filters every frame of a stack whose first frame
        with content is noisy fluorescence, with non-local means
        (:func:`cellseg.preprocess.denoise_frame`): a dark background (the median of its 4 x 4
        pixel means in the lowest quarter of their range) and noise
        (:func:`cellseg.preprocess.noise_level`) above :data:`cellseg.preprocess.NOISE_LEVEL` of its
        range. Transmitted light (DIC, phase contrast, brightfield, stains) is left as read: ``"on"``
        filters every frame, ``"off"`` none. Block-wise runs do not filter.
    denoise : also return the denoised image (``SegmentationResult.denoised``); the model
        needs a denoising head (``cellseg train --denoise``). It is computed at the image's
        own scale: a frame resampled to the model's object size costs one more network run.
    backend, precision : what runs the network (:mod:`cellseg.models.inference`): backend
        ``"torch"``, ``"onnx"`` (ONNX Runtime, CPU) or ``"auto"``; precision ``"fp32"``,
        ``"bf16"`` (torch), ``"int8"`` (onnx) or ``"auto"``. ``"auto"`` for both (the default) is
        the model's default path on its device: on the CPU ONNX Runtime int8 for a bundled model
        whose int8 ranges were checked to keep its test AP@0.5 within 0.005 on every test split
        (none of the bundled models today), else ONNX Runtime fp32 (torch fp32's outputs to float
        rounding, faster); torch fp32 without onnxruntime and on GPUs (docs/speed.md). A
        combination that does not exist or cannot run here is a :class:`SegmenterError`.
    """

    def __init__(
        self,
        model: Predictor,
        params: Any = None,
        tile: int | Sequence[int] | None = None,
        margin: int | Sequence[int] | None = None,
        normalize: tuple[float, float] | None = None,
        blend: str = "crop",
        keep_outputs: bool = False,
        augment: bool | None = None,
        diameter: float | str | None = None,
        pixel_size: float | None = None,
        transform: str = "linear",
        flat_field: str | bool = "auto",
        noise_filter: str | bool = "auto",
        denoise: bool = False,
        backend: str = "auto",
        precision: str = "auto",
        max_pixels: int | None = None,
    ):
        self.model = model
        self.rep = model.representation
        self.params = self.rep.params(self._default_params(), **({} if params is None else {}))
        if params is not None:
            self.params = self.rep.params({**dataclasses.asdict(self.params), **self._as_dict(params)})
        self.tile = tile
        self.margin = margin
        if max_pixels is None:
            max_pixels = MAX_PIXELS
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
            raise SegmenterError(f"max_pixels must be a whole number of pixels >= 1, got {max_pixels!r}")
        self.max_pixels = int(max_pixels)
        norm = model.config.get("normalization", {})
        if normalize is not None:
            pmin, pmax = normalize
            self.normalize = (pmin, pmax)
        else:
            self.normalize = (float(norm.get("pmin", 1.0)), float(norm.get("pmax", 99.8)))
        self.blend = blend
        self.keep_outputs = keep_outputs
        self.augment = _default_augment(model) if augment is None else bool(augment)
        self.diameter = self._check_diameter(diameter)
        if pixel_size is not None and not (float(pixel_size) > 0 and math.isfinite(float(pixel_size))):
            raise SegmenterError(f"pixel_size must be a positive number of µm per pixel, got {pixel_size!r}")
        self.pixel_size = None if pixel_size is None else float(pixel_size)
        if transform not in TRANSFORMS:
            raise SegmenterError(f"transform must be one of {sorted(TRANSFORMS)}, got {transform!r}")
        self.transform = transform
        self.flat_field = _frame_option("flat_field", flat_field, FLAT_FIELD_MODES, "corrects", model)
        self.noise_filter = _frame_option("noise_filter", noise_filter, NOISE_FILTER_MODES, "filters", model)
        if denoise:
            from .denoise import check_denoises

            check_denoises(model)
        self.denoise = bool(denoise)
        from .models.inference import InferenceError, check

        try:
            self.backend, self.precision = check(backend, precision)
            self.inference  # resolved now: a combination that cannot run here fails before any work
        except InferenceError as exc:
            raise SegmenterError(str(exc)) from None

    @property
    def inference(self) -> tuple[str, str]:
        """The ``(backend, precision)`` that runs the network for this segmenter's request on the
        model's device (``"auto"`` resolved; see :func:`cellseg.models.inference.resolve`)."""
        if not isinstance(self.model, RoutedPredictor):  # a stand-in model without engines
            return ("torch", "fp32")
        return self.model.inference_path(self.backend, self.precision)

    # -- scale ----------------------------------------------------------------------
    @property
    def object_size(self) -> dict:
        """The model's object size record (``{}`` when it has none)."""
        return dict(self.model.config.get("object_size") or {})

    def _check_diameter(self, diameter: float | str | None) -> float | str | None:
        if diameter is None:
            return None
        if isinstance(diameter, str):
            word = diameter.strip().lower()
            if word in ("auto", "off"):
                return word
            try:
                diameter = float(word)
            except ValueError:
                raise SegmenterError(
                    f"diameter must be a number of pixels, 'auto' or 'off', got {diameter!r}") from None
        d = float(diameter)
        if not (d > 0 and math.isfinite(d)):
            raise SegmenterError(f"diameter must be a positive number of pixels, got {diameter!r}")
        if not self.object_size.get("diameter"):
            raise SegmenterError(
                "this model records no object size, so a diameter cannot be matched to it; resample the image "
                "yourself or use a model that records one (cellseg models lists them)")
        return d

    def scale_mode(self, pixel_size: float | None = None) -> tuple[str, float | None]:
        """``("off"|"fixed"|"auto", diameter in px or None)`` for an image with ``pixel_size``."""
        size = self.object_size
        if not size.get("diameter"):
            return "off", None
        ps = self.pixel_size if self.pixel_size is not None else pixel_size
        d = self.diameter if self.diameter is not None else size.get("default", "off")
        if d == "off":
            return "off", None
        if not isinstance(d, str):  # a diameter the user gave wins
            return "fixed", float(d)
        if ps and size.get("pixel_size"):
            # the model's object diameter in µm, seen at this image's pixel size
            return "fixed", float(size["diameter"]) * float(size["pixel_size"]) / float(ps)
        if ps and size.get("diameter_um"):
            return "fixed", float(size["diameter_um"]) / float(ps)
        return "auto", None

    #: the first pass's outputs are used as the result when its scale is within this ratio of
    #: the scale the estimate asks for (the general models are trained with scale augmentation
    #: of 0.55-1.8x, so a mismatch of up to 25% costs them nothing measurable; see bench_scale.py)
    REUSE_RATIO = 1.25

    def estimate_diameter(self, image: np.ndarray, window: int = 256,
                          objects_across: float = 10.0) -> tuple[float | None, tuple[float, dict] | None]:
        """The objects' median diameter (px) in one frame ``(C?, *spatial)``, from a few passes.

        Each pass runs the network and decoder on a window of the frame resampled by some
        factor and measures the median equivalent diameter of the decoded objects that do not
        touch the window's border (all of them when the window is the whole frame).

        1. Half scale first, on the most textured window of ``window / sqrt(0.5)`` pixels a
           side (``window²/2`` pixels after shrinking). Objects at least about the model's
           size there (0.67x) are large and are measured whole, cheaply: the full-scale pass
           is skipped, and a quarter-scale pass checks whether they are fragments of still
           larger objects (objects far larger than the model's size come out of the network
           as fragments; kept when it shows objects of at least the model's 0.67x and 1.25x
           the half-scale estimate).
        2. Otherwise the objects are small: the most textured ``window``-sized window at the
           image's own scale gives the estimate (the half-scale one when this finds nothing;
           when neither finds anything, windows of ``2 · window`` at half and ``4 · window`` at
           a quarter of the size).
        3. Unless the estimate was measured on objects near the model's size (0.8-1.25x) and
           on at least 3 objects clear of its window's border (or on objects under a fifth of
           the window: a window a few objects across holds mostly cut ones), a window of about
           ``objects_across`` objects a side is resampled to the model's size and measured
           again, at most twice (until two passes agree within 0.8-1.25x). This corrects
           objects far smaller than the model's size that coarse passes merged into clumps,
           sizes read off fragments, and sizes read off cut objects.

        Every pass costs at most ``window²`` or ``(objects_across · model diameter)²``
        pixels, whatever the image's size. Returns ``(diameter or None when nothing was
        found, reuse)``: ``reuse = (factor, outputs)`` holds the head outputs of the whole
        frame resampled by ``factor`` when a pass covered the whole frame at a scale within
        :attr:`REUSE_RATIO` of the one the estimate asks for (the caller can use them as the
        result instead of running the network again); else ``None``.
        """
        d, reuse = self._estimate(image, window, objects_across)
        return d, None if reuse is None else reuse[:2]

    def _estimate(self, image: np.ndarray, window: int = 256, objects_across: float = 10.0
                  ) -> tuple[float | None, tuple[float, dict, Decoded] | None]:
        """:meth:`estimate_diameter`, whose ``reuse`` also holds the reused pass's labels decoded
        with :attr:`params`: ``(factor, outputs, decoded)`` (the caller need not decode them again)."""
        from .scale import median_diameter, window_median_diameter, zoom_image

        d0 = float(self.object_size["diameter"])
        x = np.asarray(image)
        sp = self.spatial_ndim
        lead = x.ndim - sp
        full = x.shape[lead:]
        whole_runs: list[tuple[float, dict, Decoded]] = []  # (factor, outputs, decoded) of whole-frame passes

        def measure(side: int, factor: float) -> tuple[float | None, bool]:
            """The objects' median diameter (px of the image) in a pass, and whether it was read off whole
            objects: the whole frame, a window with at least 3 objects clear of its border, or objects under a
            fifth of the window (few because sparse, not because cut: larger ones are mostly cut by its border,
            and read too small)."""
            win = _texture_window(x, sp, side)
            crop = x[(slice(None),) * lead + win]
            whole = all(w.stop - w.start == n for w, n in zip(win, full))
            xi = crop if factor == 1.0 else zoom_image(crop, factor, sp)
            if min(xi.shape[lead:]) < 8:
                return None, False
            outputs = drain(self.predict(xi))
            dec = self.rep.decode(outputs, self.params)
            if whole:
                whole_runs.append((float(factor), outputs, dec))
                di, ok = median_diameter(dec.labels), True
            else:
                di, n_inside = window_median_diameter(dec.labels)
                ok = n_inside >= 3 or (di is not None and di <= 0.2 * min(xi.shape[lead:]))
            return (None if di is None else di / factor), ok

        def coarse_side(s: float) -> int:  # the window (px of the image) that shrinks to window² · s pixels
            return int(math.ceil(window / math.sqrt(s)))

        # bench_scale.py: starting at half scale keeps the estimate's cost below the segmentation's
        # for large objects (DIC HeLa, 120 px: the final pass runs on a quarter of the pixels)
        d_half, half_ok = measure(coarse_side(0.5), 0.5)
        if d_half is not None and d_half * 0.5 >= 0.67 * d0:
            d, s, ok = d_half, 0.5, half_ok
            dc, c_ok = measure(coarse_side(0.25), 0.25)
            if dc is not None and dc * 0.25 >= 0.67 * d0 and dc >= 1.25 * d:
                d, s, ok = dc, 0.25, c_ok
        else:
            (d1, ok), s = measure(window, 1.0), 1.0
            if d1 is None:
                d1, s, ok = d_half, 0.5, half_ok
            # nothing found in the textured windows: wider views at coarser scales (cells of 140 px
            # fill a 182 px half-scale window, bench_size_estimate.py on the phase-contrast images at x2)
            for side, f0 in ((2 * window, 0.5), (4 * window, 0.25)):
                if d1 is None:
                    (d1, ok), s = measure(side, f0), f0
            if d1 is None:
                return None, None
            d = d1
        # a pass at the scale the estimate asks for (bench_size_estimate.py, bench_scale.py: phase-contrast
        # cells of 20 px, merged into clumps of 80 px at half scale, are measured at 20-25 px by it), also
        # when the estimate was read off objects cut by its window's border (few objects across a window)
        for _ in range(2):
            f = self._clip_factor(d0 / d)
            if 0.8 <= f / s <= 1.25 and ok:
                break
            side = int(min(max(full), max(window, round(objects_across * d))))
            d2, ok2 = measure(side, f)
            if d2 is None:
                break
            d, s, ok = d2, f, ok2
        want = self._clip_factor(d0 / d)
        for run in reversed(whole_runs):  # the latest pass is the best informed
            if 1 / self.REUSE_RATIO <= want / run[0] <= self.REUSE_RATIO:
                return d, run
        return d, None

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str = "auto", **kwargs: Any) -> "Segmenter":
        """A bundled model by name (see ``cellseg.models.list_models()``) or a model file, on
        ``device`` (``"auto"``: CUDA, else MPS, else CPU)."""
        from .models import load_model

        return cls(load_model(name_or_path, device=device), **kwargs)

    def _default_params(self) -> dict:
        return dict(self.model.thresholds or {})

    @staticmethod
    def _as_dict(params: Any) -> dict[str, Any]:
        if dataclasses.is_dataclass(params) and not isinstance(params, type):
            return dataclasses.asdict(params)
        return dict(params)

    @property
    def spatial_ndim(self) -> int:
        return int(self.model.config.get("ndim", 2))

    def default_margin(self) -> int:
        rf = int(self.model.receptive_field)
        return int(math.ceil(rf / 2))

    # -- core ---------------------------------------------------------------------
    def normalized(self, image: np.ndarray, norm_range: tuple[float, float] | None = None) -> np.ndarray:
        """One frame normalized as the network gets it, before the intensity transform:
        percentiles per channel for ``(C, *spatial)`` input (an empty colour channel, e.g. no
        red, reads as background 0), or ``norm_range=(lo, hi)`` when given."""
        from .preprocess import normalize_percentile

        if norm_range is not None:
            lo, hi = (np.float32(v) for v in norm_range)
            return (np.asarray(image, np.float32) - lo) / (hi - lo + np.float32(1e-20))
        if image.ndim > self.spatial_ndim:
            axes = tuple(range(1, image.ndim))
            flat = np.asarray(image).reshape(image.shape[0], -1)
            const = np.all(flat == flat[:, :1], axis=1)
            if const.any() and not const.all():
                x = np.zeros(image.shape, np.float32)
                x[~const] = normalize_percentile(np.asarray(image)[~const], *self.normalize, axis=axes)
                return x
            return normalize_percentile(image, *self.normalize, axis=axes)
        return normalize_percentile(image, *self.normalize)

    def network_tile(self, shape: Sequence[int]) -> int | Sequence[int] | None:
        """The tile the network pass uses on a frame of spatial ``shape`` (the network's pixels,
        after resampling): the segmenter's ``tile`` when one was given (``0``: none), else
        ``None`` (one call) for a frame of at most ``max_pixels`` and the tile of
        :func:`cellseg.tiling.budget_tile` for a larger one."""
        if self.tile is not None:
            return self.tile
        from .tiling import budget_tile

        margin = self.margin if self.margin is not None else self.default_margin()
        return budget_tile(tuple(shape), self.max_pixels, margin, int(self.model.div_by))

    def predict(self, image: np.ndarray, norm_range: tuple[float, float] | None = None
                ) -> Generator[tuple[int, int], None, dict[str, np.ndarray]]:
        """Normalized, tiled network outputs of one frame; generator → returns outputs.

        ``norm_range=(lo, hi)`` normalizes with a given intensity range instead of
        the frame's own percentiles (block-wise runs use one range for the image).
        Tiles as :meth:`network_tile` says; yields ``(done, total)`` after each tile.
        """
        from .tiling import predict_tiled

        x = TRANSFORMS[self.transform](self.normalized(image, norm_range))
        margin = self.margin if self.margin is not None else self.default_margin()
        path = self.inference
        model = self.model
        predict: Callable[[np.ndarray], dict[str, np.ndarray]]
        if path == ("torch", "fp32") or not isinstance(model, RoutedPredictor):
            predict = functools.partial(model.predict, augment=self.augment)
        else:
            predict = functools.partial(model.predict, augment=self.augment, backend=path[0], precision=path[1])
        return (
            yield from predict_tiled(
                predict,
                x,
                spatial_ndim=self.spatial_ndim,
                tile=self.network_tile(x.shape[x.ndim - self.spatial_ndim:]),
                margin=margin,
                div_by=int(self.model.div_by),
                blend=self.blend,
            )
        )

    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None, **overrides: Any) -> Decoded:
        """Decode cached head outputs (no network call) with the segmenter's params,
        updated by ``params`` / keyword overrides."""
        base = dataclasses.asdict(self.params)
        if params is not None:
            base.update(self._as_dict(params))
        return self.rep.decode(outputs, self.rep.params(base, **overrides))

    def _select_channel(self, image: np.ndarray, axes: str, channel: int | str | None,
                        channel_names: Sequence[str] | None) -> tuple[np.ndarray, str, int | None, str | None]:
        """``(image, axes, index, note)``: the channel(s) the model takes, the index of the one
        channel taken (None: no channel axis, or all channels), and a note saying which channel was
        chosen when the choice was the segmenter's (a nuclear stain, a colour), else None."""
        want = int(self.model.in_channels)
        if "C" not in axes:
            if want not in (1, 3):
                raise SegmenterError(f"the model takes {self.model.in_channels} channels; the image has none")
            return image, axes, None, None  # grey; an RGB model gets it repeated (_match_channels)
        c = axes.index("C")
        n = image.shape[c]
        if channel is None:
            nuclei = segments_nuclei(self)
            stain = nuclear_channel(channel_names, n) if nuclei else None
            if stain is not None and channel_names is not None:  # a channel named for a nuclear stain
                note = nuclear_channel_note(stain, channel_names)
                return np.take(image, stain, axis=c), axes.replace("C", ""), stain, note
            grey = pseudo_colour_channel(image, c) if want in (1, 3) else None
            if grey is not None:  # a fluorescence image saved with its colour table: its grey image
                colour = ("red", "green", "blue")[grey]
                note = (f"the colour image is one grey image shown in colour (its {colour} channel; the others "
                        "empty or the same image), as a fluorescence image saved with its colour table: "
                        f"segmented as grey from the {colour} channel")
                return np.take(image, grey, axis=c), axes.replace("C", ""), grey, note
            if n in (3, 4) and nuclei and not _equal_channels(image, c):
                composite, blue = fluorescence_composite(image, c)
                if composite and blue is not None:
                    note = ("the colour image is a composite of fluorescence stains: segmented its blue channel "
                            "(the nuclear stain's, by convention); choose another with channel= (--channel)")
                    return np.take(image, blue, axis=c), axes.replace("C", ""), blue, note
                if composite:
                    raise SegmenterError(
                        "the colour image is a composite of fluorescence stains in red and green, none in blue "
                        "(the nuclear stain's by convention): choose the nuclear channel with channel= (--channel)")
            if want == n or (want == 3 and n == 4):
                return image, axes, None, None  # the model takes all channels (RGBA: alpha dropped later)
            if n == 1:
                return np.take(image, 0, axis=c), axes.replace("C", ""), 0, None
            if n in (3, 4) and _equal_channels(image, c):
                return np.take(image, 0, axis=c), axes.replace("C", ""), 0, None  # grey stored as RGB
            raise SegmenterError(
                f"the image has {n} channels; choose one with channel= (index"
                + (f" or one of {list(channel_names)})" if channel_names else ")")
            )
        if isinstance(channel, str) and not channel.lstrip("-").isdigit():
            if not channel_names or channel not in list(channel_names):
                raise SegmenterError(f"no channel named {channel!r}; channels are {list(channel_names or [])}")
            idx = list(channel_names).index(channel)
        else:
            idx = int(channel)
        if not -n <= idx < n:
            raise SegmenterError(f"channel {idx} out of range: the image has {n} channels")
        return np.take(image, idx, axis=c), axes.replace("C", ""), idx % n, None

    def iter_segment(
        self,
        image: np.ndarray,
        axes: str | None = None,
        channel: int | str | None = None,
        channel_names: Sequence[str] | None = None,
        link: bool = False,
        link_iou: float = 0.3,
        stitch_iou: float = 0.3,
        norm_range: tuple[float, float] | None = None,
        pixel_size: float | None = None,
        **overrides: Any,
    ) -> Generator[Progress, None, SegmentationResult]:
        """Generator yielding :class:`Progress`; returns a :class:`SegmentationResult`.

        ``pixel_size`` (µm/px, e.g. from the file's metadata) is used when the segmenter
        was given none. NaN and infinite pixels of a float image are missing data: filled with
        the lowest finite value of their frame (:func:`cellseg.io.fill_nonfinite`) before
        anything sees them, label 0 there, and a warning gives their count; an image without a
        finite pixel is a :class:`SegmenterError`."""
        image = np.asarray(image)
        if image.size == 0:
            raise SegmenterError("the image is empty (size 0)")
        axes = resolve_axes(image, axes)
        missing: np.ndarray | None = None
        read_axes = axes
        if image.dtype.kind == "f":
            from .io import fill_nonfinite

            try:  # NaN/inf pixels (the border of a registered image) are missing data: label 0 there
                image, missing = fill_nonfinite(image, axes, where="the image")
            except ValueError as exc:
                raise SegmenterError(str(exc)) from None
        image, axes, channel_index, channel_note = self._select_channel(image, axes, channel, channel_names)
        params = self.rep.params({**dataclasses.asdict(self.params)}, **overrides) if overrides else self.params
        sp = self.spatial_ndim
        # frame axes: T always; Z too when the model is 2D
        if sp == 3:
            if "Z" not in axes:
                raise SegmenterError(f"this model segments 3D volumes (ZYX); the image has axes {axes!r}")
            frame_axes = [a for a in axes if a not in "ZYX" and a != "C"]
            space = "ZYX"
        else:
            frame_axes = [a for a in axes if a not in "YX" and a != "C"]
            space = "YX"
        if any(a not in "TZ" for a in frame_axes):
            raise SegmenterError(f"cannot segment axes {axes!r}")
        chan_last = "C" in axes
        # canonical order: frame axes (T then Z), [C], spatial
        order = [a for a in "TZ" if a in frame_axes] + (["C"] if chan_last else []) + list(space)
        perm = [axes.index(a) for a in order]
        data = np.transpose(image, perm)
        n_frame_dims = len(frame_axes)
        frame_shape = data.shape[:n_frame_dims]
        out_axes = "".join(a for a in order if a != "C")
        spatial_shape = data.shape[n_frame_dims + (1 if chan_last else 0):]
        labels = np.zeros(frame_shape + spatial_shape, np.int32)
        # denoised frames (constant frames stay as they are)
        den = np.array(data, np.float32) if self.denoise else None
        frames: list[FrameResult] = []
        n_frames = int(np.prod(frame_shape)) if frame_shape else 1
        next_id = 1
        mode, diam = self.scale_mode(pixel_size)
        factor = 1.0 if diam is None else float(self.object_size["diameter"]) / diam
        warnings: list[str] = [channel_note] if channel_note else []
        checked = False
        flatten: bool | None = None if norm_range is None and sp == 2 and self.flat_field != "off" else False
        smooth: bool | None = None if norm_range is None and sp == 2 and self.noise_filter != "off" else False
        for fi, idx in enumerate(np.ndindex(*frame_shape) if frame_shape else [()]):
            x = data[idx]
            if chan_last:
                x = np.ascontiguousarray(x)  # (C, *spatial)
            x = self._match_channels(x, chan_last)
            if not np.any(x != x.flat[0]):
                frames.append(self._empty_frame(idx))
                yield Progress("decode", 1, 1, fi, n_frames, "constant frame: no objects")
                continue
            if not checked:  # the first frame with content: does it look like the training data?
                checked = True
                msg = self._modality_warning(x)
                if msg:
                    warnings.append(msg)
                    yield Progress("warning", 0, 1, fi, n_frames, msg)
            x_read = x
            if flatten is None:  # decided once per stack, by its first frame with content
                flatten = self.flat_field == "on" or self._bright_background(x)
            if flatten:
                from .preprocess import flat_field

                x = flat_field(x, channel_axis=0 if x.ndim > sp else None)
            if smooth is None:  # decided once per stack, by its first frame with content
                smooth = self.noise_filter == "on" or self._noisy(x)
            if smooth:
                from .preprocess import denoise_frame

                x = denoise_frame(x, channel_axis=0 if x.ndim > sp else None)
            outputs = decoded = None
            if mode == "auto" and diam is None:
                # one estimate for the whole stack, from its first non-constant frame
                yield Progress("scale", 0, 1, fi, n_frames, "estimating the object size")
                diam, reuse = self._estimate(x)
                if diam is None:
                    diam = float(self.object_size["diameter"])
                    msg = "no objects found by the size estimate: segmenting at the image's own scale"
                    warnings.append(msg + " (give diameter= / --diameter if the objects are there)")
                else:
                    msg = f"object diameter {diam:.1f} px"
                factor = float(self.object_size["diameter"]) / diam
                clipped = self._clip_factor(factor)
                if factor < self.MIN_FACTOR or factor > self.MAX_FACTOR:
                    warnings.append(self._range_message(diam, clipped))
                factor = clipped
                if reuse is not None and norm_range is None:
                    # a pass of the estimate covered the whole frame at nearly this scale: its outputs are the
                    # result, and so are its labels when decoded with these parameters
                    factor, outputs, decoded = reuse
                    if params != self.params:
                        decoded = None
                yield Progress("scale", 1, 1, fi, n_frames, msg)
            elif mode != "off":
                assert diam is not None  # "fixed", or "auto" once estimated
                if (factor < self.MIN_FACTOR or factor > self.MAX_FACTOR) and not any("bridge" in w for w in warnings):
                    warnings.append(self._range_message(diam, self._clip_factor(factor)))
                factor = self._clip_factor(factor)
            if outputs is None:
                xs = x if factor == 1.0 else self._zoom(x, factor)
                gen = self.predict(xs, norm_range)
                while True:
                    try:
                        done, total = next(gen)
                    except StopIteration as stop:
                        outputs = stop.value
                        break
                    yield Progress("predict", done, total, fi, n_frames)
            # outputs of earlier frames are not kept unless asked: memory stays bounded
            fr, next_id = self._decode_frame(idx, outputs, params, next_id, labels, keep=self.keep_outputs,
                                             decoded=decoded)
            if den is not None:
                from .denoise import denoised_like

                same = factor == 1.0 and not (flatten or smooth)  # the network saw the frame as read
                den[idx] = denoised_like(self, data[idx], x_read, outputs if same else None, norm_range)
            frames.append(fr)
            yield Progress("decode", 1, 1, fi, n_frames)
        in_axes = "".join(a for a in axes if a != "C")
        res = self._finish(labels, frames, out_axes, in_axes, params, link, link_iou, stitch_iou)
        res.scale = float(factor)
        res.diameter = None if mode == "off" else diam
        if missing is not None:
            from .io import clear_missing

            warnings.insert(0, clear_missing(res.labels, res.axes, missing, read_axes))
        res.warnings = warnings
        res.flat_field = bool(flatten)
        res.noise_filter = bool(smooth)
        res.channel = channel_index
        if den is not None:
            res.denoised = np.ascontiguousarray(np.transpose(den, np.argsort(perm)))
        return res

    def _range_message(self, diam: float, used: float) -> str:
        d0 = float(self.object_size["diameter"])
        return (f"objects of {diam:.1f} px are too far from the model's {d0:g} px for resampling to bridge "
                f"(factor {d0 / diam:.3g} outside {self.MIN_FACTOR:g}-{self.MAX_FACTOR:g}); resampled by "
                f"{used:.3g} only: check the diameter")

    def _modality_warning(self, x: np.ndarray) -> str | None:
        """A message when frame ``x`` ``(C?, *spatial)`` looks unlike the model's training images,
        or more like those of a bundled model for other objects (:func:`cellseg.qc.suggest_model`)."""
        from .qc import image_features, suggest_model, unlike_training

        cfg = self.model.config
        stats = cfg.get("image_stats")
        if not stats:
            return None
        ca = 0 if x.ndim > self.spatial_ndim else None
        features = image_features(x, channel_axis=ca, pmin=self.normalize[0], pmax=self.normalize[1])
        off = unlike_training(features, stats)
        other = suggest_model(features, cfg.get("objects"), stats)
        if not off and not other:
            return None
        name = cfg.get("name") or "the model"
        hint = (f"'{other[0]}', a model for {other[1]}: if it shows {other[1]}, use that model "
                f"(--model {other[0]})") if other else ""
        if not off:
            return f"the image looks like {name}'s training data but more like that of {hint}"
        return (f"the image looks unlike {name}'s training data ({'; '.join(off)}): another modality? "
                "The labels may be poor; 'cellseg models' lists models for other images"
                + (f"; it looks like the training images of {hint}" if other else ""))

    def _bright_background(self, x: np.ndarray) -> bool:
        """Whether the 2D frame ``x`` ``(C?, Y, X)`` is corrected by ``flat_field="auto"``: whether it
        has a bright background once corrected (a strong gradient can pull the median of a bright
        field below the middle of its range), judged on every n-th pixel (about 512 across)."""
        from .preprocess import bright_background, flat_field

        ca = 0 if x.ndim > self.spatial_ndim else None
        step = max(1, min(x.shape[-2:]) // 512)
        sub = flat_field(x[..., ::step, ::step], channel_axis=ca)
        return bright_background(sub, channel_axis=ca, pmin=self.normalize[0], pmax=self.normalize[1])

    def _noisy(self, x: np.ndarray) -> bool:
        """Whether ``noise_filter="auto"`` filters the 2D frame ``x`` ``(C?, Y, X)``: noisy
        fluorescence, a dark background (the median of its 4 x 4 pixel means in the lowest quarter
        of their range; DIC and phase contrast have mid-grey backgrounds, brightfield and stains
        bright ones) with noise (:func:`cellseg.preprocess.noise_level`) above
        :data:`cellseg.preprocess.NOISE_LEVEL` of its range."""
        from .preprocess import NOISE_LEVEL, luminance, noise_level

        lum = luminance(x, 0 if x.ndim > self.spatial_ndim else None)
        if min(lum.shape) < 8:
            return False
        h, w = (lum.shape[0] // 4) * 4, (lum.shape[1] // 4) * 4
        means = lum[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))
        means = means[np.isfinite(means)]
        lo, hi = np.percentile(means, self.normalize)
        if not hi > lo or np.median(means) - lo >= 0.25 * (hi - lo):
            return False
        return noise_level(lum, pmin=self.normalize[0], pmax=self.normalize[1]) > NOISE_LEVEL

    #: the resampling factor is kept within these bounds (beyond them the image would be
    #: blown up or shrunk to a few pixels by a bad estimate)
    MIN_FACTOR, MAX_FACTOR = 0.1, 8.0

    def _clip_factor(self, f: float) -> float:
        f = float(min(self.MAX_FACTOR, max(self.MIN_FACTOR, f)))
        return 1.0 if abs(f - 1.0) < 0.02 else f  # within 2% of the model's size: no resampling

    def _zoom(self, x: np.ndarray, factor: float) -> np.ndarray:
        from .scale import zoom_image

        return zoom_image(np.asarray(x, np.float32), factor, self.spatial_ndim)

    def _match_channels(self, x: np.ndarray, has_c: bool) -> np.ndarray:
        """A frame with the channels the model takes: grey repeated for an RGB model, alpha dropped."""
        want = int(self.model.in_channels)
        if want == 1:
            return x
        if not has_c:
            x = x[None]
        c = x.shape[0]
        if c == want:
            return x
        if c == 1:
            return np.repeat(x, want, axis=0)
        if want == 3 and c == 4:
            return x[:3]
        raise SegmenterError(f"the model takes {want} channels; the image has {c}")  # pragma: no cover

    @staticmethod
    def _empty_frame(idx: tuple[int, ...]) -> FrameResult:
        return FrameResult(index=tuple(idx), scores=np.zeros(0, np.float32), extra={}, id_scores={}, empty=True)

    def _decode_frame(self, idx: tuple[int, ...], outputs: dict[str, np.ndarray], params: Any, next_id: int,
                      labels: np.ndarray, keep: bool = True,
                      decoded: Decoded | None = None) -> tuple[FrameResult, int]:
        """Decode one frame into ``labels[idx]`` with ids from ``next_id`` on (its head outputs kept
        in the frame when ``keep``; ``decoded``: these outputs already decoded with ``params``)."""
        dec = self.rep.decode(outputs, params) if decoded is None else decoded
        lab = dec.labels
        target = labels[tuple(idx)].shape
        if lab.shape != target:  # segmented at the model's scale: back onto the input grid
            from .scale import resize_labels

            lab = resize_labels(lab, target)
        n = int(lab.max()) if lab.size else 0
        if n:
            lab = np.where(lab > 0, lab + (next_id - 1), 0).astype(np.int32)
        labels[tuple(idx)] = lab
        id_scores = {next_id + i: float(s) for i, s in enumerate(np.asarray(dec.scores).ravel())}
        fr = FrameResult(index=tuple(idx), scores=dec.scores, extra=dec.extra, id_scores=id_scores,
                         outputs=outputs if keep else None)
        return fr, next_id + n

    def _finish(self, labels: np.ndarray, frames: list[FrameResult], canon_axes: str, in_axes: str, params: Any,
                link: bool, link_iou: float, stitch_iou: float) -> SegmentationResult:
        """Stitch Z slices of a 2D model, link T frames, and return labels in the input's axis order."""
        if self.spatial_ndim == 2 and "Z" in canon_axes:
            labels = self._link(labels, canon_axes.index("Z"), stitch_iou, frames)
        if link and "T" in canon_axes:
            labels = self._link(labels, canon_axes.index("T"), link_iou, frames)
        back = [canon_axes.index(a) for a in in_axes]
        labels = np.ascontiguousarray(np.transpose(labels, back))
        return SegmentationResult(labels=labels, axes=in_axes, frames=frames, params=params,
                                  canon_axes=canon_axes, link=link, link_iou=link_iou, stitch_iou=stitch_iou)

    def redecode(self, result: SegmentationResult, params: Any = None, **overrides: Any) -> SegmentationResult:
        """Decode the head outputs kept in ``result`` (``keep_outputs=True``) again with new
        decode parameters — no network call — assembling frames exactly as
        :meth:`iter_segment` does (id offsets, Z stitching, T linking)."""
        if any(fr.outputs is None and not fr.empty for fr in result.frames):
            raise ValueError("this result kept no head outputs: segment with keep_outputs=True")
        base = dataclasses.asdict(self.params)
        if params is not None:
            base.update(self._as_dict(params))
        p = self.rep.params(base, **overrides)
        canon_shape = tuple(result.labels.shape[result.axes.index(a)] for a in result.canon_axes)
        labels = np.zeros(canon_shape, np.int32)
        frames: list[FrameResult] = []
        next_id = 1
        for fr in result.frames:
            if fr.empty or fr.outputs is None:
                frames.append(self._empty_frame(fr.index))
                continue
            new, next_id = self._decode_frame(fr.index, fr.outputs, p, next_id, labels)
            frames.append(new)
        out = self._finish(labels, frames, result.canon_axes, result.axes, p, result.link, result.link_iou,
                           result.stitch_iou)
        out.scale, out.diameter = result.scale, result.diameter
        out.denoised = result.denoised
        return out

    @staticmethod
    def _link(labels: np.ndarray, axis: int, iou: float, frames: list[FrameResult]) -> np.ndarray:
        """Relabel along ``axis`` by IoU; the frames' ``id_scores`` follow the new ids (the list is
        updated in place)."""
        stack = np.moveaxis(labels, axis, 0)
        linked, mapping = link_by_iou(stack, iou)
        for i, fr in enumerate(frames):
            frames[i] = dataclasses.replace(fr, id_scores={int(mapping.get(k, k)): v for k, v in fr.id_scores.items()})
        return np.ascontiguousarray(np.moveaxis(linked, 0, axis))

    def segment(self, image: np.ndarray, **kwargs: Any) -> SegmentationResult:
        """Run :meth:`iter_segment` to the end and return its result."""
        return drain(self.iter_segment(image, **kwargs))
