"""Breaking points of a severity sweep: accuracy against continuous severity per model and degradation, a
monotone fit, and s50 - the severity at which accuracy has fallen halfway from its clean (s = 0) value to
chance - with bootstrap intervals over base items.

The fit is isotonic (non-increasing, weighted by the answers at each grid point; scipy's PAVA): it assumes
only that more degradation does not help, where a logistic would also impose a shape. s50 is read off the
fit by linear interpolation between grid points. It is "not reached" when the fit stays above the halfway
level over the grid, and undefined when the clean accuracy is not above chance (nothing to lose)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

# a clean accuracy within this margin of chance leaves no drop to halve: s50 is undefined
CHANCE_MARGIN = 0.05


def parse_grid(text: str) -> list[float]:
    """``"0:1:0.1"`` -> [0.0, 0.1, ..., 1.0] (start:stop:step, stop included), or ``"0.1,0.5,1"``."""
    if ":" in text:
        try:
            start, stop, step = (float(t) for t in text.split(":"))
        except ValueError:
            raise ValueError(f"--grid is start:stop:step or a comma list, not {text!r}") from None
        if step <= 0 or stop < start:
            raise ValueError(f"--grid {text!r}: need step > 0 and stop >= start")
        n = int(math.floor((stop - start) / step + 1e-9))
        values = [round(start + k * step, 6) for k in range(n + 1)]
    else:
        values = sorted({round(float(t), 6) for t in text.split(",") if t.strip()})
    if not values or min(values) < 0 or max(values) > 1:
        raise ValueError(f"--grid {text!r}: severities must lie in [0, 1]")
    return sorted(set(values))


def isotonic_decreasing(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    from scipy.optimize import isotonic_regression

    return np.asarray(isotonic_regression(y, weights=w, increasing=False).x, dtype=np.float64)


def crossing(x: np.ndarray, fit: np.ndarray, level: float) -> float | None:
    """First x where the non-increasing ``fit`` reaches ``level`` (linear between grid points), or None."""
    below = np.nonzero(fit <= level)[0]
    if below.size == 0:
        return None
    k = int(below[0])
    if k == 0:
        return float(x[0])
    x0, x1, f0, f1 = x[k - 1], x[k], fit[k - 1], fit[k]
    return float(x0 + (x1 - x0) * (f0 - level) / (f0 - f1)) if f0 != f1 else float(x1)


def _s50(x: np.ndarray, hits: np.ndarray, counts: np.ndarray, chance: float) -> tuple[float | None, str, np.ndarray]:
    """(s50 or None, status, fit) from per-point hit and answer counts."""
    ok = counts > 0
    acc = np.where(ok, hits / np.maximum(counts, 1), 0.0)
    fit = np.full(len(x), np.nan)
    fit[ok] = isotonic_decreasing(acc[ok], counts[ok])
    if not ok[0]:
        return None, "no clean answers", fit
    if fit[0] <= chance + CHANCE_MARGIN:
        return None, "undefined (clean accuracy at chance)", fit
    s = crossing(x[ok], fit[ok], fit[0] - 0.5 * (fit[0] - chance))
    return (s, "reached", fit) if s is not None else (None, "not reached", fit)


def breaking_point(records: list[dict[str, Any]], degradation: str, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """One model's curve for one degradation. ``records``: that model's MCQ records that were answered (no
    abstentions); the clean point is the L0 answers of the base items the degradation was asked on."""
    deg = [r for r in records if r["degradation"] == degradation and r.get("severity") is not None]
    bases = sorted({r["base_id"] for r in deg})
    clean = [r for r in records if r["level"] == 0 and r["base_id"] in set(bases)]
    xs = sorted({0.0, *(float(r["severity"]) for r in deg)})
    col = {v: i for i, v in enumerate(xs)}
    row = {b: i for i, b in enumerate(bases)}
    hits = np.zeros((len(bases), len(xs)))
    counts = np.zeros((len(bases), len(xs)))
    for r in clean + deg:
        k = 0 if r["level"] == 0 else col[float(r["severity"])]
        hits[row[r["base_id"]], k] += bool(r["correct"])
        counts[row[r["base_id"]], k] += 1
    chance = float(np.mean([1.0 / r["K"] for r in clean + deg])) if clean or deg else float("nan")
    x = np.asarray(xs)
    s50, status, fit = _s50(x, hits.sum(0), counts.sum(0), chance)
    rng = np.random.default_rng(seed)
    boot_acc, boot_s = [], []
    if bases:
        weights = rng.multinomial(len(bases), np.full(len(bases), 1.0 / len(bases)), size=n_boot)
        for wgt in weights:
            h, n = wgt @ hits, wgt @ counts
            with np.errstate(invalid="ignore", divide="ignore"):
                boot_acc.append(h / n)
            boot_s.append(_s50(x, h, n, chance)[0])
    acc_lo, acc_hi = (np.nanpercentile(np.array(boot_acc), [2.5, 97.5], axis=0) if boot_acc
                      else (np.full(len(xs), np.nan),) * 2)
    reached = np.array([s for s in boot_s if s is not None])
    share_reached = reached.size / len(boot_s) if boot_s else 0.0
    ci: dict[str, Any] = {"lo": None, "hi": None, "share_reached": share_reached}
    if reached.size and share_reached >= 0.5:
        lo, hi = np.percentile(reached, [2.5, 97.5])
        ci = {"lo": float(lo), "hi": float(hi) if share_reached >= 0.975 else "not reached",
              "share_reached": share_reached}
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = hits.sum(0) / counts.sum(0)
    return {"severity": xs, "accuracy": [None if not np.isfinite(a) else float(a) for a in acc],
            "band_lo": [None if not np.isfinite(a) else float(a) for a in acc_lo],
            "band_hi": [None if not np.isfinite(a) else float(a) for a in acc_hi],
            "fit": [None if not np.isfinite(a) else float(a) for a in fit],
            "n": [int(c) for c in counts.sum(0)], "n_base_items": len(bases), "chance": chance,
            "s50": s50, "s50_status": status, "s50_ci": ci}


def comparison(curves: dict[str, dict[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """Per degradation, the models ordered by s50 (first to break first; not reached / undefined last),
    with each one's margin to the next model that broke."""
    out: dict[str, list[dict[str, Any]]] = {}
    by_deg: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for model, per_deg in curves.items():
        for deg, c in per_deg.items():
            by_deg[deg][model] = c
    for deg, models in sorted(by_deg.items()):
        order = sorted(models, key=lambda m: (models[m]["s50"] is None, models[m]["s50"] or 0.0, m))
        rows = []
        for i, m in enumerate(order):
            c = models[m]
            nxt = next((models[o]["s50"] for o in order[i + 1:] if models[o]["s50"] is not None), None)
            rows.append({"model": m, "s50": c["s50"], "status": c["s50_status"], "ci": c["s50_ci"],
                         "clean_accuracy": c["accuracy"][0], "margin_to_next": None if c["s50"] is None or nxt is None
                         else nxt - c["s50"]})
        out[deg] = rows
    return out
