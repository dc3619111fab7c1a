"""Where the bundled models' files live: the weights, their model cards, their int8 ranges and
the registry index (``registry.json``), shipped with the package."""
from __future__ import annotations

from pathlib import Path

__all__ = ["WEIGHTS_DIR"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
