"""Severity tables: anchors per parameter and the continuous severity mapping.

Severity ``s`` is in [0, 1]: 0 is the identity, L1 is 0.5, L2 is 1.0 (LEVEL_SEVERITY). Each parameter is
interpolated piecewise between (0, identity), (0.5, L1) and (1, L2), linearly or in log space, so every
parameter is a monotone function of ``s``.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from importlib import resources

LEVEL_SEVERITY = {0: 0.0, 1: 0.5, 2: 1.0}


@dataclass(frozen=True)
class ParamSpec:
    name: str
    unit: str
    identity: float
    L1: float
    L2: float
    provenance: str
    scale: str = "linear"
    size_ref_px: float | None = None
    # Floors of the scaled L1 / L2 anchors (same unit, in pixels of the image itself): pixel lengths shrink
    # with the image, and below a pixel a blur or a motion is the identity on a small image.
    min_L1: float | None = None
    min_L2: float | None = None

    def anchors(self, size_px: int | None = None) -> tuple[float, float, float]:
        """(identity, L1, L2) for an image of ``size_px``: L1 and L2 scaled by ``size_px / size_ref_px``, then
        floored; the identity (no degradation: a 1 px motion, a 0 px blur) is the same at every size."""
        k = size_px / self.size_ref_px if self.size_ref_px and size_px else 1.0
        l1, l2 = self.L1 * k, self.L2 * k
        if self.min_L1 is not None:
            l1 = max(l1, self.min_L1)
        if self.min_L2 is not None:
            l2 = max(l2, self.min_L2)
        return self.identity, l1, l2

    def value(self, severity: float, size_px: int | None = None) -> float:
        """The parameter at ``severity`` (in [0, 1]); pixel lengths are scaled to an image of ``size_px``,
        and the L1 / L2 anchors floored (``min_L1`` / ``min_L2``) so that no level is the identity."""
        if not 0.0 <= severity <= 1.0:
            raise ValueError(f"severity {severity} is outside [0, 1]")
        ident, l1, l2 = self.anchors(size_px)
        if severity <= 0.5:
            a, b, t = ident, l1, severity / 0.5
        else:
            a, b, t = l1, l2, (severity - 0.5) / 0.5
        if self.scale == "log":
            return math.exp(math.log(a) + t * (math.log(b) - math.log(a)))
        return a + t * (b - a)


@dataclass(frozen=True)
class SeverityTable:
    name: str
    category: str
    medq_deg_id: str | None
    aliases: tuple[str, ...]
    description: str
    params: dict[str, ParamSpec]
    modalities: tuple[str, ...] = ()       # empty: every modality
    in_default: bool = True                # False: an opt-in variant, run only when asked for by name
    # what each output records beyond the table (drawn, estimated or read from the file): name -> unit and
    # provenance, printed by ``medq-synth list``
    recorded: dict[str, str] = field(default_factory=dict)

    def values(self, severity: float, size_px: int | None = None) -> dict[str, float]:
        return {k: p.value(severity, size_px) for k, p in self.params.items()}


def load_tables(text: str | None = None) -> dict[str, SeverityTable]:
    """Parse the severity tables (the packaged ``data/severities.toml`` unless ``text`` is given)."""
    if text is None:
        text = resources.files("medq_synth").joinpath("data/severities.toml").read_text()
    raw = tomllib.loads(text)
    tables = {}
    for name, entry in raw.items():
        params = {}
        for pname, p in entry.get("params", {}).items():
            spec = ParamSpec(name=pname, unit=p["unit"], identity=float(p["identity"]), L1=float(p["L1"]),
                             L2=float(p["L2"]), provenance=p["provenance"], scale=p.get("scale", "linear"),
                             size_ref_px=p.get("size_ref_px"), min_L1=p.get("min_L1"), min_L2=p.get("min_L2"))
            if spec.scale not in ("linear", "log"):
                raise ValueError(f"{name}.{pname}: unknown scale {spec.scale!r}")
            if (spec.min_L1 is not None) != (spec.min_L2 is not None) or (spec.min_L1 or 0) > (spec.min_L2 or 0):
                raise ValueError(f"{name}.{pname}: give both min_L1 <= min_L2, or neither")
            if spec.scale == "log" and min(spec.identity, spec.L1, spec.L2) <= 0:
                raise ValueError(f"{name}.{pname}: log scale needs positive anchors")
            params[pname] = spec
        tables[name] = SeverityTable(name=name, category=entry["category"], medq_deg_id=entry.get("medq_deg_id"),
                                     aliases=tuple(entry.get("aliases", ())), description=entry.get("description", ""),
                                     params=params, modalities=tuple(entry.get("modalities", ())),
                                     in_default=bool(entry.get("in_default", True)),
                                     recorded={str(k): str(v) for k, v in entry.get("recorded", {}).items()})
    return tables
