"""``medq-synth sweep``: one streaming ``run`` per model over degradations x a continuous severity grid, then
the breaking-point analysis (``sweep_stats``) across models: curves with bootstrap bands, isotonic fits,
s50 with intervals, a comparison table, a heat map, and one example image per grid point beside each curve.

Each model's answers live in ``OUT/runs/<label>/`` (a ``run`` folder: resumable, keyed by severity), so a
killed sweep restarted with the same arguments answers only what is missing and ends with the same
``sweep.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from medq_synth.writer import safe_name

from .backends import Backend
from .records import Sample
from .store import Store
from .sweep_stats import breaking_point, comparison

THUMB = 160


class ExampleStrips:
    """For each degradation, thumbnails of one base item at every grid point: the item with the smallest
    base id answered under it (a choice a resumed run reaches too: smaller ids replace larger ones)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root) / "examples"

    def __call__(self, s: Sample, rec: dict[str, Any]) -> None:
        if s.kind != "mcq" or not s.images:
            return
        from PIL import Image

        deg = s.meta.get("degradation") or "none"
        folder = self.root / safe_name(deg)
        stem = safe_name(s.base_id)
        if deg != "none":
            kept = min((p.name.split("__")[0] for p in folder.glob("*.png")), default=None)
            if kept is not None and stem > kept:
                return
            if kept is not None and stem < kept:           # a smaller base id replaces the kept one
                for p in folder.glob("*.png"):
                    p.unlink(missing_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(s.images[0]).convert("RGB")
        im.thumbnail((THUMB, THUMB))
        sev = float(s.meta.get("severity") or 0.0)
        im.save(folder / f"{stem}__{sev:.4f}.png")


def _strip(root: Path, deg: str, grid: list[float], out: Path) -> str | None:
    """One row of thumbnails (s = 0 from the clean image) for ``deg``; the path relative to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    folder = root / "examples" / safe_name(deg)
    files = sorted(folder.glob("*.png")) if folder.exists() else []
    if not files:
        return None
    stem = files[0].name.split("__")[0]
    cells = []
    for s in grid:
        p = (root / "examples" / "none" / f"{stem}__0.0000.png") if s == 0 else folder / f"{stem}__{s:.4f}.png"
        cells.append((s, p if p.exists() else None))
    fig, axes = plt.subplots(1, len(cells), figsize=(1.3 * len(cells), 1.6), squeeze=False)
    for ax, (s, p) in zip(axes[0], cells, strict=True):
        ax.axis("off")
        ax.set_title(f"s={s:g}", fontsize=7)
        if p is not None:
            ax.imshow(Image.open(p), cmap="gray")
    fig.tight_layout()
    rel = f"plots/examples_{safe_name(deg)}.png"
    fig.savefig(out / rel, dpi=90)
    plt.close(fig)
    return rel


def _plots(result: dict[str, Any], out: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "plots").mkdir(exist_ok=True)
    paths: dict[str, str] = {}
    curves = result["curves"]
    degs = sorted({d for per in curves.values() for d in per})
    models = sorted(curves)
    for deg in degs:
        fig, ax = plt.subplots(figsize=(5.2, 3.8))
        for k, model in enumerate(models):
            c = curves[model].get(deg)
            if not c:
                continue
            x = np.array(c["severity"])
            acc = np.array([np.nan if v is None else v for v in c["accuracy"]])
            lo = np.array([np.nan if v is None else v for v in c["band_lo"]])
            hi = np.array([np.nan if v is None else v for v in c["band_hi"]])
            fit = np.array([np.nan if v is None else v for v in c["fit"]])
            colour = f"C{k % 10}"
            ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
            ax.plot(x, acc, "o", color=colour, ms=3)
            ax.plot(x, fit, "-", color=colour, label=f"{model} (s50 {_s50_text(c)})")
            if c["s50"] is not None:
                ax.axvline(c["s50"], color=colour, ls=":", lw=1)
            ax.axhline(c["chance"], color="grey", ls="--", lw=0.8)
        ax.set(xlabel="severity s", ylabel="accuracy", ylim=(0, 1.02), title=deg)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=7, ncol=1, frameon=False)
        fig.tight_layout()
        rel = f"plots/curve_{safe_name(deg)}.png"
        fig.savefig(out / rel, dpi=90, bbox_inches="tight")
        plt.close(fig)
        paths[deg] = rel
    grid = np.full((len(degs), len(models)), np.nan)
    for i, deg in enumerate(degs):
        for j, model in enumerate(models):
            c = curves[model].get(deg)
            if c and c["s50"] is not None:
                grid[i, j] = c["s50"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(models), 0.9 + 0.35 * len(degs)))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for i in range(len(degs)):
        for j in range(len(models)):
            ax.text(j, i, "n.r." if np.isnan(grid[i, j]) else f"{grid[i, j]:.2f}", ha="center", va="center",
                    fontsize=7)
    ax.set_xticks(range(len(models)), models, rotation=20, fontsize=7)
    ax.set_yticks(range(len(degs)), degs, fontsize=7)
    fig.colorbar(im, ax=ax, label="s50 (n.r.: not reached or undefined)")
    fig.tight_layout()
    fig.savefig(out / "plots/s50_heatmap.png", dpi=90)
    plt.close(fig)
    paths["_heatmap"] = "plots/s50_heatmap.png"
    return paths


def _s50_text(c: dict[str, Any]) -> str:
    if c["s50"] is None:
        return c["s50_status"]
    ci = c["s50_ci"]
    if ci["lo"] is None:
        return f"{c['s50']:.2f}"
    hi = ci["hi"] if isinstance(ci["hi"], str) else f"{ci['hi']:.2f}"
    return f"{c['s50']:.2f} [{ci['lo']:.2f}, {hi}]"


def _report(result: dict[str, Any], plots: dict[str, str], strips: dict[str, str], out: Path) -> None:
    from .report import _html

    lines = ["# medq-synth severity sweep", "",
             f"Grid: {', '.join(f'{s:g}' for s in result['grid'])}. s50 = the severity at which accuracy has "
             "fallen halfway from its clean value to chance, read off an isotonic (non-increasing) fit, with a "
             "95 % bootstrap interval over base items. Bands: 95 % bootstrap of the accuracy at each point.", "",
             "## Which model breaks first", "", "| degradation | model | clean accuracy | s50 [95 % CI] | "
             "margin to the next |", "|---|---|---|---|---|"]
    for deg, rows in result["comparison"].items():
        for r in rows:
            c = result["curves"][r["model"]][deg]
            margin = "-" if r["margin_to_next"] is None else f"{r['margin_to_next']:+.2f}"
            clean = "-" if r["clean_accuracy"] is None else f"{100 * r['clean_accuracy']:.1f} %"
            lines.append(f"| {deg} | {r['model']} | {clean} | {_s50_text(c)} | {margin} |")
    lines += ["", "## s50 per degradation and model", "", f"![s50 heat map]({plots['_heatmap']})", ""]
    for deg in sorted(p for p in plots if not p.startswith("_")):
        lines += [f"## {deg}", "", f"![{deg}]({plots[deg]})", ""]
        if deg in strips:
            lines += [f"![{deg} examples]({strips[deg]})", ""]
    md = "\n".join(lines) + "\n"
    (out / "sweep.md").write_text(md)
    (out / "sweep.html").write_text(_html(md))


def sweep(out: str | Path, models: list[str | Backend], grid: list[float], sources: list[str] | None = None,
          degradations: list[str] | None = None, seed: int = 0, device: str = "auto", limit: int | None = None,
          batch_size: int = 16, model_batch_size: int = 8, n_boot: int = 1000, progress: bool = True,
          template: str = "medq-deg", severities_file: str | None = None, engine: str = "local",
          workers: int | None = None, replicas: int | None = None) -> dict[str, Any]:
    """Run every model over the grid (``s = 0`` is L0) and write sweep.json, sweep.md/html and plots."""
    from .api import EvalError, run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not models:
        raise EvalError("sweep needs at least one --model")
    severities = tuple(s for s in grid if s > 0)
    grid = sorted({0.0, *severities})
    strips = ExampleStrips(out)
    curves: dict[str, dict[str, Any]] = {}
    for spec in models:
        label = spec if isinstance(spec, str) else spec.name
        run_dir = out / "runs" / safe_name(label)
        try:
            run(run_dir, model=spec, sources=sources, degradations=degradations, levels=(0,), severities=severities,
                seed=seed, device=device, limit=limit, batch_size=batch_size, model_batch_size=model_batch_size,
                label=label, progress=progress, n_boot=min(n_boot, 200), template=template, on_record=strips,
                severities_file=severities_file, engine=engine, workers=workers, replicas=replicas)
        except EvalError as e:
            if "could read none" not in str(e):
                raise
        recs = [r for r in Store(run_dir).records.values()
                if r["label"] == label and r.get("kind", "mcq") == "mcq" and not r.get("abstained")]
        degs = sorted({r["degradation"] for r in recs if r["degradation"] != "none"})
        curves[label] = {d: breaking_point(recs, d, n_boot) for d in degs}
    result = {"grid": grid, "models": list(curves), "curves": curves, "comparison": comparison(curves)}
    (out / "sweep.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    plots = _plots(result, out)
    degs = sorted({d for per in curves.values() for d in per})
    strips_png = {d: p for d in degs if (p := _strip(out, d, grid, out))}
    _report(result, plots, strips_png, out)
    return result
