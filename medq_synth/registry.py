"""The degradation registry: name, category, modalities, severity table, ``sample_params`` and ``apply``.

Like kornia's augmentations, a degradation first samples explicit per-item parameters (from the severity
and each item's own seed), then applies them to a batch. The parameters are plain tensors recorded in the
manifest, so every output says exactly what was done to it and can be regenerated from that record.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from .items import MODALITIES
from .severity import SeverityTable

# MedQ-Deg's five categories, as written in the paper.
# The MedQ-Deg project page names three types differently from the paper's Table 5 (and the released TSVs);
# both spellings are accepted. ``exposure`` is also the name of our generic model: as a degradation name it
# means that model everywhere; in a TSV's degradation_type it is read as the MedQ-Deg id.
PROJECT_PAGE_IDS = {"object_rotation": "rotation_artifact", "object_movement": "random_motion_artifact",
                    "exposure": "exposure_artifact"}


def canonical_id(medq_deg_id: str) -> str:
    """The paper's id for a MedQ-Deg type given in either spelling."""
    return PROJECT_PAGE_IDS.get(medq_deg_id, medq_deg_id)


CATEGORIES = {
    "artifacts": "Artifacts",
    "motion": "Motion interference",
    "intensity": "Intensity jitter",
    "noise": "Noise",
    "resolution_blur": "Resolution & blur",
}

@dataclass(frozen=True)
class Draw:
    """What a sampler sees for one batch of ``B`` outputs of one degradation at one severity.

    ``uniforms`` come from each output's own stream (different at every level); ``pattern`` from the item's
    pattern stream, shared by all levels and severities of that item and degradation, for what should stay
    put while the severity grows (which k-space lines go missing, the motion path, the field's shape), so a
    sweep scales one corruption instead of drawing a new one at every step. ``inputs`` holds the batch itself
    (``v``, display-normalised, and the engine's physical context) for degradations whose draw depends on the
    image (``Degradation.image_dependent``), else it is empty.
    """

    magnitudes: dict[str, float]
    uniforms: torch.Tensor           # (B, n_uniform) float64
    pattern: torch.Tensor            # (B, n_pattern) float64
    seeds: torch.Tensor              # (B,) int64 output seeds
    pattern_seeds: torch.Tensor      # (B,) int64
    fill: torch.Tensor               # (B,) background in window fractions
    shape: tuple[int, int]
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    identity: dict[str, float] = field(default_factory=dict)     # the table at severity 0 (the clean settings)

    @property
    def batch(self) -> int:
        return len(self.seeds)

    def const(self, name: str, rounded: bool = False) -> torch.Tensor:
        """The table value ``name`` for every item, float64 ``(B,)`` (rounded to an integer if asked)."""
        value = self.magnitudes[name]
        return torch.full((self.batch,), float(round(value)) if rounded else float(value), dtype=torch.float64)


Sampler = Callable[[Draw], dict[str, torch.Tensor]]
Apply = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def table_values(*names: str, rounded: tuple[str, ...] = ()) -> Sampler:
    """A sampler that records the table's values at the severity (the same for every item)."""
    def sample(d: Draw) -> dict[str, torch.Tensor]:
        return {n: d.const(n, rounded=n in rounded) for n in names}
    sample.__name__ = f"table_values({', '.join(names)})"
    return sample


@dataclass(frozen=True)
class Degradation:
    """A registered degradation.

    sampler(draw) -> per-item parameter tensors (``(B,)`` scalars, or ``(B, ...)`` arrays such as a sampling
    mask, which the manifest records by digest and the HDF5 shard in full); keys starting with ``_`` are
    inputs for ``apply`` that are not recorded. apply(v, params) -> degraded batch (display-normalised, see
    ``physics.generic``).
    """

    table: SeverityTable
    sampler: Sampler
    fn: Apply
    n_uniform: int = 0
    n_pattern: int = 0
    modalities: frozenset[str] = field(default_factory=lambda: frozenset(MODALITIES))
    # Physical models need each item's window (to return to physical units) and pixel size: the engine adds
    # ``window_lo``, ``window_hi`` and ``pixel_mm`` (float64, (B,)) to their parameters before ``apply``, and the
    # acquired k-space of raw-data items as ``_kspace``.
    physical: bool = False
    # The draw depends on the image (e.g. MRI motion is scaled to a k-space-energy-weighted measure).
    image_dependent: bool = False
    # A k-space model written for phase encoding along the image columns (left-right, DICOM "ROW"): the engine
    # hands it items encoded up-down ("COL") transposed, and transposes the result back.
    phase_encoded: bool = False

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def category(self) -> str:
        return self.table.category

    @property
    def in_default(self) -> bool:
        return self.table.in_default

    def applies_to(self, modality: str) -> bool:
        return modality in self.modalities

    def magnitudes(self, severity: float, size_px: int) -> dict[str, float]:
        return self.table.values(severity, size_px)

    def sample_params(self, severity: float, seeds: torch.Tensor, shape: tuple[int, int],
                      fill: torch.Tensor | None = None, pattern_seeds: torch.Tensor | None = None,
                      inputs: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Per-item parameters for a batch of ``len(seeds)`` images of ``shape`` (H, W) pixels.

        ``pattern_seeds`` default to ``seeds`` (then nothing is shared across levels); ``inputs`` are needed
        by image-dependent degradations only."""
        from medq_synth.physics import rng

        if self.image_dependent and not inputs:
            raise ValueError(f"{self.name} draws its parameters from the image: pass inputs=")
        pattern_seeds = seeds if pattern_seeds is None else pattern_seeds
        def stream(s: torch.Tensor, tag: str, n: int) -> torch.Tensor:
            return rng.uniform(rng.substreams(s, tag), n) if n else torch.empty((len(s), 0), dtype=torch.float64)

        draw = Draw(magnitudes=self.magnitudes(severity, max(shape)),
                    uniforms=stream(seeds, "params", self.n_uniform),
                    pattern=stream(pattern_seeds, "pattern", self.n_pattern),
                    seeds=seeds, pattern_seeds=pattern_seeds,
                    fill=torch.zeros(len(seeds), dtype=torch.float64) if fill is None else fill,
                    shape=tuple(shape), inputs=dict(inputs or {}),
                    identity=self.magnitudes(0.0, max(shape)))
        return self.sampler(draw)

    def apply(self, v: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fn(v, params)


@dataclass(frozen=True)
class Selection:
    """What one requested name means per modality: an exact degradation name means that model everywhere it
    applies; a MedQ-Deg id (or alias) means, for each modality, the most specific default model carrying the
    id that applies to it (``random_motion_artifact``: ``mri_motion`` on MRI, ``movement`` elsewhere)."""

    name: str
    models: tuple[Degradation, ...]     # candidates, preferred first

    def for_modality(self, modality: str) -> Degradation | None:
        return next((d for d in self.models if d.applies_to(modality)), None)


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, Degradation] = {}
        self._aliases: dict[str, list[str]] = {}

    def register(self, deg: Degradation) -> Degradation:
        if deg.name in self._items:
            raise ValueError(f"degradation {deg.name!r} is already registered")
        for alias in self._ids(deg):
            for other in (self._items[n] for n in self._aliases.get(alias, [])):
                if other.in_default and deg.in_default and other.modalities == deg.modalities:
                    raise ValueError(f"{deg.name} and {other.name} both claim {alias!r} on the same modalities")
        self._items[deg.name] = deg
        for alias in self._ids(deg):
            self._aliases.setdefault(alias, []).append(deg.name)
        return deg

    @staticmethod
    def _ids(deg: Degradation) -> list[str]:
        return [a for a in (deg.table.medq_deg_id, *deg.table.aliases) if a and a != deg.name]

    def select(self, name: str) -> Selection:
        """The models ``name`` stands for (see ``Selection``); KeyError for an unknown name."""
        if name in self._items:
            return Selection(name, (self._items[name],))
        if name not in self._aliases and canonical_id(name) in self._aliases:
            return Selection(name, self.select(canonical_id(name)).models)
        if name not in self._aliases:
            raise KeyError(f"unknown degradation {name!r} (see `medq-synth list`)")
        models = [self._items[n] for n in self._aliases[name]]
        # default models before opt-in variants, then the most specific (fewest modalities) first
        models.sort(key=lambda d: (not d.in_default, len(d.modalities), d.name))
        return Selection(name, tuple(models))

    def resolve(self, name: str, modality: str | None = None) -> Degradation:
        """The degradation ``name`` means on ``modality`` (None: the model that applies most widely)."""
        sel = self.select(name)
        if modality is None:
            return max(sel.models, key=lambda d: (d.in_default, len(d.modalities)))
        deg = sel.for_modality(modality)
        if deg is None:
            raise KeyError(f"{name!r} has no model for {modality!r}")
        return deg

    def default_selections(self) -> list[Selection]:
        """The default set: every MedQ-Deg id resolved per modality, plus every default model without one."""
        out: list[Selection] = []
        seen: set[str] = set()
        for deg in self._items.values():
            if not deg.in_default:
                continue
            key = deg.table.medq_deg_id
            if key and key != deg.name and key in self._aliases:
                if key not in seen:
                    seen.add(key)
                    out.append(self.select(key))
            elif deg.name not in seen:
                seen.add(deg.name)
                out.append(Selection(deg.name, (deg,)))
        return out

    def names(self) -> list[str]:
        return list(self._items)

    def with_tables(self, tables: dict[str, SeverityTable]) -> Registry:
        """The same degradations with some severity tables replaced (``--severities FILE``)."""
        from dataclasses import replace

        unknown = sorted(set(tables) - set(self._items))
        if unknown:
            raise ValueError(f"severity table for unknown degradation(s) {', '.join(unknown)}")
        out = Registry()
        for deg in self._items.values():
            new = tables.get(deg.name)
            if new is not None and set(new.params) != set(deg.table.params):
                raise ValueError(f"{deg.name}: the table must give the parameters {sorted(deg.table.params)}, "
                                 f"not {sorted(new.params)}")
            out.register(replace(deg, table=new) if new is not None else deg)
        return out

    def __iter__(self) -> Iterator[Degradation]:
        return iter(self._items.values())


def level_key(level: int | None, severity: float) -> str:
    """Stable key of a level (``L1``) or a continuous severity (``s0.3500``)."""
    return f"L{level}" if level is not None else f"s{severity:.4f}"

