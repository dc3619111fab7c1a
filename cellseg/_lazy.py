"""Lazy package exports: ``name -> submodule``, imported on first attribute access.

Keeps ``import cellseg.<package>`` light (no numba, torch, tifffile... until used).
"""
from __future__ import annotations

import importlib
from typing import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict) -> tuple[Callable, Callable]:
    """Return ``(__getattr__, __dir__)`` for ``package`` whose public names live in
    the submodules given by ``exports``; a resolved name is cached in ``namespace``."""

    def __getattr__(name: str):
        mod = exports.get(name)
        if mod is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{mod}"), name)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
