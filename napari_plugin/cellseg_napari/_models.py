"""Model choices of the widgets: bundled models, models trained in the viewer, a file.

No torch at import: :func:`get_model` imports it (through :mod:`cellseg.models`) on first use.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

__all__ = ["CUSTOM_MODEL", "FRESH_MODEL", "TrainedModels", "bundled_models", "model_choices",
           "default_model_choice", "model_spec", "get_model", "model_denoises"]


CUSTOM_MODEL = "custom file…"
FRESH_MODEL = "fresh (untrained)"


class TrainedModels:
    """Models trained (or registered) while the viewer is open, by display name → file path.

    The widgets of one viewer share one (``trained_models_of`` in the widgets' common
    helpers): the Train widget adds to it; the Segment widget lists it and listens to
    :attr:`changed`. Kept in memory only: a model file stays usable later through
    "custom file…".
    """

    def __init__(self):
        from psygnal import Signal  # psygnal ships with napari; light

        class _Events:
            changed = Signal()

        self._events = _Events()
        self.changed = self._events.changed
        self._models: dict[str, Path] = {}

    def add(self, path: str | os.PathLike, name: str | None = None) -> str:
        p = Path(path).resolve()
        base = name or p.stem
        n = base
        for i in itertools.count(2):
            if n not in self._models or self._models[n] == p:
                break
            n = f"{base} ({i})"
        self._models[n] = p
        self.changed.emit()
        return n

    def remove(self, name: str) -> None:
        if self._models.pop(name, None) is not None:
            self.changed.emit()

    def names(self) -> list[str]:
        return list(self._models)

    def path(self, name: str) -> Path:
        return self._models[name]

    def __contains__(self, name) -> bool:
        return name in self._models


def bundled_models() -> list[str]:
    """Names of the bundled models (reads the registry JSON; no torch)."""
    try:
        from cellseg.models import list_models
    except ImportError:  # models package not installed
        return []
    try:
        return list(list_models())
    except (OSError, ValueError):
        return []


def model_choices(trained: TrainedModels | None = None) -> list[str]:
    """Bundled models, then the ``trained`` ones (models trained in the viewer), then "custom file…"."""
    return bundled_models() + (trained.names() if trained is not None else []) + [CUSTOM_MODEL]


def default_model_choice(trained: TrainedModels | None = None) -> str:
    """The default bundled model; without one, the first of :func:`model_choices`."""
    try:
        from cellseg.models import default_model_name

        return default_model_name()
    except Exception:  # noqa: BLE001 - no bundled model: fall back to the first choice
        return model_choices(trained)[0]


def model_spec(choice: str, path: str | os.PathLike | None = None, trained: TrainedModels | None = None) -> str:
    """What :func:`cellseg.models.load_model` takes for a model combo choice: the file of
    "custom file…" (``path``), of a ``trained`` model, else the bundled model's name."""
    if choice == CUSTOM_MODEL:
        if not path or not str(path).strip() or Path(path).is_dir():
            raise ValueError("choose a model file (.pt) for 'custom file…'")
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"model file {p} does not exist")
        return str(p)
    if trained is not None and choice in trained:
        return str(trained.path(choice))
    return str(choice)


_MODEL_CACHE: dict[tuple, Any] = {}


def get_model(spec: str):
    """Load a model by bundled name or file path, cached (a changed file is reloaded).

    Imports torch (through :mod:`cellseg.models`) on first use.
    """
    p = Path(spec)
    key = (str(p.resolve()), p.stat().st_mtime_ns) if p.exists() else (spec, None)
    model = _MODEL_CACHE.get(key)
    if model is None:
        from cellseg.models import load_model

        model = load_model(spec)
        if len(_MODEL_CACHE) > 4:
            _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
        _MODEL_CACHE[key] = model
    return model


def model_denoises(model) -> bool:
    """True when ``model`` has a DenoiSeg denoising head (trained with ``--denoise``)."""
    return bool(getattr(model, "config", {}).get("denoise", False))
