"""Scores from prediction records: accuracy by group, severity drops, Calibration Shift, ECE (equal width and
equal mass), Brier, AUROC, the Dunning-Kruger tests and paired bootstrap intervals.

Written in NumPy so the definitions stay explicit; ECE is checked against torchmetrics in the tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

GROUPS = ("level", "modality", "degradation", "category", "capability", "source", "task")


def accuracy(correct: Iterable[bool]) -> float | None:
    c = np.asarray(list(correct), dtype=np.float64)
    return float(c.mean()) if c.size else None


def calibration_shift(conf: np.ndarray, correct: np.ndarray) -> float:
    """MedQ-Deg's Delta_calib = mean C - accuracy (positive: over-confident); a one-bin signed gap."""
    return float(np.mean(conf) - np.mean(correct))


def _bin_gaps(conf: np.ndarray, correct: np.ndarray, edges_idx: np.ndarray, n_bins: int) -> tuple[float, float]:
    ece, mce = 0.0, 0.0
    for b in range(n_bins):
        sel = edges_idx == b
        if sel.any():
            gap = abs(float(correct[sel].mean()) - float(conf[sel].mean()))
            ece += sel.mean() * gap
            mce = max(mce, gap)
    return float(ece), float(mce)


def ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15, mode: str = "width") -> dict[str, float]:
    """Expected calibration error of top-1 confidence: sum_b n_b/N |acc_b - conf_b|, with ``n_bins`` equal-width
    bins on [0, 1] (Guo et al. 2017; bins are (lo, hi], the first includes 0) or equal-mass bins of sorted
    confidences (ACE, Nixon et al. 2019). Also the maximum gap (MCE)."""
    conf = np.asarray(conf, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return {"ece": float("nan"), "mce": float("nan"), "bins": n_bins}
    if mode == "width":
        idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    elif mode == "mass":
        order = np.argsort(conf, kind="stable")
        idx = np.empty(conf.size, dtype=np.int64)
        idx[order] = np.arange(conf.size) * n_bins // conf.size
    else:
        raise ValueError("mode is 'width' or 'mass'")
    e, m = _bin_gaps(conf, correct, idx, n_bins)
    return {"ece": e, "mce": m, "bins": n_bins}


def reliability(conf: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Equal-width reliability-diagram bins: mean confidence, accuracy and count per bin."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return [{"lo": b / n_bins, "hi": (b + 1) / n_bins, "n": int((idx == b).sum()),
             "conf": float(conf[idx == b].mean()) if (idx == b).any() else None,
             "acc": float(correct[idx == b].mean()) if (idx == b).any() else None} for b in range(n_bins)]


def brier(conf: np.ndarray, correct: np.ndarray) -> float:
    """Binary Brier score of top-1 confidence against correctness."""
    return float(np.mean((np.asarray(conf, float) - np.asarray(correct, float)) ** 2))


def auroc(conf: np.ndarray, correct: np.ndarray) -> float | None:
    """Probability that a correct answer has higher confidence than a wrong one (ties count one half):
    the Mann-Whitney statistic with average ranks. None when one class is empty."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, bool)
    n_pos, n_neg = int(correct.sum()), int((~correct).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(conf, kind="stable")
    ranks = np.empty(conf.size, dtype=np.float64)
    sorted_c = conf[order]
    i = 0
    while i < conf.size:       # average ranks over ties
        j = i
        while j + 1 < conf.size and sorted_c[j + 1] == sorted_c[i]:
            j += 1
        ranks[order[i: j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[correct].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def intra_model_dke(acc: dict[int, float], shift: dict[int, float]) -> bool | None:
    """MedQ-Deg's intra-model Dunning-Kruger effect: Acc(L0) > Acc(L2) and Delta(L0) <= Delta(L2)."""
    if any(k not in d or d[k] is None for d in (acc, shift) for k in (0, 2)):
        return None
    return bool(acc[0] > acc[2] and shift[0] <= shift[2])


def inter_model_dke(models: dict[str, tuple[float, float]]) -> list[dict[str, Any]]:
    """Pairs (f1, f2) on one dataset with Acc(f1) < Acc(f2) and Delta(f1) > Delta(f2): the weaker model is the
    more over-confident. ``models`` maps a name to (accuracy, Delta_calib)."""
    out = []
    for a, (acc1, d1) in sorted(models.items()):
        for b, (acc2, d2) in sorted(models.items()):
            if a != b and acc1 < acc2 and d1 > d2:
                out.append({"weaker": a, "stronger": b, "acc": [acc1, acc2], "shift": [d1, d2]})
    return out


def paired_bootstrap(base_ids: list[str], levels: list[int | None], correct: list[bool], n_boot: int = 1000,
                     seed: int = 0) -> dict[str, dict[str, float | None]]:
    """95 % percentile intervals of Acc(L0), Acc(L1), Acc(L2) and of the paired drops Acc(Lk) - Acc(L0) when
    base items (each appears at L0, L1, L2) are resampled with replacement, so the drops keep their pairing.
    The drop's L0 term uses only base items that also have an Lk answer, as in ``level_drop``."""
    bases = sorted(set(base_ids))
    index = {b: i for i, b in enumerate(bases)}
    hits = np.zeros((len(bases), 3))
    count = np.zeros((len(bases), 3))
    for b, lv, c in zip(base_ids, levels, correct, strict=True):
        if lv in (0, 1, 2):
            hits[index[b], lv] += bool(c)
            count[index[b], lv] += 1
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(bases), np.full(len(bases), 1.0 / len(bases)), size=n_boot) if bases else None

    def interval(h: np.ndarray, n: np.ndarray, h0: np.ndarray | None = None, n0: np.ndarray | None = None):
        if n.sum() == 0 or (n0 is not None and n0.sum() == 0):
            return {"value": None, "lo": None, "hi": None, "n_boot": 0}
        value = h.sum() / n.sum() - (h0.sum() / n0.sum() if n0 is not None else 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = (w @ h) / (w @ n) - ((w @ h0) / (w @ n0) if n0 is not None else 0.0)
        boot = boot[np.isfinite(boot)]
        lo, hi = np.percentile(boot, [2.5, 97.5]) if boot.size else (np.nan, np.nan)
        return {"value": float(value), "lo": float(lo), "hi": float(hi), "n_boot": int(boot.size)}

    out = {f"accuracy_L{lv}": interval(hits[:, lv], count[:, lv]) for lv in (0, 1, 2)}
    for lv in (1, 2):
        has = count[:, lv] > 0
        out[f"L{lv}-L0"] = interval(hits[:, lv], count[:, lv], hits[:, 0] * has, count[:, 0] * has)
    return out


def level_drop(records: list[dict[str, Any]], level: int, degradation: str | None = None) -> float | None:
    """Acc(level) - Acc(L0), on the base items present at both (the L0 answer is the item's clean one)."""
    deg = [r for r in records if r["level"] == level and (degradation is None or r["degradation"] == degradation)]
    bases = {r["base_id"] for r in deg}
    clean = [r for r in records if r["level"] == 0 and r["base_id"] in bases]
    if not deg or not clean:
        return None
    return float(np.mean([r["correct"] for r in deg]) - np.mean([r["correct"] for r in clean]))
