"""The one place that imports numba.

Kernels are compiled lazily on first call (never at import of ``cellseg``) and
cached on disk (``cache=True``) so CLI batch runs do not pay the compile twice.
"""
from __future__ import annotations

import numba
from numba import prange  # noqa: F401  (re-exported for kernels)

__all__ = ["jit", "pjit", "prange", "numba"]


def jit(*args, **kwargs):
    """``numba.njit`` with ``cache=True`` and ``nogil=True`` by default."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    if args and callable(args[0]) and len(args) == 1 and not kwargs.get("_sig"):
        return numba.njit(**kwargs)(args[0])
    return numba.njit(*args, **kwargs)


def pjit(*args, **kwargs):
    """Parallel ``numba.njit`` (use ``prange`` in the kernel)."""
    kwargs.setdefault("parallel", True)
    return jit(*args, **kwargs)


@jit
def find_root(parent, i):
    """Union-find root of ``i`` with path compression (shared by the decoders' kernels)."""
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root
