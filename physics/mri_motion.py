"""Segmented k-space rigid motion with a severity measure that can be controlled.

Model (Shaw et al. 2019, TorchIO ``RandomMotion``): the object holds a rigid pose during each segment of the
acquisition; every phase-encode column of k-space is taken from the spectrum of the object at the pose it was
acquired in. Poses change at ``E`` motion events; the segment that acquires the k-space centre is the
reference (pose 0), so the image stays registered to the input (no global shift to undo before comparing).

Acquisition order maps each centred phase-encode column j of W to a time in [0, 1):
- ``sequential``: column by column, t_j = (j + 0.5) / W (a Cartesian gradient- or spin-echo sequence);
- ``interleaved`` with S shots: shot s acquires the columns j = s mod S, all at t = (s + 0.5) / S (segmented
  / echo-train sequences: motion between shots corrupts every S-th column and gives discrete ghosts).

Severity measure (what "how bad is this motion" means here, in pixels): the k-space-energy-weighted
displacement

    m = sum_j e_j d(pose of column j),   d = sqrt(dx^2 + dy^2 + theta^2 R^2 / 2),

where e_j is column j's fraction of the clean k-space energy and d the root-mean-square displacement (px) of
the points of a disc of radius R (half the smaller image side, px) under the pose's rotation theta (rad) and
translation (dx, dy) (px), relative to the reference pose. Pixels, not mm, because the k-space inconsistency a
displacement causes is its phase error 2 pi f d with f in cycles per pixel: the same 1 mm is a mild artefact
at 1 mm pixels and a strong one at 0.3 mm. m weighs *when* motion happens (near the k-space centre, where
the energy is, it matters most: TorchIO issue 765) together with how far. Because m is linear in a common
scale of all poses, a drawn motion pattern is scaled to hit a target m exactly; patterns that cannot reach it
within the rotation and translation limits (degrees and mm: what a patient does) are redrawn
(``sample_motion``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .kspace import KSpace, dft2

ORDERS = ("sequential", "interleaved")
MAX_EVENTS = 8
TRIES = 32


def line_times(n_cols: int, order: str = "sequential", n_shots: int = 1) -> np.ndarray:
    """Acquisition time in [0, 1) of each centred phase-encode column, float64 ``(n_cols,)``."""
    j = np.arange(n_cols, dtype=np.float64)
    if order == "sequential":
        return (j + 0.5) / n_cols
    if order == "interleaved":
        if n_shots < 1:
            raise ValueError("interleaved acquisition needs n_shots >= 1")
        return ((j % n_shots) + 0.5) / n_shots
    raise ValueError(f"unknown acquisition order {order!r} ({', '.join(ORDERS)})")


def line_segments(event_times: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Segment (pose index) of each column: the number of events at or before its time, int64 ``(B, W)``.
    ``event_times``: ``(B, E)`` in [0, 1] (unsorted allowed); ``times``: ``(W,)``."""
    return (event_times[:, None, :] <= times[None, :, None]).sum(dim=-1)


def displacement_px(poses_px: torch.Tensor, radius_px: float) -> torch.Tensor:
    """RMS displacement (px) over a disc of radius ``radius_px`` for poses ``(B, P, 3)`` = (rotation rad, dy px,
    dx px): sqrt(dy^2 + dx^2 + theta^2 R^2 / 2), ``(B, P)``."""
    rot, dy, dx = poses_px.unbind(-1)
    return torch.sqrt(dy ** 2 + dx ** 2 + rot ** 2 * radius_px ** 2 / 2.0)


def motion_measure(energy: torch.Tensor, segments: torch.Tensor, displacement: torch.Tensor) -> torch.Tensor:
    """m = sum_j e_j d(segment_j) (px), ``(B,)``: ``energy`` ``(B, W)`` column energy fractions (centred),
    ``segments`` ``(B, W)``, ``displacement`` ``(B, P)`` px."""
    return (energy * torch.gather(displacement, 1, segments)).sum(dim=-1)


def to_pixels(poses_mm: torch.Tensor, pixel_mm: torch.Tensor) -> torch.Tensor:
    """Poses (rad, mm, mm) -> (rad, px, px) for items of ``pixel_mm`` ``(B,)``."""
    out = poses_mm.clone()
    out[..., 1:] /= pixel_mm.to(out)[:, None, None]
    return out


def n_pattern(n_events_max: int = MAX_EVENTS, tries: int = TRIES) -> int:
    """Uniforms a motion draw consumes per item (a fixed count, whatever the level)."""
    return 1 + tries * (n_events_max + 3 * (n_events_max + 1))


def sample_motion(uniforms: torch.Tensor, energy: torch.Tensor, pixel_mm: torch.Tensor, shape: tuple[int, int],
                  n_events: int, target_px: torch.Tensor, band: float, max_rotation_deg: float,
                  max_translation_mm: float, order: str = "sequential", n_shots: int = 1,
                  reach_px: float | None = None) -> dict[str, torch.Tensor]:
    """Draw motion whose measure (px) lands on a target inside the band target (1 +- band) (on the host).

    For each item and try: E event times at i / (E + 1) jittered by +-0.3 of a step (Shaw et al.), and for each
    of the E + 1 poses a rotation in [-1, 1] x ``max_rotation_deg`` and a translation of length [0, 1] x
    ``max_translation_mm`` in a uniform direction; the segment holding the k-space centre gets the identity.
    The first try whose measure at these limits reaches ``reach_px`` (default: the item's target m*) is scaled
    by m* / m (<= 1), so its measure is m* exactly. With a fixed ``reach_px`` (at least every target) and the
    same uniforms, every severity picks the same try: the motion's course is the same and only its size
    follows the target. If no try reaches, the strongest is kept unscaled (scaled down if it exceeds m*) and
    its measure is what is recorded.

    ``uniforms``: ``(B, n_pattern())`` float64 in [0, 1); ``energy``: ``(B, W)`` column energy fractions;
    ``target_px``: ``(B,)``; ``pixel_mm``: ``(B,)``. Returns per-item tensors: ``poses`` (B, E + 1, 3) as
    (rad, mm, mm), ``event_times`` (B, E), ``measure_px``, ``target_px``, ``scale``, ``try_index`` and
    ``in_band`` (B,)."""
    if not 0 <= n_events <= MAX_EVENTS:
        raise ValueError(f"n_events must be in [0, {MAX_EVENTS}]")
    u = uniforms.to(torch.float64).cpu()
    b, w = energy.shape
    e, p = n_events, n_events + 1
    target = target_px.to(torch.float64).cpu() * (1.0 + band * (2.0 * u[:, 0] - 1.0))
    per_try = MAX_EVENTS + 3 * (MAX_EVENTS + 1)
    draws = u[:, 1:1 + TRIES * per_try].reshape(b, TRIES, per_try)
    step = 1.0 / (e + 1)
    times = (torch.arange(1, e + 1, dtype=torch.float64) * step + (draws[..., :e] - 0.5) * 0.6 * step).clamp(0, 1)
    pose_u = draws[..., MAX_EVENTS:MAX_EVENTS + 3 * p].reshape(b, TRIES, p, 3)
    rot = math.radians(max_rotation_deg) * (2.0 * pose_u[..., 0] - 1.0)
    length = max_translation_mm * pose_u[..., 1]
    angle = 2.0 * math.pi * pose_u[..., 2]
    poses = torch.stack([rot, length * torch.sin(angle), length * torch.cos(angle)], dim=-1)   # (B, T, P, 3)

    col_t = torch.from_numpy(line_times(w, order, n_shots))
    seg = line_segments(times.reshape(b * TRIES, e), col_t).reshape(b, TRIES, w)
    ref = seg[..., w // 2]                                                      # (B, T): the centre's segment
    keep = torch.arange(p)[None, None, :] != ref[..., None]
    poses = poses * keep[..., None]
    px = pixel_mm.to(torch.float64).cpu().repeat_interleave(TRIES)
    disp = displacement_px(to_pixels(poses.reshape(b * TRIES, p, 3), px), min(shape) / 2.0)
    full = motion_measure(energy.to(torch.float64).cpu().repeat_interleave(TRIES, dim=0),
                          seg.reshape(b * TRIES, w), disp).reshape(b, TRIES)
    need = target if reach_px is None else torch.maximum(target, torch.full_like(target, reach_px))
    reaches = full >= need[:, None]
    first = torch.where(reaches.any(dim=1), reaches.to(torch.int64).argmax(dim=1), full.argmax(dim=1))
    rows = torch.arange(b)
    chosen_full = full[rows, first]
    ok = chosen_full >= target
    scale = torch.where(ok & (chosen_full > 0), target / chosen_full.clamp_min(1e-300), torch.ones_like(target))
    measure = torch.where(ok, target, chosen_full)
    return {"poses": poses[rows, first] * scale[:, None, None], "event_times": times[rows, first],
            "measure_px": measure, "target_px": target, "scale": scale, "try_index": first,
            "in_band": ok.to(torch.int64)}


def rotate(images: torch.Tensor, angle_rad: torch.Tensor) -> torch.Tensor:
    """Rotate complex images ``(B, C, H, W)`` counter-clockwise (as displayed, rows down) by ``angle_rad``
    ``(B,)`` about the image centre, bilinear, zero outside the field; items with angle 0 are returned as they
    are (no resampling round-off)."""
    b, c, h, w = images.shape
    ang = angle_rad.to(device=images.device, dtype=torch.float32)
    cos, sin = torch.cos(ang), torch.sin(ang)
    # Output pixel (row i, col j) samples the input at the inverse rotation about ((H-1)/2, (W-1)/2); in
    # display coordinates (x right, y up) a counter-clockwise turn by a maps (x, y) to R(a)(x, y).
    i = torch.arange(h, device=images.device, dtype=torch.float32)[:, None] - (h - 1) / 2
    j = torch.arange(w, device=images.device, dtype=torch.float32)[None, :] - (w - 1) / 2
    x, y = j[None], -i[None]
    xs = cos[:, None, None] * x + sin[:, None, None] * y
    ys = -sin[:, None, None] * x + cos[:, None, None] * y
    grid = torch.stack([xs / max((w - 1) / 2, 0.5), -ys / max((h - 1) / 2, 0.5)], dim=-1)    # (B, H, W, 2)
    re = torch.view_as_real(images.to(torch.complex64)).permute(0, 1, 4, 2, 3).reshape(b, 2 * c, h, w)
    out = F.grid_sample(re, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = torch.view_as_complex(out.reshape(b, c, 2, h, w).permute(0, 1, 3, 4, 2).contiguous())
    still = (ang == 0)[:, None, None, None]
    return torch.where(still, images.to(torch.complex64), out)


def translation_ramp(shape: tuple[int, int], shift_px: torch.Tensor, device: torch.device) -> torch.Tensor:
    """exp(-2 pi i (f_y dy + f_x dx)) in FFT order, ``(B, 1, H, W)`` complex64: the exact k-space effect of a
    translation by ``shift_px`` ``(B, 2)`` = (dy, dx) pixels (rows down, columns right)."""
    h, w = shape
    fy = torch.fft.fftfreq(h, device=device, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, device=device, dtype=torch.float64)[None, :]
    s = shift_px.to(device=device, dtype=torch.float64)
    phase = -2.0 * math.pi * (fy[None] * s[:, 0, None, None] + fx[None] * s[:, 1, None, None])
    return torch.polar(torch.ones_like(phase), phase).to(torch.complex64)[:, None]


def rigid_motion(images: torch.Tensor, poses: torch.Tensor, segments: torch.Tensor) -> KSpace:
    """The k-space of coil images ``(B, C, H, W)`` acquired under piecewise-constant rigid motion.

    ``poses``: ``(B, P, 3)`` = (rotation rad, dy px, dx px) of the object in each segment (translations in
    pixels here); ``segments``: ``(B, W)`` pose index of each centred phase-encode column. The rotation is
    resampled in the image domain (bilinear), the translation applied exactly as a k-space phase ramp, and each
    column taken from its pose's spectrum. One FFT per pose that rotates; a translation-only pose reuses the
    unmoved spectrum. Returns k-space in FFT order."""
    b, c, h, w = images.shape
    dev = images.device
    still = dft2(images.to(torch.complex64))
    out = torch.zeros_like(still)
    seg = torch.fft.ifftshift(segments.cpu(), dim=-1)                     # centred columns -> FFT order
    poses = poses.cpu()                                                    # what to skip is decided on the host
    for p in range(poses.shape[1]):
        on = seg == p
        if not bool(on.any()):
            continue
        rot = poses[:, p, 0]
        spec = dft2(rotate(images, rot)) if bool((rot != 0).any()) else still
        shift = poses[:, p, 1:]
        if bool((shift != 0).any()):
            spec = spec * translation_ramp((h, w), shift, dev)
        out = out + spec * on.to(dev)[:, None, None, :]
    return KSpace(out, centred=False)
