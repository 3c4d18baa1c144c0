"""Vectorised torch CT operators: the CPU path and the oracle of the Triton kernels.

- ``forward``: Joseph's ray-driven projector. Each ray steps through the image one pixel at a time along its
  dominant axis and interpolates linearly along the other, weight = step length (mm). Line integrals of
  mu (mm^-1) come out dimensionless. This is astra's ``linear`` projector for parallel beams.
- ``adjoint``: the exact transpose of ``forward`` (same indices and weights, scattered): <Ax, y> = <x, A^T y>.
- ``backproject``: the pixel-driven, distance-weighted backprojector of FBP (not the transpose): for each
  pixel and view, the detector coordinate of the ray through the pixel centre, linear interpolation of the
  filtered sinogram, and the fan weight (SID / L)^2 (flat) or (SID / |S - X|)^2 (equiangular).

All take ``B x H x W`` / ``B x V x D`` float32 tensors and work view chunk by view chunk to bound memory, on
fixed-size blocks of items (``physics.blocks``) so that an item's numbers do not depend on its batch.
Written here rather than taken from a library: the maintained GPU projectors are GPL (astra, torch-radon) or
non-commercial (torchtomo), and deepinv's pure-torch projector has no fan beam with a matched adjoint."""

from __future__ import annotations

import math

import torch

from medq_synth.physics.blocks import blocked

from .geometry import Geometry, rays

_CHUNK_ELEMENTS = 1 << 22        # (views x detectors x steps) per chunk


def _chunks(g: Geometry, per_view: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // max(per_view, 1))
    return [slice(k, min(k + step, g.n_views)) for k in range(0, g.n_views, step)]


def _joseph_taps(g: Geometry, shape: tuple[int, int], pixel_mm: float, views: slice, device: torch.device):
    """For the rays of ``views``: flat indices of the two interpolation taps per step (``H * W`` = the zero
    slot outside the image), the fraction of the second tap, and the weight (mm per step), ``(V, D, N)``."""
    h, w = shape
    o, d = rays(g, pixel_mm, device, views)
    ox, oy, dx, dy = o[..., 0:1], o[..., 1:2], d[..., 0:1], d[..., 1:2]
    n = max(h, w)
    k = torch.arange(n, dtype=torch.float64, device=device)
    xdom = dx.abs() >= dy.abs()
    # x-dominant: the ray crosses column k at x_k; y-dominant: row k at y_k.
    xk = k - (w - 1) / 2
    yk = (h - 1) / 2 - k
    safe_dx = torch.where(xdom, dx, torch.ones_like(dx))
    safe_dy = torch.where(xdom, torch.ones_like(dy), dy)
    row_x = (h - 1) / 2 - (oy + (xk - ox) / safe_dx * dy)        # x-dominant: fractional row at column k
    col_y = (ox + (yk - oy) / safe_dy * dx) + (w - 1) / 2        # y-dominant: fractional column at row k
    frac_pos = torch.where(xdom, row_x, col_y)
    base = torch.floor(frac_pos)
    frac = (frac_pos - base).to(torch.float32)
    base = base.to(torch.int64)
    kk = k.to(torch.int64).expand_as(base)
    lim_sec = torch.where(xdom, h, w)          # range of the interpolated axis
    lim_pri = torch.where(xdom, w, h)
    slot = h * w
    taps = []
    for off in (0, 1):
        sec = base + off
        ok = (sec >= 0) & (sec < lim_sec) & (kk < lim_pri)
        flat = torch.where(xdom, sec * w + kk, kk * w + sec)
        taps.append(torch.where(ok, flat, torch.full_like(flat, slot)))
    weight = (pixel_mm / torch.where(xdom, dx.abs(), dy.abs())).to(torch.float32)        # (V, D, 1)
    return taps[0], taps[1], frac, weight


def forward(x: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    """Line integrals ``(B, V, D)`` of ``x`` (``B x H x W``, mm^-1) along the rays of ``g``."""
    return blocked(lambda xb: _forward(xb, g, pixel_mm), x)


def _forward(x: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    b, h, w = x.shape
    cols = torch.cat([x.reshape(b, h * w).t(), x.new_zeros(1, b)])       # (H*W + 1, B): the last row is zero
    out = x.new_empty(g.n_views, g.n_det, b)
    for views in _chunks(g, g.n_det * max(h, w)):
        i0, i1, f, wt = _joseph_taps(g, (h, w), pixel_mm, views, x.device)
        v = cols[i0.reshape(-1)] * (1 - f).reshape(-1, 1) + cols[i1.reshape(-1)] * f.reshape(-1, 1)
        out[views] = v.reshape(*i0.shape, b).sum(dim=2) * wt
    return out.permute(2, 0, 1).contiguous()


def adjoint(y: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """The exact transpose of ``forward``: ``(B, V, D)`` -> ``(B, H, W)``."""
    return blocked(lambda yb: _adjoint(yb, g, pixel_mm, shape), y)


def _adjoint(y: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    b = y.shape[0]
    h, w = shape
    acc = y.new_zeros(h * w + 1, b)
    yt = y.permute(1, 2, 0)          # (V, D, B)
    for views in _chunks(g, g.n_det * max(h, w)):
        i0, i1, f, wt = _joseph_taps(g, (h, w), pixel_mm, views, y.device)
        yv = (yt[views] * wt)[:, :, None, :]                          # (V, D, 1, B)
        acc.index_add_(0, i0.reshape(-1), (yv * (1 - f)[..., None]).reshape(-1, b))
        acc.index_add_(0, i1.reshape(-1), (yv * f[..., None]).reshape(-1, b))
    return acc[:-1].t().reshape(b, h, w).contiguous()


def pixel_coords(shape: tuple[int, int], pixel_mm: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """x, y (mm) of every pixel centre, ``(H * W,)`` float64."""
    h, w = shape
    y = ((h - 1) / 2 - torch.arange(h, dtype=torch.float64, device=device)) * pixel_mm
    x = (torch.arange(w, dtype=torch.float64, device=device) - (w - 1) / 2) * pixel_mm
    return x[None, :].expand(h, w).reshape(-1), y[:, None].expand(h, w).reshape(-1)


def bp_taps(g: Geometry, shape: tuple[int, int], pixel_mm: float, views: slice, device: torch.device):
    """For every pixel and view of ``views``: the fractional detector index of the ray through the pixel and
    the FBP weight, ``(V, H * W)`` (float64 index, float32 weight)."""
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
    return index, weight.to(torch.float32)


def backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """Sum over views of the weighted, linearly interpolated filtered sinogram ``q`` (``B x V x D``) at every
    pixel, times the view step (rad). Outside the detector counts as zero."""
    return blocked(lambda qb: _backproject(qb, g, pixel_mm, shape), q)


def _backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    b = q.shape[0]
    h, w = shape
    rows = torch.cat([q.permute(1, 2, 0).reshape(g.n_views * g.n_det, b), q.new_zeros(1, b)])
    slot = g.n_views * g.n_det
    acc = q.new_zeros(h * w, b)
    for views in _chunks(g, h * w):
        idx, wt = bp_taps(g, shape, pixel_mm, views, q.device)
        base = torch.floor(idx)
        f = (idx - base).to(torch.float32)[..., None]
        base = base.to(torch.int64)
        view_off = (torch.arange(views.start, views.stop, device=q.device) * g.n_det)[:, None]
        terms = []
        for off, fw in ((0, 1 - f), (1, f)):
            k = base + off
            flat = torch.where((k >= 0) & (k < g.n_det), k + view_off, torch.full_like(k, slot))
            terms.append(rows[flat.reshape(-1)].reshape(*flat.shape, b) * fw)
        acc += ((terms[0] + terms[1]) * wt[..., None]).sum(dim=0)
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

    def filt(pb: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(pb, n=n_pad, dim=-1) * resp, n=n_pad, dim=-1)[..., :d]

    return blocked(filt, p)


def fbp(p: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int], window: str = "ramp") -> torch.Tensor:
    """Filtered backprojection of line integrals ``(B, V, D)`` -> mu (mm^-1), ``(B, H, W)``. A full fan
    rotation sees every line twice, hence the factor 1/2."""
    f = backproject(fbp_filter(p, g, window), g, pixel_mm, shape)
    return f * 0.5 if g.kind == "fan" else f
