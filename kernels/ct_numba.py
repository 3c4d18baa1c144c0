"""Numba-compiled CPU kernels for the CT operators: the loops of ``ct_torch``, compiled and run on every core.

The vectorised torch path steps all rays at once, so each of its ~500 steps streams the whole sinogram and
the gathered taps through memory; compiled, each ray (or pixel) keeps its sum in registers and every index is
computed once for the whole batch (the batch is the innermost axis). Forward projection and FBP's
backprojection run every sum in exactly the order of ``ct_torch`` with the same float32 / float64 operations,
so their numbers are the torch oracle's to the bit (tested), whatever the batch size or the number of threads
(each output element is owned by one thread). The transpose scatters into private images per task and sums
them in a fixed order: deterministic, equal to torch's ``index_add_`` to float rounding.
Numba rather than a C++ extension: no compiler toolchain at run time, compiled in seconds, cached on disk.
Imported lazily by ``ct.py``; without numba the torch path runs."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import numba
import numpy as np
import torch
from numba import njit, prange

from . import ct_torch
from .ct_torch import _PAD, _Rays
from .geometry import Geometry

_LO = np.float32(-_PAD + 0.5)
_PIXEL_TILE = 256          # pixels per backprojection task: the views' rows they read stay in cache together
_ADJOINT_GROUPS = 8        # ray groups scattered in parallel into private images: parallel work even for one item
_ADJOINT_ITEMS = 8         # items per adjoint call (memory: items x groups images)


@njit(cache=True, inline="always")
def _tap(s0, sl, top, lp, ss, ps, k):  # pragma: no cover
    """The first tap's flat index and the second tap's weight at step ``k`` of a ray (``_Rays.taps``)."""
    pos = s0 + np.float32(k) * sl
    if pos < _LO:
        pos = _LO
    if pos > top:
        pos = top
    base = np.floor(pos)
    return (np.int64(base) + _PAD) * ss + (min(lp, k) + _PAD) * ps, pos - base


@njit(parallel=True, cache=True, nogil=True)
def _forward_kernel(cols, start, slope, hi, lim_pri, sec_stride, pri_stride, steps, out):  # pragma: no cover
    n_items = cols.shape[1]
    for r in prange(start.shape[0]):
        s0, sl, top, lp, ss, ps = start[r], slope[r], hi[r], lim_pri[r], sec_stride[r], pri_stride[r]
        for k in range(steps):
            i0, f = _tap(s0, sl, top, lp, ss, ps, k)
            g = np.float32(1.0) - f
            i1 = i0 + ss
            for b in range(n_items):
                out[r, b] += cols[i0, b] * g + cols[i1, b] * f


@njit(parallel=True, cache=True, nogil=True)
def _adjoint_kernel(yw, start, slope, hi, lim_pri, sec_stride, pri_stride, steps, groups, out):  # pragma: no cover
    # Scatter, ray by ray. Each (item, group of rays) task owns a private image, so no two threads write the
    # same memory; the groups are then summed in order. Fixed groups, so the sums never depend on the
    # number of threads or the batch (the order differs from ct_torch's index_add_: equal to float rounding).
    n_items = yw.shape[0]
    n_rays = start.shape[0]
    per = (n_rays + groups - 1) // groups
    part = np.zeros((n_items, groups, out.shape[1]), np.float32)
    for task in prange(n_items * groups):
        b = task // groups
        grp = task % groups
        acc = part[b, grp]
        y = yw[b]
        for r in range(grp * per, min((grp + 1) * per, n_rays)):
            s0, sl, top, lp, ss, ps = start[r], slope[r], hi[r], lim_pri[r], sec_stride[r], pri_stride[r]
            yr = y[r]
            for k in range(steps):
                i0, f = _tap(s0, sl, top, lp, ss, ps, k)
                acc[i0] += yr * (np.float32(1.0) - f)
                acc[i0 + ss] += yr * f
    for b in prange(n_items):
        for grp in range(groups):
            out[b] += part[b, grp]


@njit(parallel=True, cache=True, nogil=True)
def _backproject_kernel(rows, px, py, cos, sin, mode, sid, sdd, det_spacing, n_det, out):  # pragma: no cover
    # mode 0 parallel, 1 flat fan, 2 equiangular fan; the tap arithmetic is ct_torch.bp_taps' (float64, then
    # float32) and the accumulation ct_torch.backproject's (views in order).
    n_pix = px.shape[0]
    n_items = rows.shape[2]
    centre = (n_det - 1) / 2
    hi = np.float32(n_det + _PAD - 1.5)
    n_tiles = (n_pix + _PIXEL_TILE - 1) // _PIXEL_TILE
    for t in prange(n_tiles):
        for v in range(cos.shape[0]):
            c = cos[v]
            s = sin[v]
            row = rows[v]
            for p in range(t * _PIXEL_TILE, min((t + 1) * _PIXEL_TILE, n_pix)):
                along = px[p] * c + py[p] * s
                if mode == 0:
                    u = along
                    wt = np.float32(1.0)
                else:
                    dist = sid - (px[p] * s - py[p] * c)
                    if mode == 1:
                        u = sdd * along / dist
                        wt = np.float32((sid / dist) ** 2)
                    else:
                        u = math.atan2(along, dist)
                        wt = np.float32(1.0 / (along ** 2 + dist ** 2))
                idx = np.float32(u / det_spacing + centre)
                if idx < _LO:
                    idx = _LO
                if idx > hi:
                    idx = hi
                idx = idx + np.float32(_PAD)
                base = np.floor(idx)
                f = idx - base
                g = np.float32(1.0) - f
                i = np.int64(base)
                for b in range(n_items):
                    out[p, b] += (row[i, b] * g + row[i + 1, b] * f) * wt


@contextmanager
def _threads() -> Iterator[None]:
    """Use as many threads as torch does (``torch.set_num_threads`` is honoured), within numba's pool, and
    give torch its count back afterwards: numba's OpenMP layer shares libgomp with torch, and setting its
    threads changed torch's (a 1-thread torch ran on 2 after one CT kernel)."""
    n = torch.get_num_threads()
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _ray_arrays(r: _Rays) -> tuple[np.ndarray, ...]:
    return tuple(t.contiguous().numpy() for t in (r.start, r.slope, r.hi, r.lim_pri, r.sec_stride, r.pri_stride))


def forward(x: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    """``ct_torch.forward``, compiled: ``(B, H, W)`` mu (mm^-1) -> ``(B, V, D)`` line integrals."""
    b, h, w = x.shape
    r = _Rays(g, (h, w), pixel_mm, torch.device("cpu"))
    cols = ct_torch._padded_columns(x.float()).numpy()
    acc = np.zeros((r.weight.shape[0], b), np.float32)
    with _threads():
        _forward_kernel(cols, *_ray_arrays(r), r.steps, acc)
    return (torch.from_numpy(acc) * r.weight[:, None]).t().reshape(b, g.n_views, g.n_det).contiguous()


def adjoint(y: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """``ct_torch.adjoint``, compiled: the exact transpose of ``forward``, ``(B, V, D)`` -> ``(B, H, W)``."""
    b = y.shape[0]
    h, w = shape
    r = _Rays(g, shape, pixel_mm, torch.device("cpu"))
    yw = (y.float().reshape(b, -1) * r.weight[None, :]).contiguous().numpy()
    acc = np.zeros((b, (h + 2 * _PAD) * (w + 2 * _PAD)), np.float32)
    with _threads():
        for i in range(0, b, _ADJOINT_ITEMS):                # bounds the groups' private images
            _adjoint_kernel(yw[i:i + _ADJOINT_ITEMS], *_ray_arrays(r), r.steps, _ADJOINT_GROUPS,
                            acc[i:i + _ADJOINT_ITEMS])
    img = torch.from_numpy(acc).reshape(b, h + 2 * _PAD, w + 2 * _PAD)
    return img[:, _PAD:-_PAD, _PAD:-_PAD].contiguous()


def backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """``ct_torch.backproject``, compiled: FBP's weighted pixel-driven backprojection of ``q`` (``B x V x D``)."""
    b = q.shape[0]
    rows = torch.nn.functional.pad(q.float(), (_PAD, _PAD)).permute(1, 2, 0).contiguous().numpy()
    px, py = (t.numpy() for t in ct_torch.pixel_coords(shape, pixel_mm, torch.device("cpu")))
    th = g.angles()
    mode = 0 if g.kind == "parallel" else (1 if g.detector == "flat" else 2)
    acc = np.zeros((px.shape[0], b), np.float32)
    with _threads():
        _backproject_kernel(rows, np.ascontiguousarray(px), np.ascontiguousarray(py), torch.cos(th).numpy(),
                            torch.sin(th).numpy(), mode, float(g.sid), float(g.sdd), float(g.det_spacing), g.n_det,
                            acc)
    return (torch.from_numpy(acc) * g.view_step).t().reshape(b, *shape).contiguous()
