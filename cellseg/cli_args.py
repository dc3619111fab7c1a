"""Option parsers shared by the ``cellseg`` sub-commands (argparse only: importing this is cheap)."""
from __future__ import annotations

import argparse

__all__ = ["parse_tile"]


def parse_tile(v: str | None) -> int | tuple[int, ...] | None:
    """``--tile``: ``512``, ``256,512`` or ``256x512``; ``0`` means the whole image at once (kept as
    ``0``: not giving ``--tile``, ``None``, lets the segmenter tile large frames by itself)."""
    if v is None:
        return None
    try:
        parts = [int(p) for p in v.lower().replace("x", ",").split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in pixels such as 512 or 256,512 (0: no tiling), "
                                         f"got {v!r}") from None
    if not parts or any(p < 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected sizes >= 0 in pixels (0: no tiling), got {v!r}")
    if all(p == 0 for p in parts):
        return 0
    return parts[0] if len(parts) == 1 else tuple(parts)
