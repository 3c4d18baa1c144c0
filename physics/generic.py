"""Generic (modality-agnostic) degradations of MedQ-Deg, batched.

Inputs are display-normalised images ``v`` of shape ``B x C x H x W``: ``v = (x - lo) / (hi - lo)`` for the
item's display window ``[lo, hi]`` in physical units, *without* clipping, so that the caller can map the
result back to physical units exactly. Intensities below are therefore "fractions of the display window";
lengths are in pixels. Parameters are per-item tensors of shape ``(B,)``.

kornia provides the batched filters and warps (imported lazily, so that ``medq_synth.physics`` imports with
torch alone). Each function is batch-size invariant: an item's output does not depend on its batch mates
(kernel sizes are grouped per item value; convolutions and reductions run on fixed-shape blocks).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import rng
from .blocks import blocked, spatial_mean


def _groups(values: torch.Tensor) -> list[tuple[float, torch.Tensor]]:
    """Indices of the batch grouped by equal value, in increasing value order."""
    vals = values.detach().cpu()
    return [(float(u), (vals == u).nonzero().flatten()) for u in torch.unique(vals)]


def _by_group(v: torch.Tensor, values: torch.Tensor, fn, identity_at: float) -> torch.Tensor:
    """Apply ``fn(v_subset, value, idx)`` to each group of equal parameter values; values <= identity_at
    leave their items unchanged. A single group covering the batch avoids the gather/scatter copies."""
    groups = _groups(values)
    if len(groups) == 1:
        value, _ = groups[0]
        return v.clone() if value <= identity_at else fn(v, value, None)
    out = v.clone()
    for value, idx in groups:
        if value > identity_at:
            out[idx] = fn(v[idx], value, idx)
    return out


def _per_item(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """Broadcast a ``(B,)`` parameter against ``B x C x H x W``."""
    return p.to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)


def channel_mean(v: torch.Tensor) -> torch.Tensor:
    """Per-item, per-channel mean ``(B, C, 1, 1)``.

    A reduction splits its work by the tensor shape and the thread count, so it runs on fixed-shape blocks
    (physics.blocks) in a thread-invariant order, to give each item the same bits whatever its batch and
    machine.
    """
    return blocked(lambda t: spatial_mean(t).to(t.dtype)[..., None, None], v)


def gaussian_noise(v: torch.Tensor, sigma: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """``v + sigma * n``, ``n`` standard normal, independent per pixel and channel.

    sigma: noise standard deviation in fractions of the display window. seeds: int64 ``(B,)``, one noise
    stream per item.
    """
    n = rng.normal(seeds, tuple(v.shape[1:]), v.device, v.dtype)
    return v + _per_item(v, sigma) * n


def gaussian_kernel_size(sigma_px: float) -> int:
    """Odd kernel size covering +-3 sigma (pixels)."""
    return 2 * math.ceil(3.0 * sigma_px) + 1


def gaussian_blur(v: torch.Tensor, sigma_px: torch.Tensor) -> torch.Tensor:
    """Isotropic Gaussian blur with standard deviation ``sigma_px`` (pixels); reflect border.

    sigma_px <= 0 leaves the item unchanged. The kernel spans +-3 sigma, capped by the image size.
    """
    import kornia

    def blur(x: torch.Tensor, s: float, idx: torch.Tensor | None) -> torch.Tensor:
        k = min(gaussian_kernel_size(s), _max_odd(v))
        sig = torch.full((len(x), 2), s, device=v.device, dtype=v.dtype)
        return blocked(lambda t, sg: kornia.filters.gaussian_blur2d(t, (k, k), sg, border_type="reflect"), x, sig)

    return _by_group(v, sigma_px, blur, 0.0)


def _max_odd(v: torch.Tensor) -> int:
    """Largest odd kernel size that reflect padding allows for this image."""
    m = min(v.shape[-2:])
    return m if m % 2 else m - 1


def motion_kernel_size(length_px: float) -> int:
    """Odd kernel size for a linear motion of ``length_px`` pixels (at least 3)."""
    return max(3, 2 * int(round((length_px - 1) / 2)) + 1)


def motion_blur(v: torch.Tensor, length_px: torch.Tensor, angle_deg: torch.Tensor) -> torch.Tensor:
    """Linear (uniform-velocity) motion blur: the average of the image along a line segment.

    length_px: path length in pixels (rounded to an odd kernel size >= 3; <= 1 is the identity).
    angle_deg: direction of motion in degrees, counter-clockwise from the image x axis.
    """
    import kornia

    def smear(x: torch.Tensor, length: float, idx: torch.Tensor | None) -> torch.Tensor:
        k = min(motion_kernel_size(length), _max_odd(v))
        ang = (angle_deg if idx is None else angle_deg[idx]).to(device=v.device, dtype=v.dtype)
        return blocked(lambda t, a: kornia.filters.motion_blur(t, k, a, torch.zeros_like(a), border_type="reflect",
                                                               mode="bilinear"), x, ang)

    return _by_group(v, length_px, smear, 1.0)


def low_resolution(v: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Downsample by ``factor`` (bilinear, antialiased) and upsample back (bicubic) to the same size.

    factor: dimensionless, >= 1 (1 is the identity). The low-resolution grid has round(H / factor) x
    round(W / factor) pixels (at least 2).
    """
    h, w = v.shape[-2:]

    def resample(x: torch.Tensor, f: float, idx: torch.Tensor | None) -> torch.Tensor:
        small = (max(2, round(h / f)), max(2, round(w / f)))
        lo = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
        return F.interpolate(lo, size=(h, w), mode="bicubic", align_corners=False)

    return _by_group(v, factor, resample, 1.0)


def adjust_brightness(v: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``v + shift``: a brightness offset (shift in window fractions).

    Not clipped here: the display conversion saturates at the window, while the physical output keeps
    values outside it (a CT item keeps its HU beyond the window).
    """
    return v + _per_item(v, shift)


def exposure(v: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """``gain * v + offset``: a changed detector response; gain dimensionless, offset in window fractions.
    Saturation happens in the display conversion, as for ``adjust_brightness``."""
    return torch.addcmul(_per_item(v, offset), _per_item(v, gain), v)


def reduce_contrast(v: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """``mu + c (v - mu)``, c dimensionless (1 is the identity), ``mu`` the per-channel mean of the
    *displayed* item ``clip(v, 0, 1)``: MedQ-Deg's fitted model is defined relative to the image mean, and
    the displayed mean keeps a CT's air (far below the window) from dragging the whole image to black."""
    mu = channel_mean(v.clamp(0.0, 1.0))
    return v + (_per_item(v, contrast) - 1.0) * (v - mu)       # written as a change: c = 1 gives v bit for bit


def _rigid(v: torch.Tensor, angle_deg: torch.Tensor, shift_px: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Rotate by ``angle_deg`` (counter-clockwise) about the centre, then translate by ``shift_px`` (B, 2: x, y
    in pixels), bilinear; pixels from outside the field take the per-item ``fill`` value."""
    import kornia

    moving = ((angle_deg != 0) | (shift_px != 0).any(dim=1)).nonzero().flatten().to(v.device)
    out = v.clone()
    if len(moving) == 0:
        return out                  # the identity stays exact (no resampling round-off)
    b, (h, w) = len(moving), v.shape[-2:]
    centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=v.device, dtype=v.dtype).expand(b, 2)
    angle = angle_deg.to(device=v.device, dtype=v.dtype)[moving]
    m = kornia.geometry.transform.get_rotation_matrix2d(
        centre, angle, torch.ones(b, 2, device=v.device, dtype=v.dtype)).clone()
    m[:, :, 2] += shift_px.to(device=v.device, dtype=v.dtype)[moving]
    f = _per_item(v, fill)[moving]
    # Warping (v - fill) with zero padding fills exactly with `fill` and interpolates the border correctly.
    out[moving] = kornia.geometry.transform.warp_affine(v[moving] - f, m, (h, w), mode="bilinear",
                                                        padding_mode="zeros") + f
    return out


def rotation(v: torch.Tensor, angle_deg: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """In-plane rotation by ``angle_deg`` degrees (counter-clockwise) about the image centre.

    fill: value (window fractions, per item) for the uncovered corners, the item's background.
    """
    return _rigid(v, angle_deg, torch.zeros(len(v), 2), fill)


def movement(v: torch.Tensor, shift_px: torch.Tensor, angle_deg: torch.Tensor, weight: torch.Tensor,
             fill: torch.Tensor) -> torch.Tensor:
    """Patient movement during acquisition: ``(1 - w) v + w T(v)``.

    ``T`` is the rigid move to the second pose: rotation ``angle_deg`` (degrees) about the centre and
    translation ``shift_px`` (B, 2: x, y in pixels). weight: fraction of the acquisition at the second pose.
    """
    moved = _rigid(v, angle_deg, shift_px, fill)
    w = _per_item(v, weight)
    return (1 - w) * v + w * moved
