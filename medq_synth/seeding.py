"""Seeds derived from what an output *is*, never from when or where it was computed."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from the sha256 of the parts (e.g. global seed, item id, degradation, level key)."""
    text = "\x1f".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def output_seed(seed: int, item_id: str, degradation: str, level_key: str) -> int:
    """The seed of one output: depends only on (global seed, item id, degradation, level or severity)."""
    return derive_seed("medq-synth/v1", seed, item_id, degradation, level_key)
