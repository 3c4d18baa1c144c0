"""Display conversion and PNG encoding."""

from __future__ import annotations

import io

import numpy as np
import torch


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """Display-normalised ``B x C x H x W`` -> uint8 (0 = window lo, 255 = window hi), clipped."""
    return torch.round(v.clamp(0.0, 1.0) * 255.0).to(torch.uint8)


def hwc(display: np.ndarray) -> np.ndarray:
    """uint8 ``(C, H, W)`` -> ``(H, W)`` for grey or ``(H, W, 3)`` for colour."""
    return display[0] if display.shape[0] == 1 else np.moveaxis(display, 0, -1)


def png_bytes(display: np.ndarray) -> bytes:
    """PNG of a uint8 ``(C, H, W)`` array. zlib level 1: several times faster than the default at ~10 %
    larger files; PIL's encoder is deterministic for equal pixels."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(hwc(display))).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
