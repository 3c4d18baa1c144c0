"""Reference pairs: fit each degradation's severity so that our output of a released clean (L0) image matches
the released degraded image of the same base item, per MedQ-Deg type and level. MedQ-Deg never published
its parameters, so this is how to match its data rather than its description.

For one type and level, with the released pairs (x_i, y_i) and our output o_i(s) of x_i at severity s:

    loss(s) = median_i | RMSE(o_i(s), x_i) - RMSE(y_i, x_i) |      (grey levels of 255)

the distance from the clean image our degradation must reproduce. It ignores what a random draw decides
(the noise realisation, a rotation's sense, a motion's direction), which no seed of ours can match, and the
median makes it robust to a few unlike items. s is searched on a grid over [0, 1] of the starting table,
then refined around the best point; the residual is reported per type and level. Display-domain models
only: the physical ones (CT, MRI, ultrasound, X-ray physics) need the physical image, which a released PNG
is not."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .seeding import output_seed, pattern_seed


def _display(img: np.ndarray) -> torch.Tensor:
    """uint8 H x W x 3 (grey repeated) -> float32 (1, C, H, W) in [0, 1], one channel for grey."""
    a = img.astype(np.float32) / 255.0
    if a.ndim == 3 and np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 0], a[..., 2]):
        a = a[..., 0]
    t = torch.from_numpy(np.ascontiguousarray(a))
    return (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]


def _rmse255(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.sqrt(((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).mean()) * 255.0)


def pairs(path: Path) -> tuple[dict[tuple[str, int], list[tuple[str, str, np.ndarray, np.ndarray]]], list[str]]:
    """``{(medq_deg_id, level): [(base id, modality, clean, degraded), ...]}`` from a TSV holding the L0 and
    L1/L2 rows of the same base items; and the problems met (rows without a clean partner...)."""
    from .eval.datasets import _LEVELS, _base_id, _decode_image, tsv_rows
    from .items import OPTION_LETTERS, normalise_modality
    from .registry import canonical_id

    errors: list[dict[str, Any]] = []
    rows = tsv_rows(path, errors)
    problems = [e["reason"] for e in errors]
    by_index = {str(r.get("index", "")).strip(): r for r in rows}
    clean: dict[str, dict[str, str]] = {}
    degraded: list[tuple[str, dict[str, str]]] = []
    for r in rows:
        opts = {c: str(r[c]).strip() for c in OPTION_LETTERS if r.get(c) and str(r[c]).strip() not in ("nan", "None")}
        base = _base_id(r, opts)
        level = _LEVELS.get((r.get("degradation_severity") or "").strip().lower())
        typ = canonical_id((r.get("degradation_type") or "").strip().lower() or "none")
        if level is None:
            problems.append(f"row {r.get('index')}: unknown degradation_severity")
        elif level == 0 or typ == "none":
            clean.setdefault(base, r)
        else:
            degraded.append((base, level, r))
    out: dict[tuple[str, int], list] = defaultdict(list)
    for base, level, r in degraded:
        if base not in clean:
            problems.append(f"row {r.get('index')}: no L0 row of the same base item")
            continue
        typ = canonical_id((r.get("degradation_type") or "").strip().lower())
        try:
            x = _decode_image(clean[base], by_index, path.parent)
            y = _decode_image(r, by_index, path.parent)
        except Exception as e:      # noqa: BLE001 - an undecodable image is reported and skipped
            problems.append(f"row {r.get('index')}: {e}")
            continue
        if x.shape != y.shape:
            problems.append(f"row {r.get('index')}: its L0 image has another size")
            continue
        out[(typ, level)].append((base, normalise_modality(r.get("modality") or "unknown"), x, y))
    return dict(out), problems


def _losses(deg, items: list, severities: np.ndarray, seed: int) -> np.ndarray:
    """(S,) median absolute mismatch of the distance from clean, over items, at each severity."""
    gaps = np.zeros((len(items), len(severities)))
    for i, (base, _, x, y) in enumerate(items):
        v = _display(x)
        target = _rmse255(_display(y), v)
        shape = tuple(v.shape[-2:])
        fill = torch.zeros(1, dtype=torch.float64)
        for k, s in enumerate(severities):
            seeds = torch.tensor([output_seed(seed, base, deg.name, f"s{s:.4f}")], dtype=torch.int64)
            pats = torch.tensor([pattern_seed(seed, base, deg.name)], dtype=torch.int64)
            inputs = {"v": v} if deg.image_dependent else None
            out = deg.apply(v, deg.sample_params(float(s), seeds, shape, fill, pats, inputs))
            gaps[i, k] = abs(_rmse255(out, v) - target)
    return np.median(gaps, axis=0)


def fit(path: Path, registry, seed: int = 0, coarse: int = 41) -> tuple[dict[str, dict[int, dict]], list[str]]:
    """``{model name: {level: {"severity", "residual", "n"}}}`` and the problems met."""
    found, problems = pairs(path)
    fits: dict[str, dict[int, dict]] = defaultdict(dict)
    for (typ, level), items in sorted(found.items()):
        by_model: dict[str, list] = defaultdict(list)
        for it in items:
            try:
                deg = registry.resolve(typ, it[1])
            except KeyError:
                problems.append(f"{typ} has no model for {it[1]}")
                continue
            by_model[deg.name].append(it)
        for name, group in by_model.items():
            deg = registry.resolve(name)
            if deg.physical:
                problems.append(f"{name} ({typ} L{level}): a physical model, not fitted from display images")
                continue
            grid = np.linspace(0.0, 1.0, coarse)[1:]
            loss = _losses(deg, group, grid, seed)
            k = int(np.argmin(loss))
            step = grid[1] - grid[0]
            fine = np.clip(grid[k] + np.linspace(-step, step, 9), 1e-3, 1.0)
            fine_loss = _losses(deg, group, fine, seed)
            j = int(np.argmin(fine_loss))
            fits[name][level] = {"severity": float(fine[j]), "residual_grey": float(fine_loss[j]), "n": len(group),
                                 "medq_deg_id": typ}
    return dict(fits), problems



