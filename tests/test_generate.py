"""End-to-end `generate`: SSIM ordering, batch-size invariance, kill/resume, manifest and exports."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from medq_synth import generate
from medq_synth.engine import GenerateError
from medq_synth.writer import read_output

from .conftest import read_rows

GENERIC = ["gaussian_noise", "gaussian_blur", "motion_blur", "low_resolution", "adjust_brightness", "exposure",
           "reduce_contrast", "rotation", "movement"]
CT = ["ct_low_dose", "ct_sparse_view", "ct_limited_angle"]
# on MRI items random_motion_artifact is mri_motion (it replaces movement), and six more MRI models join
MRI = ["mri_undersampling", "mri_motion", "mri_ghosting", "mri_bias_field", "mri_spike", "mri_gibbs", "mri_noise"]
# on X-ray items exposure_artifact is xray_exposure (it replaces exposure) and xray_motion_blur joins
XRAY = ["xray_exposure", "xray_motion_blur"]
PATHOLOGY = ["path_bubble", "path_blood_cell", "path_dark_spots"]
# every level pair of these models is checked on every item it applies to
PER_ITEM = CT + MRI + XRAY + PATHOLOGY + ["us_speckle"]
REQUIRED = {"id", "source_id", "modality", "degradation", "category", "level", "severity", "seed", "params", "psnr",
            "ssim", "image", "shard", "key", "question", "options", "answer"}


def file_hashes(out: Path, patterns=("images/**/*.png", "shards/*.h5", "manifest.jsonl", "errors.jsonl")) -> dict:
    files = sorted(p for pat in patterns for p in out.glob(pat))
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_ssim_ordering_on_phantoms(default_run):
    rows = read_rows(default_run)
    ssim = defaultdict(list)
    for r in rows:
        ssim[(r["degradation"], r["level"])].append(r["ssim"])
    for deg in GENERIC:
        l1, l2 = np.mean(ssim[(deg, 1)]), np.mean(ssim[(deg, 2)])
        assert l2 < l1 < 1.0, (deg, l1, l2)
    assert all(s == 1.0 for s in ssim[("none", 0)])
    # the modality models (CT and MRI physics, ultrasound speckle, X-ray exposure and motion, pathology
    # overlays): L2 is worse than L1 on every item they apply to (phantoms, raw multi-coil phantoms, pydicom's
    # real CT and MR slices, scikit-image's immunohistochemistry slide)
    by_item = {(r["source_id"], r["degradation"], r["level"]): r["ssim"] for r in rows if r["degradation"] in PER_ITEM}
    assert len(by_item) == 2 * (8 * len(CT) + 8 * len(MRI) + 6 * len(XRAY) + 1 * len(PATHOLOGY) + 6)
    for (src, deg, level), s in by_item.items():
        if level == 2:
            assert s < by_item[(src, deg, 1)] < 1.0, (src, deg)
    assert not any(r["degradation"] == "movement" for r in rows if r["modality"] == "mri")
    assert not any(r["degradation"] == "exposure" for r in rows if r["modality"] == "xray")


def test_manifest_rows_are_complete_and_consistent(default_run):
    rows = read_rows(default_run)
    n_items = len({r["source_id"] for r in rows})
    assert n_items == 30
    n_ct = len({r["source_id"] for r in rows if r["modality"] == "ct"})
    assert n_ct == 8
    n = {m: len({r["source_id"] for r in rows if r["modality"] == m}) for m in ("mri", "xray", "ultrasound",
                                                                                 "histopathology")}
    assert n == {"mri": 8, "xray": 6, "ultrasound": 6, "histopathology": 1}
    assert len(rows) == (n_items * (1 + 2 * len(GENERIC)) + n_ct * 2 * len(CT) + n["mri"] * 2 * (len(MRI) - 1)
                         + n["xray"] * 2 * (len(XRAY) - 1) + n["ultrasound"] * 2 + n["histopathology"] * 2 * 3)
    assert len({r["id"] for r in rows}) == len(rows)
    modalities = {r["modality"] for r in rows}
    assert modalities == {"ct", "mri", "ultrasound", "xray", "fundus", "histopathology"}
    for r in rows:
        assert REQUIRED <= set(r)
        assert (default_run / r["image"]).exists()
    # physical arrays round-trip to the display PNG through the recorded window
    from PIL import Image

    for r in rows[::37]:
        phys, disp = read_output(default_run, r)
        lo, hi = r["window"]
        v = np.clip((phys - lo) / (hi - lo), 0, 1)
        assert np.abs(np.round(v * 255) - disp.astype(float)).max() <= 1
        png = np.asarray(Image.open(default_run / r["image"]))
        assert np.array_equal(png, disp[0] if disp.shape[0] == 1 else np.moveaxis(disp, 0, -1))
        assert phys.dtype == np.float32 and disp.dtype == np.uint8
    ct = next(r for r in rows if r["source_id"] == "phantoms/ct-000" and r["level"] == 0)
    assert ct["units"] == "HU" and ct["window"] == [-160.0, 240.0]
    rot = next(r for r in rows if r["source_id"] == "phantoms/ct-000" and r["degradation"] == "rotation"
               and r["level"] == 2)
    assert abs(rot["params"]["angle_deg"]) == 153.0
    assert rot["params"]["fill"] == pytest.approx((-1000 + 160) / 400)


def test_phantom_answers_follow_from_construction(default_run):
    rows = [r for r in read_rows(default_run) if r["level"] == 0 and r.get("task")]
    assert len(rows) == 24
    for r in rows:
        lesions = r["lesions"]
        if r["task"] == "lesion_count":
            assert r["options"][r["answer"]] == str(len(lesions))
        elif r["task"] == "lesion_side":
            assert (r["answer"] == "A") == (lesions[0][0] < 128)
        else:
            qx, qy = ("right" in r["region"]), ("lower" in r["region"])
            inside = any((x >= 128) == qx and (y >= 128) == qy for x, y, *_ in lesions)
            assert (r["answer"] == "A") == inside


# the sign of each lesion kind's contrast against its surroundings, in the clean image
LESION_SIGN = {"hypodense": -1, "hyperdense": 1, "hyperintense": 1, "cyst": -1, "hyperechoic": 1}


def test_phantom_lesions_are_in_the_pixels(default_run):
    """The gold answers come from the lesion list: check every listed lesion is in the clean image (its disc
    differs from the ring around it with the kind's sign, by at least 3x the ring's own noise / 2 % of the
    window), so that an answer derived from the list is an answer about the pixels."""
    # Radiographs are left out: a nodule over a rib has no local background model to test it against.
    rows = [r for r in read_rows(default_run) if r["level"] == 0 and r.get("task") and r["modality"] != "xray"]
    checked = 0
    for r in rows:
        phys, _ = read_output(default_run, r)
        img = phys[0].astype(np.float64)
        yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
        lo, hi = r["window"]
        for x, y, rad, kind in r["lesions"]:
            d = np.hypot(xx + 0.5 - x, yy + 0.5 - y)
            inner, outer = d <= 0.6 * rad, (d >= 1.5 * rad) & (d <= 2.2 * rad)
            # the surroundings as a plane fitted to the ring (a radiograph's background slopes)
            basis = np.stack([xx, yy, np.ones_like(xx)], axis=-1).astype(np.float64)
            coef, *_ = np.linalg.lstsq(basis[outer], img[outer], rcond=None)
            resid = img[outer] - basis[outer] @ coef
            delta = LESION_SIGN[kind] * (img[inner] - basis[inner] @ coef).mean()
            floor = max(0.02 * (hi - lo), 3 * resid.std() / np.sqrt(inner.sum()))
            assert delta > floor, (r["source_id"], kind, delta, floor)
            checked += 1
    assert checked >= 18


def test_contact_sheet_and_tsv_export(default_run):
    from PIL import Image

    sheet = Image.open(default_run / "contact_sheet.png")
    assert sheet.size[0] > 4 * 3 * 100 and sheet.size[1] > 9 * 100
    with (default_run / "benchmark.tsv").open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    # 6 phantoms with questions per modality: CT, MRI, ultrasound (speckle) and X-ray (X-ray motion blur) models
    assert len(rows) == 24 * 19 + 6 * 2 * len(CT) + 6 * 2 * (len(MRI) - 1) + 6 * 2 + 6 * 2
    assert {r["degradation_severity"] for r in rows} == {"L0", "L1", "L2"}
    assert {"downsample_artifact", "gaussian_noise", "none", "low_dose", "sparse_view", "limited_angle",
            "undersampling_artifact", "ghosting_artifact", "bias_field_artifact", "mri_spike", "mri_gibbs",
            "mri_noise"} <= {r["degradation_type"] for r in rows}
    motion = [r for r in rows if r["degradation_type"] == "random_motion_artifact"]
    assert len(motion) == 24 * 2 and sum(r["modality"] == "MRI" for r in motion) == 6 * 2
    # the exported TSV is a valid source: its clean rows become items again
    out = default_run.parent / "from_tsv"
    s = generate(str(default_run / "benchmark.tsv"), out, degradations=["gaussian_noise"], levels=(0, 1),
                 device="cpu", progress=False)
    assert s.n_items == 24
    again = read_rows(out)
    assert {r["answer"] for r in again} <= {"A", "B", "C", "D"}


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "medq_synth", *args], capture_output=True, text=True, **kw)


def test_batch_size_does_not_change_outputs(tmp_path):
    common = ["generate", "--source", "phantoms:1", "--device", "cpu", "--no-progress", "--seed", "7"]
    a, b = tmp_path / "bs1", tmp_path / "bs16"
    assert _run_cli([*common, "--out", str(a), "--batch-size", "1"]).returncode == 0
    assert _run_cli([*common, "--out", str(b), "--batch-size", "16"]).returncode == 0
    assert read_rows(a) == read_rows(b)
    ha, hb = file_hashes(a), file_hashes(b)
    assert len(ha) > 100 and ha == hb


def test_seed_changes_random_parts_only(tmp_path):
    kw = dict(degradations=["gaussian_noise", "gaussian_blur"], levels=(1,), device="cpu", progress=False, limit=2)
    generate("phantoms", tmp_path / "s0", seed=0, **kw)
    generate("phantoms", tmp_path / "s1", seed=1, **kw)
    r0, r1 = read_rows(tmp_path / "s0"), read_rows(tmp_path / "s1")
    for x, y in zip(r0, r1, strict=True):
        same = (x["image"] == y["image"]) and (x["psnr"] == y["psnr"])
        assert same == (x["degradation"] == "gaussian_blur")


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    args = ["generate", "--source", "phantoms", "--limit", "12", "--shard-items", "2", "--device", "cpu",
            "--no-progress", "--batch-size", "8"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert _run_cli([*args, "--out", str(ref)]).returncode == 0
    assert len(read_rows(ref)) >= 200
    proc = subprocess.Popen([sys.executable, "-m", "medq_synth", *args, "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "parts" / "shard-00002.jsonl").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "manifest.jsonl").exists(), "the run finished before it could be killed"
    assert (killed / "parts" / "shard-00002.jsonl").exists()
    r = _run_cli([*args, "--out", str(killed)])
    assert r.returncode == 0, r.stderr
    assert "shards resumed" in r.stdout
    assert read_rows(killed) == read_rows(ref)
    assert file_hashes(killed) == file_hashes(ref)
    assert not list(killed.rglob("*.tmp-*"))


def test_rerun_with_other_arguments_is_refused(tmp_path):
    generate("phantoms", tmp_path, limit=1, levels=(0,), device="cpu", progress=False)
    with pytest.raises(GenerateError, match="other arguments"):
        generate("phantoms", tmp_path, limit=1, levels=(0,), seed=3, device="cpu", progress=False)


def test_continuous_severity_sweep(tmp_path):
    s = generate("phantoms", tmp_path, degradations=["gaussian_blur"], levels=(0,), severities=(0.2, 0.5, 0.9),
                 limit=4, device="cpu", progress=False)
    rows = [r for r in read_rows(tmp_path) if r["degradation"] == "gaussian_blur"]
    assert s.n_outputs == 4 * 4
    by_item = defaultdict(list)
    for r in rows:
        assert r["level"] is None
        by_item[r["source_id"]].append((r["severity"], r["ssim"], r["params"]["sigma_px"]))
    for vals in by_item.values():
        vals.sort()
        assert [v[1] for v in vals] == sorted((v[1] for v in vals), reverse=True)   # SSIM falls with severity
        assert [v[2] for v in vals] == sorted(v[2] for v in vals)


def test_list_command_shows_generic_table():
    r = _run_cli(["list"])
    assert r.returncode == 0
    for g in GENERIC:
        assert g in r.stdout
    assert "L1 0.048  L2 0.079" in r.stdout and "L1 3  L2 7" in r.stdout
    assert "provenance" in r.stdout


def test_summary_and_exit_code_of_cli(tmp_path):
    r = _run_cli(["generate", "--source", "phantoms", "--limit", "2", "--out", str(tmp_path / "o"),
                  "--degradations", "gaussian_noise,not_a_degradation", "--device", "cpu", "--no-progress"])
    assert r.returncode == 0, r.stderr
    assert "6 outputs from 2 items" in r.stdout
    assert "unknown degradation 'not_a_degradation'" in r.stdout
    errs = [json.loads(x) for x in (tmp_path / "o" / "errors.jsonl").read_text().splitlines()]
    assert errs[0]["stage"] == "arguments"


def test_engine_ray_without_ray_installed_says_how_to_get_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)          # as if the extra were not installed
    with pytest.raises(GenerateError, match=r"pip install 'medq-synth\[ray\]'"):
        generate("phantoms:1", tmp_path, degradations=["gaussian_noise"], device="cpu", progress=False,
                 engine="ray")
