"""What the axes and channels of a layer are: guessed from its shape, metadata and napari
axis labels, offered as combo choices, and shown as napari axis labels."""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

__all__ = ["CHOOSE_AXES", "COLOUR", "axes_from_labels", "known_axes", "axes_choices", "axes_label",
           "axes_combo_choices", "axes_hint", "display_axis_labels", "default_axis_labels", "channel_names",
           "channel_choices", "training_channel_choices", "channels_equal", "pseudo_colour",
           "composite_nuclear_channel"]


#: the first entry of the axes combo while napari cannot tell the layer's axes (T or Z, or C)
CHOOSE_AXES = "choose the axes…"

#: napari axis labels (lower case) that name one of cellseg's axes
_AXIS_WORDS = {
    "t": "T", "time": "T", "frame": "T", "frames": "T",
    "z": "Z", "depth": "Z", "plane": "Z", "planes": "Z", "slice": "Z", "slices": "Z",
    "c": "C", "ch": "C", "channel": "C", "channels": "C",
    "y": "Y", "x": "X",
}


def _fits(axes, nd: int, rgb: bool = False) -> bool:
    """Whether ``axes`` is a usable axes string for a layer with ``nd`` dimensions."""
    return (isinstance(axes, str) and len(axes) == nd and set(axes) <= set("TZCYX") and len(set(axes)) == nd
            and "Y" in axes and "X" in axes and (not rgb or axes.endswith("C")))


def axes_from_labels(labels: Sequence[str] | None) -> str | None:
    """Axes letters named by napari axis labels (``t``/``time``, ``z``/``depth``, ``c``/``channel``,
    ``y``, ``x``; any case); None when a label names none of them (napari's defaults
    ``-3``, ``-2``, ``-1`` or ``0``, ``1``, ``2``) or two labels name the same axis."""
    if not labels:
        return None
    letters = [_AXIS_WORDS.get(str(lab).strip().lower()) for lab in labels]
    if None in letters or len(set(letters)) != len(letters):
        return None
    return "".join(letters)


def known_axes(shape: Sequence[int], rgb: bool = False, metadata: dict | None = None,
               axis_labels: Sequence[str] | None = None) -> str | None:
    """The axes of an image layer when they are known, else None (the user must choose).

    Known: ``metadata['axes']`` (set by this plugin's reader, its samples, and a previous
    choice), napari's axis labels of the layer (``axis_labels``: one per dimension, an RGB
    layer's without its colour axis) when they name the axes (``t``, ``z``, ``c``, ``y``,
    ``x``...), a 2-D layer (``YX``; RGB: ``YXC``), and a 3-D layer whose
    ``metadata['channel_names']`` match its first axis (``CYX``). A stack napari labels
    only by number is not guessed: T or Z decides whether frames are segmented one by one
    or planes stitched into 3-D objects (the CLI asks for ``--axes`` as well)."""
    nd = len(shape)
    meta = metadata or {}
    if _fits(meta.get("axes"), nd, rgb):
        return meta["axes"]
    named = axes_from_labels(axis_labels)
    if named is not None:
        named = named + "C" if rgb and "C" not in named else named
        if _fits(named, nd, rgb):
            return named
    if nd == 2 and not rgb:
        return "YX"
    if nd == 3 and rgb:
        return "YXC"
    names = meta.get("channel_names")
    if nd == 3 and not rgb and isinstance(names, (list, tuple)) and len(names) == shape[0] > 1:
        return "CYX"
    return None


def axes_choices(shape: Sequence[int], rgb: bool = False, metadata: dict | None = None,
                 axis_labels: Sequence[str] | None = None) -> list[str]:
    """Plausible axes strings (letters TZCYX) for an image layer: its known axes first
    (:func:`known_axes`), then the others, the most likely first; RGB layers end in ``YXC``."""
    nd = len(shape)
    known = known_axes(shape, rgb, metadata, axis_labels)
    cands: list[str] = [known] if known else []
    if rgb:
        base = {3: ["YXC"], 4: ["TYXC", "ZYXC"], 5: ["TZYXC"]}.get(nd, [])
    else:
        if nd == 2:
            base = ["YX"]
        elif nd == 3:
            base = ["CYX", "ZYX", "TYX"] if shape[0] <= 4 else ["ZYX", "TYX", "CYX"]
            if shape[-1] in (3, 4):
                base.append("YXC")
        elif nd == 4:
            base = ["TZYX", "CZYX", "ZCYX", "TCYX"] if min(shape[:2]) > 4 else (
                ["CZYX", "ZCYX", "TCYX", "TZYX"] if shape[0] <= 4 else ["ZCYX", "TCYX", "TZYX", "CZYX"])
        elif nd == 5:
            base = ["TZCYX", "TCZYX"]
        else:
            base = []
    for a in base:
        if a not in cands:
            cands.append(a)
    if not cands:
        raise ValueError(f"cannot segment an image with {nd} dimensions {tuple(shape)}")
    return cands


def axes_label(axes: str) -> str:
    """How the axes combo shows ``axes``: the letters and what they mean (``TYX: time-lapse``)."""
    what = []
    if "T" in axes and "Z" in axes:
        what.append("time-lapse of z-stacks")
    elif "T" in axes:
        what.append("time-lapse")
    elif "Z" in axes:
        what.append("z-stack")
    if "C" in axes:
        what.append("colour" if axes.endswith("YXC") else "channels")
    return f"{axes}: {', '.join(what)}" if what else axes


def axes_combo_choices(shape: Sequence[int], rgb: bool = False, metadata: dict | None = None,
                       axis_labels: Sequence[str] | None = None) -> list[tuple[str, str | None]]:
    """``(label, axes)`` pairs for the axes combo: the known axes first; when napari cannot
    tell them (:func:`known_axes`), :data:`CHOOSE_AXES` (value None) first, so nothing runs
    until the user chooses."""
    known = known_axes(shape, rgb, metadata, axis_labels)
    out: list[tuple[str, str | None]] = [] if known else [(CHOOSE_AXES, None)]
    return out + [(axes_label(a), a) for a in axes_choices(shape, rgb, metadata, axis_labels)]


def axes_hint(name: str, shape: Sequence[int], choices: Sequence[str | None]) -> str:
    """The message when a layer's axes are not chosen yet: what each letter does."""
    cands = [a for a in choices if a]
    parts = []
    if any("T" in a for a in cands):
        parts.append("T for time (each frame segmented on its own, optionally linked)")
    if any("Z" in a for a in cands):
        parts.append("Z for depth (planes stitched into 3-D objects)")
    if any("C" in a for a in cands):
        parts.append("C for channels")
    return (f"choose the axes of '{name}' {tuple(int(n) for n in shape)} (napari does not say): "
            + ", ".join(parts))


def display_axis_labels(axes: str) -> tuple[str, ...]:
    """napari axis labels for data with ``axes`` (lower-case letters: ``t``, ``z``, ``y``, ``x``)."""
    return tuple(a.lower() for a in axes)


def default_axis_labels(labels: Sequence[str] | None) -> bool:
    """True for napari's default axis labels (numbers such as ``-3``, ``-2``, ``-1`` or ``0``, ``1``)."""
    return labels is None or all(re.fullmatch(r"-?\d+", str(lab).strip()) for lab in labels)


def channel_choices(shape: Sequence[int], axes: str, rgb: bool = False, metadata: dict | None = None,
                    in_channels: int = 1, equal: bool = False,
                    pseudo: int | None = None, composite: int | None = None) -> list[tuple[str, int | None]]:
    """``(label, channel index or None)`` pairs for the channel combo; ``None`` hands the
    Segmenter all channels: offered first when the model takes as many channels as the
    image has (an RGB model also takes RGBA, alpha dropped), and for a 1-channel model
    when the colour channels are ``equal`` (grey stored as RGB, read as grey) or hold one grey
    image in colour channel ``pseudo`` (:func:`pseudo_colour`; the Segmenter takes that channel).
    For a nuclei model given a composite of fluorescence stains whose nuclear stain is in
    colour channel ``composite`` (:func:`composite_nuclear_channel`), the Segmenter takes that
    channel, and that is offered first."""
    if "C" not in axes:
        return []
    n = int(shape[axes.index("C")])
    names = channel_names(shape, axes, rgb, metadata)
    out: list[tuple[str, int | None]] = []
    if composite is not None:
        out.append((f"its {('red', 'green', 'blue')[composite]} channel (the nuclear stain of a fluorescence "
                    "composite)", None))
    elif in_channels == n and n > 1:
        out.append(("all channels", None))
    elif in_channels == 3 and n == 4:
        out.append(("all channels (alpha dropped)" if rgb else "channels 0-2 (the 4th dropped)", None))
    elif in_channels == 1 and n in (3, 4) and equal:
        out.append(("grey (equal colour channels)", None))
    elif in_channels == 1 and n in (3, 4) and pseudo is not None:
        out.append((f"grey (its {('red', 'green', 'blue')[pseudo]} channel, the others empty)", None))
    out += [(str(nm), i) for i, nm in enumerate(names)]
    return out


def _colour_array(data, axis: int, max_size: int) -> bool:
    """Whether ``data`` is an in-memory array of at most ``max_size`` elements with 3 or 4 entries
    along ``axis``: what the colour tests below read (nothing else is loaded)."""
    return (isinstance(data, np.ndarray) and data.size <= max_size and -data.ndim <= axis < data.ndim
            and data.shape[axis] in (3, 4))


def channels_equal(data, axis: int, max_size: int = 64_000_000) -> bool:
    """True when the first three channels of ``data`` along ``axis`` are identical (grey
    stored as RGB), as :class:`cellseg.segmenter.Segmenter` tests it. In-memory arrays of
    at most ``max_size`` elements only (others: False, nothing is loaded)."""
    if not _colour_array(data, axis, max_size):
        return False
    first = np.take(data, 0, axis=axis)
    return all(np.array_equal(first, np.take(data, i, axis=axis)) for i in (1, 2))


def pseudo_colour(data, axis: int, max_size: int = 64_000_000) -> int | None:
    """The colour channel of ``data`` along ``axis`` that holds its one grey image (a
    fluorescence image shown in a colour: DAPI in blue), as
    :func:`cellseg.segmenter.pseudo_colour_channel` finds it; None otherwise, and for arrays that
    are not in memory or larger than ``max_size`` elements (nothing is loaded)."""
    if not _colour_array(data, axis, max_size):
        return None
    from cellseg.segmenter import pseudo_colour_channel

    return pseudo_colour_channel(data, axis % data.ndim)


def composite_nuclear_channel(data, axis: int, max_size: int = 64_000_000) -> int | None:
    """The colour channel of ``data`` along ``axis`` that a nuclei model segments when ``data``
    is a composite of fluorescence stains (the blue one, by convention), as
    :func:`cellseg.segmenter.fluorescence_composite` finds it; None otherwise, and for arrays
    that are not in memory or larger than ``max_size`` elements (nothing is loaded)."""
    if not _colour_array(data, axis, max_size):
        return None
    from cellseg.segmenter import fluorescence_composite

    return fluorescence_composite(data, axis % data.ndim)[1]


#: the Train widget's channel choice that makes 3 colour channels (RGB kept, alpha dropped)
COLOUR = "rgb"


def channel_names(shape: Sequence[int], axes: str, rgb: bool, metadata: dict | None) -> list[str]:
    """Names of the channels along the C axis of ``axes``: red, green, blue (alpha) for RGB(A),
    else ``metadata['channel_names']`` when they fit, else ``channel <i>``."""
    n = int(shape[axes.index("C")])
    names = (metadata or {}).get("channel_names")
    if rgb and n in (3, 4):
        names = ["red", "green", "blue", "alpha"][:n]
    if not (isinstance(names, (list, tuple)) and len(names) == n):
        names = [f"channel {i}" for i in range(n)]
    return [str(nm) for nm in names]


def training_channel_choices(shape: Sequence[int], axes: str, rgb: bool = False, metadata: dict | None = None,
                             equal: bool = False) -> list[tuple[str, Any]]:
    """``(label, channel)`` pairs for the Train widget's channel combo, the default first:
    :data:`COLOUR` (3 colour channels: RGB kept, alpha dropped, by
    :func:`cellseg.train.general.to_rgb3`) for an RGB(A) layer, None (every channel an
    input channel of the model) for other multi-channel layers, then each channel by
    index (one channel: a grey model, or repeated for a 3-channel model). Colour channels
    that are ``equal`` (grey stored as RGB) offer grey (channel 0) first, then colour."""
    if "C" not in axes:
        return []
    n = int(shape[axes.index("C")])
    out: list[tuple[str, Any]] = []
    if equal and n in (3, 4):  # grey stored as colour: its channels are all the same
        return [("grey (equal colour channels)", 0), ("colour (3 equal channels)", COLOUR)]
    if rgb and n in (3, 4):
        out.append(("colour (RGB, alpha dropped)" if n == 4 else "colour (RGB)", COLOUR))
    elif n > 1:
        out.append((f"all {n} channels", None))
    names = channel_names(shape, axes, rgb, metadata)
    return out + [(f"{nm} only", i) for i, nm in enumerate(names)]
