"""run / eval / report end to end: exact accuracy of a forced model, SIGKILL resume, a MedQ-Deg TSV, merging."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medq_synth.eval.api import evaluate_data, report, run
from medq_synth.eval.backends import Backend, Decoding, Reply
from medq_synth.eval.parsing import UNPARSED
from medq_synth.sources import open_source

from . import tiny_vlm

ROOT = Path(__file__).resolve().parents[1]


class Scripted(Backend):
    """Answers ``text`` to everything (``None``: garbage that no parser accepts)."""

    def __init__(self, text: str | None, name: str = "scripted") -> None:
        self.text, self.name = text, name

    def answer(self, queries, decoding):
        return [Reply(text=self.text if self.text is not None else "I can't assess this image, sorry.")
                for _ in queries]


def _preds(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def test_forced_tiny_model_accuracy_is_exact(tmp_path):
    pytest.importorskip("transformers")
    from medq_synth.eval.backends import load_backend

    folder = tiny_vlm.build("qwen2_vl", tmp_path / "m")
    b = load_backend(f"hf:{folder}", device="cpu")
    tiny_vlm.force_letter(b, "A")
    m = run(tmp_path / "out", model=b, degradations=["gaussian_noise", "rotation"], limit=8, device="cpu",
            decoding=Decoding(max_new_tokens=2), progress=False, n_boot=50)
    preds = _preds(tmp_path / "out")
    # --limit 8 = 6 phantoms with a question + 2 real images without; each: L0 + 2 degradations x L1/L2, except
    # that questions about where a lesion is are not asked of rotated images (their answer would change)
    src = open_source("phantoms")
    items = [it for ref in src.refs()[:8] for it in src.load(ref) if it.qa]
    spatial = sum(it.qa.extra["task"] in ("lesion_presence", "lesion_side") for it in items)
    assert len(items) == 6 and spatial >= 1
    assert len(preds) == 6 * 5 - 2 * spatial and all(p["pred"] == "A" for p in preds)
    assert m["run"]["skipped"] == {"no multiple-choice question": 2 * 5,
                                   "spatial question under a geometric degradation": 2 * spatial}
    assert not any(p["degradation"] == "rotation" and p["task"] != "lesion_count" for p in preds)
    lab = m["labels"][b.name]
    assert lab["accuracy"] == np.mean([p["answer"] == "A" for p in preds])
    for lv in ("L0", "L1", "L2"):
        at = [p["answer"] == "A" for p in preds if p["level_key"] == lv]
        assert lab["accuracy_by"]["level"][lv] == pytest.approx(np.mean(at), abs=1e-9)
    assert lab["confidence"]["letter"]["mean_confidence"] > 0.99


def test_garbage_outputs_are_unparsed_and_counted(tmp_path):
    m = run(tmp_path, model=Scripted(None, "garbage"), degradations=["gaussian_blur"], limit=4, device="cpu",
            progress=False, n_boot=20)
    lab = m["labels"]["garbage"]
    assert lab["accuracy"] == 0.0 and lab["parse_rate"] == 0.0
    assert lab["parse_rate_by_level"] == {"L0": 0.0, "L1": 0.0, "L2": 0.0}
    assert all(p["pred"] == UNPARSED for p in _preds(tmp_path))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "medq_synth", *args]


def _comparable(out: Path) -> tuple[set, dict]:
    lines = set((out / "predictions.jsonl").read_text().splitlines())
    metrics = json.loads((out / "metrics.json").read_text())
    return lines, metrics["labels"]


def test_sigkill_resume_gives_the_same_predictions_and_metrics(tmp_path):
    args = ["run", "--limit", "8", "--degradations", "gaussian_noise,rotation,motion_blur", "--device", "cpu",
            "--model-batch-size", "2", "--batch-size", "4", "--bootstrap", "50", "--no-progress"]
    ref = tmp_path / "ref"
    subprocess.run(_cli(*args, "--out", str(ref)), check=True, capture_output=True, cwd=ROOT)
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli(*args, "--out", str(out)), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pred = out / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not pred.exists() or len(pred.read_bytes().splitlines()) < 10):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(pred.read_bytes().splitlines())
    assert partial >= 10
    res = subprocess.run(_cli(*args, "--out", str(out)), check=True, capture_output=True, text=True, cwd=ROOT)
    assert "already done" in res.stdout
    lines, metrics = _comparable(out)
    ref_lines, ref_metrics = _comparable(ref)
    assert partial < len(ref_lines), "the kill should land mid-run"
    assert lines == ref_lines
    assert metrics == ref_metrics


def _png_b64(value: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((32, 32), value, np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class ByBrightness(Backend):
    name = "by-brightness"

    def answer(self, queries, decoding):
        return [Reply(text="A" if q.images[0].mean() < 128 else "B") for q in queries]


def test_eval_medq_deg_tsv(tmp_path):
    """A TSV in MedQ-Deg's released format: accuracy by level, modality and degradation type equal the
    values computed here from the rows; bad rows are recorded, not fatal."""
    cols = ["index", "image", "question", "A", "B", "C", "D", "E", "answer", "modality", "degradation_type",
            "degradation_severity", "source"]
    plan = [("CT", "none", ""), ("CT", "low_dose", "L1"), ("CT", "low_dose", "L2"), ("MRI", "none", ""),
            ("MRI", "ghosting_artifact", "mild"), ("MRI", "ghosting_artifact", "severe"), ("X-ray", "none", ""),
            ("X-ray", "rotation_artifact", "L1"), ("X-ray", "rotation_artifact", "L2")]
    level = {"": "L0", "L1": "L1", "mild": "L1", "L2": "L2", "severe": "L2"}
    rows, expect, k = [], [], 0
    for q in range(3):
        for mod, typ, sev in plan:
            ans = "ABC"[(q + len(mod)) % 3]                 # one answer per base item, kept across levels
            value = (k * 37 + 11) % 256
            rows.append([str(k), _png_b64(value), f"Question {q} about {mod}?", "yes", "no", "maybe", "", "", ans,
                         mod, typ, sev, "GMAI"])
            expect.append({"level": level[sev], "modality": mod, "deg": typ, "base": (q, mod),
                           "correct": ("A" if value < 128 else "B") == ans})
            k += 1
    rows.append([str(k), "not-base64!!", "Q?", "a", "b", "", "", "", "A", "CT", "none", "", "GMAI"])
    rows.append([str(k + 1), rows[0][1], "Q?", "a", "b", "", "", "", "", "CT", "none", "", "GMAI"])
    tsv = tmp_path / "MedQ-Robust-simulate-dev.tsv"
    tsv.write_text("\t".join(cols) + "\n" + "".join("\t".join(r) + "\n" for r in rows))
    m = evaluate_data(tsv, tmp_path / "out", model=ByBrightness(), progress=False, n_boot=50)
    lab = m["labels"]["by-brightness"]
    assert lab["n"] == 27

    def mean(sel):
        return pytest.approx(np.mean([e["correct"] for e in expect if sel(e)]))

    assert lab["accuracy_by"]["level"] == {lv: mean(lambda e, lv=lv: e["level"] == lv) for lv in ("L0", "L1", "L2")}
    mods = {"CT": "ct", "MRI": "mri", "X-ray": "xray"}
    assert lab["accuracy_by"]["modality"] == {mods[x]: mean(lambda e, x=x: e["modality"] == x) for x in mods}
    for typ in ("low_dose", "ghosting_artifact", "rotation_artifact"):
        assert lab["accuracy_by"]["degradation"][typ] == mean(lambda e, t=typ: e["deg"] == t)
        bases = {e["base"] for e in expect if e["deg"] == typ}
        drop = np.mean([e["correct"] for e in expect if e["deg"] == typ and e["level"] == "L2"]) - np.mean(
            [e["correct"] for e in expect if e["level"] == "L0" and e["base"] in bases])
        assert lab["drops"]["by_degradation"][typ]["L2-L0"] == pytest.approx(drop)
    assert lab["accuracy_by"]["category"]["noise"] == lab["accuracy_by"]["degradation"]["low_dose"]
    errors = [json.loads(x) for x in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["item"] for e in errors) == [str(k), str(k + 1)]
    assert "answer ''" in " ".join(e["reason"] for e in errors)
    assert (tmp_path / "out" / "report.html").exists()
    assert not (tmp_path / "out" / "plots" / "reliability.png").exists()       # no confidence source: no diagram


def test_report_merges_models_and_cli_prints_table(tmp_path):
    a, b = tmp_path / "obs", tmp_path / "rnd"
    args = ["--limit", "4", "--degradations", "gaussian_noise", "--device", "cpu", "--bootstrap", "20", "--no-progress"]
    r = subprocess.run(_cli("run", *args, "--out", str(a)), capture_output=True, text=True, cwd=ROOT, check=True)
    assert "cho" in r.stdout and "L2" in r.stdout
    subprocess.run(_cli("run", *args, "--model", "random", "--trials", "3", "--out", str(b)), check=True,
                   capture_output=True, cwd=ROOT)
    m = report([a, b], tmp_path / "merged", n_boot=20)
    assert set(m["labels"]) == {"cho", "random"}
    assert set(m["labels"]["random"]["confidence"]) == {"letter", "vote"}
    md = (tmp_path / "merged" / "report.md").read_text()
    assert "| cho |" in md and "| random |" in md
    # the plots hold data, not just axes: the first series colour (matplotlib's C0) is drawn in each, and the
    # per-degradation figure has one panel per model with its line in each half
    from PIL import Image

    c0_rgb = np.array([31, 119, 180])
    for png, colour in (("accuracy_by_degradation", c0_rgb), ("confidence_vs_accuracy", c0_rgb),
                        ("reliability", 0.7 * c0_rgb + 0.3 * 255)):         # bars at alpha 0.7 on white
        img = np.asarray(Image.open(tmp_path / "merged" / "plots" / f"{png}.png").convert("RGB")).astype(int)
        c0 = (np.abs(img - colour).sum(axis=-1) < 30)
        assert c0.sum() > 50, png
        if png == "accuracy_by_degradation":
            half = img.shape[1] // 2
            assert c0[:, :half].sum() > 20 and c0[:, half:].sum() > 20
    bad = subprocess.run(_cli("run", "--out", str(tmp_path / "x"), "--model", "nope:thing"), capture_output=True,
                         text=True, cwd=ROOT)
    assert bad.returncode == 2 and "unknown model spec" in bad.stderr


def test_eval_generate_folder(default_run, tmp_path):
    """``eval --data DIR`` on a folder written by generate: every output with a question is asked once."""
    m = evaluate_data(default_run, tmp_path, model="random", decoding=Decoding(trials=3), progress=False, n_boot=20)
    rows = [json.loads(x) for x in (default_run / "manifest.jsonl").read_text().splitlines()]
    asked = [r for r in rows if r.get("question")]
    lab = m["labels"]["random"]
    assert lab["n"] == len(asked) and set(lab["accuracy_by"]["level"]) == {"L0", "L1", "L2"}
    assert {p["output_id"] for p in _preds(tmp_path)} == {r["id"] for r in asked}
    again = evaluate_data(default_run, tmp_path, model="random", decoding=Decoding(trials=3), progress=False,
                          n_boot=20)
    assert again["run"]["answered"] == 0 and again["run"]["skipped_done"] == len(asked)
    assert again["labels"] == m["labels"]


def test_verbal_template_records_verbal_confidence(tmp_path):
    m = run(tmp_path, model=Scripted("B\nConfidence: 80%", "verbal"), template="verbal",
            degradations=["gaussian_noise"], limit=4, device="cpu", progress=False, n_boot=20)
    c = m["labels"]["verbal"]["confidence"]["verbal"]
    assert c["mean_confidence"] == pytest.approx(0.8)
    acc = m["labels"]["verbal"]["accuracy"]
    assert c["calibration_shift"] == pytest.approx(0.8 - acc) and c["brier_top1"] == pytest.approx(
        acc * 0.04 + (1 - acc) * 0.64)


def test_default_model_abstains_instead_of_guessing(tmp_path, capsys):
    """`eval --data real.tsv` without --model: the observer cannot read these questions, abstains on every
    one, and the run says so and exits non-zero - no "always A" accuracy. On the phantoms it reads the
    lesion questions and reports its coverage."""
    from medq_synth import generate
    from medq_synth.cli import main

    generate("phantoms:2", tmp_path / "gen", degradations=["gaussian_noise"], device="cpu", progress=False,
             export_tsv=True)
    tsv = tmp_path / "gen" / "benchmark.tsv"          # no task column: questions the observer cannot read
    assert main(["eval", "--data", str(tsv), "--out", str(tmp_path / "e"), "--no-progress", "--bootstrap", "10"]) == 2
    err = capsys.readouterr().err
    assert "could read none of the" in err and "--model" in err
    preds = _preds(tmp_path / "e")
    assert preds and all(p["abstained"] and p["pred"] is None and p["correct"] is None for p in preds)
    m = run(tmp_path / "r", degradations=["gaussian_noise"], limit=8, device="cpu", progress=False, n_boot=10)
    lab = m["labels"]["cho"]
    assert 0 < lab["coverage"] <= 1 and lab["n"] + lab["n_abstained"] == len(_preds(tmp_path / "r"))
    assert lab["n"] == sum(not p.get("abstained") for p in _preds(tmp_path / "r"))


def test_default_job_tells_the_story(tmp_path, capsys):
    """The README's main job (`medq-synth run --out DIR`, every default): the cho observer reads >= 90 % of the
    clean phantom questions, and its mean accuracy over the information-removing degradations falls strictly
    from L0 to L1 to L2 - recomputed here from predictions.jsonl; the table and report say so."""
    from medq_synth.cli import main
    from medq_synth.information import INFORMATION_REMOVING

    assert main(["run", "--out", str(tmp_path), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    preds = [p for p in _preds(tmp_path) if not p.get("abstained")]
    l0 = [p["correct"] for p in preds if p["level"] == 0]
    assert len(l0) >= 20 and np.mean(l0) >= 0.9
    per_deg = {}
    for d in {p["degradation"] for p in preds} & set(INFORMATION_REMOVING):
        bases = {p["base_id"] for p in preds if p["degradation"] == d}
        per_deg[d] = [np.mean([p["correct"] for p in preds if p["base_id"] in bases
                               and (p["level"] == 0 or p["degradation"] == d) and p["level"] == lv])
                      for lv in (0, 1, 2)]
    assert {"gaussian_noise", "gaussian_blur", "low_resolution", "ct_low_dose", "ct_sparse_view",
            "ct_limited_angle", "mri_undersampling"} <= set(per_deg)
    mean = np.mean(list(per_deg.values()), axis=0)
    assert mean[0] > mean[1] > mean[2], per_deg
    lab = json.loads((tmp_path / "metrics.json").read_text())["labels"]["cho"]
    info = lab["information_removing"]
    assert set(info["degradations"]) == set(per_deg) and info["falls_strictly"]
    np.testing.assert_allclose([info["mean_accuracy_by_level"][k] for k in ("L0", "L1", "L2")], mean, atol=1e-12)
    row = next(line for line in printed.splitlines() if "info-removing" in line)
    assert [float(v) for v in row.split()[-3:]] == [round(100 * v, 1) for v in mean]
    md = (tmp_path / "report.md").read_text()
    assert "falls strictly from L0 to L1 to L2" in md and all(d in md for d in per_deg)
    det = lab["detectability_by_degradation_level"]       # d' per degradation (modality): lower at L2
    rows = [row for key, row in det.items() if key.split(" (")[0] in per_deg and {"L0", "L2"} <= set(row)]
    assert len(rows) >= 10
    assert np.mean([r["L2"]["d_prime"] for r in rows]) < np.mean([r["L0"]["d_prime"] for r in rows])
