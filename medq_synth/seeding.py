"""Seeds derived from what an output *is*, never from when or where it was computed."""

from __future__ import annotations

from medq_synth.physics.rng import derive_seed

__all__ = ["derive_seed", "output_seed", "pattern_seed"]


def output_seed(seed: int, item_id: str, degradation: str, level_key: str) -> int:
    """The seed of one output: depends only on (global seed, item id, degradation, level or severity)."""
    return derive_seed("medq-synth/v1", seed, item_id, degradation, level_key)


def pattern_seed(seed: int, item_id: str, degradation: str) -> int:
    """The seed of an item's random *pattern* under one degradation (which k-space lines, which motion path,
    which field shape), shared by all its levels and severities: a severity sweep scales one drawn pattern,
    so a higher severity is a stronger version of the same corruption, never a different one."""
    return derive_seed("medq-synth/v1/pattern", seed, item_id, degradation)
