"""Batch-invariant sampling for the ``hf`` backend.

``generate(do_sample=True)`` draws from one global generator, so a sampled answer depends on which other
items share its batch. Here each row adds its own Gumbel noise to the logits and decodes greedily:
argmax(l / tau + G) with G ~ Gumbel(0, 1) i.i.d. is an exact draw from softmax(l / tau) (the Gumbel-max
trick). The noise is a counter-based hash of (row seed, step, token id), so a row's sample depends only on
its own seed and logits, on any device, at any batch size."""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """An avalanche hash of uint32 values held in int64 (multipliers < 2^31 keep every product < 2^63)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x68E31DA5) & _M32
    return x ^ (x >> 16)


def hash_uniform(row_seeds: torch.Tensor, step: int, n: int) -> torch.Tensor:
    """``(R, n)`` uniforms in (0, 1), float64, a pure function of (row seed, step, column)."""
    seeds = row_seeds.to(torch.int64)
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    base = _mix32(lo ^ _mix32(hi ^ _mix32(torch.full_like(lo, step & _M32))))
    col = torch.arange(n, device=seeds.device, dtype=torch.int64)
    x = _mix32(_mix32(col[None, :] ^ base[:, None]) ^ hi[:, None])
    return (x.to(torch.float64) + 0.5) / 2.0 ** 32


def gumbel(row_seeds: torch.Tensor, step: int, n: int) -> torch.Tensor:
    return -torch.log(-torch.log(hash_uniform(row_seeds, step, n)))


class GumbelSampler:
    """A transformers logits processor: ``scores / temperature + Gumbel noise`` per row; used with greedy
    decoding it samples at ``temperature`` with one seed per row (query seed and trial)."""

    def __init__(self, row_seeds: torch.Tensor, temperature: float, prompt_len: int) -> None:
        if temperature <= 0:
            raise ValueError("temperature must be > 0 for sampling")
        self.row_seeds = row_seeds
        self.temperature = float(temperature)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = input_ids.shape[1] - self.prompt_len
        g = gumbel(self.row_seeds.to(scores.device), step, scores.shape[-1])
        # float32 out: bf16 would round the noise and create ties
        return scores.float() / self.temperature + g.to(torch.float32)


def row_seed(query_seed: int, trial: int) -> int:
    """A 62-bit seed per (query, trial)."""
    from medq_synth.seeding import derive_seed

    return derive_seed(query_seed, "trial", trial) & ((1 << 62) - 1)
