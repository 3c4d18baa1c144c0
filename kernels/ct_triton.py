"""Triton kernels of the CT projector (the CUDA path): Joseph forward projection and the pixel-driven FBP
backprojection, each with the same arithmetic as ``ct_torch`` (its oracle): the same ray tables, the same
zero border, steps and views accumulated in the same order. One program handles one item and a block of
rays (or pixels), so an item's result never depends on its batch. Fused multiply-adds may round the last bit
differently from torch; the tests hold them to 1e-5 relative. Runs on the CPU under TRITON_INTERPRET=1
(slow; small sizes only).

The exact transpose of the forward projector stays in torch (``index_add_``): it is needed for adjoint
tests and iterative methods, not for the degradation cycle, and a scatter kernel would need atomics, whose
order is not deterministic."""

from __future__ import annotations

import torch

from .ct_torch import _PAD, _Rays
from .geometry import Geometry

try:
    import triton
    import triton.language as tl
except ImportError:           # CPU-only installs: the torch path serves
    triton = None


if triton is not None:
    @triton.jit
    def _joseph_kernel(img_ptr, out_ptr, start_ptr, slope_ptr, hi_ptr, lim_ptr, sec_ptr, pri_ptr, off_ptr, wt_ptr,
                       n_rays, img_stride, out_stride, steps, lo_clamp, BLOCK: tl.constexpr):
        # axis 0: blocks of rays, axis 1: items, so that consecutive programs read the same image (L2 locality)
        item = tl.program_id(1)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_rays
        start = tl.load(start_ptr + offs, mask=mask, other=0.0)
        slope = tl.load(slope_ptr + offs, mask=mask, other=0.0)
        hi = tl.load(hi_ptr + offs, mask=mask, other=0.0)
        lim = tl.load(lim_ptr + offs, mask=mask, other=0)
        sec = tl.load(sec_ptr + offs, mask=mask, other=0)
        pri = tl.load(pri_ptr + offs, mask=mask, other=0)
        wt = tl.load(wt_ptr + offs, mask=mask, other=0.0)
        base_ptr = img_ptr + item * img_stride + tl.load(off_ptr + offs, mask=mask, other=0)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for k in range(steps):
            pos = start + k * slope
            pos = tl.minimum(tl.maximum(pos, lo_clamp), hi)
            fl = tl.floor(pos)
            frac = pos - fl
            kk = tl.minimum(lim, k) + 2
            i0 = (fl.to(tl.int64) + 2) * sec + kk * pri
            v0 = tl.load(base_ptr + i0, mask=mask, other=0.0)
            v1 = tl.load(base_ptr + i0 + sec, mask=mask, other=0.0)
            acc += v0 * (1 - frac) + v1 * frac
        tl.store(out_ptr + item * out_stride + offs, acc * wt, mask=mask)

    @triton.jit
    def _backproject_kernel(q_ptr, out_ptr, cos_ptr, sin_ptr, n_pix, width, n_views, q_stride, row_len, out_stride,
                            cx, cy, pixel_mm, det_spacing, det_centre, sid, sdd, lo_clamp, hi_clamp,
                            FAN: tl.constexpr, BLOCK: tl.constexpr):
        item = tl.program_id(1)
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n_pix
        # pixel centres in mm, float64 like the torch reference
        x = ((offs % width).to(tl.float64) - cx) * pixel_mm
        y = (cy - (offs // width).to(tl.float64)) * pixel_mm
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for v in range(n_views):
            c = tl.load(cos_ptr + v)
            s = tl.load(sin_ptr + v)
            along = x * c + y * s
            if FAN:
                dist = sid - (x * s - y * c)
                u = sdd * along / dist
                wt = ((sid / dist) * (sid / dist)).to(tl.float32)
            else:
                u = along
                wt = tl.full([BLOCK], 1.0, tl.float32)
            idx = (u / det_spacing + det_centre).to(tl.float32)
            idx = tl.minimum(tl.maximum(idx, lo_clamp), hi_clamp) + 2
            fl = tl.floor(idx)
            frac = idx - fl
            row = q_ptr + item * q_stride + v * row_len + fl.to(tl.int64)
            a = tl.load(row, mask=mask, other=0.0)
            b = tl.load(row + 1, mask=mask, other=0.0)
            acc += (a * (1 - frac) + b * frac) * wt
        tl.store(out_ptr + item * out_stride + offs, acc, mask=mask)


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


def forward(x: torch.Tensor, g: Geometry, pixel_mm: float, block: int = 128) -> torch.Tensor:
    """``ct_torch.forward`` as one Triton launch: ``(B, H, W)`` -> ``(B, V, D)``.

    Each item's padded image is stored twice, row-major and transposed: rays that step along columns
    (x-dominant) read the transposed copy, where their interpolation axis is contiguous, so the neighbouring
    rays of a block read neighbouring addresses (coalesced loads) whichever way they run. The values read,
    and so the sums, are the same as from one copy."""
    b, h, w = x.shape
    r = _Rays(g, (h, w), pixel_mm, x.device)
    padded = torch.nn.functional.pad(x.float(), (_PAD,) * 4)                # (B, PH, PW)
    ph, pw = padded.shape[-2:]
    img = torch.cat([padded.reshape(b, -1), padded.transpose(1, 2).reshape(b, -1)], dim=1).contiguous()
    xdom = r.pri_stride == 1                                                # steps along columns
    sec = torch.where(xdom, 1, r.sec_stride)                                 # int64, like _Rays' strides
    pri = torch.where(xdom, ph, r.pri_stride)
    off = torch.where(xdom, ph * pw, 0)
    n = r.weight.shape[0]
    out = torch.empty(b, n, device=x.device, dtype=torch.float32)
    grid = (triton.cdiv(n, block), b)
    _joseph_kernel[grid](img, out, r.start.contiguous(), r.slope.contiguous(), r.hi.contiguous(),
                         r.lim_pri.contiguous(), sec, pri, off, r.weight.contiguous(), n,
                         img.shape[1], n, r.steps, float(-_PAD + 0.5), BLOCK=block)
    return out.reshape(b, g.n_views, g.n_det)


def backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int],
                block: int = 128) -> torch.Tensor:
    """``ct_torch.backproject`` as one Triton launch (parallel and flat-detector fan beams):
    ``(B, V, D)`` -> ``(B, H, W)``. The geometry is computed in the kernel, nothing per pixel is stored."""
    if g.kind == "fan" and g.detector != "flat":
        raise ValueError("the Triton backprojector handles parallel and flat fan beams; use ct_torch")
    b = q.shape[0]
    h, w = shape
    th = g.angles(q.device)
    rows = torch.nn.functional.pad(q.float(), (_PAD, _PAD)).contiguous()  # (B, V, D + 2 PAD)
    n = h * w
    out = torch.empty(b, n, device=q.device, dtype=torch.float32)
    grid = (triton.cdiv(n, block), b)
    _backproject_kernel[grid](rows, out, torch.cos(th).contiguous(), torch.sin(th).contiguous(), n, w, g.n_views,
                              rows.shape[1] * rows.shape[2], rows.shape[2], n, (w - 1) / 2, (h - 1) / 2,
                              float(pixel_mm), float(g.det_spacing), (g.n_det - 1) / 2, float(g.sid), float(g.sdd),
                              float(-_PAD + 0.5), float(g.n_det + _PAD - 1.5), FAN=g.kind == "fan", BLOCK=block)
    return (out * g.view_step).reshape(b, h, w)
