"""Projection radiography: exposure in the detector domain and patient motion during the exposure, batched.

Units: the line integral p = sum mu dl (dimensionless; the phantoms' radiographs are in it); photon counts per
detector pixel; the exposure factor is the tube output (mAs) relative to the nominal exposure the display is
calibrated for; lengths in pixels.

Exposure model: counts N = Poisson(g N0 e^-p), clipped to [1, S N0] (S: detector saturation, relative to the
nominal unattenuated count N0); the display transfer stays calibrated for the nominal exposure, p_hat =
-ln(N / N0), so over-exposure (g > 1) darkens the image by ln g and saturates the least attenuated regions,
under-exposure (g < 1) lightens it, as on film, and adds quantum mottle (variance = counts). ``exposure``
simulates that acquisition whole; ``exposure_change`` treats the image as the nominal exposure, which already
carries its own quantum noise, and inserts only what the new exposure adds (the count variance g (1 - g) N0
e^-p of a thinned acquisition, zero at g >= 1), so g = 1 returns the image itself. No normalisation by the
image: the exposure of an image never depends on its content.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import rng
from .blocks import blocked, spatial_sum


def detector_counts(p: torch.Tensor, n0: torch.Tensor, gain: torch.Tensor, saturation: torch.Tensor,
                    seeds: torch.Tensor) -> torch.Tensor:
    """Counts per pixel ``(B, H, W)``: Poisson(gain N0 e^-p) clipped to [1, saturation N0]; ``n0`` photons per
    pixel at the nominal exposure, ``gain`` and ``saturation`` dimensionless, all ``(B,)``."""
    scale = (gain.double() * n0.double()).to(p.device)[:, None, None]
    lam = (scale * torch.exp(-p.double())).float()
    counts = rng.poisson(seeds, lam)
    top = (saturation.double() * n0.double()).to(device=p.device, dtype=counts.dtype)[:, None, None]
    return torch.minimum(counts.clamp_min(1.0), top)


def exposure(p: torch.Tensor, n0: torch.Tensor, gain: torch.Tensor, saturation: torch.Tensor,
             seeds: torch.Tensor) -> torch.Tensor:
    """The displayed line integral p_hat = -ln(N / N0) of an exposure ``gain`` x nominal, ``(B, H, W)``."""
    counts = detector_counts(p, n0, gain, saturation, seeds)
    return -torch.log(counts / n0.to(device=p.device, dtype=counts.dtype)[:, None, None])


def exposure_change(p: torch.Tensor, n0: torch.Tensor, gain: torch.Tensor, saturation: torch.Tensor,
                    seeds: torch.Tensor) -> torch.Tensor:
    """The displayed line integral ``(B, H, W)`` of the nominal-exposure image ``p`` re-acquired at ``gain`` x
    the nominal exposure: counts g lam + sqrt(g (1 - g) lam) z (lam = N0 e^-p; Gaussian noise insertion, as for
    CT, added only for g < 1), clipped to [1, S N0], shown as -ln(N / N0) = p - ln g - ln(1 + noise / (g lam));
    exactly ``p`` at g = 1. ``n0`` photons per pixel, ``gain``, ``saturation``: ``(B,)``; ``seeds`` int64."""
    g = gain.double().to(p.device)[:, None, None]
    lam = n0.double().to(p.device)[:, None, None] * torch.exp(-p.double())
    var = (g * (1.0 - g) * lam).clamp_min(0.0)
    z = rng.normal(seeds, tuple(p.shape[1:]), p.device, torch.float64)
    rel = torch.where(var > 0, torch.sqrt(var) * z / (g * lam), torch.zeros_like(lam))
    shown = p.double() - torch.log(g) - torch.log1p(rel.clamp_min(-1.0 + 1e-12))
    top = torch.log(n0.double().to(p.device))[:, None, None]                     # 1 count
    bottom = -torch.log(saturation.double().to(p.device))[:, None, None]        # the full well
    return torch.minimum(torch.maximum(shown, bottom), top).to(p.dtype)


def motion_kernel(length_px: float, angle_deg: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    """Per-item blur kernels ``(B, K, K)`` of a curved motion path: a quadratic Bezier curve of chord
    ``length_px`` at ``angle_deg`` (counter-clockwise from the x axis) whose control point sits ``curvature`` x
    the chord off its middle, perpendicular (0: a straight line); uniform speed along the chord, splatted
    bilinearly (sum 1). K = the odd size that holds the path."""
    b = len(angle_deg)
    bend = curvature.double().abs().max().item() if b else 0.0
    half = int(math.ceil(length_px / 2 + bend * length_px)) + 1
    k = 2 * half + 1
    n = max(8, int(4 * length_px))
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    ang = torch.deg2rad(angle_deg.double())
    d = torch.stack([torch.cos(ang), -torch.sin(ang)], dim=1)            # (B, 2) as (x right, y down)
    normal = torch.stack([-d[:, 1], d[:, 0]], dim=1)
    p0, p2 = -0.5 * length_px * d, 0.5 * length_px * d
    p1 = curvature.double()[:, None] * length_px * normal
    pts = ((1 - t)[None, :, None] ** 2 * p0[:, None] + 2 * ((1 - t) * t)[None, :, None] * p1[:, None]
           + t[None, :, None] ** 2 * p2[:, None]) + half                     # (B, n, 2) kernel pixel coords
    x0, y0 = pts[..., 0].floor(), pts[..., 1].floor()
    fx, fy = pts[..., 0] - x0, pts[..., 1] - y0
    ker = torch.zeros(b, k * k, dtype=torch.float64)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        idx = ((y0 + dy).clamp(0, k - 1) * k + (x0 + dx).clamp(0, k - 1)).long()
        ker.scatter_add_(1, idx, w)
    ker = ker.view(b, k, k)
    return (ker / spatial_sum(ker)[..., None, None].to(ker.dtype)).float()


def motion_blur(v: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Convolve each item of ``v`` ``(B, C, H, W)`` with its own kernel ``(B, K, K)`` (reflect border), on
    fixed-size blocks so that an item's bits do not depend on its batch."""
    def conv(x: torch.Tensor, ker: torch.Tensor) -> torch.Tensor:
        nb, c, h, w = x.shape
        kk = ker.shape[-1]
        weight = ker.to(x)[:, None].repeat_interleave(c, dim=0).flip(-1, -2)      # (B C, 1, K, K), convolution
        mode = "reflect" if kk // 2 < min(h, w) else "replicate"                  # reflect needs pad < size
        xp = F.pad(x.reshape(1, nb * c, h, w), (kk // 2,) * 4, mode=mode)
        return F.conv2d(xp, weight, groups=nb * c).reshape(nb, c, h, w)
    return blocked(conv, v, kernels)
