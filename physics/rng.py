"""Per-item random streams.

Noise for item ``i`` is drawn from a generator seeded with that item's own seed, so an item's noise does
not depend on which other items share its batch, on the batch size or on the processing order.
"""

from __future__ import annotations

import hashlib

import torch

_MASK63 = (1 << 63) - 1


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the sha256 of the parts (e.g. global seed, item id, degradation, level key)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with a non-negative 63-bit ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) & _MASK63)
    return g


def normal(seeds: torch.Tensor, shape: tuple[int, ...], device: torch.device | str,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal fields of ``shape`` for each item, stacked to ``(B, *shape)``.

    ``seeds`` is an int64 tensor ``(B,)``. One small launch per item is the price of batch-size
    independence; it is negligible next to the image work.
    """
    out = torch.empty((len(seeds), *shape), device=device, dtype=dtype)
    for i, s in enumerate(seeds.tolist()):
        torch.randn(shape, generator=generator(s, device), device=device, dtype=dtype, out=out[i])
    return out


def uniform_field(seeds: torch.Tensor, shape: tuple[int, ...], device: torch.device | str,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) fields of ``shape`` per item, ``(B, *shape)``, each from its own seed (as ``normal``)."""
    out = torch.empty((len(seeds), *shape), device=device, dtype=dtype)
    for i, s in enumerate(seeds.tolist()):
        torch.rand(shape, generator=generator(s, device), device=device, dtype=dtype, out=out[i])
    return out


def poisson(seeds: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """Poisson draws of ``rate`` (``(B, ...)``, events per element), one generator per item, same shape."""
    out = torch.empty_like(rate)
    for i, s in enumerate(seeds.tolist()):
        out[i] = torch.poisson(rate[i], generator=generator(s, rate.device))
    return out


def substreams(seeds: torch.Tensor, tag: str) -> torch.Tensor:
    """Seeds of an independent stream ``tag`` for each item (sha256 of tag and seed), int64 ``(B,)``."""
    return torch.tensor([derive_seed(tag, int(s)) for s in seeds.tolist()], dtype=torch.int64)


def uniform(seeds: torch.Tensor, n: int = 1) -> torch.Tensor:
    """``n`` uniform [0, 1) draws per item on the CPU (float64), shape ``(B, n)``: for parameter sampling."""
    rows = [torch.rand(n, generator=generator(s), dtype=torch.float64) for s in seeds.tolist()]
    return torch.stack(rows) if rows else torch.empty((0, n), dtype=torch.float64)
