"""Fixed-shape blocks for operators whose numerics depend on the batch size.

Convolution back ends (oneDNN on the CPU, cuDNN on the GPU) pick their algorithm from the tensor shape, so a
batch of 6 and a batch of 1 can round differently in the last bit. Running such operators on blocks of a
fixed number of items (the last one zero-padded) makes every call the same shape, so an item's result no
longer depends on how many items share its batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# On the CPU a convolution is parallelised over the pixels of one image, so one-item blocks cost nothing
# extra; on a GPU one image does not fill the device, so items are grouped and the last block padded.
BLOCK = {"cpu": 1, "cuda": 16}


def block_size(device: torch.device) -> int:
    return BLOCK.get(device.type, 8)


def blocked(fn: Callable[..., torch.Tensor], x: torch.Tensor, *per_item: torch.Tensor,
            block: int | None = None) -> torch.Tensor:
    """``fn(x_block, *per_item_blocks)`` over fixed-size blocks along dim 0, concatenated.

    ``block`` defaults to ``block_size(x.device)``; it is a constant per device type, never the batch size.

    ``per_item`` tensors have the batch as their first dimension and are padded by repeating their last row
    (a valid parameter), ``x`` with zeros.
    """
    n = x.shape[0]
    block = block or block_size(x.device)
    outs = []
    for k in range(0, n, block):
        xb = x[k:k + block]
        extra = [p[k:k + block] for p in per_item]
        pad = block - xb.shape[0]
        if pad:
            xb = torch.cat([xb, xb.new_zeros((pad, *xb.shape[1:]))])
            extra = [torch.cat([p, p[-1:].expand(pad, *p.shape[1:])]) for p in extra]
        outs.append(fn(xb, *extra)[: block - pad])
    return torch.cat(outs) if outs else x.clone()


def spatial_sum(t: torch.Tensor, channels: bool = False) -> torch.Tensor:
    """Sum over the last two dims (and dim 1 too when ``channels``) in float64, the same bits whatever the
    thread count: a one-output reduction is split among threads (the order of its partial sums then depends
    on their number), so rows are summed first - many outputs, each summed by one thread - then the short
    vector of row sums, which is below ATen's parallel grain and runs serially."""
    if channels:
        t = t.reshape(t.shape[0], -1, t.shape[-1])
    rows = t.sum(dim=-1, dtype=torch.float64)
    return rows.sum(dim=-1)


def spatial_mean(t: torch.Tensor, channels: bool = False) -> torch.Tensor:
    """``spatial_sum`` divided by the number of summed elements (float64)."""
    n = t.shape[-1] * t.shape[-2] * (t.shape[1] if channels else 1)
    return spatial_sum(t, channels) / n
