"""Pure, batched, device-agnostic degradation models (imported as ``medq_synth.physics``).

Every function takes ``B x C x H x W`` tensors and per-item parameter tensors of shape ``(B,)``; units are in
each docstring. Nothing here does I/O, keeps global state or normalises an image by its own statistics,
except where the published model is defined that way (and says so).
"""

from . import generic, rng

__all__ = ["generic", "rng"]
