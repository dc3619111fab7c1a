"""Decode parameter controls: the knobs of a representation's ``Params`` as widget specs,
and the values of the controls back as parameter values."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ParamSpec", "param_specs", "param_text", "coerce_param", "float_decimals"]


@dataclass(frozen=True)


class ParamSpec:
    """One decode parameter control: ``kind`` is 'bool', 'int', 'float' or 'text'."""

    name: str
    kind: str
    value: Any
    doc: str = ""
    #: False for knobs the model's configuration does not use (e.g. the omnipose knobs of a
    #: cellpose-mode flows model): the widget keeps their value but shows no control
    shown: bool = True
    #: the control's range: the knob's declared bounds (None: unbounded on that side)
    low: float | None = None
    high: float | None = None


def _kind_of(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    return "text"  # None, tuples, strings: edited as a Python literal


def param_specs(representation, thresholds: dict | None = None) -> list[ParamSpec]:
    """Controls for the fields of ``representation.Params``, valued by the model's tuned
    ``thresholds`` (falling back to the dataclass defaults); tooltip and range are each
    knob's declared help and bounds (:mod:`cellseg.representations._params`)."""
    from cellseg.representations._params import knob_of

    params = representation.params(dict(thresholds or {}))
    used = set(representation.decode_param_names())
    specs = []
    for f in dataclasses.fields(params):
        k, value = knob_of(f), getattr(params, f.name)
        specs.append(ParamSpec(f.name, _kind_of(value), value, k.help, f.name in used, k.low, k.high))
    return specs


def param_text(value) -> str:
    """How a 'text' control shows a value: strings bare, None empty, others as literals."""
    if value is None:
        return ""
    return value if isinstance(value, str) else repr(value)


def coerce_param(kind: str, raw):
    """Turn a control's value back into a parameter value ('text' controls hold Python literals)."""
    if kind == "bool":
        return bool(raw)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    import ast

    s = str(raw).strip()
    if s in ("", "None"):
        return None
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s


def float_decimals(value: float, most: int = 6) -> int:
    """Decimals (2 to ``most``) a spin box needs to show ``value`` rounded to ``most`` decimals."""
    target = round(float(value), most)
    for d in range(2, most + 1):
        if round(target, d) == target:
            return d
    return most
