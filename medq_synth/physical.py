"""Between the engine's display-normalised batches and the physics models: physical units, and the CPU's
one-item passes for FFT-heavy models."""

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


# Items per pass on the CPU for FFT-heavy models: one image's spectrum and its temporaries stay in cache, where
# a 64-image batch at 512^2 streams 128 MB arrays through memory at every step (MRI models measured 4x slower
# on 2 cores). A GPU takes the batch at once. The models are per item, so the split changes no bit.
CHUNK = {"cpu": 1}


def chunked(apply):
    def run(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        n = CHUNK.get(v.device.type)
        if n is None or len(v) <= n:
            return apply(v, p)
        return torch.cat([apply(v[k:k + n], {key: t[k:k + n] for key, t in p.items()}) for k in range(0, len(v), n)])
    run.__name__ = f"chunked({apply.__name__})"
    return run
