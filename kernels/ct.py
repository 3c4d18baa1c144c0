"""The CT operators, dispatched: Triton kernels on CUDA (``ct_triton``), the vectorised torch reference
elsewhere (``ct_torch``). ``MEDQ_SYNTH_TRITON=0`` forces the torch path everywhere."""

from __future__ import annotations

import os

import torch

from . import ct_torch
from .geometry import Geometry


def use_triton(device: torch.device) -> bool:
    if os.environ.get("MEDQ_SYNTH_TRITON", "1") == "0":
        return False
    from . import ct_triton

    return ct_triton.available(device)


def forward(x: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    """Line integrals ``(B, V, D)`` of ``x`` (``B x H x W``, mm^-1): Joseph's projector."""
    if use_triton(x.device):
        from . import ct_triton

        return ct_triton.forward(x, g, pixel_mm)
    return ct_torch.forward(x, g, pixel_mm)


def adjoint(y: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """The exact transpose of ``forward`` (torch on every device, see ``ct_triton``)."""
    return ct_torch.adjoint(y, g, pixel_mm, shape)


def backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """FBP's weighted pixel-driven backprojection of a filtered sinogram."""
    if use_triton(q.device) and not (g.kind == "fan" and g.detector != "flat"):
        from . import ct_triton

        return ct_triton.backproject(q, g, pixel_mm, shape)
    return ct_torch.backproject(q, g, pixel_mm, shape)


def fbp(p: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int], window: str = "ramp") -> torch.Tensor:
    """Filtered backprojection of line integrals ``(B, V, D)`` -> mu (mm^-1), ``(B, H, W)``. A full fan
    rotation sees every line twice, hence the factor 1/2."""
    f = backproject(ct_torch.fbp_filter(p, g, window), g, pixel_mm, shape)
    return f * 0.5 if g.kind == "fan" else f
