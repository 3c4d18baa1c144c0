"""Between the engine's display-normalised batches and the physical units the physics models work in."""

from __future__ import annotations

import torch


def to_physical(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Display-normalised ``(B, C, H, W)`` -> physical units ``(B, H, W)`` through each item's window (a colour
    rendering of a single-channel modality is averaged)."""
    lo = p["window_lo"].to(v)[:, None, None]
    span = (p["window_hi"] - p["window_lo"]).to(v)[:, None, None]
    return lo + v.mean(dim=1) * span


def to_display(x: torch.Tensor, p: dict[str, torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Physical ``(B, H, W)`` -> display-normalised, shaped like the input batch ``like``."""
    lo = p["window_lo"].to(x)[:, None, None]
    span = (p["window_hi"] - p["window_lo"]).to(x)[:, None, None]
    return ((x - lo) / span)[:, None].expand_as(like).contiguous()
