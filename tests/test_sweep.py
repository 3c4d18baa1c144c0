"""Severity sweeps: the breaking-point statistics against analytic curves, and `sweep` end to end with the
model observer (cho) and a tiny forced-answer model, including a SIGKILL and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from medq_synth.eval.sweep_stats import breaking_point, crossing, parse_grid

from . import tiny_vlm

ROOT = Path(__file__).resolve().parents[1]


def test_parse_grid():
    assert parse_grid("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_grid("0:1:0.1")[-1] == 1.0 and len(parse_grid("0:1:0.1")) == 11
    assert parse_grid("0.5,0.1,1") == [0.1, 0.5, 1.0]
    for bad in ("0:2:0.5", "1:0:0.1", "a:b:c", "0:1:0"):
        with pytest.raises(ValueError):
            parse_grid(bad)


def _records(acc_of_s, grid, n_items=400, k=4, seed=0) -> list[dict]:
    """Synthetic answers: at severity s each base item is right with probability acc_of_s(s)."""
    rng = np.random.default_rng(seed)
    recs = []
    for i in range(n_items):
        for s in grid:
            right = bool(rng.uniform() < acc_of_s(s))
            recs.append({"base_id": f"b{i}", "level": 0 if s == 0 else None, "severity": s, "K": k,
                         "degradation": "none" if s == 0 else "blur", "correct": right})
    return recs


def test_s50_of_a_linear_decline_is_analytic():
    # accuracy 1 - 0.75 s, chance 1/4: halfway from 1 to 0.25 is 0.625, reached at s = 0.5
    grid = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    c = breaking_point(_records(lambda s: 1 - 0.75 * s, grid), "blur", n_boot=300)
    assert c["s50_status"] == "reached" and c["s50"] == pytest.approx(0.5, abs=0.05)
    assert c["s50_ci"]["lo"] < 0.5 < c["s50_ci"]["hi"] and c["s50_ci"]["hi"] - c["s50_ci"]["lo"] < 0.2
    assert c["chance"] == 0.25 and all(a >= b for a, b in zip(c["fit"], c["fit"][1:], strict=False))
    assert all(lo <= a <= hi for lo, a, hi in zip(c["band_lo"], c["accuracy"], c["band_hi"], strict=True))


def test_s50_not_reached_and_undefined():
    grid = [0.0, 0.5, 1.0]
    flat = breaking_point(_records(lambda s: 0.9 - 0.1 * s, grid), "blur", n_boot=100)
    assert flat["s50"] is None and flat["s50_status"] == "not reached"
    chance = breaking_point(_records(lambda s: 0.25, grid), "blur", n_boot=100)
    assert chance["s50"] is None and chance["s50_status"].startswith("undefined")
    assert crossing(np.array([0.0, 1.0]), np.array([1.0, 0.0]), 0.25) == pytest.approx(0.75)


@pytest.fixture(scope="module")
def forced(tmp_path_factory):
    pytest.importorskip("transformers")
    from medq_synth.eval.backends import load_backend

    b = load_backend(f"hf:{tiny_vlm.build('qwen2_vl', tmp_path_factory.mktemp('m') / 'm')}", device="cpu")
    tiny_vlm.force_letter(b, "A")
    b.name = "forced-A"
    return b


def test_sweep_writes_curves_breaking_points_and_heat_map(tmp_path, forced):
    from medq_synth.eval.sweep import sweep

    res = sweep(tmp_path, ["cho", forced], [0.0, 0.5, 1.0], sources=["phantoms:2"],
                degradations=["gaussian_noise", "gaussian_blur"], device="cpu", progress=False, n_boot=100)
    assert set(res["models"]) == {"cho", "forced-A"}
    for deg in ("gaussian_noise", "gaussian_blur"):
        c = res["curves"]["forced-A"][deg]
        assert c["s50"] is None and c["s50_status"] in ("not reached", "undefined (clean accuracy at chance)")
        assert len(set(c["accuracy"])) == 1              # a forced answer does not change with the image
        assert [r["model"] for r in res["comparison"][deg]][-1] in ("forced-A", "cho")
        assert (tmp_path / f"plots/curve_{deg}.png").exists() and (tmp_path / f"plots/examples_{deg}.png").exists()
    assert (tmp_path / "plots/s50_heatmap.png").exists()
    md = (tmp_path / "sweep.md").read_text()
    assert "Which model breaks first" in md and "examples_gaussian_blur.png" in md
    assert json.loads((tmp_path / "sweep.json").read_text())["grid"] == [0.0, 0.5, 1.0]


def test_killed_sweep_resumes_to_identical_results(tmp_path):
    args = [sys.executable, "-m", "medq_synth", "sweep", "--source", "phantoms:2", "--grid", "0:1:0.5",
            "--degradations", "gaussian_noise,motion_blur", "--model", "observer", "--model", "random",
            "--device", "cpu", "--bootstrap", "50", "--model-batch-size", "2", "--batch-size", "2", "--no-progress"]
    subprocess.run([*args, "--out", str(tmp_path / "ref")], check=True, capture_output=True, cwd=ROOT)
    out = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pred = out / "runs" / "observer" / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not pred.exists() or len(pred.read_bytes().splitlines()) < 6):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "sweep.json").exists()
    subprocess.run([*args, "--out", str(out)], check=True, capture_output=True, cwd=ROOT)
    assert (out / "sweep.json").read_text() == (tmp_path / "ref" / "sweep.json").read_text()
    ref_ex = sorted(p.relative_to(tmp_path / "ref") for p in (tmp_path / "ref" / "examples").rglob("*.png"))
    assert sorted(p.relative_to(out) for p in (out / "examples").rglob("*.png")) == ref_ex
