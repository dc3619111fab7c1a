"""Decoder knobs, declared once per field of a representation's ``Params`` dataclass.

A knob is a dataclass field made with :func:`knob`: its default, its valid range
(``ge``/``gt``/``le``/``lt`` or ``choices``), its help text, the coarse grid the
threshold search uses (``tune``), the command-line flag that sets it (``cli``), the
representation mode it belongs to (``mode``; None: every mode) and the value that
turns its rule off (``off``). The Python type comes from the field's annotation
(``int``, ``float``, ``str``, ``bool``, optionally ``| None``).

Everything else is read from these declarations:

* validation: :func:`validate`, called by every ``Params.__post_init__``;
* the threshold search space: :func:`tuning_space` (``cellseg.train.tune.TUNABLE``);
* the ``cellseg segment`` flags: :func:`cli_flags` builds them, :func:`cli_aliases`
  maps them onto a representation's fields;
* the napari controls: :func:`knob_of` (help as tooltip, ``low``/``high`` as range);
* the knobs a configuration uses: :func:`used_fields` (a cellpose-mode flows model
  hides the omnipose knobs, and the other way round);
* the parameter list of a ``Params`` docstring: :func:`document`.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

if TYPE_CHECKING:
    from .base import Representation

__all__ = ["Knob", "knob", "knob_of", "off_value", "validate", "document", "used_fields", "tuning_space", "cli_aliases",
           "cli_flags", "representation_classes"]

_KEY = "cellseg.knob"
_UNSET: Any = object()


@dataclass(frozen=True)
class Knob:
    """What is declared about one decoder knob (see the module docstring)."""

    help: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple | None = None
    #: coarse grid of the threshold search: (low, high, number of points)
    tune: tuple[float, float, int] | None = None
    #: command-line flag of ``cellseg segment`` that sets this knob (``--prob-thresh``)
    cli: str | None = None
    #: the representation mode that uses the knob (None: all modes)
    mode: str | None = None
    #: the value that disables the knob's rule (``_UNSET``: none declared)
    off: Any = _UNSET

    @property
    def low(self) -> float | None:
        """Lower bound (closed or open), None when there is none."""
        return self.ge if self.ge is not None else self.gt

    @property
    def high(self) -> float | None:
        """Upper bound (closed or open), None when there is none."""
        return self.le if self.le is not None else self.lt

    @property
    def has_off(self) -> bool:
        return self.off is not _UNSET

    def rule(self, kinds: frozenset[str] = frozenset({"float"}), finite: bool = True) -> str:
        """What a valid value is, in words (``in [0, 1)``, ``a non-negative integer``)."""
        lo: float | None
        hi: float | None
        if self.choices is not None:
            text = f"one of {self.choices}"
        elif "int" in kinds:
            lo, hi = self._int_bounds()
            if lo is not None and hi is not None:
                text = f"an integer in [{lo}, {hi}]"
            elif lo == 0:
                text = "a non-negative integer"
            elif lo is not None:
                text = f"an integer >= {lo}"
            elif hi is not None:
                text = f"an integer <= {hi}"
            else:
                text = "an integer"
        elif "float" in kinds:
            lo, hi = self.low, self.high
            if lo is not None and hi is not None:
                left, right = "[" if self.ge is not None else "(", "]" if self.le is not None else ")"
                text = f"in {left}{_num(lo)}, {_num(hi)}{right}"
            else:
                side = (f"{'>=' if self.ge is not None else '>'} {_num(lo)}" if lo is not None else
                        f"{'<=' if self.le is not None else '<'} {_num(hi)}" if hi is not None else "")
                text = ("a finite number " + side).strip() if (not finite or not side) else side
        elif "bool" in kinds:
            text = "True or False"
        else:
            text = "a string"
        return text + (" or None" if "None" in kinds else "")

    def _int_bounds(self) -> tuple[int | None, int | None]:
        lo = (math.ceil(self.ge) if self.ge is not None else
              math.floor(self.gt) + 1 if self.gt is not None else None)
        hi = (math.floor(self.le) if self.le is not None else
              math.ceil(self.lt) - 1 if self.lt is not None else None)
        return lo, hi

    def contains(self, value: float) -> bool:
        """Whether a number lies within the declared bounds and choices."""
        if self.choices is not None and value not in self.choices:
            return False
        return ((self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
                and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt))


def knob(default: Any, *, help: str, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: Iterable | None = None, tune: tuple[float, float, int] | None = None,
         cli: str | None = None, mode: str | None = None, off: Any = _UNSET) -> Any:
    """A ``Params`` dataclass field declaring one decoder knob (see the module docstring).

    ``ge``/``gt``/``le``/``lt``: closed and open bounds; ``choices``: the allowed values;
    ``tune``: ``(low, high, n)`` coarse grid of the threshold search, inside the bounds;
    ``cli``: the ``cellseg segment`` flag (``--prob-thresh``); ``mode``: the representation
    mode that uses the knob; ``off``: the value that disables its rule.
    """
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise ValueError("give one lower bound (ge or gt) and one upper bound (le or lt)")
    k = Knob(help=help, ge=ge, gt=gt, le=le, lt=lt, choices=None if choices is None else tuple(choices),
             tune=None if tune is None else (float(tune[0]), float(tune[1]), int(tune[2])), cli=cli, mode=mode,
             off=off)
    if k.tune is not None:
        lo, hi, n = k.tune
        if not (lo <= hi and n >= 1 and k.contains(lo) and k.contains(hi)):
            raise ValueError(f"tune must be (low, high, n) inside the knob's bounds, got {tune!r}")
    if cli is not None and not (cli.startswith("--") and cli[2:].replace("-", "").isalnum()):
        raise ValueError(f"cli must be a long option such as '--prob-thresh', got {cli!r}")
    return dataclasses.field(default=default, metadata={_KEY: k})


def knob_of(field: dataclasses.Field) -> Knob:
    """The declaration of a ``Params`` field (an empty :class:`Knob` for a plain field)."""
    return field.metadata.get(_KEY, Knob())


def off_value(cls: type, name: str) -> Any:
    """The value that disables the rule of knob ``name`` of ``cls`` (``KeyError`` when none is declared)."""
    field = next((f for f in dataclasses.fields(cls) if f.name == name), None)
    k = Knob() if field is None else knob_of(field)
    if not k.has_off:
        raise KeyError(f"{cls.__name__}.{name} declares no value that disables it")
    return k.off


def _kinds(annotation: Any) -> frozenset[str]:
    """``{"float", "None"}`` for ``float | None`` (annotations are strings under
    ``from __future__ import annotations``)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    return frozenset(t.strip() for t in text.split("|"))


def _num(x: float) -> str:
    return f"{x:g}"


def _show(value: Any) -> str:
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    return str(value) if number else repr(value)


def _check(name: str, value: Any, kinds: frozenset[str], k: Knob) -> Any:
    """``value`` when it is valid for the knob (integral numbers of an ``int`` knob as
    ``int``); ``TypeError`` for a value of another type, ``ValueError`` out of range."""
    if value is None and "None" in kinds:
        return value
    if "str" in kinds:
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a string, got {value!r}")
        if k.choices is not None and value not in k.choices:
            raise ValueError(f"{name} must be {k.rule(kinds)}, got {value!r}")
        return value
    if "bool" in kinds:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r}")
        return bool(value)
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not number:
        raise TypeError(f"{name} must be {'an integer' if 'int' in kinds else 'a number'}, got {value!r}")
    finite = bool(np.isfinite(value))
    if "int" in kinds:
        if not (finite and float(value).is_integer()):
            raise ValueError(f"{name} must be {k.rule(kinds)}, got {_show(value)}")
        value = value if type(value) is int else int(value)
    if not (finite and k.contains(value)):
        raise ValueError(f"{name} must be {k.rule(kinds, finite)}, got {_show(value)}")
    return value


def validate(params: Any) -> None:
    """Check every declared field of a frozen ``Params`` instance against its knob:
    ``TypeError`` naming the field for a value of the wrong type, ``ValueError`` naming it
    and the valid range otherwise. Integral numbers of ``int`` fields become ``int``."""
    for f in dataclasses.fields(params):
        if _KEY not in f.metadata:
            continue
        value = getattr(params, f.name)
        checked = _check(f.name, value, _kinds(f.type), f.metadata[_KEY])
        if checked is not value:
            object.__setattr__(params, f.name, checked)


def document(cls: type) -> type:
    """Class decorator: append the knobs (help, valid values, default, mode, flag) to the
    docstring of a ``Params`` dataclass."""
    lines = []
    for f in dataclasses.fields(cls):
        k = knob_of(f)
        extra = [f"{k.rule(_kinds(f.type))}", f"default {f.default!r}"]
        if k.mode:
            extra.append(f"{k.mode} mode only")
        if k.cli:
            extra.append(f"``cellseg segment {k.cli}``")
        lines.append(f"{f.name} : {f.type}\n    {k.help} ({'; '.join(extra)})")
    doc = (cls.__doc__ or "").rstrip()
    cls.__doc__ = f"{doc}\n\n    Parameters\n    ----------\n" + "\n".join(
        "    " + line.replace("\n", "\n    ") for line in lines) + "\n"
    return cls


def _params_cls(target: Any) -> type:
    params = getattr(target, "Params", target)
    if not dataclasses.is_dataclass(params):
        raise TypeError(f"expected a representation or a Params dataclass, got {target!r}")
    return params if isinstance(params, type) else type(params)


def used_fields(target: Any, mode: str | None = _UNSET) -> tuple[str, ...]:
    """Names of the fields of ``target`` (a representation or its ``Params``) that its
    ``mode`` uses (default: the representation's ``mode`` attribute, None without one);
    knobs declared without a mode belong to every mode."""
    if mode is _UNSET:
        mode = getattr(target, "mode", None) if not isinstance(target, type) else None
    return tuple(f.name for f in dataclasses.fields(_params_cls(target)) if knob_of(f).mode in (None, mode))


def _fields_of(target: Any) -> list[dataclasses.Field]:
    """The fields of a representation's Params its configuration uses (all fields of a Params class)."""
    fields = dataclasses.fields(_params_cls(target))
    if isinstance(target, type):
        return list(fields)
    used = set(target.decode_param_names())
    return [f for f in fields if f.name in used]


def tuning_space(target: Any) -> dict[str, tuple[float, float, int]]:
    """``{field: (low, high, n)}`` of the tunable knobs of ``target`` (a representation, whose
    mode's knobs count, or a ``Params`` class), in declaration order (the threshold search
    refines the first one first)."""
    space: dict[str, tuple[float, float, int]] = {}
    for f in _fields_of(target):
        tune = knob_of(f).tune
        if tune is not None:
            space[f.name] = tune
    return space


def cli_aliases(target: Any) -> dict[str, str]:
    """``{flag: field}``: the ``cellseg segment`` flags that set knobs of ``target``."""
    out: dict[str, str] = {}
    for f in _fields_of(target):
        flag = knob_of(f).cli
        if flag is not None:
            if flag in out:
                raise ValueError(f"{flag} is declared on two fields, {out[flag]} and {f.name}")
            out[flag] = f.name
    return out


def representation_classes() -> dict[str, type[Representation]]:
    """``{label: class}`` of every representation class: the registered ones and the variants
    :func:`cellseg.representations.get` builds from their configuration (``stardist3d``)."""
    from . import REGISTRY, VARIANTS

    return {label: getattr(importlib.import_module(mod), cls)
            for label, (mod, cls) in list(REGISTRY.items()) + list(VARIANTS.items())}


def cli_flags() -> dict[str, dict[str, Any]]:
    """The ``cellseg segment`` decode flags declared by the representations: ``{flag: {"type":
    float | int, "help": text, "fields": {field names it sets}}}``."""
    flags: dict[str, dict[str, Any]] = {}
    for cls in representation_classes().values():
        for f in dataclasses.fields(cls.Params):
            k = knob_of(f)
            if k.cli is None:
                continue
            kinds = _kinds(f.type)
            entry = flags.setdefault(k.cli, {"type": int if "int" in kinds else float, "fields": set(),
                                             "groups": {}, "helps": []})
            entry["fields"].add(f.name)
            names = entry["groups"].setdefault(f"{f.name} ({k.rule(kinds)})", [])
            if cls.name not in names:
                names.append(cls.name)
            if k.help and k.help not in entry["helps"]:
                entry["helps"].append(k.help)
    for entry in flags.values():
        groups, helps = entry.pop("groups"), entry.pop("helps")
        entry["help"] = "decode parameter override, by the model's representation: " + "; ".join(
            f"{', '.join(names)}: {what}" for what, names in groups.items())
        if len(groups) == 1 and helps:
            entry["help"] += f" -- {helps[0]}"
    return flags
