"""The Representation protocol shared by every instance representation.

A representation owns both directions:

* ``encode(labels) -> {target name: float32 array}`` — training targets computed
  from an int32 label image (2D ``(Y, X)`` or 3D ``(Z, Y, X)``). Every target is
  channel-first: ``(C, *spatial)``.
* ``decode(outputs, params) -> Decoded`` — turns the network's *activated* head
  outputs ``{head name: float32 (C, *spatial)}`` into an int32 label image.

The network side only needs :meth:`Representation.heads`: the names, channel
counts and output activations of the heads it must grow. Torch never appears
here; everything is NumPy / numba on plain arrays.

Decoder knobs live in a small frozen dataclass (``Representation.Params``);
:func:`make_params` builds one from a dataclass, a mapping or ``None`` and
raises on unknown names.
"""
from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping

import numpy as np

__all__ = ["HeadSpec", "Decoded", "Representation", "make_params", "check_outputs", "check_values"]

ACTIVATIONS = ("identity", "sigmoid", "softplus", "tanh", "relu")


@dataclass(frozen=True)
class HeadSpec:
    """One output head of the network.

    ``activation`` is applied by the network at inference (``identity``,
    ``sigmoid``, ``softplus``, ``tanh`` or ``relu``); losses receive the raw
    (pre-activation) tensor and the activation name so they can use logits.
    ``bias_init``: when set, the head's 1×1 convolution starts with zero weights
    and this bias (a known starting output, as Neven et al. 2019 start the
    offsets at 0 and the margins at ``exp(10 * 1)``); ``None`` keeps torch's
    default initialization.
    """

    name: str
    channels: int
    activation: str = "identity"
    bias_init: float | None = None

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {ACTIVATIONS}")
        if self.channels < 1:
            raise ValueError("a head needs at least one channel")
        if self.bias_init is not None and not np.isfinite(self.bias_init):
            raise ValueError(f"bias_init must be finite, got {self.bias_init}")


@dataclass
class Decoded:
    """Result of a decoder.

    labels : int32 label image, 0 = background, ids 1..n
    scores : float32 array of length n; ``scores[i-1]`` is the score of object i
             (mean probability / seed score; NaN where the decoder has none)
    extra  : decoder specific extras (``polygons`` and ``points`` for rays,
             ``flow_errors`` for flows, ...)
    """

    labels: np.ndarray
    scores: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_objects(self) -> int:
        return int(self.scores.shape[0])


def make_params(cls: type, params: Any = None, **overrides) -> Any:
    """Build a frozen params dataclass ``cls`` from ``None``, an instance, or a mapping.

    Unknown names raise ``TypeError`` naming them and listing the valid ones; a value of the
    wrong type (a string for a number, a fraction for an integer) raises ``TypeError`` naming
    the parameter; the ranges are checked by ``cls`` itself (``ValueError``).
    """
    if params is None:
        base: dict[str, Any] = {}
    elif isinstance(params, cls) and dataclasses.is_dataclass(params) and not isinstance(params, type):
        base = dataclasses.asdict(params)
    elif isinstance(params, Mapping):
        base = dict(params)
    else:
        raise TypeError(f"params must be None, a {cls.__name__} or a mapping, got {type(params).__name__}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    valid = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(base) - valid)
    if unknown:
        raise TypeError(
            f"unknown {cls.__name__} parameter(s) {unknown}; valid names are {sorted(valid)}"
        )
    types = {f.name: f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "") for f in
             dataclasses.fields(cls)}
    for k, v in base.items():
        _check_type(k, v, types[k])
    return cls(**base)


def _check_type(name: str, value: Any, annotation: str) -> None:
    """``TypeError`` naming the parameter when ``value`` does not fit its declared type
    (``int``, ``float``, ``str``, optionally ``| None``); the ranges are checked by the dataclass."""
    kinds = {t.strip() for t in str(annotation).split("|")}
    if "None" in kinds and value is None:
        return
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if "int" in kinds and not (number and float(value).is_integer()):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if "float" in kinds and not number:
        raise TypeError(f"{name} must be a number, got {value!r}")
    if "str" in kinds and not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {value!r}")


def check_outputs(outputs: Mapping[str, np.ndarray], heads, ndim: int | None = None,
                  deferred: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Validate decoder inputs once: every head present, (C, *spatial) float32, same spatial shape,
    finite values.

    The values of the heads named in ``deferred`` are not scanned here: the
    decoder reads them at a few places only and checks what it reads with
    :func:`check_values` (StarDist's 32 distance planes are read at the
    candidate pixels only, and scanning all of them cost as much as the NMS).
    Returns C-contiguous float32 copies/views keyed by head name.
    """
    if not isinstance(outputs, Mapping):
        raise TypeError("outputs must be a mapping {head name: array}")
    out: dict[str, np.ndarray] = {}
    shape = None
    for h in heads:
        if h.name not in outputs:
            raise KeyError(f"missing head output {h.name!r}; got {sorted(outputs)}")
        a = np.asarray(outputs[h.name])
        if a.ndim < 3 or a.shape[0] != h.channels:
            raise ValueError(
                f"head {h.name!r}: expected shape ({h.channels}, *spatial) with 2 or 3 spatial "
                f"dimensions, got {a.shape}"
            )
        if ndim is not None and a.ndim - 1 != ndim:
            raise ValueError(f"head {h.name!r}: expected {ndim} spatial dimensions, got {a.ndim - 1}")
        if shape is None:
            shape = a.shape[1:]
        elif a.shape[1:] != shape:
            raise ValueError(f"head {h.name!r} has spatial shape {a.shape[1:]}, others {shape}")
        a = np.ascontiguousarray(a, dtype=np.float32)
        if h.name not in deferred:
            check_values(a, h.name)
        out[h.name] = a
    return out


def check_values(a: np.ndarray, name: str, nonnegative: bool = False, where: str = "") -> None:
    """Raise ValueError when ``a`` holds NaN or infinite values (or negative ones when ``nonnegative``)."""
    if a.size:
        # min/max propagate NaN and reach ±inf: no full-size temporary as np.isfinite(a)
        # would make; the min also settles the sign rule
        lo, hi = a.min(), a.max()
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"head {name!r} contains NaN or infinite values{where}")
        if nonnegative and lo < 0:
            raise ValueError(f"head {name!r} has negative values{where} (outputs must be activated)")


class Representation(abc.ABC):
    """Base class: subclasses set ``name`` and ``Params`` and implement the methods.

    The constructor arguments are the representation's *config* (saved with a
    model, e.g. ``n_rays``); :meth:`config` returns them as a JSON-able dict and
    ``type(rep)(**rep.config())`` rebuilds an equal representation.
    """

    name: ClassVar[str]
    Params: ClassVar[type]
    #: spatial dimensionalities the representation supports
    ndims: ClassVar[tuple[int, ...]] = (2,)

    @abc.abstractmethod
    def heads(self) -> tuple[HeadSpec, ...]:
        """Heads the network must produce, in a fixed order."""

    @abc.abstractmethod
    def encode(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        """Training targets (float32, channel-first) from an integer label image."""

    @abc.abstractmethod
    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None) -> Decoded:
        """Label image from activated head outputs."""

    @abc.abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments as a JSON-able dict."""

    def params(self, params: Any = None, **overrides) -> Any:
        """Decode params with defaults, from a mapping/instance, unknown names raise."""
        return make_params(self.Params, params, **overrides)

    #: heads whose channel ``i`` is a component along spatial axis ``i`` (channel order = array
    #: axis order); True: a displacement (the component changes sign when its axis is flipped),
    #: False: a per-axis size (it only follows the axis when axes are swapped). Other heads are
    #: scalar fields. Used by :meth:`channel_map` (test-time augmentation).
    vector_heads: ClassVar[Mapping[str, bool]] = {}

    def channel_map(self, head: str, perm: tuple[int, ...], flips: tuple[bool, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Channels of ``head`` in the original frame from outputs of a transformed input.

        The network saw ``T(x)``: the spatial axes of ``x`` permuted (transformed axis
        ``a`` is original axis ``perm[a]``), then transformed axis ``a`` reversed where
        ``flips[a]``. Once the outputs are mapped back spatially, original channel ``c``
        is ``sign[c] * outputs[src[c]]``; returns ``(src, sign)`` (int64, float32).
        Scalar heads keep their channels; :attr:`vector_heads` follow the axes.
        """
        spec = {h.name: h for h in self.heads()}
        if head not in spec:
            raise KeyError(f"{type(self).__name__} has no head {head!r}")
        n = spec[head].channels
        src = np.arange(n, dtype=np.int64)
        sign = np.ones(n, np.float32)
        if head in self.vector_heads:
            nd = len(perm)
            if n != nd:
                raise ValueError(f"vector head {head!r} has {n} channels for {nd} spatial axes")
            inv = np.argsort(np.asarray(perm))
            src = inv.astype(np.int64)
            if self.vector_heads[head]:
                sign = np.array([-1.0 if flips[inv[i]] else 1.0 for i in range(nd)], np.float32)
        return src, sign

    def decode_param_names(self) -> tuple[str, ...]:
        """Names of the ``Params`` fields that change what :meth:`decode` returns for this
        configuration: the knobs declared without a mode and those of the representation's
        ``mode`` (see :mod:`cellseg.representations._params`); user interfaces show these and
        leave the others at their values."""
        from ._params import used_fields

        return used_fields(self)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.config().items()))))
