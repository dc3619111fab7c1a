"""Decode-threshold optimisation on validation data.

The network runs **once** per validation image (:func:`tune_thresholds`); the
cached head outputs are then re-decoded for every candidate parameter set
(:func:`tune_params`). The search, per representation (the ``tune`` grids its ``Params``
declares, collected in :data:`TUNABLE`):

1. a coarse grid over the two parameters that matter (the full product),
   visited from the highest value of the first parameter down;
2. coordinate-wise refinement: around the best value of each parameter in
   turn, a grid of ``n_refine_points`` points over half the previous step span,
   repeated ``n_refine_rounds`` times.

:func:`tune_thresholds` can also decide test-time augmentation
(``augment="auto"``): the outputs with and without it are both searched, and
augmentation is kept only when it beats the plain score by at least
``augment_margin`` (default 0.005: worth 8x the network time); the choice is
stored as ``model.config["augment"]``.

Every evaluation decodes all images and pools TP/FP/FN over them. Metrics:
``"map"`` mean AP over IoU 0.5, 0.55, ..., 0.9 (AP = TP/(TP+FP+FN) after optimal
one-to-one matching, the DSB 2018 / StarDist convention), ``"ap50"`` AP at IoU
0.5, ``"seg"`` CTC SEG pooled over the reference objects of all images.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["TUNABLE", "TuneResult", "tune_params", "tune_thresholds", "score_labels", "MAP_THRESHOLDS"]

#: the words TrainConfig.tune_augment and the command line use for ``augment``
_AUGMENT_WORDS: dict[str, bool | str] = {"off": False, "on": True, "auto": "auto"}

MAP_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.5, 0.901, 0.05), 2))

class _DeclaredSpaces(Mapping):
    """Representation name -> ``{parameter: (low, high, coarse grid points)}``, read on first use
    from the ``tune`` of each knob its ``Params`` declares (see
    :func:`cellseg.representations._params.tuning_space`); the first parameter is refined first."""

    def __init__(self):
        self._spaces: dict[str, dict[str, tuple[float, float, int]]] | None = None

    def _get(self) -> dict[str, dict[str, tuple[float, float, int]]]:
        if self._spaces is None:
            from cellseg.representations._params import representation_classes, tuning_space

            spaces: dict[str, dict[str, tuple[float, float, int]]] = {}
            for cls in representation_classes().values():
                space = tuning_space(cls.Params)
                if space:
                    spaces.setdefault(cls.name, space)
            self._spaces = spaces
        return self._spaces

    def __getitem__(self, name: str) -> dict[str, tuple[float, float, int]]:
        return dict(self._get()[name])

    def __iter__(self):
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


#: representation name -> {parameter: (low, high, coarse grid points)} (a read-only mapping derived
#: from the ``Params`` declarations); the first parameter is refined first
TUNABLE: Mapping[str, dict[str, tuple[float, float, int]]] = _DeclaredSpaces()


@dataclass
class TuneResult:
    """Best parameters, their score and every evaluated ``(params, score)``."""

    params: dict[str, Any]
    score: float
    metric: str
    table: list[tuple[dict[str, float], float]] = field(default_factory=list)
    seconds: float = 0.0
    truncated: bool = False
    #: whether the outputs were test-time augmented (:func:`tune_thresholds`; None: not decided there)
    augment: bool | None = None
    #: ``augment="auto"``: the best score without and with augmentation
    augment_scores: dict[str, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"TuneResult(params={self.params}, {self.metric}={self.score:.4f}, {len(self.table)} evaluations)"


def score_labels(trues: Sequence[np.ndarray], preds: Sequence[np.ndarray], metric: str = "map") -> float:
    """Pooled score of predicted label images (see the module docstring for ``metric``)."""
    if metric == "map":
        from cellseg.metrics import average_precision

        return float(average_precision(list(trues), list(preds), thresh=MAP_THRESHOLDS).mean_ap)
    if metric == "ap50":
        from cellseg.metrics import average_precision

        return float(average_precision(list(trues), list(preds), thresh=(0.5,)).mean_ap)
    if metric == "seg":
        from cellseg.metrics import pool_seg, seg_score

        return float(pool_seg([seg_score(t, p) for t, p in zip(trues, preds)]).seg)
    raise ValueError(f"unknown metric {metric!r}; choose 'map', 'ap50' or 'seg'")


def _space(rep, space: Mapping[str, Any] | None) -> dict[str, tuple[float, float, int]]:
    if space is None:
        from cellseg.representations._params import tuning_space

        space = tuning_space(rep)  # the knobs its Params declares with a ``tune`` grid (this mode's)
        if not space:
            raise ValueError(f"no default threshold search space for representation {rep.name!r}; pass space=")
    valid = {f.name for f in dataclasses.fields(rep.Params)}
    out = {}
    for k, v in space.items():
        if k not in valid:
            raise ValueError(f"{rep.name} has no decode parameter {k!r}; valid names are {sorted(valid)}")
        lo, hi, n = (tuple(v) + (5,))[:3] if len(tuple(v)) == 2 else tuple(v)
        if not lo <= hi or int(n) < 1:
            raise ValueError(f"search range for {k!r} must be (low, high[, n]) with low <= high, got {v!r}")
        out[k] = (float(lo), float(hi), int(n))
    if not out:
        raise ValueError("empty search space")
    return out


def tune_params(
    rep,
    outputs: Sequence[Mapping[str, np.ndarray]],
    labels: Sequence[np.ndarray],
    metric: str = "map",
    space: Mapping[str, Any] | None = None,
    base: Mapping[str, Any] | None = None,
    n_refine_rounds: int = 2,
    n_refine_points: int = 4,
    time_limit: float | None = None,
    verbose: bool = False,
) -> TuneResult:
    """Search decode parameters of ``rep`` on cached head ``outputs`` against ``labels``.

    ``space``: ``{param: (low, high, n_coarse)}`` (default :data:`TUNABLE`); ``base``:
    values of the other decode parameters (default the representation's defaults).
    The coarse grid is visited from the highest value of the first parameter down
    (high thresholds decode fastest); ties keep the first candidate visited.
    ``time_limit`` (seconds): stop searching once exceeded and return the best so
    far (``TuneResult.truncated`` is then True).
    """
    if len(outputs) != len(labels):
        raise ValueError(f"{len(outputs)} outputs for {len(labels)} label images")
    if not outputs:
        raise ValueError("tuning needs at least one validation image")
    sp = _space(rep, space)
    base = dict(base or {})
    names = list(sp)
    t0 = time.perf_counter()
    cache: dict[tuple, float] = {}
    table: list[tuple[dict[str, float], float]] = []

    def evaluate(vals: dict[str, float]) -> float:
        key = tuple(round(vals[k], 6) for k in names)
        if key in cache:
            return cache[key]
        params = rep.params(base, **{k: float(v) for k, v in zip(names, key)})
        preds = [rep.decode(o, params).labels for o in outputs]
        s = score_labels(labels, preds, metric)
        s = -1.0 if not np.isfinite(s) else s
        cache[key] = s
        table.append((dict(zip(names, key)), s))
        if verbose:
            print(f"  tune {dict(zip(names, key))}: {metric} {s:.4f}", file=sys.stderr, flush=True)
        return s

    grids = {k: np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2]) for k, (lo, hi, n) in sp.items()}
    grids[names[0]] = grids[names[0]][::-1]
    best: dict[str, float] | None = None
    best_s = -np.inf
    truncated = False

    def out_of_time() -> bool:
        return time_limit is not None and time.perf_counter() - t0 > time_limit

    for combo in np.array(np.meshgrid(*[grids[k] for k in names], indexing="ij")).reshape(len(names), -1).T:
        if best is not None and out_of_time():
            truncated = True
            break
        vals = dict(zip(names, (float(c) for c in combo)))
        s = evaluate(vals)
        if s > best_s:
            best, best_s = vals, s
    # the first grid point is always kept (scores are >= -1), and the time limit is only checked after it
    assert best is not None
    steps = {k: (hi - lo) / max(1, n - 1) for k, (lo, hi, n) in sp.items()}
    for _ in range(0 if truncated else n_refine_rounds):
        for k in names:
            lo, hi, _n = sp[k]
            step = steps[k]
            if step <= 0:
                continue
            cands = np.linspace(best[k] - step / 2, best[k] + step / 2, n_refine_points + 1)
            for c in cands:
                if out_of_time():
                    truncated = True
                    break
                c = float(np.clip(c, lo, hi))
                vals = {**best, k: c}
                s = evaluate(vals)
                if s > best_s:
                    best, best_s = vals, s
            steps[k] = step / 2
    best = {k: round(v, 6) for k, v in best.items()}
    params = dataclasses.asdict(rep.params(base, **best))
    return TuneResult(params=params, score=float(best_s), metric=metric, table=table,
                      seconds=time.perf_counter() - t0, truncated=truncated)


def tune_thresholds(
    model,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    metric: str = "map",
    space: Mapping[str, Any] | None = None,
    store: bool = True,
    verbose: bool = False,
    augment: bool | str | None = None,
    augment_margin: float = 0.005,
    **kwargs,
) -> TuneResult:
    """Run ``model`` once per *normalized* validation image, tune its decode thresholds on the
    cached outputs and (``store=True``) write them into ``model.config["thresholds"]``.

    ``augment``: None (the model's current choice), False/``"off"``, True/``"on"``, or ``"auto"``: tune on the
    plain and on the test-time augmented outputs (8 network runs per image); augmentation
    is chosen when its score beats the plain one, by at least ``augment_margin``;
    ``store=True`` then also writes ``model.config["augment"]``.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images for {len(labels)} label images")
    if augment is None:
        augment = bool(getattr(model, "augment", False))
    if isinstance(augment, str) and augment in _AUGMENT_WORDS:
        augment = _AUGMENT_WORDS[augment]
    if augment not in (False, True, "auto"):
        raise ValueError(f"augment must be True/'on', False/'off' or 'auto', got {augment!r}")
    choices = (False, True) if augment == "auto" else (bool(augment),)
    best: TuneResult | None = None
    scores = {}
    for aug in choices:
        outputs = []
        for i, im in enumerate(images):
            outputs.append(model.predict(im, augment=aug))
            if verbose:
                print(f"  tune{' (augmented)' if aug else ''}: predicted {i + 1}/{len(images)}",
                      file=sys.stderr, flush=True)
        res = tune_params(model.representation, outputs, list(labels), metric=metric, space=space,
                          base=model.thresholds, verbose=False, **kwargs)
        res.augment = aug
        scores["augmented" if aug else "plain"] = res.score
        if verbose:
            stop_note = ", time limit reached" if res.truncated else ""
            print(f"tuned thresholds{' (augmented)' if aug else ''} {res.params}: {metric} {res.score:.4f} "
                  f"({len(res.table)} evaluations, {res.seconds:.0f}s{stop_note})",
                  file=sys.stderr, flush=True)
        # augmentation must win outright and by the margin (a tie keeps the 8x faster plain run)
        if best is None or (res.score > best.score and res.score >= best.score + augment_margin):
            best = res
    assert best is not None  # choices holds one or two settings, the first one is always kept
    if augment == "auto":
        best.augment_scores = scores
        if verbose:
            print(f"test-time augmentation {'kept' if best.augment else 'not kept'}: {metric} plain "
                  f"{scores['plain']:.4f}, augmented {scores['augmented']:.4f} (kept from +{augment_margin:g})",
                  file=sys.stderr, flush=True)
    if store:
        model.thresholds = best.params
        model.config["augment"] = bool(best.augment)
    return best
