"""CT acquisition geometry (2-D parallel and fan beam) and its rays, in astra-toolbox's conventions.

Image frame: pixel (row i, column j) of an H x W image sits at x = j - (W - 1)/2, y = (H - 1)/2 - i in pixel
units (row 0 at the top, y pointing up), scaled by the pixel size in mm.
- Parallel beam, view angle theta: detector axis e_u = (cos theta, sin theta), rays along
  (-sin theta, cos theta); a point X projects to u = X . e_u (astra ``parallel``).
- Fan beam, source angle beta: source S = SID (sin beta, -cos beta), detector axis e_u = (cos beta, sin beta),
  flat detector at distance SDD from the source, a point X projects to u = SDD (X . e_u) / (SID - X . s)
  with s = S / SID (astra ``fanflat``); equiangular detectors index the fan angle gamma = atan(u / SDD).
Detector bin k sits at u_k = (k - (n_det - 1)/2) * det_spacing. These conventions are checked against
astra in the tests (sinograms within 1 %)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

# Siemens SOMATOM Definition: source-isocentre 595 mm, source-detector 1085.6 mm (a common simulation default).
SID_MM = 595.0
SDD_MM = 1085.6


@dataclass(frozen=True)
class Geometry:
    """One acquisition. ``det_spacing``: mm at the detector for parallel and flat fan detectors, radians for
    equiangular ones. ``arc`` and ``start`` in radians; views are evenly spaced on [start, start + arc)."""

    kind: str                      # "parallel" | "fan"
    n_views: int
    n_det: int
    det_spacing: float
    arc: float
    start: float = 0.0
    sid: float = SID_MM
    sdd: float = SDD_MM
    detector: str = "flat"         # fan only: "flat" | "equiangular"

    def __post_init__(self) -> None:
        if self.kind not in ("parallel", "fan"):
            raise ValueError(f"geometry kind is 'parallel' or 'fan', not {self.kind!r}")
        if self.detector not in ("flat", "equiangular"):
            raise ValueError(f"fan detector is 'flat' or 'equiangular', not {self.detector!r}")
        if self.n_views < 1 or self.n_det < 2 or self.det_spacing <= 0 or self.arc <= 0:
            raise ValueError("geometry needs n_views >= 1, n_det >= 2, det_spacing > 0 and arc > 0")
        if self.kind == "fan" and not 0 < self.sid < self.sdd:
            raise ValueError("fan beam needs 0 < SID < SDD")

    def angles(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """View angles (rad), float64."""
        return self.start + torch.arange(self.n_views, dtype=torch.float64, device=device) * (self.arc / self.n_views)

    @property
    def view_step(self) -> float:
        return self.arc / self.n_views

    def det_positions(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """u_k (mm, or rad for equiangular), float64."""
        return (torch.arange(self.n_det, dtype=torch.float64, device=device) - (self.n_det - 1) / 2) * self.det_spacing

    def sparse(self, n_views: int) -> Geometry:
        """The same arc with ``n_views`` evenly spaced views."""
        return replace(self, n_views=int(n_views))

    def limited(self, arc: float) -> Geometry:
        """A reduced arc starting at the same angle, at the full scan's view spacing."""
        n = max(1, round(self.n_views * arc / self.arc))
        return replace(self, arc=n * self.view_step, n_views=n)


def default_geometry(kind: str, shape: tuple[int, int], pixel_mm: float, n_views: int | None = None,
                     detector: str = "flat") -> Geometry:
    """A detector that covers the image's circumscribed circle with one bin per pixel at the isocentre:
    parallel 180 deg (default 360 views), fan 360 deg (default 720 views) at the Definition's distances."""
    n_det = 2 * math.ceil(math.hypot(*shape) / 2) + 1
    if kind == "parallel":
        return Geometry("parallel", n_views or 360, n_det, pixel_mm, math.pi)
    radius = math.hypot(*shape) / 2 * pixel_mm
    if radius >= SID_MM * 0.95:
        raise ValueError(f"the field of view (radius {radius:.0f} mm) does not fit inside the fan beam "
                         f"(SID {SID_MM} mm): check the pixel spacing")
    if detector == "flat":
        spacing = pixel_mm * SDD_MM / SID_MM
    else:
        spacing = pixel_mm / SID_MM            # rad: one pixel subtends this angle at the isocentre
    return Geometry("fan", n_views or 720, n_det, spacing, 2 * math.pi, detector=detector)


def rays(g: Geometry, pixel_mm: float, device: torch.device | str = "cpu",
         views: slice = slice(None)) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions of the rays of ``views``, ``(V, D, 2)`` each, float64, in pixel units
    of the image frame (x right, y up, origin at the image centre)."""
    th = g.angles(device)[views]
    u = g.det_positions(device)
    cos, sin = torch.cos(th)[:, None], torch.sin(th)[:, None]
    if g.kind == "parallel":
        uu = (u[None, :] / pixel_mm).expand(th.shape[0], -1)
        origin = torch.stack([uu * cos, uu * sin], dim=-1)
        direction = torch.stack([(-sin).expand_as(uu), cos.expand_as(uu)], dim=-1)
        return origin, direction
    src = torch.stack([g.sid * sin, -g.sid * cos], dim=-1).expand(-1, g.n_det, -1)    # (V, D, 2) mm
    if g.detector == "flat":
        # detector point: S + SDD * (-s) + u * e_u
        det = torch.stack([(g.sid - g.sdd) * sin + u[None] * cos, -(g.sid - g.sdd) * cos + u[None] * sin], dim=-1)
        d = det - src
    else:
        gamma = u[None, :]
        # the central ray -s rotated by gamma towards +e_u
        d = torch.stack([-sin * torch.cos(gamma) + cos * torch.sin(gamma),
                         cos * torch.cos(gamma) + sin * torch.sin(gamma)], dim=-1)
    d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True)
    return src / pixel_mm, d
