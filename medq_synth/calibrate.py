"""``medq-synth calibrate``: choose each degradation's L1 and L2 from measured targets instead of example fits,
and write a severity table (TOML, the schema of data/severities.toml) that ``generate``, ``run``, ``sweep``
and ``list`` load with ``--severities FILE``.

Targets:
- an image-quality band, ``ssim=A,B`` or ``psnr=A,B``: the mean over the calibration items, against L0, at
  L1 and at L2. The default, ``ssim=0.9,0.8``, is our choice: one SSIM band for every degradation, so that L1
  and L2 mean the same loss of structure whatever the degradation (MedQ-Deg's levels were chosen per type by
  radiologists, which cannot guarantee that); a degradation whose packaged range cannot reach it (a mild
  motion blur or movement, say) keeps that level, and its provenance says so;
- ``dprime=A,B``: the model observer's d' falls to these fractions of its clean value (``observer_target``);
- ``reference=PAIRS.tsv``: released L0 / L1 / L2 pairs (``reference_fit``).

Method for the first: one ``generate`` over a continuous severity grid of the packaged (or given) table and a
finer one around each crossing; per degradation, the mean metric against severity, an isotonic
(non-increasing) fit, and the severity where the fit meets the target (linear between grid points). The new
L1 / L2 anchors are the table's parameter values at those severities (at the table's reference size, before
scaling and floors), so the new levels reproduce the outputs measured there. A level whose target the
searched range does not reach is kept where it was, and the provenance says so."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .eval.sweep_stats import crossing
from .severity import SeverityTable

DEFAULT_TARGET = "ssim=0.9,0.8"
METRICS = {"ssim": "SSIM", "psnr": "PSNR (dB)", "dprime": "observer d' / clean d'"}


def parse_target(text: str) -> tuple[str, float, float]:
    """``ssim=L1,L2`` / ``psnr=L1,L2`` / ``dprime=L1,L2`` -> (metric, L1 value, L2 value)."""
    name, sep, values = text.partition("=")
    name = name.strip().lower()
    usage = f"--target is ssim=L1,L2, psnr=L1,L2, dprime=L1,L2 or reference=FILE, not {text!r}"
    try:
        l1, l2 = (float(v) for v in values.split(","))
    except ValueError:
        raise ValueError(usage) from None
    if not sep or name not in METRICS:
        raise ValueError(usage)
    if l2 >= l1:
        raise ValueError(f"--target {text!r}: the L2 value must be below the L1 value (more degradation)")
    return name, l1, l2


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return json.dumps(str(v))          # a TOML basic string is a JSON string


def table_toml(tables: dict[str, SeverityTable], header: list[str]) -> str:
    """TOML text of ``tables`` in data/severities.toml's schema (round-trips through ``load_tables``)."""
    lines = [f"# {h}" for h in header] + [""]
    for name, t in tables.items():
        lines.append(f"[{name}]")
        lines.append(f"category = {_fmt(t.category)}")
        if t.medq_deg_id:
            lines.append(f"medq_deg_id = {_fmt(t.medq_deg_id)}")
        if t.aliases:
            lines.append(f"aliases = {_fmt(list(t.aliases))}")
        if t.description:
            lines.append(f"description = {_fmt(t.description)}")
        if t.modalities:
            lines.append(f"modalities = {_fmt(list(t.modalities))}")
        if not t.in_default:
            lines.append("in_default = false")
        for p in t.params.values():
            lines += ["", f"[{name}.params.{p.name}]", f"unit = {_fmt(p.unit)}", f"identity = {_fmt(p.identity)}",
                      f"L1 = {_fmt(p.L1)}", f"L2 = {_fmt(p.L2)}"]
            if p.scale != "linear":
                lines.append(f"scale = {_fmt(p.scale)}")
            for key in ("size_ref_px", "min_L1", "min_L2"):
                if getattr(p, key) is not None:
                    lines.append(f"{key} = {_fmt(float(getattr(p, key)))}")
            lines.append(f"provenance = {_fmt(p.provenance)}")
        if t.recorded:
            lines += ["", f"[{name}.recorded]"] + [f"{k} = {_fmt(v)}" for k, v in t.recorded.items()]
        lines.append("")
    return "\n".join(lines)


def _curve(points: dict[float, list[float]], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Severities (0 first: the identity, SSIM 1, PSNR capped at 100 dB) and the isotonic fit of the mean."""
    from .eval.sweep_stats import isotonic_decreasing

    xs = sorted(points)
    x = np.array([0.0, *xs])
    y = np.array([1.0 if metric == "ssim" else 100.0, *(np.mean(points[s]) for s in xs)])
    w = np.array([1.0, *(len(points[s]) for s in xs)])
    return x, isotonic_decreasing(y, w)


def retabled(table: SeverityTable, s1: float, s2: float, note: str) -> SeverityTable:
    """``table`` with its L1 / L2 anchors moved to its own values at severities ``s1`` / ``s2`` (at the reference
    size, before scaling and floors; 0.5 / 1.0 keep a level), each provenance led by ``note``."""
    from dataclasses import replace

    return replace(table, params={p.name: replace(
        p, L1=p.value(s1), L2=p.value(s2),
        provenance=f"{note}; the anchors it started from were {p.L1:g} / {p.L2:g} ({p.provenance})")
        for p in table.params.values()})


def _chosen(x: np.ndarray, fit: np.ndarray, t1: float, t2: float, at_end: str) -> dict[int, tuple[float, str]]:
    """Per level, (severity, what happened): where the non-increasing ``fit`` reaches the level's target, or
    the level kept where it was (0.5 / 1.0) when the searched range does not reach it."""
    out = {}
    for lv, goal in ((1, t1), (2, t2)):
        s = crossing(x, fit, goal)
        out[lv] = ((0.5 * lv, f"not met ({at_end} at s = 1), kept") if s is None
                   else (s, f"met at s = {s:.3f} of the table it was calibrated from"))
    return out


def calibrate(out: str | Path, sources: list[str] | None = None, degradations: list[str] | None = None,
              target: str = DEFAULT_TARGET, seed: int = 0, device: str = "auto", limit: int | None = None,
              step: float = 0.05, severities_file: str | None = None, progress: bool = False,
              work: str | Path | None = None) -> dict[str, Any]:
    """Calibrate and write the table to ``out``; returns, per degradation, the severities chosen and the
    metric they give. ``work``: where the calibration outputs go (default: a temporary folder)."""
    from .degradations import registry_for
    from .engine import Generator
    if target.startswith("reference="):
        return _reference(Path(out), Path(target.split("=", 1)[1]), seed, severities_file)
    metric, t1, t2 = parse_target(target)
    if metric == "dprime":
        return _observer(Path(out), sources, degradations, t1, t2, seed, device, limit, max(step, 0.1),
                         severities_file)
    grid = tuple(round(step * k, 6) for k in range(1, int(round(1 / step)) + 1))
    registry = registry_for(severities_file)
    by_deg: dict[str, dict[float, list[float]]] = {}

    def measure(root: Path, names: list[str] | None, severities: tuple[float, ...]):
        gen = Generator(sources or ["phantoms"], root, degradations=names, levels=(0,), severities=severities,
                        seed=seed, device=device, limit=limit, progress=progress, severities_file=severities_file)
        summary = gen.run()
        for line in (root / "manifest.jsonl").read_text().splitlines():
            r = json.loads(line)
            if r["level"] is None and r[metric] is not None:
                value = float(r[metric]) if math.isfinite(float(r[metric])) else 100.0
                by_deg.setdefault(r["degradation"], {}).setdefault(float(r["severity"]), []).append(value)
        return gen, summary

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work) if work else Path(tmp)
        gen, summary = measure(base / "coarse", degradations, grid)
        # refine: a finer grid inside the coarse interval that brackets each target, per degradation
        for k, name in enumerate(sorted(by_deg)):
            x, fit = _curve(by_deg[name], metric)
            fine: set[float] = set()
            for goal in (t1, t2):
                s = crossing(x, fit, goal)
                if s is None:
                    continue
                j = int(np.searchsorted(x, s))
                lo, hi = x[max(j - 1, 0)], x[min(j, len(x) - 1)]
                fine |= {round(float(v), 6) for v in np.linspace(lo, hi, 6)[1:-1] if v > 0}
            if fine:
                measure(base / f"fine{k}", [name], tuple(sorted(fine)))
    data = f"{', '.join(gen.source_specs)} ({summary.n_items} items, seed {seed})"
    tables: dict[str, SeverityTable] = {}
    report: dict[str, Any] = {}
    for name, points in sorted(by_deg.items()):
        deg = registry.resolve(name)
        x, fit = _curve(points, metric)
        chosen = _chosen(x, fit, t1, t2, f"{METRICS[metric]} {fit[-1]:.3f}")
        note = (f"[calibrated] {METRICS[metric]} target {t1:g} / {t2:g} on {data}: L1 {chosen[1][1]}, "
                f"L2 {chosen[2][1]}")
        tables[name] = retabled(deg.table, chosen[1][0], chosen[2][0], note)
        report[name] = {"L1_severity": chosen[1][0], "L2_severity": chosen[2][0], "target": [t1, t2],
                        "metric": metric, "met": [chosen[lv][1].startswith("met") for lv in (1, 2)]}
    header = ["Severity tables written by `medq-synth calibrate`.",
              f"Target: mean {METRICS[metric]} against L0 of {t1:g} at L1 and {t2:g} at L2, on {data}.",
              "Load with --severities FILE (generate, run, sweep, list); entries replace the packaged tables."]
    Path(out).write_text(table_toml(tables, header))
    return report


def _reference(out: Path, tsv: Path, seed: int, severities_file: str | None) -> dict[str, Any]:
    """Fit each display-domain model's L1 / L2 severities to released reference pairs (``reference_fit``)."""
    from .degradations import registry_for
    from .reference_fit import fit

    if not tsv.exists():
        raise ValueError(f"--target reference={tsv}: no such file")
    registry = registry_for(severities_file)
    fits, problems = fit(tsv, registry, seed)
    if not fits:
        raise ValueError(f"no degradation could be fitted from {tsv}: " + "; ".join(problems[:5]))
    tables: dict[str, SeverityTable] = {}
    report: dict[str, Any] = {}
    for name, levels in sorted(fits.items()):
        notes = [f"L{lv} at s = {f['severity']:.3f}, median residual {f['residual_grey']:.2f} grey levels over "
                 f"{f['n']} pairs" if (f := levels.get(lv)) else f"L{lv} kept (no pairs)" for lv in (1, 2)]
        tables[name] = retabled(registry.resolve(name).table, levels.get(1, {}).get("severity", 0.5),
                                levels.get(2, {}).get("severity", 1.0),
                                f"[fitted] reference pairs of {tsv.name} ({'; '.join(notes)})")
        report[name] = {"metric": "reference", "levels": levels, "met": [True, True], "target": [None, None],
                        "L1_severity": levels.get(1, {}).get("severity"),
                        "L2_severity": levels.get(2, {}).get("severity")}
    header = [f"Severity tables fitted by `medq-synth calibrate --target reference={tsv.name}`: each model's",
              "L1 / L2 severities make our output of the released L0 image as far from it as the released L1 / L2",
              "image is (median over the base items). Load with --severities FILE."]
    header += [f"Not fitted: {p}" for p in problems[:20]]
    out.write_text(table_toml(tables, header))
    return report


def _observer(out: Path, sources: list[str] | None, degradations: list[str] | None, f1: float, f2: float,
              seed: int, device: str, limit: int | None, step: float, severities_file: str | None) -> dict[str, Any]:
    """L1 / L2 where the channelized Hotelling observer's d' falls to ``f1`` / ``f2`` of its clean value
    (``observer_target``), for the display-domain models that apply to the calibration items."""
    from .engine import Generator
    from .eval.sweep_stats import isotonic_decreasing
    from .observer_target import D0, RADIUS_PX, curve

    if not 0 < f2 < f1 < 1:
        raise ValueError("--target dprime=L1,L2 takes fractions of the clean d' with 1 > L1 > L2 > 0")
    with tempfile.TemporaryDirectory() as tmp:
        gen = Generator(sources or ["phantoms"], Path(tmp), degradations=degradations, levels=(0,), seed=seed,
                        device=device, limit=limit, progress=False, severities_file=severities_file)
        srcs, refs = gen._open_sources()
        by_name = {s.name: s for s in srcs}
        items = [it for ref in refs for it in gen._load(by_name, ref, 0)[0]]
    grid = [round(step * k, 6) for k in range(1, int(round(1 / step)) + 1)]
    data = f"{', '.join(gen.source_specs)} ({len(items)} items, seed {seed})"
    tables: dict[str, SeverityTable] = {}
    report: dict[str, Any] = {}
    models = {d.name: d for sel in gen.selections for d in sel.models if d.in_default or degradations}
    for name, deg in sorted(models.items()):
        imgs = [np.clip((it.image - it.window[0]) / (it.window[1] - it.window[0]), 0, 1)
                for it in items if deg.applies_to(it.modality)]
        if deg.physical or len(imgs) < 4:
            continue
        c = curve(deg, imgs, grid, seed)
        xs = sorted(c["d_prime"])
        ratio = np.array([c["d_prime"][x] / c["d_prime"][0.0] for x in xs])
        fit = isotonic_decreasing(ratio, np.ones(len(xs)))
        chosen = _chosen(np.array(xs), fit, f1, f2, f"d' keeps {fit[-1]:.2f} of its clean value")
        note = (f"[calibrated] observer target: CHO d' at {f1:g} / {f2:g} of its clean value (disc r {RADIUS_PX:g} "
                f"px at clean d' {D0:g}, Laguerre-Gauss channels) on {data}: L1 {chosen[1][1]}, L2 {chosen[2][1]}")
        tables[name] = retabled(deg.table, chosen[1][0], chosen[2][0], note)
        report[name] = {"L1_severity": chosen[1][0], "L2_severity": chosen[2][0], "target": [f1, f2],
                        "metric": "dprime", "met": [chosen[lv][1].startswith("met") for lv in (1, 2)],
                        "d_prime": {f"{k:g}": round(v, 4) for k, v in c["d_prime"].items()}}
    if not tables:
        raise ValueError("no display-domain degradation applies to the calibration items")
    header = ["Severity tables written by `medq-synth calibrate --target dprime=...`.",
              f"Target: the model observer's d' at {f1:g} (L1) and {f2:g} (L2) of its clean value, on {data}.",
              "Physical models are not calibrated this way. Load with --severities FILE."]
    out.write_text(table_toml(tables, header))
    return report
