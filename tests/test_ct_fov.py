"""CT on real scans: a body cut by the image border is extended before projecting, the limited-angle wedge
moves per item, and severity 0 changes nothing (pydicom's 512^2 head CT, its crops and CT_small)."""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from medq_synth import generate
from medq_synth.physics import ct_fov
from medq_synth.writer import read_output

HEAD = "693_J2KI.dcm"        # a whole head, 512^2 at 0.479 mm


def _hu(name: str) -> tuple[np.ndarray, float]:
    from pydicom.pixels import apply_modality_lut

    ds = pydicom.dcmread(get_testdata_file(name))
    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64), float(ds.PixelSpacing[0])


def _write_head_and_crop(folder, crop: int) -> None:
    """The whole head slice and its central ``crop`` px, as DICOM files with the same tags."""
    ds = pydicom.dcmread(get_testdata_file(HEAD))
    arr = ds.pixel_array
    o = (arr.shape[0] - crop) // 2
    for name, a in (("whole.dcm", arr), ("crop.dcm", arr[o:o + crop, o:o + crop])):
        d = ds.copy()
        d.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        d.PixelData = np.ascontiguousarray(a).tobytes()
        d.Rows, d.Columns = a.shape
        d.save_as(folder / name, enforce_file_format=True)


def test_truncation_is_detected_on_crops_only():
    head, px = _hu(HEAD)
    assert not ct_fov.truncated(head)
    assert ct_fov.truncated(head[96:416, 96:416])
    small, px_small = _hu("CT_small.dcm")                    # an 85 mm crop of a 339 mm reconstruction
    assert ct_fov.truncated(small)
    # the head's outline fitted from the skin left in the crop: the head itself measures about 130 x 170 mm
    # (its tissue mask's extent in the whole slice)
    rows, cols = np.nonzero(head > ct_fov.TISSUE_HU)
    keep = (cols > 100) & (cols < 420)                     # not the head holder's thin side bars
    width, height = (np.ptp(cols[keep]) + 1) * px, (np.ptp(rows[keep]) + 1) * px
    o = ct_fov.body_outline(head[96:416, 96:416], px)
    assert o.method == 1
    axes = sorted((2 * o.a, 2 * o.b))
    assert axes == pytest.approx(sorted((width, height)), rel=0.2)


def test_crop_gets_the_noise_of_the_whole_slice(tmp_path):
    """Acceptance: a CT slice and its central crop get the same centre noise (within 25 %) at L1 and L2, and
    only the crop is flagged as truncated."""
    src = tmp_path / "ct"
    src.mkdir()
    _write_head_and_crop(src, 320)
    out = tmp_path / "out"
    generate([str(src)], out, degradations=["ct_low_dose"], device="cpu", progress=False)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    by = {(r["source_id"].rsplit("/", 1)[-1], r["level"]): r for r in rows}
    noise = {}
    for name in ("whole.dcm", "crop.dcm"):
        clean = read_output(out, by[(name, 0)])[0][0]
        h, w = clean.shape
        centre = (slice(h // 2 - 40, h // 2 + 40), slice(w // 2 - 40, w // 2 + 40))
        for level in (1, 2):
            r = by[(name, level)]
            assert r["params"]["fov_truncated"] == (name == "crop.dcm")
            noise[(name, level)] = float(np.std((read_output(out, r)[0][0] - clean)[centre]))
    for level in (1, 2):
        assert noise[("crop.dcm", level)] == pytest.approx(noise[("whole.dcm", level)], rel=0.25), noise
    assert noise[("whole.dcm", 2)] > noise[("whole.dcm", 1)] > 5.0


def test_limited_angle_wedge_moves_per_item_and_nests(tmp_path):
    src = tmp_path / "ct"
    src.mkdir()
    for i in range(3):
        hu = np.full((48, 48), -1000.0, np.float32)
        yy, xx = np.mgrid[:48, :48]
        hu[(yy - 24) ** 2 + (xx - 24 - i) ** 2 < 18 ** 2] = 40.0
        np.save(src / f"s{i}.npy", hu)
    out = tmp_path / "out"
    generate([str(src)], out, degradations=["ct_limited_angle"], levels=(1, 2), device="cpu", progress=False)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    starts = {}
    for r in rows:
        starts.setdefault(r["source_id"], set()).add(r["params"]["missing_start_deg"])
    # one start per item, shared by its levels (L1's 30 deg wedge inside L2's 60 deg), different between items
    assert all(len(s) == 1 for s in starts.values())
    values = [next(iter(s)) for s in starts.values()]
    assert len(set(values)) == 3 and all(0.0 <= v < 180.0 for v in values)


def test_masked_wedges_equal_the_rotated_short_scan():
    """A batch with a different missing wedge per item (views zeroed in one 180 degree scan) equals, item by
    item, FBP of a short scan that starts where the item's measured arc starts (astra-checked operators), at
    start angles on and off the view grid."""
    from dataclasses import replace

    from medq_synth.kernels.geometry import default_geometry
    from medq_synth.physics import ct

    n, px = 64, 1.0
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    hu = torch.full((3, n, n), -1000.0)
    for i in range(3):
        hu[i][(yy - 30 - i) ** 2 + (xx - 34) ** 2 < 20 ** 2] = 60.0 * i
    g = default_geometry("parallel", (n, n), px, n_views=360)
    arc = math.radians(120.0)
    starts = torch.tensor([0.0, 37.0, 150.0])                    # degrees of the missing wedge's start
    batched = ct.limited_angle_change(hu, g, arc, torch.deg2rad(starts), px)
    for i, m in enumerate(starts.tolist()):
        rotated = replace(g, start=math.radians(m + 180.0 - 120.0))
        one = ct.fewer_views_change(hu[i:i + 1], rotated, rotated.limited(arc), px)[0]
        assert float((batched[i] - one).abs().max()) < 1e-3 * float(one.abs().max()), m


def test_limited_angle_streaks_follow_the_missing_wedge():
    """The missing views' frequencies form a double wedge around their detector axes (cos t, sin t) (Fourier
    slice theorem); the artefact, its transform, lies in the perpendicular double wedge: along the missing
    views' rays (-sin t, cos t), the streaks every limited-angle image shows (parallel beam, y up)."""
    from medq_synth.ct_degradations import ENTRIES

    apply = next(fn for name, _, fn, _ in ENTRIES if name == "ct_limited_angle")
    n = 96
    hu = torch.full((1, 1, n, n), -1000.0)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    hu[0, 0][(yy - n // 2) ** 2 + (xx - n // 2) ** 2 < 36] = 1000.0
    f64 = {"dtype": torch.float64}
    p = {"window_lo": torch.tensor([-1000.0], **f64), "window_hi": torch.tensor([1000.0], **f64),
         "pixel_mm": torch.tensor([1.0], **f64), "arc_deg": torch.tensor([120.0], **f64),
         "fov_truncated": torch.tensor([0])}
    energy = {}
    for start in (150.0, 60.0):
        p["missing_start_deg"] = torch.tensor([start], **f64)
        v = (hu + 1000.0) / 2000.0
        d = ((apply(v, p) - v) * 2000.0)[0, 0]
        ring = ((yy - n // 2) ** 2 + (xx - n // 2) ** 2 > 15 ** 2)
        # energy in the band of rows through the centre (horizontal) and of columns (vertical)
        horiz = float((d[n // 2 - 3:n // 2 + 3] ** 2)[ring[n // 2 - 3:n // 2 + 3]].sum())
        vert = float((d[:, n // 2 - 3:n // 2 + 3] ** 2)[ring[:, n // 2 - 3:n // 2 + 3]].sum())
        energy[start] = (horiz, vert)
    # wedge [150, 210) deg: rays around t = 0 run along (0, 1): vertical streaks;
    # wedge [60, 120): rays around t = 90 deg run along (-1, 0): horizontal streaks
    assert energy[150.0][1] > 3 * energy[150.0][0] and energy[60.0][0] > 3 * energy[60.0][1], energy


def test_low_dose_noise_on_the_abdominal_phantom_is_the_tables(tmp_path):
    """The table's provenance quotes the added noise in the abdominal phantom's soft tissue: ~18 HU at L1 and
    ~35 HU at L2 (noise_hu, within 15 %); their ratio follows sqrt((1/0.1 - 1) / (1/0.25 - 1)) = 1.73 from the
    inserted variance, plus electronic noise at the lower dose."""
    from medq_synth.degradations import REGISTRY

    provenance = REGISTRY.resolve("ct_low_dose").table.params["i0_full"].provenance
    assert "~18 HU (L1) and ~35 HU (L2)" in provenance
    out = tmp_path / "out"
    generate(["phantoms:1"], out, degradations=["ct_low_dose"], levels=(1, 2), device="cpu", progress=False,
             limit=1)
    rows = {r["level"]: r for r in (json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines())
            if r["source_id"].endswith("ct-000")}
    assert rows[1]["noise_hu"] == pytest.approx(18.0, rel=0.15)
    assert rows[2]["noise_hu"] == pytest.approx(35.0, rel=0.15)
    assert rows[2]["noise_hu"] / rows[1]["noise_hu"] >= math.sqrt(9 / 3) * 0.95
