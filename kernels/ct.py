"""The CT operators, dispatched by device: Triton kernels on CUDA (``ct_triton``), numba-compiled loops on the
CPU (``ct_numba``), the vectorised torch reference (``ct_torch``) where neither is available.

``MEDQ_SYNTH_CT_BACKEND`` = ``auto`` (default) | ``torch`` | ``numba`` | ``triton`` forces one; a forced
backend that cannot run on the tensor's device falls back to torch, the oracle the other two are tested
against (numba: identical bits; Triton: float32 rounding)."""

from __future__ import annotations

import os
import warnings
from functools import cache

import torch

from . import ct_torch
from .geometry import Geometry

BACKENDS = ("auto", "torch", "numba", "triton")


@cache
def _numba_ok() -> bool:
    try:
        from . import ct_numba  # noqa: F401
    except ImportError:
        return False
    except Exception as e:      # e.g. no writable cache directory for the compiled kernels: say why, run torch
        warnings.warn(f"numba CT kernels unavailable ({type(e).__name__}: {e}); using the slower torch path",
                      RuntimeWarning, stacklevel=2)
        return False
    return True


def backend(device: torch.device) -> str:
    """The implementation that runs on ``device``: "triton", "numba" or "torch"."""
    choice = os.environ.get("MEDQ_SYNTH_CT_BACKEND", "auto").lower()
    if choice not in BACKENDS:
        raise ValueError(f"MEDQ_SYNTH_CT_BACKEND is one of {', '.join(BACKENDS)}, not {choice!r}")
    if choice == "torch":
        return "torch"
    if device.type == "cuda" and choice in ("auto", "triton"):
        from . import ct_triton

        if ct_triton.available(device):
            return "triton"
    if device.type == "cpu" and choice in ("auto", "numba") and _numba_ok():
        return "numba"
    return "torch"


def _module(device: torch.device, has_triton: bool = True):
    """The module implementing an operator on ``device``; ``has_triton`` False for the operators without a
    Triton kernel (the transpose, the equiangular-fan backprojection): torch runs those on CUDA."""
    impl = backend(device)
    if impl == "triton" and has_triton:
        from . import ct_triton

        return ct_triton
    if impl == "numba":
        from . import ct_numba

        return ct_numba
    return ct_torch


def forward(x: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    """Line integrals ``(B, V, D)`` of ``x`` (``B x H x W``, mm^-1): Joseph's projector."""
    return _module(x.device).forward(x, g, pixel_mm)


def adjoint(y: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """The exact transpose of ``forward``."""
    return _module(y.device, has_triton=False).adjoint(y, g, pixel_mm, shape)


def backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """FBP's weighted pixel-driven backprojection of a filtered sinogram."""
    triton_ok = not (g.kind == "fan" and g.detector == "equiangular")
    return _module(q.device, has_triton=triton_ok).backproject(q, g, pixel_mm, shape)


def fbp(p: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int], window: str = "ramp") -> torch.Tensor:
    """Filtered backprojection of line integrals ``(B, V, D)`` -> mu (mm^-1), ``(B, H, W)``. A full fan
    rotation sees every line twice, hence the factor 1/2."""
    f = backproject(ct_torch.fbp_filter(p, g, window), g, pixel_mm, shape)
    return f * 0.5 if g.kind == "fan" else f
