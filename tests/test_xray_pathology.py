"""X-ray exposure (photon statistics) and motion blur, histopathology overlays (area, seeded positions, tissue
untouched outside), and the MedQ-Deg taxonomy: every id of the paper's table is written where its modality is."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medq_synth.degradations import REGISTRY
from medq_synth.physics import pathology, xray

ROOT = Path(__file__).resolve().parents[1]
TAXONOMY = ROOT.parent / "shared" / "reference" / "medq-deg.md"


# -- X-ray ------------------------------------------------------------------------------------------------------


def test_quantum_noise_follows_the_photon_budget():
    """Detector counts are Poisson: variance = mean counts (within 10 %) at four exposures, from under- to
    over-exposure, and the shown line integral darkens by ln(g)."""
    p = torch.full((1, 256, 256), 2.0)
    for g in (0.25, 1.0, 2.2, 5.0):
        counts = xray.detector_counts(p, torch.tensor([2.0e4]), torch.tensor([g]), torch.tensor([1e9]),
                                      torch.tensor([11]))
        expected = 2.0e4 * g * math.exp(-2.0)
        assert float(counts.mean()) == pytest.approx(expected, rel=0.01)
        assert float(counts.var()) == pytest.approx(expected, rel=0.1)
        shown = xray.exposure(p, torch.tensor([2.0e4]), torch.tensor([g]), torch.tensor([1e9]), torch.tensor([11]))
        assert float(shown.mean()) == pytest.approx(2.0 - math.log(g), abs=0.01)


def test_saturation_burns_out_the_least_attenuated_regions():
    p = torch.tensor([[[0.0, 0.1, 3.0]]])
    shown = xray.exposure(p, torch.tensor([1e6]), torch.tensor([5.0]), torch.tensor([4.0]), torch.tensor([1]))
    assert float(shown[0, 0, 0]) == pytest.approx(-math.log(4.0), abs=1e-6)       # clipped at the full well
    assert float(shown[0, 0, 1]) == pytest.approx(-math.log(4.0), abs=1e-6)       # 5 e^-0.1 > 4: clipped too
    assert float(shown[0, 0, 2]) == pytest.approx(3.0 - math.log(5.0), abs=0.01)


def test_exposure_change_inserts_the_thinned_acquisitions_variance():
    """On a nominal image, a re-acquisition at g < 1 adds the count variance of binomial thinning, g (1 - g) lam
    (lam = N0 e^-p), so that with the nominal image's own g^2 lam the total is the Poisson g lam; g >= 1 adds
    none; g = 1 returns the image bit for bit."""
    p = torch.full((1, 256, 256), 2.0)
    n0 = torch.tensor([2.0e4])
    lam = 2.0e4 * math.exp(-2.0)
    for g in (0.2, 0.5):
        shown = xray.exposure_change(p, n0, torch.tensor([g]), torch.tensor([4.0]), torch.tensor([5]))
        counts = (2.0e4 * torch.exp(-shown.double()))
        assert float(counts.mean()) == pytest.approx(g * lam, rel=0.01)
        assert float(counts.var()) == pytest.approx(g * (1 - g) * lam, rel=0.1)
    over = xray.exposure_change(p, n0, torch.tensor([2.2]), torch.tensor([4.0]), torch.tensor([5]))
    assert torch.allclose(over, p - math.log(2.2), atol=1e-6)
    same = torch.rand(1, 32, 32) * 5
    assert torch.equal(xray.exposure_change(same, n0, torch.tensor([1.0]), torch.tensor([4.0]), torch.tensor([5])),
                       same)


def test_xray_exposure_errs_both_ways():
    """MedQ-Deg's exposure artefact is over- or under-exposure, drawn per item: over-exposed radiographs are
    darker (lower line integral shown), under-exposed ones lighter and mottled, both worse at L2."""
    from medq_synth.sources.phantoms import synthetic_item

    it = synthetic_item("xray", 0)
    v = torch.from_numpy(it.image / it.window[1])[None].float().expand(24, -1, -1, -1).contiguous()
    deg = REGISTRY.resolve("xray_exposure")
    seeds = torch.arange(24)
    shift = {}
    for severity in (0.5, 1.0):
        p = deg.sample_params(severity, seeds, tuple(v.shape[-2:]), pattern_seeds=seeds + 1000)
        out = deg.apply(v, p)
        d = (out - v).mean(dim=(1, 2, 3))
        over, under = p["direction"] == 1, p["direction"] == -1
        assert over.any() and under.any()                        # both directions among 24 items
        assert bool((d[over] < 0).all()) and bool((d[under] > 0).all())
        assert torch.allclose(p["relative_exposure"][under], 1 / p["exposure_factor"][under])
        # mottle: the under-exposed change has pixel-scale texture, the over-exposed one (a shift) far less
        rough = (out - v)[:, 0].diff(dim=-1).std(dim=(1, 2))
        assert float(rough[under].min()) > 3 * float(rough[over].max())
        shift[severity] = (float(d[over].mean()), float(d[under].mean()))
    assert shift[1.0][0] < shift[0.5][0] < 0 < shift[0.5][1] < shift[1.0][1]


@pytest.mark.parametrize("angle", [0.0, 30.0, 165.0])
def test_motion_kernel_is_a_path_of_the_asked_length(angle):
    k = xray.motion_kernel(19.0, torch.tensor([angle]), torch.tensor([0.0]))[0].double()
    assert float(k.sum()) == pytest.approx(1.0, abs=1e-6)
    yy, xx = torch.meshgrid(torch.arange(k.shape[0], dtype=torch.float64), torch.arange(k.shape[1],
                            dtype=torch.float64), indexing="ij")
    c = (k.shape[0] - 1) / 2
    d = torch.tensor([math.cos(math.radians(angle)), -math.sin(math.radians(angle))], dtype=torch.float64)
    along = (xx - c) * d[0] + (yy - c) * d[1]
    across = -(xx - c) * d[1] + (yy - c) * d[0]
    # uniform speed along a straight chord of 19 px: the variance along it is 19^2 / 12, none across
    assert float((k * along ** 2).sum()) == pytest.approx(19.0 ** 2 / 12, rel=0.05)
    assert float((k * across ** 2).sum()) < 0.2
    bent = xray.motion_kernel(19.0, torch.tensor([angle]), torch.tensor([0.25]))[0].double()
    bent_across = -(torch.arange(bent.shape[1])[None] - (bent.shape[0] - 1) / 2) * d[1] + \
        (torch.arange(bent.shape[0])[:, None] - (bent.shape[0] - 1) / 2) * d[0]
    assert float((bent * bent_across ** 2).sum()) > 1.0                          # a curved path leaves the chord


# -- pathology overlays -----------------------------------------------------------------------------------------


def _ihc() -> torch.Tensor:
    from medq_synth.sources.phantoms import real_item

    return torch.from_numpy(real_item("skimage", "immunohistochemistry")[0].image)[None]


def _ctx(v: torch.Tensor, mpp: float = 0.5) -> dict[str, torch.Tensor]:
    """What the engine hands a physical model: the window and the pixel size (a slide of ``mpp`` um/px)."""
    n = len(v)
    return {"window_lo": torch.zeros(n, dtype=torch.float64), "window_hi": torch.ones(n, dtype=torch.float64),
            "pixel_mm": torch.full((n,), mpp / 1000.0, dtype=torch.float64)}


def _params(deg, severity: float, v: torch.Tensor, seeds: torch.Tensor, patterns: torch.Tensor, mpp: float = 0.5):
    ctx = _ctx(v, mpp)
    inputs = {"v": v, **ctx} if deg.image_dependent else None
    return {**deg.sample_params(severity, seeds, tuple(v.shape[-2:]), pattern_seeds=patterns, inputs=inputs), **ctx}


def _run(name: str, v: torch.Tensor, severity: float, seed: int = 3, mpp: float = 0.5):
    deg = REGISTRY.resolve(name)
    n = len(v)
    p = _params(deg, severity, v, torch.arange(n) + seed, torch.arange(n) + 100 * seed, mpp)
    return deg.apply(v, p), p


@pytest.mark.parametrize("name", ["path_bubble", "path_blood_cell", "path_dark_spots"])
def test_overlays_grow_with_level_and_leave_the_rest_untouched(name):
    v = _ihc()
    h, w = v.shape[-2:]
    areas = []
    for severity in (0.5, 1.0):
        out, p = _run(name, v, severity)
        changed = (out != v).any(dim=1)[0]
        areas.append(float(changed.float().mean()))
        # every changed pixel lies inside the recorded overlay's reach, and positions are inside the image
        yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        if name == "path_bubble":
            (cx, cy), r = p["centre"][0].tolist(), float(p["radius_px"][0])
            reach = torch.sqrt(((xx - cx) / r) ** 2 + ((yy - cy) / (r * float(p["aspect"][0]))) ** 2) * r < r + 3
            centres = p["centre"][0][None]
        else:
            centres = p["centres"][0]
            radii = p["radii"][0] * (2 * p["elongation"][0] if name == "path_dark_spots" else 1.0)
            on = p["active"][0].bool() if name == "path_blood_cell" else torch.ones(len(centres), dtype=torch.bool)
            reach = torch.zeros(h, w, dtype=torch.bool)
            for (cx, cy), r in zip(centres[on].tolist(), radii[on].tolist(), strict=True):
                reach |= torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) < r + 1
        assert bool((changed <= reach).all())
        assert bool((centres[:, 0] >= 0).all() and (centres[:, 0] < w).all() and (centres[:, 1] >= 0).all()
                    and (centres[:, 1] < h).all())
    assert 0 < areas[0] < areas[1]


def _run_slice(name: str, v: torch.Tensor, sl: slice) -> torch.Tensor:
    deg = REGISTRY.resolve(name)
    idx = torch.arange(len(v))[sl]
    p = _params(deg, 1.0, v[sl], idx + 3, idx + 300)
    return deg.apply(v[sl], p)


@given(split=st.integers(1, 3), name=st.sampled_from(["path_bubble", "path_blood_cell", "path_dark_spots",
                                                       "xray_exposure", "xray_motion_blur"]))
def test_modality_models_are_batch_invariant(split, name):
    g = torch.Generator().manual_seed(2)
    v = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 64, 56, generator=g), 5, 1, 2)
    full = _run_slice(name, v, slice(0, 4))
    parts = torch.cat([_run_slice(name, v, slice(k, min(k + split, 4))) for k in range(0, 4, split)])
    assert torch.equal(full, parts)


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_red_cells_are_biconcave_discs_of_their_physical_size(mpp):
    """On a white slide: each isolated cell measures 7.5 um x 0.9-1.1 across whatever the scan's um/px, and
    its centre is paler than its ring (the Evans-Fung shape: 0.32 of the ring's thickness at the centre)."""
    from scipy import ndimage

    v = torch.ones(1, 3, 384, 384)
    out, p = _run("path_blood_cell", v, 0.5, seed=5, mpp=mpp)
    absorb = (1.0 - out[0, 1]).numpy()                      # the green channel: red cells absorb it
    labels, n = ndimage.label(absorb > 0.05)
    assert n >= 3
    one_cell = 0
    for k in range(1, n + 1):
        ys, xs = np.nonzero(labels == k)
        width_um = (np.ptp(xs) + 1) * mpp
        height_um = (np.ptp(ys) + 1) * mpp
        if width_um > 9.5 or height_um > 9.5:                # touching cells of a cluster
            continue
        one_cell += 1
        assert 6.0 <= width_um <= 9.0 and 6.0 <= height_um <= 9.0, (width_um, height_um)
        cy, cx = int(round(ys.mean())), int(round(xs.mean()))
        assert absorb[cy, cx] < 0.75 * absorb[labels == k].max()            # the pale centre
    assert one_cell >= 1


def test_red_cells_cluster():
    """Cells gather around 1-3 centres: the Clark-Evans ratio (mean nearest-neighbour distance over its value
    for as many points spread at random, 0.5 / sqrt(density)) is well below 1."""
    v = torch.ones(6, 3, 512, 512)
    _, p = _run("path_blood_cell", v, 1.0)
    n = int(p["n_cells"][0])
    ratios = []
    for i in range(6):
        pts = p["centres"][i, :n].numpy()
        d = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)) + np.eye(n) * 1e9
        ratios.append(d.min(axis=1).mean() / (0.5 / math.sqrt(n / 512 ** 2)))
    assert np.median(ratios) < 0.6, ratios


def test_overlay_sizes_follow_the_slide_scale():
    """The same overlay on a 40x scan (0.25 um/px) is twice as many pixels as on a 20x scan (0.5 um/px)."""
    v = torch.ones(1, 3, 256, 256)
    for name, key in (("path_bubble", "radius_px"), ("path_dark_spots", "radii"), ("path_blood_cell", "radii")):
        _, p20 = _run(name, v, 1.0, mpp=0.5)
        _, p40 = _run(name, v, 1.0, mpp=0.25)
        assert torch.allclose(p40[key], 2 * p20[key]) and float(p40["mpp"][0]) == pytest.approx(0.25)


def test_support_fraction_counts_changed_pixels():
    v = torch.zeros(1, 3, 10, 10)
    out = v.clone()
    out[0, 1, :2, :5] = 1
    assert float(pathology.support_fraction(v, out)[0]) == pytest.approx(0.1)


# -- the MedQ-Deg taxonomy ----------------------------------------------------------------------------------------


def taxonomy_ids() -> set[str]:
    """Every degradation id in the taxonomy table (section 3) of the MedQ-Deg reference."""
    text = TAXONOMY.read_text()
    table = text.split("## 3.", 1)[1].split("## 4.", 1)[0]
    ids: set[str] = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            ids.update(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return ids


def test_export_writes_every_medq_deg_id_where_the_modality_allows(tmp_path):
    if not TAXONOMY.exists():
        pytest.skip(f"{TAXONOMY} is not beside this checkout")
    from PIL import Image
    from skimage import data

    from medq_synth import generate

    ids = taxonomy_ids()
    assert len(ids) == 19 and {"xray_motion_blur_artifact", "bubble_artifact", "low_dose"} <= ids
    rows = []
    for modality, image in (("histopathology", data.immunohistochemistry()), ("dermoscopy", data.coffee()),
                            ("endoscopy", data.astronaut())):
        Image.fromarray(image[::4, ::4]).save(tmp_path / f"{modality}.png")
        rows.append({"image": f"{modality}.png", "modality": modality, "question": f"Is this {modality}?",
                     "A": "Yes", "B": "No", "answer": "A"})
    (tmp_path / "photos.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    generate(["phantoms:1", str(tmp_path / "photos.jsonl")], out, degradations=sorted(ids), device="cpu",
             progress=False, export_tsv=True, limit=None)
    import csv

    with (out / "benchmark.tsv").open() as fh:
        tsv = list(csv.DictReader(fh, delimiter="\t"))
    written = {r["degradation_type"] for r in tsv} - {"none"}
    assert written == ids
    modalities = {r["modality"] for r in tsv}
    assert {"CT", "MRI", "X-ray", "Ultrasound", "Histopathology", "Dermoscopy", "Endoscopy"} <= modalities
    by_id: dict[str, set] = {}
    for r in tsv:
        by_id.setdefault(r["degradation_type"], set()).add(r["modality"])
    assert by_id["low_dose"] == by_id["sparse_view"] == by_id["limited_angle"] == {"CT"}
    assert by_id["undersampling_artifact"] == by_id["ghosting_artifact"] == {"MRI"}
    assert by_id["bubble_artifact"] == by_id["blood_cell_artifact"] == {"Histopathology"}
    assert by_id["xray_motion_blur_artifact"] == {"X-ray"}
    assert by_id["gaussian_noise"] >= {"CT", "MRI", "X-ray", "Ultrasound", "Dermoscopy", "Endoscopy"}
    assert np.all([r["degradation_severity"] in ("L0", "L1", "L2") for r in tsv])
