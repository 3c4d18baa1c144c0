"""Histopathology slide artefacts as procedural overlays on RGB display images, batched (after FrOoDo's
blood-cell, dark-spot and bubble augmentations, which paste image assets; these are drawn from parameters).

Inputs ``v``: ``(B, 3, H, W)`` display fractions; positions and sizes in pixels (the bindings convert from
micrometres through each slide's microns per pixel); every overlay has a support (where it has any effect):
outside it the output is the input, bit for bit (``torch.where``, no arithmetic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import generic

RBC_COLOUR = (0.80, 0.22, 0.28)       # eosinophilic red of erythrocytes in H&E
SPOT_COLOUR = (0.18, 0.14, 0.12)      # dark brown-grey (dust, pigment, dried stain)
# Evans & Fung (1972, Microvasc. Res. 4:335) biconcave erythrocyte of diameter 7.82 um: thickness
# T(rho) = sqrt(1 - rho^2) (a0 + a1 rho^2 + a2 rho^4) um, rho = radial distance / radius: 0.81 um at the
# centre, 2.57 um at the thickest ring (rho 0.7); only the shape T / max T is used here.
EVANS_FUNG_UM = (0.81, 7.83, -4.39)


def _thickness_um(rho: torch.Tensor) -> torch.Tensor:
    a0, a1, a2 = EVANS_FUNG_UM
    r2 = rho.clamp(0.0, 1.0) ** 2
    return torch.sqrt(1.0 - r2) * (a0 + a1 * r2 + a2 * r2 ** 2)


RBC_MAX_THICKNESS_UM = float(_thickness_um(torch.linspace(0.0, 1.0, 100001, dtype=torch.float64)).max())


def rbc_thickness(rho: torch.Tensor) -> torch.Tensor:
    """Relative thickness (max 1) of a biconcave red cell at ``rho`` = r / radius (0 at and beyond the rim)."""
    return _thickness_um(rho) / RBC_MAX_THICKNESS_UM


def _grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates (x along columns, y along rows), ``(1, H, W)`` each."""
    y = torch.arange(h, device=device, dtype=torch.float32)[:, None] + 0.5
    x = torch.arange(w, device=device, dtype=torch.float32)[None, :] + 0.5
    return x[None].expand(1, h, w), y[None].expand(1, h, w)


def _composite(v: torch.Tensor, alpha: torch.Tensor, colour: tuple[float, float, float]) -> torch.Tensor:
    """v (1 - alpha) + colour alpha where alpha > 0, v itself elsewhere; ``alpha`` ``(B, H, W)``."""
    c = torch.tensor(colour, device=v.device, dtype=v.dtype)[None, :, None, None]
    a = alpha[:, None].to(v.dtype)
    mixed = v * (1 - a) + c * a
    return torch.where(a > 0, mixed, v)


def blood_cells(v: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, active: torch.Tensor,
                opacity: float = 0.85) -> torch.Tensor:
    """Red blood cells: biconcave discs of ``radii`` ``(B, N)`` px at ``centres`` ``(B, N, 2)`` (x, y px), seen
    in transmitted light (Beer-Lambert): absorbance proportional to the Evans-Fung thickness, scaled so that the
    thickest ring has ``opacity``, which leaves the thin centre pale; half a pixel of soft edge; only cells with
    ``active`` ``(B, N)`` are drawn; overlapping cells absorb together (transmittances multiply)."""
    b, _, h, w = v.shape
    x, y = _grid(h, w, v.device)
    absorbance = -torch.log(torch.tensor(1.0 - opacity))
    transmit = torch.ones(b, h, w, device=v.device)
    for n in range(centres.shape[1]):                 # a few dozen cells at most, all items at once
        c = centres[:, n].to(v.device, torch.float32)
        r = radii[:, n].to(v.device, torch.float32)[:, None, None]
        d = torch.sqrt((x - c[:, 0, None, None]) ** 2 + (y - c[:, 1, None, None]) ** 2)
        edge = (r + 0.5 - d).clamp(0.0, 1.0)
        cell = edge * (1.0 - torch.exp(-absorbance * rbc_thickness(d / r)))
        on = active[:, n].to(v.device)[:, None, None]
        transmit = transmit * (1.0 - torch.where(on, cell.clamp(0.0, 1.0), torch.zeros_like(edge)))
    return _composite(v, 1.0 - transmit, RBC_COLOUR)


def dark_spots(v: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, elongation: torch.Tensor,
               angle_rad: torch.Tensor, opacity: float = 0.7) -> torch.Tensor:
    """Dark translucent blotches: elliptical spots (semi-axes ``radii`` x (1, ``elongation``)) whose opacity
    falls off as a Gaussian from ``opacity`` at the centre and is cut to zero beyond 2 semi-axes (the support).
    All per spot ``(B, N)``; ``centres`` ``(B, N, 2)`` px."""
    b, _, h, w = v.shape
    x, y = _grid(h, w, v.device)
    alpha = torch.zeros(b, h, w, device=v.device)
    for n in range(centres.shape[1]):
        c = centres[:, n].to(v.device, torch.float32)
        r = radii[:, n].to(v.device, torch.float32)[:, None, None]
        cos = torch.cos(angle_rad[:, n]).to(v.device, torch.float32)[:, None, None]
        sin = torch.sin(angle_rad[:, n]).to(v.device, torch.float32)[:, None, None]
        dx, dy = x - c[:, 0, None, None], y - c[:, 1, None, None]
        u = (dx * cos + dy * sin) / r
        t = (-dx * sin + dy * cos) / (r * elongation[:, n].to(v.device, torch.float32)[:, None, None])
        q = u ** 2 + t ** 2
        spot = torch.where(q < 4.0, opacity * torch.exp(-q), torch.zeros_like(q))
        alpha = 1 - (1 - alpha) * (1 - spot)          # overlapping spots darken further
    return _composite(v, alpha, SPOT_COLOUR)


def bubble(v: torch.Tensor, centre: torch.Tensor, radius: torch.Tensor, aspect: torch.Tensor,
           blur_sigma_px: torch.Tensor, magnification: float = 1.08, rim_px: float = 2.5,
           rim_darkness: float = 0.55, brightening: float = 0.12) -> torch.Tensor:
    """An air bubble under the coverslip: inside an ellipse (semi-axes ``radius`` x (1, ``aspect``) px at
    ``centre`` ``(B, 2)``), the tissue is seen blurred (Gaussian ``blur_sigma_px``, FrOoDo's sigma 5 by default),
    slightly magnified about the centre (the curved air-glass interface acts as a weak lens) and brightened;
    the interface is a dark rim of ``rim_px``. Outside the ellipse and its rim nothing changes (FrOoDo blurs
    inside or, at random, outside its pasted bubble; here the tissue around the bubble stays as it was)."""
    b, c, h, w = v.shape
    x, y = _grid(h, w, v.device)
    cx = centre[:, 0].to(v.device, torch.float32)[:, None, None]
    cy = centre[:, 1].to(v.device, torch.float32)[:, None, None]
    r = radius.to(v.device, torch.float32)[:, None, None]
    ry = r * aspect.to(v.device, torch.float32)[:, None, None]
    q = torch.sqrt(((x - cx) / r) ** 2 + ((y - cy) / ry) ** 2)          # 1 on the interface
    dist_px = (q - 1.0) * torch.minimum(r, ry)                             # ~ signed distance to the interface
    blurred = generic.gaussian_blur(v, blur_sigma_px.to(v.device))
    # magnified view: sample the blurred image closer to the centre
    gx = (cx + (x - cx) / magnification) / w * 2 - 1
    gy = (cy + (y - cy) / magnification) / h * 2 - 1
    lens = F.grid_sample(blurred, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border",
                         align_corners=False)
    inside = (dist_px < 0)[:, None]
    inner = (lens + brightening * (1 - lens)).clamp(0.0, 1.0)
    rim = (1.0 - (dist_px.abs() / rim_px)).clamp(0.0, 1.0)[:, None]      # peaks on the interface
    out = torch.where(inside, inner, v)
    shaded = out * (1 - rim_darkness * rim)
    return torch.where(rim > 0, shaded, out)


def support_fraction(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Fraction of pixels an overlay changed, ``(B,)``."""
    return (before != after).any(dim=1).flatten(1).float().mean(dim=1)

