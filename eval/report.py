"""metrics.json, report.md and report.html with PNG plots, for one run folder or several (a leaderboard)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from .summary import leaderboard, summarise

LEVELS = ("L0", "L1", "L2")


def _fmt(v: Any, pct: bool = True) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{100 * v:.1f}" if pct else f"{v:+.3f}"
    return str(v)


def compute(records: list[dict[str, Any]], unresolved: list[dict[str, Any]], n_boot: int = 1000) -> dict[str, Any]:
    """metrics.json's content: one summary per label, the inter-model tests, judge scores, failures."""
    labels = sorted({r["label"] for r in records})
    per = {}
    for lab in labels:
        recs = [r for r in records if r["label"] == lab]
        failed = sum(1 for e in unresolved if e.get("stage") == "model" and e.get("model") == recs[0]["model"])
        per[lab] = summarise(recs, failed, n_boot)
        judged = [r["judge"] for r in recs if r.get("judge")]
        if judged:
            from .judge import judge_summary

            per[lab]["judge"] = judge_summary(judged)
    data_errors = [e for e in unresolved if e.get("stage") not in ("model", "judge")]
    return {"labels": per, "leaderboard_dke_inter": leaderboard(per), "n_data_errors": len(data_errors),
            "n_judge_errors": sum(e.get("stage") == "judge" for e in unresolved)}


def _plots(metrics: dict[str, Any], out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: list[tuple[str, str]] = []
    (out / "plots").mkdir(exist_ok=True)
    per = {k: v for k, v in metrics["labels"].items() if v.get("n")}
    if not per:
        return plots

    for field, title in (("accuracy_by_degradation_level", "degradation"), ("accuracy_by_category_level", "category")):
        fig, axes = plt.subplots(1, len(per), figsize=(5 * len(per), 3.6), squeeze=False)
        for ax, (lab, m) in zip(axes[0], per.items(), strict=True):
            for name, by_level in m[field].items():
                xs = [lv for lv in LEVELS if lv in by_level]
                ax.plot(range(len(xs)), [by_level[x] for x in xs], marker="o", label=name)
                ax.set_xticks(range(len(xs)), xs)
            ax.set_title(lab, fontsize=9)
            ax.set_ylim(0, 1)
            ax.set_ylabel("accuracy")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6)
        fig.suptitle(f"Accuracy against level, per {title}")
        fig.tight_layout()
        name = f"plots/accuracy_by_{title}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        plots.append((f"Accuracy against level per {title}", name))

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for lab, m in per.items():
        for src, c in m.get("confidence", {}).items():
            xs = [lv for lv in LEVELS if lv in c["mean_confidence_by_level"] and lv in m["accuracy_by"]["level"]]
            if xs:
                ax.plot([m["accuracy_by"]["level"][x] for x in xs], [c["mean_confidence_by_level"][x] for x in xs],
                        marker="o", label=f"{lab} ({src})")
                for x in xs:
                    ax.annotate(x, (m["accuracy_by"]["level"][x], c["mean_confidence_by_level"][x]), fontsize=7)
    ax.set_xlabel("accuracy")
    ax.set_ylabel("mean confidence C = 1 - H / log K")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Confidence against accuracy (above the diagonal: over-confident)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "plots/confidence_vs_accuracy.png", dpi=90)
    plt.close(fig)
    plots.append(("Confidence against accuracy per model and level", "plots/confidence_vs_accuracy.png"))

    pairs = [(lab, src, c) for lab, m in per.items() for src, c in m.get("confidence", {}).items()]
    if pairs:
        fig, axes = plt.subplots(1, len(pairs), figsize=(3.6 * len(pairs), 3.6), squeeze=False)
        for ax, (lab, src, c) in zip(axes[0], pairs, strict=True):
            bins = [b for b in c["reliability"] if b["n"]]
            ax.bar([(b["lo"] + b["hi"]) / 2 for b in bins], [b["acc"] for b in bins], width=0.09, alpha=0.7)
            ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=0.8)
            ax.set_title(f"{lab} ({src})\nECE {c['ece_equal_width_15']:.3f}", fontsize=8)
            ax.set_xlabel("top-1 confidence")
            ax.set_ylabel("accuracy")
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
        fig.tight_layout()
        fig.savefig(out / "plots/reliability.png", dpi=90)
        plt.close(fig)
        plots.append(("Reliability diagrams (10 equal-width bins)", "plots/reliability.png"))
    return plots


def _failure_sheet(records_by_key: dict[str, dict[str, Any]], dirs: list[Path], out: Path) -> str | None:
    import matplotlib.pyplot as plt
    from PIL import Image

    thumbs = sorted(p for d in dirs for p in (d / "failures").glob("*.png") if p.stem in records_by_key)[:12]
    if not thumbs:
        return None
    cols = 4
    rows = (len(thumbs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p in zip(axes.flat, thumbs, strict=False):
        r = records_by_key[p.stem]
        ax.imshow(Image.open(p), cmap="gray")
        q = r["question"] if len(r["question"]) < 60 else r["question"][:57] + "..."
        ax.set_title(f"{r['degradation']} {r['level_key']} | {r['label']}\n{q}\ngold {r['answer']}  "
                     f"answer {r['pred']} ({(r['response'] or '')[:20]!r})", fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "plots/failures.png", dpi=90)
    plt.close(fig)
    return "plots/failures.png"


def _markdown(metrics: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    per = metrics["labels"]
    lines = ["# medq-synth evaluation report", "",
             "Accuracy in %, with each model's parser (`vlmevalkit`: the released MedQ-Deg evaluator, quirks "
             "included; strict parser in brackets); unparsed answers count as wrong. Abstentions (a baseline that "
             "cannot read a question) are excluded from accuracy and reported as coverage. "
             "Calibration Shift = mean C - accuracy (C = 1 - H / log K; positive = over-confident).", "",
             "## Leaderboard", "",
             "| model | parser | n | coverage | L0 | L1 | L2 | L1-L0 | L2-L0 (95% CI) | parse rate L0/L1/L2 | failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lab, m in sorted(per.items(), key=lambda kv: -(kv[1].get("accuracy") or 0)):
        if not m.get("n"):
            continue
        acc, strict = m["accuracy_by"]["level"], m["accuracy_strict_by_level"]
        ci = m["bootstrap_95"]["L2-L0"]
        ci_txt = f"{_fmt(ci['value'])} ({_fmt(ci['lo'])}, {_fmt(ci['hi'])})" if ci["value"] is not None else "-"
        parse = "/".join(_fmt(m["parse_rate_by_level"].get(lv)) for lv in LEVELS)
        head = f"| {lab} | {m.get('parser', '-')} | {m['n']} | {_fmt(m.get('coverage'))} | "
        lines.append(head + " | ".join(f"{_fmt(acc.get(lv))} [{_fmt(strict.get(lv))}]"
                                                          for lv in LEVELS)
                     + f" | {_fmt(m['drops']['L1-L0'])} | {ci_txt} | {parse} | {m['n_failed']} |")
    lines += ["", "## Parsers", "", "Accuracy and parse rate (%) of every model under each parser.", "",
              "| model | parser | accuracy | parse rate | parse rate L0/L1/L2 |", "|---|---|---|---|---|"]
    for lab, m in per.items():
        for name, b in (m.get("by_parser") or {}).items():
            rates = "/".join(_fmt(b["parse_rate_by_level"].get(lv)) for lv in LEVELS)
            lines.append(f"| {lab} | {name} | {_fmt(b['accuracy'])} | {_fmt(b['parse_rate'])} | {rates} |")
    abst = {lab: m for lab, m in per.items() if m.get("n_abstained")}
    if abst:
        lines += ["", "## Abstentions", "", "| model | abstained | coverage L0/L1/L2 | reasons |", "|---|---|---|---|"]
        for lab, m in abst.items():
            cov = "/".join(_fmt(m["coverage_by_level"].get(lv)) for lv in LEVELS)
            why = "; ".join(f"{k} ({v})" for k, v in m["abstain_reasons"].items())
            lines.append(f"| {lab} | {m['n_abstained']} | {cov} | {why} |")
    lines += ["", "## Confidence and calibration", "",
              "| model | source | mean C | shift L0 | shift L1 | shift L2 | ECE-15 width | ECE-15 mass | Brier | AUROC "
              "| intra-model DKE |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for lab, m in per.items():
        for src, c in m.get("confidence", {}).items():
            sh = c["calibration_shift_by_level"]
            auroc = "-" if c["auroc"] is None else f"{c['auroc']:.3f}"
            lines.append(f"| {lab} | {src} | {c['mean_confidence']:.3f} | "
                         + " | ".join(_fmt(sh.get(lv), pct=False) for lv in LEVELS)
                         + f" | {c['ece_equal_width_15']:.3f} | {c['ece_equal_mass_15']:.3f} | {c['brier_top1']:.3f}"
                         f" | {auroc} | {_fmt(c['dunning_kruger_intra'])} |")
    inter = metrics.get("leaderboard_dke_inter") or {}
    if inter:
        lines += ["", "## Inter-model Dunning-Kruger pairs (weaker but more over-confident)", ""]
        for src, by_level in inter.items():
            for lv, pairs in by_level.items():
                for p in pairs:
                    lines.append(f"- {src} {lv}: {p['weaker']} (acc {p['acc'][0]:.3f}, shift {p['shift'][0]:+.3f}) "
                                 f"vs {p['stronger']} (acc {p['acc'][1]:.3f}, shift {p['shift'][1]:+.3f})")
    for lab, m in per.items():
        if not m.get("n"):
            continue
        lines += ["", f"## {lab}: accuracy by group", ""]
        for g, vals in m["accuracy_by"].items():
            if g != "level" and vals:
                lines.append(f"- {g}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in vals.items()))
        lines += ["", "| degradation | L0 | L1 | L2 |", "|---|---|---|---|"]
        for d, by in m["accuracy_by_degradation_level"].items():
            lines.append(f"| {d} | " + " | ".join(_fmt(by.get(lv)) for lv in LEVELS) + " |")
        lines += _information_section(m)
        if m.get("judge"):
            j = m["judge"]
            lines += ["", "Four-axis judge (0-2 each; overall = sum of means, max 8): "
                      + ", ".join(f"{k} {v:.3f}" for k, v in j.items() if isinstance(v, float))]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{t}]({p})" for t, p in plots]
    return "\n".join(lines) + "\n"


def _information_section(m: dict[str, Any]) -> list[str]:
    """Mean accuracy over the information-removing degradations, and the observer's d' / AUC per degradation
    and level where the model reports a decision statistic."""
    lines: list[str] = []
    info = m.get("information_removing")
    if info:
        mean = info["mean_accuracy_by_level"]
        lines += ["", "Information-removing degradations (noise, or an operator with a null space; "
                  "`medq_synth/information.py`): "
                  + ", ".join(f"{d} ({why})" for d, why in info["degradations"].items())
                  + ".", "", "Mean accuracy over them (each degradation weighs the same): "
                  + ", ".join(f"{lv} {_fmt(v)}" for lv, v in mean.items())
                  + (" - falls strictly from L0 to L1 to L2." if info["falls_strictly"]
                     else " - does NOT fall strictly.")]
        if info["not_falling"]:
            lines.append("Among them, accuracy does not fall strictly for: " + ", ".join(info["not_falling"])
                         + " (see d' below: the statistic's separation can fall while every answer stays right).")
        lines.append("The others (brightness, contrast, exposure, rotation, movement, structured artifacts) leave "
                     "the lesion in the image; a reader may still be fooled by them, and their accuracy may stay flat.")
    det = m.get("detectability_by_degradation_level")
    if det:
        lines += ["", "Model observer detectability: d' and AUC of its maximum statistic per image quadrant, "
                  "quadrants with a lesion centre against empty ones (geometric degradations excluded: they move "
                  "the lesions). Per modality: the statistics of different modalities are not on one scale.", "",
                  "| degradation (modality) | d' L0 | d' L1 | d' L2 | AUC L0 | AUC L1 | AUC L2 |",
                  "|---|---|---|---|---|---|---|"]
        for d, row in det.items():
            dp = " | ".join(f"{row[lv]['d_prime']:.2f}" if lv in row else "-" for lv in LEVELS)
            au = " | ".join(f"{row[lv]['auc']:.3f}" if lv in row else "-" for lv in LEVELS)
            lines.append(f"| {d} | {dp} | {au} |")
    return lines


def _html(md: str) -> str:
    """A small self-contained rendering of the report's markdown (tables, headings, lists, images)."""
    body, table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not table:
                body.append("<table>")
                table = True
                body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if table:
            body.append("</table>")
            table = False
        if line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            body.append(f'<figure><img src="{html.escape(src[:-1])}" alt="{html.escape(alt)}">'
                        f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif line.startswith("#"):
            n = len(line) - len(line.lstrip("#"))
            body.append(f"<h{n}>{html.escape(line[n:].strip())}</h{n}>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if table:
        body.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px}img{max-width:100%}")
    return f"<!doctype html><meta charset='utf-8'><title>medq-synth report</title><style>{style}</style>\n" + \
        "\n".join(body) + "\n"


def write_report(out: Path, records: list[dict[str, Any]], unresolved: list[dict[str, Any]],
                 dirs: list[Path] | None = None, extra: dict[str, Any] | None = None, n_boot: int = 1000) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute(records, unresolved, n_boot)
    if extra:
        metrics.update(extra)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True, default=float) + "\n")
    plots = _plots(metrics, out)
    sheet = _failure_sheet({r["key"]: r for r in records}, dirs or [out], out)
    if sheet:
        plots.append(("Example failures (wrong answers with the smallest keys)", sheet))
    md = _markdown(metrics, plots)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(_html(md))
    return metrics


def level_table(metrics: dict[str, Any]) -> str:
    """The per-level table printed at the end of ``run`` / ``eval``."""
    rows = [f"{'model':<28} {'n':>6} " + " ".join(f"{lv:>7}" for lv in LEVELS) + "   parse  cover  shift(L0/L2)"]
    for lab, m in metrics["labels"].items():
        if not m.get("n"):
            if m.get("n_abstained"):
                rows.append(f"{lab[:28]:<28} {0:>6}   abstained on all {m['n_abstained']} questions")
            continue
        acc = m["accuracy_by"]["level"]
        c = next(iter(m.get("confidence", {}).values()), None)
        shift = (f"{c['calibration_shift_by_level'].get('L0', float('nan')):+.3f}/"
                 f"{c['calibration_shift_by_level'].get('L2', float('nan')):+.3f}") if c else "-"
        rows.append(f"{lab[:28]:<28} {m['n']:>6} " + " ".join(f"{_fmt(acc.get(lv)):>7}" for lv in LEVELS)
                    + f"   {_fmt(m['parse_rate']):>5}  {_fmt(m.get('coverage')):>5}  {shift}")
        if info := m.get("information_removing"):
            name = f"  mean of {len(info['degradations'])} info-removing"
            rows.append(f"{name[:28]:<28} {'':>6} " + " ".join(f"{_fmt(info['mean_accuracy_by_level'][lv]):>7}"
                                                             for lv in LEVELS))
    return "\n".join(rows)
