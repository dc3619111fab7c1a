"""Numba kernels of the flow following (private; see ``flows.py``): Euler
integration of points along the interpolated flow field (Cellpose's and
Omnipose's suppressed steps), with early stops.

Step fields are ``float32`` (the predicted flow divided by the flow scale,
masked to the foreground); point positions are ``float32`` arrays as in
Cellpose's torch tensors. Points are advanced in parallel chunks.
"""
from __future__ import annotations

import math

import numpy as np

from cellseg._numba import jit, pjit, prange

# ----------------------------------------------------------------------------- Euler integration


_LANES = 4  # points advanced together (independent dependency chains overlap in the CPU)
_CHUNK = 1024  # points per parallel task


@pjit
def padded_step_2d(flow, fg, scale, out):
    """``out[y, x, a] = flow[a, y, x] / scale`` (float32) where ``fg``, untouched
    (zero) elsewhere: :func:`follow_2d`'s interleaved step field in one parallel
    pass. ``out`` float32 (Y+1, X+1, 2), zero on entry."""
    Y = fg.shape[0]
    X = fg.shape[1]
    for y in prange(Y):
        for x in range(X):
            if fg[y, x]:
                out[y, x, 0] = flow[0, y, x] / scale
                out[y, x, 1] = flow[1, y, x] / scale


_F1 = np.float32(1.0)
_F0 = np.float32(0.0)
_FH = np.float32(0.5)


@jit
def _pixel_sure(o, bound):
    """``floor(o - bound) == floor(o + bound)`` (float32): every position within
    ``bound`` of ``o`` lies in ``o``'s pixel."""
    return math.floor(o - bound) == math.floor(o + bound)


@jit
def _interp_2d(stepf, W2, y, x):
    """Bilinear float32 interpolation of the interleaved (dy, dx) step field (rows of
    ``W2 = 2 * (X + 1)`` floats, a zero last row / column) at (y, x) inside the image."""
    iy = int(y)
    ix = int(x)
    wy = y - np.float32(iy)
    wx = x - np.float32(ix)
    b = iy * W2 + 2 * ix
    w00 = (_F1 - wy) * (_F1 - wx)
    w01 = (_F1 - wy) * wx
    w10 = wy * (_F1 - wx)
    w11 = wy * wx
    dy = w00 * stepf[b] + w01 * stepf[b + 2] + w10 * stepf[b + W2] + w11 * stepf[b + W2 + 2]
    dx = w00 * stepf[b + 1] + w01 * stepf[b + 3] + w10 * stepf[b + W2 + 1] + w11 * stepf[b + W2 + 3]
    return dy, dx


@pjit
def follow_2d(stepf, Y, X, py, px, niter, tol, out_y, out_x):
    """Euler integration of points along the bilinearly interpolated step field
    (Cellpose ``steps2D_interp``), with early stops.

    ``stepf`` float32, flat ``(Y+1, X+1, 2)``: the per-iteration displacement
    (already masked to the foreground and divided by the flow scale) with
    interleaved components and one extra zero row and column (they only ever
    get weight 0). Points must start inside ``[0, Y-1] x [0, X-1]``; positions
    are clamped to that box after every step; the interpolation at ``(y, x)``
    uses the pixels ``floor(y) + {0, 1}`` x ``floor(x) + {0, 1}``.

    Positions, weights and steps are float32, as in Cellpose (torch float32
    tensors); every operation is a float32 one (no float64 promotion).

    Early stops (``tol`` float32 >= 0). Step ``t`` takes ``p_t`` to
    ``p_{t+1}``; ``r = niter - (t + 1)`` steps are left and the end point
    candidate is ``o = p_{t+1}`` if ``r`` is even, else ``p_t`` (the position
    of the same parity as ``p_niter``).

    * ``p_{t+1} == p_t`` (bit for bit): a fixed point; the end point is ``p_t``.
    * ``p_{t+1} == p_{t-1}``: a 2-cycle; the end point is ``o``. These two
      exact stops give the same result as running all ``niter`` steps (the
      iteration is a fixed map). In float32 most points reach one at their
      sink within ~60 steps.
    * ``tol > 0``: with ``e = max_a |p_{t+1,a} - p_{t-1,a}|`` (the two-step
      displacement; ``p_{-1} = -1``) and ``bound = float32(ceil(r / 2)) * e``
      (``ceil(r / 2)`` two-step moves lead from ``o`` to ``p_niter``: the
      drift left if the two-step displacement does not grow), the point stops
      at ``o`` when ``bound <= tol`` and ``floor(o_a - bound) == floor(o_a +
      bound)`` on every axis: it is settling on (or oscillating, slowly
      damped, around) a sink, its end point moves by about ``bound`` at most
      and its pixel -- what the Cellpose grouping reads -- stays the same.
      ``tol = 0``: the exact stops only (``bound <= 0`` only when ``e == 0``
      or on the last step, which ends the run anyway).

    Points are advanced ``_LANES`` at a time (independent dependency chains
    overlap in the CPU), ``_CHUNK`` points per parallel task.
    """
    W2 = (X + 1) * 2
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    approx = tol > 0
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        ys = np.empty(_LANES, np.float32)
        xs = np.empty(_LANES, np.float32)
        p1y = np.empty(_LANES, np.float32)
        p1x = np.empty(_LANES, np.float32)
        act = np.empty(_LANES, np.bool_)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                ys[k] = np.float32(py[g0 + k])
                xs[k] = np.float32(px[g0 + k])
                p1y[k] = np.float32(-1.0)
                p1x[k] = np.float32(-1.0)
                act[k] = True
            nact = m
            for t in range(niter):
                if nact == 0:
                    break
                left = niter - 1 - t
                odd = (left % 2) == 1
                moves = np.float32((left + 1) // 2)
                for k in range(m):
                    if not act[k]:
                        continue
                    y = ys[k]
                    x = xs[k]
                    dy, dx = _interp_2d(stepf, W2, y, x)
                    yn = min(ymax, max(_F0, y + dy))
                    xn = min(xmax, max(_F0, x + dx))
                    if yn == y and xn == x:  # fixed point
                        act[k] = False
                        nact -= 1
                        continue
                    e = max(abs(yn - p1y[k]), abs(xn - p1x[k]))
                    bound = moves * e
                    if bound <= tol:  # rare: one test on the common path
                        oy = y if odd else yn
                        ox = x if odd else xn
                        if e == _F0 or (approx and _pixel_sure(oy, bound) and _pixel_sure(ox, bound)):
                            ys[k] = oy
                            xs[k] = ox
                            act[k] = False
                            nact -= 1
                            continue
                    p1y[k] = y
                    p1x[k] = x
                    ys[k] = yn
                    xs[k] = xn
            for k in range(m):
                out_y[g0 + k] = ys[k]
                out_x[g0 + k] = xs[k]


@pjit
def follow_2d_suppressed(stepf, Y, X, py, px, niter, out_y, out_x):
    """Omnipose's Euler integration with *suppressed* steps: :func:`follow_2d`'s
    field, interpolation, clamping and float32 arithmetic, but the step is the
    running average of the current and previous interpolated flows divided by
    ``1 + t`` (``niter + 1`` evaluations, the first seeding the average); every
    point runs every step (no early stops)."""
    W2 = (X + 1) * 2
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    nsteps = niter + 1
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        ys = np.empty(_LANES, np.float32)
        xs = np.empty(_LANES, np.float32)
        d0y = np.empty(_LANES, np.float32)
        d0x = np.empty(_LANES, np.float32)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                ys[k] = np.float32(py[g0 + k])
                xs[k] = np.float32(px[g0 + k])
                d0y[k] = _F0
                d0x[k] = _F0
            for t in range(nsteps):
                for k in range(m):
                    y = ys[k]
                    x = xs[k]
                    dy, dx = _interp_2d(stepf, W2, y, x)
                    if t == 0:  # the initial flow seeds the running average
                        d0y[k] = dy
                        d0x[k] = dx
                        continue
                    dy = _FH * (dy + d0y[k])
                    dx = _FH * (dx + d0x[k])
                    d0y[k] = dy
                    d0x[k] = dx
                    dy = dy / np.float32(t)
                    dx = dx / np.float32(t)
                    ys[k] = min(ymax, max(_F0, y + dy))
                    xs[k] = min(xmax, max(_F0, x + dx))
            for k in range(m):
                out_y[g0 + k] = ys[k]
                out_x[g0 + k] = xs[k]


@jit
def _interp_3d(stepf, b, SX, SY, SZ, wz, wy, wx, d):
    """Trilinear interpolation of the 3 step components at base index ``b`` into ``d``."""
    for a in range(3):
        lo = ((_F1 - wy) * ((_F1 - wx) * stepf[b + a] + wx * stepf[b + SX + a])
              + wy * ((_F1 - wx) * stepf[b + SY + a] + wx * stepf[b + SY + SX + a]))
        hi = ((_F1 - wy) * ((_F1 - wx) * stepf[b + SZ + a] + wx * stepf[b + SZ + SX + a])
              + wy * ((_F1 - wx) * stepf[b + SZ + SY + a] + wx * stepf[b + SZ + SY + SX + a]))
        d[a] = (_F1 - wz) * lo + wz * hi


@pjit
def follow_3d(stepf, Z, Y, X, pz, py, px, niter, tol, out_z, out_y, out_x):
    """3D twin of :func:`follow_2d`: ``stepf`` float32 flat ``(Z+1, Y+1, X+1, 3)``,
    trilinear interpolation, float32 arithmetic, the same early stops (every
    axis must pass the pixel test)."""
    SX = 3
    SY = (X + 1) * 3
    SZ = (Y + 1) * SY
    zmax = np.float32(Z - 1.0)
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    approx = tol > 0
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        pos = np.empty((_LANES, 3), np.float32)
        p1 = np.empty((_LANES, 3), np.float32)
        d = np.empty(3, np.float32)
        act = np.empty(_LANES, np.bool_)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                pos[k, 0] = np.float32(pz[g0 + k])
                pos[k, 1] = np.float32(py[g0 + k])
                pos[k, 2] = np.float32(px[g0 + k])
                for a in range(3):
                    p1[k, a] = np.float32(-1.0)
                act[k] = True
            nact = m
            for t in range(niter):
                if nact == 0:
                    break
                left = niter - 1 - t
                odd = (left % 2) == 1
                moves = np.float32((left + 1) // 2)
                for k in range(m):
                    if not act[k]:
                        continue
                    z = pos[k, 0]
                    y = pos[k, 1]
                    x = pos[k, 2]
                    iz = int(z)
                    iy = int(y)
                    ix = int(x)
                    _interp_3d(stepf, iz * SZ + iy * SY + ix * SX, SX, SY, SZ, z - np.float32(iz),
                               y - np.float32(iy), x - np.float32(ix), d)
                    zn = min(zmax, max(_F0, z + d[0]))
                    yn = min(ymax, max(_F0, y + d[1]))
                    xn = min(xmax, max(_F0, x + d[2]))
                    if zn == z and yn == y and xn == x:
                        act[k] = False
                        nact -= 1
                        continue
                    e = max(abs(zn - p1[k, 0]), abs(yn - p1[k, 1]), abs(xn - p1[k, 2]))
                    bound = moves * e
                    if bound <= tol:
                        oz = z if odd else zn
                        oy = y if odd else yn
                        ox = x if odd else xn
                        if e == _F0 or (approx and _pixel_sure(oz, bound) and _pixel_sure(oy, bound)
                                        and _pixel_sure(ox, bound)):
                            pos[k, 0] = oz
                            pos[k, 1] = oy
                            pos[k, 2] = ox
                            act[k] = False
                            nact -= 1
                            continue
                    p1[k, 0] = z
                    p1[k, 1] = y
                    p1[k, 2] = x
                    pos[k, 0] = zn
                    pos[k, 1] = yn
                    pos[k, 2] = xn
            for k in range(m):
                out_z[g0 + k] = pos[k, 0]
                out_y[g0 + k] = pos[k, 1]
                out_x[g0 + k] = pos[k, 2]


@pjit
def follow_3d_suppressed(stepf, Z, Y, X, pz, py, px, niter, out_z, out_y, out_x):
    """3D twin of :func:`follow_2d_suppressed` (trilinear interpolation)."""
    SX = 3
    SY = (X + 1) * 3
    SZ = (Y + 1) * SY
    zmax = np.float32(Z - 1.0)
    ymax = np.float32(Y - 1.0)
    xmax = np.float32(X - 1.0)
    n = py.size
    nsteps = niter + 1
    nchunks = (n + _CHUNK - 1) // _CHUNK
    for c in prange(nchunks):
        pos = np.empty((_LANES, 3), np.float32)
        d0 = np.empty((_LANES, 3), np.float32)
        d = np.empty(3, np.float32)
        c1 = min(n, (c + 1) * _CHUNK)
        for g0 in range(c * _CHUNK, c1, _LANES):
            m = min(_LANES, c1 - g0)
            for k in range(m):
                pos[k, 0] = np.float32(pz[g0 + k])
                pos[k, 1] = np.float32(py[g0 + k])
                pos[k, 2] = np.float32(px[g0 + k])
                for a in range(3):
                    d0[k, a] = _F0
            for t in range(nsteps):
                for k in range(m):
                    z = pos[k, 0]
                    y = pos[k, 1]
                    x = pos[k, 2]
                    iz = int(z)
                    iy = int(y)
                    ix = int(x)
                    _interp_3d(stepf, iz * SZ + iy * SY + ix * SX, SX, SY, SZ, z - np.float32(iz),
                               y - np.float32(iy), x - np.float32(ix), d)
                    if t == 0:
                        for a in range(3):
                            d0[k, a] = d[a]
                        continue
                    for a in range(3):
                        d[a] = _FH * (d[a] + d0[k, a])
                        d0[k, a] = d[a]
                        d[a] = d[a] / np.float32(t)
                    pos[k, 0] = min(zmax, max(_F0, z + d[0]))
                    pos[k, 1] = min(ymax, max(_F0, y + d[1]))
                    pos[k, 2] = min(xmax, max(_F0, x + d[2]))
            for k in range(m):
                out_z[g0 + k] = pos[k, 0]
                out_y[g0 + k] = pos[k, 1]
                out_x[g0 + k] = pos[k, 2]
