"""Decoder knobs are declared once (cellseg.representations._params): validation, the tuning
space, the command-line flags, the napari controls and the mode filtering all come from the
declarations, for every representation."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pytest

from cellseg.representations import _params as P
from cellseg.representations import get

CLASSES = P.representation_classes()


def _reps(cls):
    """Instances covering every configuration that changes the knobs in use (the modes)."""
    if cls.name == "flows":
        return [cls(mode="cellpose"), cls(mode="omnipose")]
    return [cls()]


def _fields(cls):
    return dataclasses.fields(cls.Params)


def _kinds(f):
    return P._kinds(f.type)


@pytest.mark.parametrize("label", sorted(CLASSES))
def test_every_field_is_a_declared_knob_and_its_default_is_valid(label):
    cls = CLASSES[label]
    params = cls.Params()  # the defaults pass the declared rules
    for f in _fields(cls):
        k = P.knob_of(f)
        assert P._KEY in f.metadata, f"{cls.Params.__name__}.{f.name} is not declared with knob()"
        assert k.help, f"{f.name} has no help"
        assert f.name in cls.Params.__doc__, "the docstring lists every knob"
        assert dataclasses.replace(params, **{f.name: getattr(params, f.name)}) == params
        if k.has_off:  # the value that disables the rule is a valid value
            assert getattr(cls.Params(**{f.name: k.off}), f.name) == k.off
        if k.mode is not None:
            assert any(getattr(r, "mode", None) == k.mode for r in _reps(cls)), f"{f.name}: no {k.mode} mode"


@pytest.mark.parametrize("label", sorted(CLASSES))
def test_out_of_range_values_raise_naming_the_field(label):
    cls = CLASSES[label]
    for f in _fields(cls):
        k, kinds = P.knob_of(f), _kinds(f)
        bad = []
        if k.choices is not None:
            bad.append("nonsense" if "str" in kinds else max(k.choices) + 1)
        elif kinds & {"int", "float"}:
            eps = 1 if "int" in kinds else 1e-6
            if k.ge is not None:
                bad.append(k.ge - eps)
            if k.gt is not None:
                bad.append(k.gt)
            if k.le is not None:
                bad.append(k.le + eps)
            if k.lt is not None:
                bad.append(k.lt)
            bad.append(math.nan)
            if "int" in kinds:
                bad.append(1.5)
        for value in bad:
            with pytest.raises(ValueError, match=rf"^{f.name} must be .*, got "):
                cls.Params(**{f.name: value})
        if kinds & {"int", "float"}:
            with pytest.raises(TypeError, match=rf"^{f.name} must be"):
                cls.Params(**{f.name: "0.5"})


def test_messages_say_the_valid_values():
    from cellseg.representations.distance import DistanceParams
    from cellseg.representations.flows import FlowsParams
    from cellseg.representations.stardist import StarDistParams

    cases = [(DistanceParams, {"fg_thresh": 1.0}, "fg_thresh must be in [0, 1), got 1.0"),
             (DistanceParams, {"h": 0}, "h must be > 0, got 0"),
             (DistanceParams, {"h": math.inf}, "h must be a finite number > 0, got inf"),
             (DistanceParams, {"min_size": -1}, "min_size must be a non-negative integer, got -1"),
             (FlowsParams, {"max_size_fraction": 0}, "max_size_fraction must be in (0, 1], got 0"),
             (FlowsParams, {"flow_threshold": math.nan}, "flow_threshold must be a finite number, got nan"),
             (FlowsParams, {"dist_thresh": math.inf}, "dist_thresh must be a finite number or None, got inf"),
             (FlowsParams, {"connectivity": 4}, "connectivity must be one of (1, 2, 3), got 4"),
             (FlowsParams, {"min_size": 2.5}, "min_size must be an integer, got 2.5"),
             (StarDistParams, {"overlap": "dice"}, "overlap must be one of ('min', 'iou'), got 'dice'"),
             (StarDistParams, {"nms_thresh": 2.0}, "nms_thresh must be in [0, 1], got 2.0")]
    for cls, kw, msg in cases:
        with pytest.raises(ValueError) as exc:
            cls(**kw)
        assert str(exc.value) == msg
    # integral numbers of integer knobs are integers; values of the right type are kept
    assert type(StarDistParams(border=3.0).border) is int and FlowsParams(min_size=-5).min_size == -5
    assert FlowsParams(dist_thresh=None).dist_thresh is None


@pytest.mark.parametrize("label", sorted(CLASSES))
def test_tuning_space_is_the_declared_grids(label):
    from cellseg.train.tune import TUNABLE

    cls = CLASSES[label]
    declared = {f.name: P.knob_of(f).tune for f in _fields(cls) if P.knob_of(f).tune is not None}
    assert P.tuning_space(cls.Params) == declared
    assert TUNABLE[cls.name] == declared  # the 2D and 3D StarDist declare the same grids
    for f in _fields(cls):
        k = P.knob_of(f)
        if k.tune is not None:
            lo, hi, n = k.tune
            assert _kinds(f) & {"int", "float"} and lo <= hi and n >= 1
            for v in np.linspace(lo, hi, n):  # every grid point is a valid value
                cls.Params(**{f.name: float(v)})
    for rep in _reps(cls):  # a representation's space holds the knobs its mode uses
        used = set(rep.decode_param_names())
        assert P.tuning_space(rep) == {k: v for k, v in declared.items() if k in used}


def test_tunable_is_derived_for_every_representation_with_grids():
    from cellseg.train.tune import TUNABLE

    assert set(TUNABLE) == {c.name for c in CLASSES.values() if P.tuning_space(c.Params)}
    assert list(TUNABLE["offsets"]) == ["seed_thresh", "fg_thresh"]  # declaration order: refined first


@pytest.mark.parametrize("label", sorted(CLASSES))
def test_cli_aliases_map_to_fields_and_are_segment_flags(label):
    from cellseg.cli import build_parser

    cls = CLASSES[label]
    flags = P.cli_flags()
    for rep in _reps(cls):
        aliases = P.cli_aliases(rep)
        assert set(aliases.values()) <= set(rep.decode_param_names())
        for flag, name in aliases.items():
            assert name in flags[flag]["fields"]
            k = P.knob_of(next(f for f in _fields(cls) if f.name == name))
            value = k.low if k.low is not None else 0.25
            args = build_parser().parse_args(["segment", "x.tif", "-o", "out", flag, str(value)])
            assert getattr(args, flag[2:].replace("-", "_")) == value
    declared = {P.knob_of(f).cli for c in CLASSES.values() for f in _fields(c)} - {None}
    assert set(flags) == declared


def test_the_cli_flags_keep_their_fields():
    # the flags the command line has always had, onto the fields they set
    expect = {"distance": {"--prob-thresh": "fg_thresh"}, "offsets": {"--prob-thresh": "fg_thresh"},
              "stardist": {"--prob-thresh": "prob_thresh", "--nms-thresh": "nms_thresh"},
              "stardist3d": {"--prob-thresh": "prob_thresh", "--nms-thresh": "nms_thresh"},
              "flows": {"--prob-thresh": "prob_thresh", "--flow-threshold": "flow_threshold"}}
    for label, cls in CLASSES.items():
        for rep in _reps(cls):
            assert P.cli_aliases(rep) == expect[label]


@pytest.mark.parametrize("label", sorted(CLASSES))
def test_napari_controls_come_from_the_declarations(label):
    _params = pytest.importorskip("cellseg_napari._params")
    cls = CLASSES[label]
    for rep in _reps(cls):
        specs = {s.name: s for s in _params.param_specs(rep)}
        assert list(specs) == [f.name for f in _fields(cls)]
        for f in _fields(cls):
            k = P.knob_of(f)
            s = specs[f.name]
            assert (s.doc, s.low, s.high) == (k.help, k.low, k.high)
            assert s.shown == (k.mode in (None, getattr(rep, "mode", None)))


def test_modes_come_from_the_declarations():
    from cellseg.representations.flows import FlowsParams

    mode = {f.name: P.knob_of(f).mode for f in dataclasses.fields(FlowsParams)}
    assert {n for n, m in mode.items() if m == "cellpose"} == {"seed_min_count"}
    assert {n for n, m in mode.items() if m == "omnipose"} == {
        "dist_thresh", "link_dist", "max_divergence", "connectivity", "min_depth", "merge_frac", "absorb_ratio"}
    for m in ("cellpose", "omnipose"):
        assert get("flows", mode=m).decode_param_names() == tuple(n for n, k in mode.items() if k in (None, m))


def test_omnipose_clusters_defaults_come_from_the_declarations():
    import inspect

    from cellseg.representations.flows import FlowsParams, omnipose_clusters

    sig = inspect.signature(omnipose_clusters).parameters
    for name in ("link_dist", "max_divergence", "connectivity"):
        assert sig[name].default == getattr(FlowsParams(), name)
    for name in ("min_depth", "merge_frac", "absorb_ratio"):  # the rules' off values: plain linking
        assert sig[name].default == P.off_value(FlowsParams, name)
    with pytest.raises(KeyError, match="declares no value that disables it"):
        P.off_value(FlowsParams, "link_dist")


def test_a_new_representation_needs_only_its_declarations():
    """A Params dataclass of knobs is validated, tuned, flagged and documented with no other code."""

    @P.document
    @dataclass(frozen=True)
    class ToyParams:
        """Toy knobs."""

        level: float = P.knob(0.5, ge=0.0, le=1.0, tune=(0.2, 0.8, 4), cli="--prob-thresh", help="a level")
        rounds: int = P.knob(3, ge=1, help="rounds")
        style: str = P.knob("a", choices=("a", "b"), help="a style", mode="fancy")

        def __post_init__(self):
            P.validate(self)

    assert P.tuning_space(ToyParams) == {"level": (0.2, 0.8, 4)}
    assert P.cli_aliases(ToyParams) == {"--prob-thresh": "level"}
    assert P.used_fields(ToyParams) == ("level", "rounds")
    assert P.used_fields(ToyParams, "fancy") == ("level", "rounds", "style")
    assert "rounds : int" in ToyParams.__doc__ and "an integer >= 1" in ToyParams.__doc__
    with pytest.raises(ValueError, match=r"^rounds must be an integer >= 1, got 0$"):
        ToyParams(rounds=0)
    with pytest.raises(ValueError, match=r"^style must be one of \('a', 'b'\), got 'c'$"):
        ToyParams(style="c")


def test_declarations_are_checked_when_made():
    with pytest.raises(ValueError, match="inside the knob's bounds"):
        P.knob(0.5, ge=0.0, le=1.0, tune=(0.0, 2.0, 3), help="x")
    with pytest.raises(ValueError, match="one lower bound"):
        P.knob(0.5, ge=0.0, gt=0.0, help="x")
    with pytest.raises(ValueError, match="long option"):
        P.knob(0.5, cli="-p", help="x")
    with pytest.raises(ValueError, match="declared on two fields"):
        @dataclass(frozen=True)
        class Twice:
            a: float = P.knob(0.5, cli="--level", help="a")
            b: float = P.knob(0.5, cli="--level", help="b")

        P.cli_aliases(Twice)
