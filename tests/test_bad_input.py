"""Bad input is reported with a one-line reason and the run goes on (acceptance 6)."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medq_synth import generate
from medq_synth.engine import GenerateError

from .conftest import read_rows


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _grey(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, n), dtype=np.uint8)


def _tsv(path: Path, rows: list[dict], cols: list[str]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, cols, delimiter="\t", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict:
    import nibabel as nib
    import pydicom
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("bad")
    folder = root / "folder"
    for sub in ("ct", "xray", "mri", "misc"):
        (folder / sub).mkdir(parents=True)
    (folder / "ct" / "good.png").write_bytes(_png(_grey()))
    (folder / "ct" / "truncated.png").write_bytes(_png(_grey(seed=1))[:200])
    nan = np.zeros((32, 32), np.float32)
    nan[3, 4], nan[5, 6] = np.nan, np.inf
    np.save(folder / "ct" / "nan.npy", nan)
    (folder / "xray" / "tiny.png").write_bytes(_png(np.zeros((1, 1), np.uint8)))
    (folder / "misc" / "nomodality.png").write_bytes(_png(_grey(seed=2)))
    vol = np.random.default_rng(0).normal(100, 10, (40, 48, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.diag([0.9, 0.9, 3.0, 1.0])), folder / "mri" / "brain.nii.gz")
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.save_as(folder / "nopixels.dcm")

    manifest = root / "list.jsonl"
    (root / "img.png").write_bytes(_png(_grey(seed=3)))
    manifest.write_text("\n".join([
        json.dumps({"id": "ok", "image": "img.png", "modality": "Ultrasound", "question": "Q?", "A": "x", "B": "y",
                    "answer": "B"}),
        json.dumps({"id": "sonar", "image": "img.png", "modality": "sonar"}),
        "{not json",
    ]) + "\n")

    b64 = base64.b64encode(_png(_grey(seed=4))).decode()
    no_answer = root / "noanswer.tsv"
    _tsv(no_answer, [{"index": i, "image": b64, "question": "Which?", "A": "a", "B": "b", "modality": "MRI"}
                     for i in range(2)], ["index", "image", "question", "A", "B", "modality"])
    no_image = root / "noimage.tsv"
    _tsv(no_image, [{"index": 0, "question": "Which?", "A": "a", "B": "b", "answer": "A", "modality": "CT"}],
         ["index", "question", "A", "B", "answer", "modality"])
    return {"folder": folder, "manifest": manifest, "no_answer": no_answer, "no_image": no_image}


def test_each_bad_input_is_reported_and_valid_items_complete(bad_inputs, tmp_path):
    out = tmp_path / "out"
    args = [sys.executable, "-m", "medq_synth", "generate", "--out", str(out), "--device", "cpu", "--no-progress",
            "--degradations", "gaussian_blur,no_such_degradation", "--levels", "0,1"]
    for key in ("folder", "manifest", "no_answer", "no_image"):
        args += ["--source", str(bad_inputs[key])]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    reasons = {(e.get("item") or e.get("degradation") or e.get("source")): e["reason"] for e in errors}

    def reason_for(fragment: str) -> str:
        hits = [v for k, v in reasons.items() if fragment in str(k)]
        assert hits, f"no error recorded for {fragment}: {reasons}"
        return hits[0]

    assert reason_for("truncated.png").startswith("cannot decode image")
    assert reason_for("nopixels.dcm") == "DICOM has no pixel data (PixelData element missing)"
    assert reason_for("nan.npy") == "image contains 1 NaN and 1 Inf values"
    assert reason_for("tiny.png") == "image is 1x1 px; at least 16x16 is needed"
    assert "no modality" in reason_for("nomodality.png")
    assert reason_for("list/sonar").startswith("unknown modality 'sonar'")
    assert "not valid JSON" in reason_for("list/line3")
    assert reason_for("no_such_degradation").startswith("unknown degradation 'no_such_degradation'")
    assert "no 'answer' column" in reason_for("noanswer.tsv")
    assert "no 'image' or 'image_path' column" in reason_for("noimage.tsv")
    assert "bad inputs skipped (see" in r.stdout and "DICOM has no pixel data" in r.stdout
    assert "INTERNAL" not in r.stdout and r.returncode == 0

    rows = read_rows(out)
    done = {row["source_id"] for row in rows}
    assert done == {"folder/ct/good.png", "folder/mri/brain.nii.gz#z2", "list/ok", "noanswer/0", "noanswer/1"}
    assert len(rows) == 5 * 2
    nii = next(row for row in rows if row["source_id"] == "folder/mri/brain.nii.gz#z2")
    assert nii["meta"]["slice_rule"] == "middle" and nii["meta"]["slice_index"] == 2
    assert nii["spacing_mm"] == [pytest.approx(0.9), pytest.approx(0.9)]
    ct = next(row for row in rows if row["source_id"] == "folder/ct/good.png")
    assert ct["units"] == "HU" and ct["meta"]["display_to_hu_window"] == [-160.0, 240.0]
    no_ans = next(row for row in rows if row["source_id"] == "noanswer/0")
    assert no_ans["answer"] is None and no_ans["options"] == {"A": "a", "B": "b"}


def test_nothing_valid_exits_non_zero_with_reason(bad_inputs, tmp_path):
    r = subprocess.run([sys.executable, "-m", "medq_synth", "generate", "--source", str(bad_inputs["no_image"]),
                        "--out", str(tmp_path / "o"), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "no 'image' or 'image_path' column" in r.stderr
    assert "no 'image' or 'image_path' column" in (tmp_path / "o" / "errors.jsonl").read_text()


def test_all_items_bad_raises(bad_inputs, tmp_path):
    with pytest.raises(GenerateError, match="every item failed"):
        generate(str(bad_inputs["folder"] / "xray"), tmp_path, device="cpu", progress=False)


def test_volume_slice_rules(bad_inputs, tmp_path):
    s = generate(str(bad_inputs["folder"] / "mri"), tmp_path, degradations=["gaussian_noise"], levels=(0,),
                 slice_rule="step:2", device="cpu", progress=False)
    assert s.n_items == 3
    assert sorted(r["source_id"] for r in read_rows(tmp_path)) == [f"mri/brain.nii.gz#z{k}" for k in (0, 2, 4)]


def test_internal_errors_are_not_bad_input(tmp_path, monkeypatch, capsys):
    """A corrupt file is bad input (reason, exit 0); an unexpected exception inside a degradation is a bug:
    recorded as internal, listed apart, exit status 3, while the other outputs are still written."""
    from medq_synth.cli import INTERNAL_ERROR, main
    from medq_synth.physics import generic

    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.png").write_bytes(_png(_grey()))
    (src / "corrupt.png").write_bytes(b"\x89PNG not really")
    args = ["generate", "--source", str(src), "--modality", "mri", "--degradations", "gaussian_blur,gaussian_noise",
            "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    errs = [json.loads(x) for x in (tmp_path / "a/errors.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in errs] == ["input"]

    def broken(v, sigma_px):
        raise IndexError("an off-by-one of ours")

    monkeypatch.setattr(generic, "gaussian_blur", broken)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "b")]) == INTERNAL_ERROR
    printed = capsys.readouterr().out
    assert "1 bad inputs skipped" in printed and "2 INTERNAL ERRORS" in printed and "off-by-one" in printed
    errs = [json.loads(x) for x in (tmp_path / "b/errors.jsonl").read_text().splitlines()]
    internal = [e for e in errs if e["kind"] == "internal"]
    assert len(internal) == 2 and {e["level"] for e in internal} == {"L1", "L2"}
    assert all("test_bad_input.py" in e["where"] for e in internal)
    rows = read_rows(tmp_path / "b")
    assert {(r["degradation"], r["level"]) for r in rows} == {("none", 0), ("gaussian_noise", 1), ("gaussian_noise", 2)}
    # the same bug under `run`: answers for what could be made, and a non-zero exit
    assert main(["run", "--source", "phantoms:1", "--out", str(tmp_path / "c"), "--degradations", "gaussian_blur",
                 "--device", "cpu", "--no-progress", "--bootstrap", "20", "--model", "random"]) == INTERNAL_ERROR
