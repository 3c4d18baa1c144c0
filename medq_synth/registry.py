"""The degradation registry: name, category, modalities, severity table, ``sample_params`` and ``apply``.

Like kornia's augmentations, a degradation first samples explicit per-item parameters (from the severity
and each item's own seed), then applies them to a batch. The parameters are plain tensors recorded in the
manifest, so every output says exactly what was done to it and can be regenerated from that record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch

from .items import MODALITIES
from .severity import SeverityTable

# MedQ-Deg's five categories, as written in the paper.
CATEGORIES = {
    "artifacts": "Artifacts",
    "motion": "Motion interference",
    "intensity": "Intensity jitter",
    "noise": "Noise",
    "resolution_blur": "Resolution & blur",
}

Sampler = Callable[[dict[str, float], torch.Tensor, torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
Apply = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Degradation:
    """A registered degradation.

    sampler(magnitudes, uniforms, seeds, fill) -> per-item parameter tensors, where ``magnitudes`` are the
    table values at the severity and image size, ``uniforms`` is ``(B, n_uniform)`` float64 drawn from each
    item's own stream, ``seeds`` int64 ``(B,)`` and ``fill`` the background in window fractions ``(B,)``.
    apply(v, params) -> degraded batch (display-normalised, see ``physics.generic``).
    """

    table: SeverityTable
    sampler: Sampler
    fn: Apply
    n_uniform: int = 0
    modalities: frozenset[str] = field(default_factory=lambda: frozenset(MODALITIES))
    # Physical models need each item's window (to return to physical units) and pixel size: the engine adds
    # ``window_lo``, ``window_hi`` and ``pixel_mm`` (float64, (B,)) to their parameters before ``apply``.
    physical: bool = False

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def category(self) -> str:
        return self.table.category

    def applies_to(self, modality: str) -> bool:
        return modality in self.modalities

    def magnitudes(self, severity: float, size_px: int) -> dict[str, float]:
        return self.table.values(severity, size_px)

    def sample_params(self, severity: float, seeds: torch.Tensor, shape: tuple[int, int],
                      fill: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-item parameters for a batch of ``len(seeds)`` images of ``shape`` (H, W) pixels."""
        from medq_synth.physics import rng

        mags = self.magnitudes(severity, max(shape))
        uniforms = rng.uniform(rng.substreams(seeds, "params"), self.n_uniform)
        if fill is None:
            fill = torch.zeros(len(seeds), dtype=torch.float64)
        return self.sampler(mags, uniforms, seeds, fill)

    def apply(self, v: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fn(v, params)


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, Degradation] = {}
        self._aliases: dict[str, str] = {}

    def register(self, deg: Degradation) -> Degradation:
        if deg.name in self._items:
            raise ValueError(f"degradation {deg.name!r} is already registered")
        self._items[deg.name] = deg
        for alias in (deg.table.medq_deg_id, *deg.table.aliases):
            if alias and alias != deg.name:
                self._aliases[alias] = deg.name
        return deg

    def resolve(self, name: str) -> Degradation:
        """The degradation called ``name`` or by one of its aliases (MedQ-Deg ids included)."""
        key = self._aliases.get(name, name)
        if key not in self._items:
            raise KeyError(f"unknown degradation {name!r} (see `medq-synth list`)")
        return self._items[key]

    def names(self) -> list[str]:
        return list(self._items)

    def __iter__(self) -> Iterable[Degradation]:
        return iter(self._items.values())


def level_key(level: int | None, severity: float) -> str:
    """Stable key of a level (``L1``) or a continuous severity (``s0.3500``)."""
    return f"L{level}" if level is not None else f"s{severity:.4f}"

