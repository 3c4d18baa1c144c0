"""Ultrasound on the real B-mode files pydicom ships: only the tissue changes (colour, text and the black
outside the echo area keep their bits), the anatomy stays recognisable at L1 and gets worse at L2, severity 0
is the input, and the display's own dynamic range is read from its speckle."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file
from scipy import ndimage
from skimage.metrics import structural_similarity

from medq_synth import generate

FILES = ("examples_ybr_color.dcm", "examples_rgb_color.dcm", "examples_palette.dcm", "examples_jpeg2k.dcm")


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("us")
    src = root / "us"
    src.mkdir()
    for name in FILES:
        shutil.copy(get_testdata_file(name), src / name)
    out = root / "out"
    generate([str(src)], out, degradations=["us_speckle"], device="cpu", progress=False)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    images = {}
    for r in rows:
        name = next(n for n in FILES if n in r["source_id"])
        im = np.asarray(Image.open(out / r["image"])).astype(np.int16)
        images[(name, r["level"])] = im if im.ndim == 3 else np.repeat(im[..., None], 3, axis=-1)
    return images, rows


@pytest.mark.parametrize("name", FILES)
def test_only_the_tissue_changes(outputs, name):
    """Acceptance: colour and text pixels unchanged at L1 and L2; the black outside the echo area stays black."""
    images, _ = outputs
    l0 = images[(name, 0)]
    grey = l0.mean(axis=-1)
    colour = (l0.max(axis=-1) - l0.min(axis=-1)) > 30                            # clearly coloured
    text = (grey >= 200) & (ndimage.median_filter(grey, 5) < 100)                # bright, thin
    black = ndimage.binary_erosion(grey == 0, iterations=10)                    # 10 px from anything shown
    assert colour.sum() + text.sum() > 0 and black.sum() > 1000
    for level in (1, 2):
        out = images[(name, level)]
        same = (out == l0).all(axis=-1)
        assert bool(same[colour].all()), (name, level, int((~same[colour]).sum()))
        assert bool(same[text].all()), (name, level, int((~same[text]).sum()))
        assert bool((out[black] == 0).all())
        assert not bool(same.all())                                             # the tissue did change


def _tissue(l0: np.ndarray) -> np.ndarray:
    """Grey, non-black pixels away from colour, text and the image's edges of the echo area (test's own mask)."""
    grey = l0.mean(axis=-1)
    colour = ndimage.binary_dilation((l0.max(axis=-1) - l0.min(axis=-1)) > 10, iterations=4)
    bright_thin = ndimage.binary_dilation((grey >= 180) & (ndimage.median_filter(grey, 5) < 100), iterations=4)
    shown = ndimage.binary_erosion(ndimage.binary_fill_holes(ndimage.binary_closing(grey > 8, iterations=3)),
                                   iterations=6)
    return shown & ~colour & ~bright_thin


@pytest.mark.parametrize("name", FILES)
def test_anatomy_survives_l1_and_degrades_at_l2(outputs, name):
    """Acceptance: SSIM of the 7 x 7 median-filtered grey images against L0, over the tissue: >= 0.4 at L1,
    lower at L2."""
    images, _ = outputs
    l0 = images[(name, 0)]
    tissue = _tissue(l0)
    assert tissue.sum() > 2000
    smooth = {lv: ndimage.median_filter(images[(name, lv)].mean(axis=-1), 7) for lv in (0, 1, 2)}
    score = {}
    for level in (1, 2):
        _, full = structural_similarity(smooth[0], smooth[level], data_range=255.0, full=True)
        score[level] = float(full[tissue].mean())
    assert score[1] >= 0.4 and score[2] < score[1], (name, score)


def test_what_was_estimated_and_applied_is_recorded(outputs):
    _, rows = outputs
    for r in rows:
        if r["level"] == 0:
            continue
        p = r["params"]
        assert p["echogenicity_source"] == 2
        assert 30.0 <= p["dynamic_range_estimated_db"] <= 90.0
        assert p["tissue_mask"].startswith("sha1:")
        assert p["extra_axial_sigma_px"] > 0 and p["dynamic_range_fraction"] < 1.0
        if r["level"] == 2:
            l1 = next(q for q in rows if q["source_id"] == r["source_id"] and q["level"] == 1)["params"]
            assert p["extra_axial_sigma_px"] > l1["extra_axial_sigma_px"]
            assert p["added_noise_power"] > l1["added_noise_power"]


def test_dynamic_range_is_read_from_the_speckle():
    """Fully developed speckle rendered at a known dynamic range (log-compressed Rayleigh envelope): the
    estimate recovers it within 15 % at 40, 60 and 80 dB (the 5.57 dB log-speckle std, an analytic constant)."""
    from medq_synth.physics import ultrasound as us
    from medq_synth.physics import us_display

    e = torch.full((1, 256, 256), 10 ** (-2.5))                               # -25 dB tissue
    env = us.bmode(e, torch.tensor([0.2]), torch.tensor([7.5]), torch.tensor([0.6]), torch.tensor([2.0]),
                   torch.tensor([0.5]), torch.tensor([100.0]), torch.tensor([200.0]), torch.tensor([4]))
    for dr in (40.0, 60.0, 80.0):
        v = us.log_compress(env, torch.tensor([dr]))[0]
        est, grain_ax, grain_lat, level = us_display.estimate_display(v, torch.ones_like(v, dtype=torch.bool))
        assert est == pytest.approx(dr, rel=0.15)
        # the median of an exponential power is ln 2 of its mean: -25 + 10 log10(ln 2) = -26.6 dB, read
        assert level == pytest.approx(-25.0 + 10 * np.log10(np.log(2.0)), rel=0.15)     # as the range
    sz, sx = us.psf_sigmas_px((256, 256), torch.tensor([0.2]), torch.tensor([7.5]), torch.tensor([0.6]),
                              torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([100.0]))
    # the grain of the intensity is the amplitude PSF's sigma (Gaussian PSF: intensity correlation exp(-d^2/2s^2))
    assert grain_ax == pytest.approx(float(sz[0]), rel=0.3) and grain_lat == pytest.approx(float(sx[0, 128]), rel=0.3)


def test_palette_colour_dicom_shows_its_colours():
    """examples_palette.dcm stores indices into its own colour LUTs: the item is pydicom's apply_color_lut of
    them (16-bit entries, shown as fractions of 65535), so its header band is the blue the file's LUT holds,
    not the near-white grey of the raw indices."""
    from pathlib import Path

    import pydicom
    from pydicom.pixels import apply_color_lut

    from medq_synth.sources.readers import read_dicom

    path = get_testdata_file("examples_palette.dcm")
    (row,) = read_dicom(Path(path), None, "middle")
    ds = pydicom.dcmread(path)
    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float64) / 65535.0
    assert np.allclose(row["image"], np.moveaxis(rgb, -1, 0), atol=1e-6)
    header = row["image"][:, 5:20, 300:500].reshape(3, -1).mean(axis=1)
    assert header[2] > header[0] + 0.15 and header[2] > header[1]            # blue
    assert float(ds.pixel_array[5:20, 300:500].mean()) > 200                   # the raw indices: near white
    assert row["meta"]["photometric"] == "PALETTE COLOR"
