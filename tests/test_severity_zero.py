"""The continuous severity starts at the clean image: severity 0 of every default degradation gives the L0
bytes (the PNG a model sees; the physical values to the float rounding of a k-space model's FFT round trip),
on the embedded phantoms and the real files they include (CT, MRI, ultrasound, X-ray, fundus,
histopathology), and on pydicom's real ultrasound and palette-colour DICOMs."""

from __future__ import annotations

import json
import shutil

import numpy as np
from PIL import Image
from pydicom.data import get_testdata_file

from medq_synth import generate
from medq_synth.degradations import REGISTRY
from medq_synth.writer import read_output


def _check(out) -> set[str]:
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    clean = {r["source_id"]: r for r in rows if r["degradation"] == "none"}
    seen = set()
    for r in rows:
        if r["degradation"] == "none":
            continue
        c = clean[r["source_id"]]
        assert r["severity"] == 0.0
        png, png0 = (np.asarray(Image.open(out / q["image"])) for q in (r, c))
        assert np.array_equal(png, png0), (r["id"], int(np.abs(png.astype(int) - png0).max()))
        lo, hi = c["window"]
        diff = np.abs(read_output(out, r)[0] - read_output(out, c)[0]).max()
        assert diff <= 1e-5 * (hi - lo), (r["id"], diff)
        seen.add(r["degradation"])
    return seen


def test_severity_zero_is_l0_for_every_default_degradation(tmp_path):
    """And what each records beyond its table (drawn, estimated, read from the file) is described in the
    table's ``recorded`` section with its unit, which ``medq-synth list`` prints."""
    import subprocess
    import sys

    out = tmp_path / "out"
    generate(["phantoms:1"], out, levels=(0,), severities=(0.0,), device="cpu", progress=False)
    seen = _check(out)
    default = {d.name for d in REGISTRY if d.in_default}
    assert seen == default, sorted(default - seen)
    engine_context = {"window_lo", "window_hi", "pixel_mm"}
    for r in (json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()):
        if r["degradation"] == "none":
            continue
        table = REGISTRY.resolve(r["degradation"]).table
        assert not set(table.recorded) & set(table.params), table.name
        missing = set(r["params"]) - set(table.params) - set(table.recorded) - engine_context
        assert not missing, (table.name, sorted(missing))
    listed = subprocess.run([sys.executable, "-m", "medq_synth", "list"], capture_output=True, text=True).stdout
    assert "missing_start_deg: degrees" in listed and "phase_encode_vertical: 0/1" in listed


def test_severity_zero_on_real_ultrasound(tmp_path):
    src = tmp_path / "us"
    src.mkdir()
    for name in ("examples_palette.dcm", "examples_rgb_color.dcm"):
        shutil.copy(get_testdata_file(name), src / name)
    out = tmp_path / "out"
    generate([str(src)], out, levels=(0,), severities=(0.0,), device="cpu", progress=False)
    assert "us_speckle" in _check(out)
