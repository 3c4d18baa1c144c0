"""metrics.json: every score of one model (one ``label``) from its prediction records."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from . import metrics as M
from .parsing import PARSERS, UNPARSED

CONF_SOURCES = ("vote", "letter", "verbal")


def _level_order(key: str) -> tuple[int, float, str]:
    """L0 < L1 < L2 < continuous severities (s0.2500 ...) < anything else."""
    try:
        return (0 if key.startswith("L") else 1, float(key[1:]), "")
    except ValueError:
        return (2, 0.0, key)


def _by(records: list[dict[str, Any]], field: str, value: str = "correct") -> dict[str, float]:
    groups: dict[str, list] = defaultdict(list)
    for r in records:
        groups[str(r.get(field) if r.get(field) is not None else "none")].append(r[value])
    keys = sorted(groups, key=_level_order) if field == "level_key" else sorted(groups)
    return {k: float(np.mean(groups[k])) for k in keys}


def _two_way(records: list[dict[str, Any]], field: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in sorted({str(r[field]) for r in records if r["level"] != 0}):
        bases = {r["base_id"] for r in records if str(r[field]) == name}
        sel = [r for r in records if str(r[field]) == name or (r["level"] == 0 and r["base_id"] in bases)]
        out[name] = _by(sel, "level_key")
    return out


def _confidence(records: list[dict[str, Any]], src: str) -> dict[str, Any] | None:
    rows = [r for r in records if r["confidence"].get(src) is not None]
    if not rows:
        return None
    conf = np.array([r["confidence"][src] for r in rows])
    top = np.array([r["top"][src] for r in rows])
    hit = np.array([r["top_correct"][src] for r in rows], dtype=float)
    acc = np.array([r["correct"] for r in rows], dtype=float)
    by_level = defaultdict(list)
    for r in rows:
        by_level[r["level_key"]].append(r)
    out = {"n": len(rows), "mean_confidence": float(conf.mean()),
           "calibration_shift": M.calibration_shift(conf, acc),
           "calibration_shift_by_level": {k: M.calibration_shift(
               np.array([r["confidence"][src] for r in v]), np.array([r["correct"] for r in v], float))
               for k, v in sorted(by_level.items(), key=lambda kv: _level_order(kv[0]))},
           "mean_confidence_by_level": {k: float(np.mean([r["confidence"][src] for r in v]))
                                        for k, v in sorted(by_level.items(), key=lambda kv: _level_order(kv[0]))},
           "ece_equal_width_15": M.ece(top, hit, 15, "width")["ece"],
           "ece_equal_mass_15": M.ece(top, hit, 15, "mass")["ece"],
           "mce_equal_width_15": M.ece(top, hit, 15, "width")["mce"],
           "brier_top1": M.brier(top, hit), "auroc": M.auroc(top, hit.astype(bool)),
           "reliability": M.reliability(top, hit, 10)}
    for key in ("letter_T3", "letter_T10"):
        if src == "letter" and all(r["confidence"].get(key) is not None for r in rows):
            out[f"calibration_shift_{key.split('_')[1]}"] = M.calibration_shift(
                np.array([r["confidence"][key] for r in rows]), acc)
    acc_lv = {0: M.accuracy(r["correct"] for r in rows if r["level"] == 0),
              2: M.accuracy(r["correct"] for r in rows if r["level"] == 2)}
    shift_lv = {lv: out["calibration_shift_by_level"].get(f"L{lv}") for lv in (0, 2)}
    out["dunning_kruger_intra"] = M.intra_model_dke(acc_lv, shift_lv)
    return out


def _with_parsers(r: dict[str, Any]) -> dict[str, Any]:
    return dict(r, parsed=r["pred"] != UNPARSED, parsed_strict=r["pred_strict"] != UNPARSED,
                correct_strict=r["pred_strict"] == r["answer"])


def summarise(records: list[dict[str, Any]], n_failed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """All metrics of one label's records (MCQ records only; reasoning records are scored by the judge)."""
    mcq = [r for r in records if r.get("kind", "mcq") == "mcq"]
    asked = [dict(r, covered=not r.get("abstained")) for r in mcq]
    recs = [_with_parsers(r) for r in mcq if not r.get("abstained")]
    coverage = {"n_abstained": len(mcq) - len(recs), "coverage": M.accuracy(r["covered"] for r in asked),
                "coverage_by_level": _by(asked, "level_key", "covered") if asked else {},
                "abstain_reasons": dict(Counter(str(r["abstained"]) for r in mcq if r.get("abstained")))}
    if not recs:
        return {"n": 0, "n_failed": n_failed, **coverage}
    parser = recs[0].get("parser") or "vlmevalkit"
    out: dict[str, Any] = {
        "n": len(recs), "n_failed": n_failed, "n_base_items": len({r["base_id"] for r in recs}), **coverage,
        "parser": parser,
        "accuracy": M.accuracy(r["correct"] for r in recs),
        "accuracy_strict": M.accuracy(r["correct_strict"] for r in recs),
        "parse_rate": M.accuracy(r["parsed"] for r in recs),
        "parse_rate_strict": M.accuracy(r["parsed_strict"] for r in recs),
        "parse_rate_by_level": _by(recs, "level_key", "parsed"),
        "parse_rate_strict_by_level": _by(recs, "level_key", "parsed_strict"),
        "accuracy_strict_by_level": _by(recs, "level_key", "correct_strict"),
        "by_parser": {name: {"accuracy": M.accuracy(r["hits"][name] for r in recs),
                             "parse_rate": M.accuracy(r["preds"][name] != UNPARSED for r in recs),
                             "parse_rate_by_level": _by([dict(r, _p=r["preds"][name] != UNPARSED) for r in recs],
                                                        "level_key", "_p")}
                      for name in PARSERS if all(name in r.get("preds", {}) for r in recs)},
    }
    out["accuracy_by"] = {g: _by(recs, "level_key" if g == "level" else g) for g in M.GROUPS}
    out["accuracy_by_degradation_level"] = _two_way(recs, "degradation")
    out["accuracy_by_category_level"] = _two_way(recs, "category")
    drops: dict[str, Any] = {}
    for lv in (1, 2):
        drops[f"L{lv}-L0"] = M.level_drop(recs, lv)
    drops["by_degradation"] = {d: {f"L{lv}-L0": M.level_drop(recs, lv, d) for lv in (1, 2)}
                               for d in sorted({r["degradation"] for r in recs if r["level"] != 0})}
    out["drops"] = drops

    out["bootstrap_95"] = M.paired_bootstrap([r["base_id"] for r in recs], [r["level"] for r in recs],
                                             [r["correct"] for r in recs], n_boot)
    out["confidence"] = {src: c for src in CONF_SOURCES if (c := _confidence(recs, src))}
    if det := detectability_by_degradation_level(mcq):
        out["detectability_by_degradation_level"] = det
    if info := information_removing(out["accuracy_by_degradation_level"]):
        out["information_removing"] = info
    return out


def information_removing(by_deg_level: dict[str, dict[str, float]]) -> dict[str, Any] | None:
    """Mean accuracy per level over the evaluated degradations that remove information (each degradation
    weighs the same), and which of them do not fall strictly from L0 to L1 to L2."""
    from medq_synth.information import INFORMATION_REMOVING

    names = [d for d in by_deg_level if d in INFORMATION_REMOVING and all(lv in by_deg_level[d]
                                                                          for lv in ("L0", "L1", "L2"))]
    if not names:
        return None
    mean = {lv: float(np.mean([by_deg_level[d][lv] for d in names])) for lv in ("L0", "L1", "L2")}
    not_falling = [d for d in names if not by_deg_level[d]["L0"] > by_deg_level[d]["L1"] > by_deg_level[d]["L2"]]
    return {"degradations": {d: INFORMATION_REMOVING[d] for d in names}, "mean_accuracy_by_level": mean,
            "falls_strictly": mean["L0"] > mean["L1"] > mean["L2"], "not_falling": not_falling}


def _quadrant_samples(records: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    t0, t1 = [], []
    for r in records:
        for q, t in r["observer"]["quadrant_max"].items():
            if t is not None and np.isfinite(t):
                (t1 if q in r["lesion_quadrants"] else t0).append(float(t))
    return t0, t1


def detectability_by_degradation_level(records: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """A model observer's d' and AUC per degradation, modality (statistics of different modalities have
    different scales, so they are not pooled) and level: its maximum statistic in each quadrant of
    each answered image (the statistic does not depend on the question) against the truth, quadrant holds a
    lesion centre or not (abstentions carry no statistic). L0 rows are the clean images of the base items the
    degradation was applied to. Needs records with ``observer.quadrant_max`` and ``lesion_quadrants``."""
    from .cho import detectability

    usable = [r for r in records if (r.get("observer") or {}).get("quadrant_max")
              and r.get("lesion_quadrants") is not None]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, modality in sorted({(str(r["degradation"]), str(r["modality"])) for r in usable if r["level"] != 0}):
        bases = {r["base_id"] for r in usable if str(r["degradation"]) == name and str(r["modality"]) == modality}
        groups: dict[str, list] = defaultdict(list)
        for r in usable:
            if r["base_id"] in bases and (str(r["degradation"]) == name or r["level"] == 0):
                groups[r["level_key"]].append(r)
        row = {}
        for key in sorted(groups, key=_level_order):
            t0, t1 = _quadrant_samples(groups[key])
            if len(t0) >= 2 and len(t1) >= 2:
                d = detectability(np.array(t0), np.array(t1))
                row[key] = {"d_prime": round(d.d_prime, 4), "auc": round(d.auc, 4), "n_absent": d.n_absent,
                            "n_present": d.n_present}
        if row:
            out[f"{name} ({modality})"] = row
    return out


def leaderboard(per_label: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Inter-model DKE per level and source, from each label's accuracy and Calibration Shift."""
    out: dict[str, Any] = {}
    for src in CONF_SOURCES:
        for lv in ("L0", "L1", "L2"):
            models = {}
            for name, m in per_label.items():
                c = m.get("confidence", {}).get(src)
                acc = m.get("accuracy_by", {}).get("level", {}).get(lv)
                if c and acc is not None and lv in c["calibration_shift_by_level"]:
                    models[name] = (acc, c["calibration_shift_by_level"][lv])
            if len(models) > 1:
                out.setdefault(src, {})[lv] = M.inter_model_dke(models)
    return out
