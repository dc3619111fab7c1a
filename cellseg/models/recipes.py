"""The training recipes of the bundled models, under the name the model cards cite.

They live in :mod:`cellseg.train.recipes`; ``python -m cellseg.models.recipes NAME ...``
runs them as ``python -m cellseg.train.recipes NAME ...`` does.
"""
from __future__ import annotations

import sys

from cellseg.train.recipes import (
    RECIPES,
    Recipe,
    average_recipe,
    finish_recipe,
    get_recipe,
    list_recipes,
    main,
    prepare_data,
    run_recipe,
    write_model_card,
)

__all__ = ["Recipe", "RECIPES", "list_recipes", "get_recipe", "prepare_data", "run_recipe", "finish_recipe",
           "average_recipe", "write_model_card", "main"]

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
