"""Vectorised torch CT operators: the CPU path and the oracle of the Triton kernels.

- ``forward``: Joseph's ray-driven projector. Each ray steps through the image one pixel at a time along its
  dominant axis and interpolates linearly along the other, weight = step length (mm). Line integrals of
  mu (mm^-1) come out dimensionless. This is astra's ``linear`` projector for parallel beams.
- ``adjoint``: the exact transpose of ``forward`` (same indices and weights, scattered): <Ax, y> = <x, A^T y>.
- ``backproject``: the pixel-driven, distance-weighted backprojector of FBP (not the transpose): for each
  pixel and view, the detector coordinate of the ray through the pixel centre, linear interpolation of the
  filtered sinogram, and the fan weight (SID / L)^2 (flat) or (SID / |S - X|)^2 (equiangular).

All take ``B x H x W`` / ``B x V x D`` float32 tensors, keep the batch as the innermost (contiguous) axis so that
one index computation serves every item, and work view chunk by view chunk to bound memory. Every sum runs
in an order that does not depend on the batch size (tested bit for bit).
Written here rather than taken from a library: the maintained GPU projectors are GPL (astra, torch-radon) or
non-commercial (torchtomo), and deepinv's pure-torch projector has no fan beam with a matched adjoint."""

from __future__ import annotations

import math

import torch

from .geometry import Geometry, rays

_PAD = 2          # zero border (px) around the image: taps outside the image land there, no masks needed


class _Rays:
    """All rays of a geometry, flattened ``(V * D,)``, in the form Joseph's stepping needs.

    The image is read from a copy with a ``_PAD``-pixel zero border; a ray at step k reads column k (x-dominant)
    or row k (y-dominant) at a fractional position along the other axis that is linear in k. Positions are
    clamped into the border, so out-of-image taps read zeros without any mask."""

    def __init__(self, g: Geometry, shape: tuple[int, int], pixel_mm: float, device: torch.device) -> None:
        h, w = shape
        o, d = rays(g, pixel_mm, device)
        ox, oy, dx, dy = (t.reshape(-1) for t in (o[..., 0], o[..., 1], d[..., 0], d[..., 1]))
        xdom = dx.abs() >= dy.abs()
        sdx = torch.where(xdom, dx, torch.ones_like(dx))
        sdy = torch.where(xdom, torch.ones_like(dy), dy)
        r0 = (h - 1) / 2 - (oy + (-(w - 1) / 2 - ox) / sdx * dy)          # fractional row at column 0
        c0 = ox + ((h - 1) / 2 - oy) / sdy * dx + (w - 1) / 2             # fractional column at row 0
        self.start = torch.where(xdom, r0, c0).to(torch.float32)
        self.slope = torch.where(xdom, -dy / sdx, -dx / sdy).to(torch.float32)
        lim_sec = torch.where(xdom, h, w).to(torch.float32)
        self.hi = lim_sec + (_PAD - 1.5)              # clamp range of the position: beyond it both taps are border
        self.lim_pri = torch.where(xdom, w, h)        # steps past this read the border column / row
        pw = w + 2 * _PAD
        self.sec_stride = torch.where(xdom, pw, 1)    # flat index = (sec + PAD) * sec_stride + (k + PAD) * pri_stride
        self.pri_stride = torch.where(xdom, 1, pw)
        self.weight = (pixel_mm / torch.where(xdom, dx.abs(), dy.abs())).to(torch.float32)
        self.shape = shape
        self.steps = max(h, w)

    def taps(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Flat indices (into the padded image) of the two taps at step ``k`` and the second tap's weight."""
        pos = torch.clamp(self.start + k * self.slope, min=-_PAD + 0.5, max=None)
        pos = torch.minimum(pos, self.hi)
        base = torch.floor(pos)
        frac = pos - base
        pri = torch.clamp(self.lim_pri, max=k) + _PAD
        i0 = (base.to(torch.int64) + _PAD) * self.sec_stride + pri * self.pri_stride
        return i0, i0 + self.sec_stride, frac


def _padded_columns(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, W)`` -> ``((H + 2 PAD) * (W + 2 PAD), B)`` with a zero border: one row per pixel."""
    b = x.shape[0]
    return torch.nn.functional.pad(x, (_PAD,) * 4).reshape(b, -1).t().contiguous()


def forward(x: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    """Line integrals ``(B, V, D)`` of ``x`` (``B x H x W``, mm^-1) along the rays of ``g``.

    The steps are accumulated one after another for all rays at once, so every item's sum runs in the
    same order whatever the batch size (batch-invariant to the last bit)."""
    b, h, w = x.shape
    cols = _padded_columns(x)
    r = _Rays(g, (h, w), pixel_mm, x.device)
    acc = x.new_zeros(r.weight.shape[0], b)
    for k in range(r.steps):
        i0, i1, f = r.taps(k)
        f = f[:, None]
        acc += cols[i0] * (1 - f) + cols[i1] * f
    return (acc * r.weight[:, None]).t().reshape(b, g.n_views, g.n_det).contiguous()


def adjoint(y: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """The exact transpose of ``forward``: ``(B, V, D)`` -> ``(B, H, W)``."""
    b = y.shape[0]
    h, w = shape
    r = _Rays(g, shape, pixel_mm, y.device)
    yw = y.reshape(b, -1).t() * r.weight[:, None]                     # (V*D, B)
    acc = y.new_zeros((h + 2 * _PAD) * (w + 2 * _PAD), b)
    for k in range(r.steps):
        i0, i1, f = r.taps(k)
        f = f[:, None]
        acc.index_add_(0, i0, yw * (1 - f))
        acc.index_add_(0, i1, yw * f)
    img = acc.t().reshape(b, h + 2 * _PAD, w + 2 * _PAD)
    return img[:, _PAD:-_PAD, _PAD:-_PAD].contiguous()


def pixel_coords(shape: tuple[int, int], pixel_mm: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y (mm) of every pixel centre, ``(H * W,)`` float64."""
    h, w = shape
    y = ((h - 1) / 2 - torch.arange(h, dtype=torch.float64, device=device)) * pixel_mm
    x = (torch.arange(w, dtype=torch.float64, device=device) - (w - 1) / 2) * pixel_mm
    return x[None, :].expand(h, w).reshape(-1), y[:, None].expand(h, w).reshape(-1)


def bp_taps(g: Geometry, shape: tuple[int, int], pixel_mm: float, views: slice, device: torch.device):
    """For every pixel and view of ``views``: the fractional detector index of the ray through the pixel and
    the FBP weight, ``(V, H * W)`` float32."""
    x, y = pixel_coords(shape, pixel_mm, device)
    th = g.angles(device)[views][:, None]
    cos, sin = torch.cos(th), torch.sin(th)
    along = x[None] * cos + y[None] * sin                      # X . e_u
    if g.kind == "parallel":
        u, weight = along, torch.ones_like(along)
    else:
        dist = g.sid - (x[None] * sin - y[None] * cos)          # SID - X . s: distance along the central ray
        if g.detector == "flat":
            u = g.sdd * along / dist
            weight = (g.sid / dist) ** 2
        else:
            u = torch.atan2(along, dist)
            weight = 1.0 / (along ** 2 + dist ** 2)         # 1 / |S - X|^2, with SID cos(gamma) pre-weighting
    index = u / g.det_spacing + (g.n_det - 1) / 2
    return index.to(torch.float32), weight.to(torch.float32)


def backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """Sum over views of the weighted, linearly interpolated filtered sinogram ``q`` (``B x V x D``) at every
    pixel, times the view step (rad). Outside the detector counts as zero (a ``_PAD``-bin zero border).
    Views are added one after another (batch-invariant order)."""
    b = q.shape[0]
    h, w = shape
    d = g.n_det
    rows = torch.nn.functional.pad(q, (_PAD, _PAD)).permute(1, 2, 0).contiguous()      # (V, D + 2 PAD, B)
    acc = q.new_zeros(h * w, b)
    per_view = max(1, (1 << 21) // (h * w))                   # views whose taps are computed together
    for v0 in range(0, g.n_views, per_view):
        views = slice(v0, min(v0 + per_view, g.n_views))
        idx, wt = bp_taps(g, shape, pixel_mm, views, q.device)
        idx = idx.clamp(-_PAD + 0.5, d + _PAD - 1.5) + _PAD
        base = torch.floor(idx)
        frac = (idx - base)[..., None]
        base = base.to(torch.int64)
        for j in range(idx.shape[0]):
            r = rows[v0 + j]
            f = frac[j]
            acc += (r[base[j]] * (1 - f) + r[base[j] + 1] * f) * wt[j][:, None]
    return (acc * g.view_step).t().reshape(b, h, w).contiguous()


def ramp_kernel(g: Geometry, n_pad: int, window: str, device: torch.device) -> torch.Tensor:
    """Frequency response ``(n_pad // 2 + 1,)`` of the discrete ramp filter (Kak & Slaney's band-limited
    spatial kernel, which has no DC offset), times ``window``: ramp, shepp-logan or hann. For equiangular
    fans the spatial kernel is weighted by (gamma / sin gamma)^2. Spacing: mm at the isocentre (rad for
    equiangular)."""
    tau = g.det_spacing * (g.sid / g.sdd if g.kind == "fan" and g.detector == "flat" else 1.0)
    n = torch.arange(-(n_pad // 2), n_pad - n_pad // 2, dtype=torch.float64, device=device)
    h = torch.zeros_like(n)
    h[n == 0] = 1 / (4 * tau ** 2)
    odd = (n.abs() % 2) == 1
    h[odd] = -1 / (math.pi * n[odd] * tau) ** 2
    if g.kind == "fan" and g.detector == "equiangular":
        gam = torch.where(n == 0, torch.ones_like(n), n * tau)
        h = h * torch.where(n == 0, torch.ones_like(gam), gam / torch.sin(gam)) ** 2
    resp = torch.fft.rfft(torch.fft.ifftshift(h)).real * tau
    freq = torch.fft.rfftfreq(n_pad, device=device, dtype=torch.float64) / 0.5        # 0 .. 1 (Nyquist)
    if window == "shepp-logan":
        resp = resp * torch.sinc(freq / 2)
    elif window == "hann":
        resp = resp * 0.5 * (1 + torch.cos(math.pi * freq))
    elif window != "ramp":
        raise ValueError(f"filter is ramp, shepp-logan or hann, not {window!r}")
    return resp.to(torch.float32)


def fbp_filter(p: torch.Tensor, g: Geometry, window: str = "ramp") -> torch.Tensor:
    """Pre-weight (fan: cosine of the ray angle) and filter the sinogram ``(B, V, D)`` along the detector."""
    d = g.n_det
    if g.kind == "fan":
        u = g.det_positions(p.device)
        cos = (g.sdd / torch.sqrt(g.sdd ** 2 + u ** 2)) if g.detector == "flat" else torch.cos(u)
        scale = g.sid if g.detector == "equiangular" else 1.0
        p = p * (cos * scale).to(p.dtype)
    n_pad = 1 << math.ceil(math.log2(2 * d))
    resp = ramp_kernel(g, n_pad, window, p.device)
    return torch.fft.irfft(torch.fft.rfft(p, n=n_pad, dim=-1) * resp, n=n_pad, dim=-1)[..., :d]
