"""Ultrasound speckle against analytic speckle statistics (Rayleigh envelope, grain = PSF size), and the
registry binding: phantoms carry their map, other images are despeckled first, batch invariance."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medq_synth.physics import ultrasound as us


def _settings(b: int, f0: float, snr_db: float = 200.0, **kw) -> dict[str, torch.Tensor]:
    t = lambda v: torch.full((b,), float(v), dtype=torch.float64)  # noqa: E731
    return {"pixel_mm": t(kw.get("pixel_mm", 0.2)), "f0_mhz": t(f0), "bandwidth": t(0.6), "f_number": t(2.0),
            "focus_fraction": t(0.5), "depth_of_field_fraction": t(kw.get("dof", 100.0)), "snr_db": t(snr_db)}


def _envelope(e: torch.Tensor, f0: float, seeds=(3, 4), **kw) -> torch.Tensor:
    s = _settings(len(e), f0, **kw)
    return us.bmode(e, s["pixel_mm"], s["f0_mhz"], s["bandwidth"], s["f_number"], s["focus_fraction"],
                    s["depth_of_field_fraction"], s["snr_db"], torch.tensor(seeds[:len(e)]))


@pytest.mark.parametrize("f0", [7.5, 3.0])
def test_fully_developed_speckle_is_rayleigh(f0):
    from scipy import stats

    e = torch.full((2, 384, 384), 0.25)
    a = _envelope(e, f0, seeds=(7, 8))[:, 40:-40, 40:-40].double()      # a KS test at 1 % rejects 1 % of seeds
    assert float(a.mean() / a.std()) == pytest.approx(math.sqrt(math.pi / (4 - math.pi)), abs=0.1)   # 1.913
    assert float((a ** 2).mean()) == pytest.approx(0.25, rel=0.03)          # unit-energy PSF keeps the power
    step = 12                                                               # > 4 grain sigmas: ~independent
    sample = a[:, ::step, ::step].flatten().numpy()
    assert stats.kstest(sample, "rayleigh", args=(0, math.sqrt(0.25 / 2))).pvalue > 0.01
    assert stats.kstest(sample, "rayleigh", args=(0, 1.2 * math.sqrt(0.25 / 2))).pvalue < 1e-3  # the test has power


def _grain_sigma(a: torch.Tensor, axis: int) -> float:
    """The grain: for Gaussian PSF amplitude sigma, the intensity autocovariance is exp(-d^2 / (2 sigma^2)), so
    sigma follows from the lag-1 correlation."""
    i = (a.double() ** 2)
    i = i - i.mean()
    n = i.shape[axis]
    lag = (i.narrow(axis, 1, n - 1) * i.narrow(axis, 0, n - 1)).mean() / (i * i).mean()
    return math.sqrt(-1.0 / (2.0 * math.log(float(lag))))


def test_speckle_grain_follows_the_psf():
    e = torch.ones(2, 384, 384)
    measured = {}
    for f0 in (3.0, 1.5):
        a = _envelope(e, f0)[:, 40:-40, 40:-40]
        sz, sx = us.psf_sigmas_px((384, 384), torch.full((2,), 0.2), torch.full((2,), f0), torch.full((2,), 0.6),
                                  torch.full((2,), 2.0), torch.full((2,), 0.5), torch.full((2,), 100.0))
        axial, lateral = _grain_sigma(a, 1), _grain_sigma(a, 2)
        assert axial == pytest.approx(float(sz[0]), rel=0.1)
        assert lateral == pytest.approx(float(sx[0, 192]), rel=0.1)
        measured[f0] = (axial, lateral)
    assert measured[1.5][0] / measured[3.0][0] == pytest.approx(2.0, rel=0.1)
    assert measured[1.5][1] / measured[3.0][1] == pytest.approx(2.0, rel=0.1)
    # the PSF itself, from the physics: lambda = 1.54 / f0 mm, lateral FWHM = lambda F#
    fwhm = float(us.lateral_sigma_mm(torch.tensor(3.0), torch.tensor(2.0))) * 2 * math.sqrt(2 * math.log(2))
    assert fwhm == pytest.approx(2 * 1.54 / 3, rel=1e-6)


def test_lateral_width_grows_away_from_the_focus():
    _, sx = us.psf_sigmas_px((200, 50), torch.tensor([0.2]), torch.tensor([5.0]), torch.tensor([0.6]),
                             torch.tensor([2.0]), torch.tensor([0.5]), torch.tensor([0.5]))
    assert float(sx[0].argmin()) in (99, 100)
    assert float(sx[0, 0] / sx[0].min()) == pytest.approx(math.sqrt(2.0), rel=0.02)


def test_log_compression_and_its_inverse():
    env = torch.tensor([[[1.0, 0.1, 0.001, 1e-5]]])
    v = us.log_compress(env, torch.tensor([60.0]))
    assert torch.allclose(v, torch.tensor([[[1.0, 2 / 3, 0.0, 0.0]]]), atol=1e-6)
    back = us.echogenicity_from_display(v, torch.tensor([60.0]))
    assert torch.allclose(back[..., :2], env[..., :2] ** 2, rtol=1e-5)


def test_thermal_noise_sets_the_floor_of_an_anechoic_region():
    a = _envelope(torch.zeros(1, 128, 128), 5.0, snr_db=30.0)
    assert float((a.double() ** 2).mean()) == pytest.approx(10 ** (-3.0), rel=0.05)


# -- through the registry -------------------------------------------------------------------------------------


def _registry_run(v: torch.Tensor, severity: float, known_map: torch.Tensor | None, sl: slice,
                  name: str = "us_speckle") -> torch.Tensor:
    from medq_synth.degradations import REGISTRY

    deg = REGISTRY.resolve(name)
    n = len(v)
    ctx = {"window_lo": torch.zeros(n, dtype=torch.float64), "window_hi": torch.ones(n, dtype=torch.float64),
           "pixel_mm": torch.full((n,), 0.2, dtype=torch.float64)}
    if known_map is not None:
        ctx["_echogenicity"] = known_map
    part = {k: t[sl] for k, t in ctx.items()}
    seeds = torch.arange(n)[sl]
    p = deg.sample_params(severity, seeds, tuple(v.shape[-2:]), pattern_seeds=seeds + 50, inputs={"v": v[sl], **part})
    return deg.apply(v[sl], {**p, **part}), p


@given(split=st.integers(1, 4), with_map=st.booleans(), name=st.sampled_from(["us_speckle", "us_speckle_sector"]))
def test_speckle_is_batch_invariant(split, with_map, name):
    g = torch.Generator().manual_seed(1)
    v = torch.nn.functional.avg_pool2d(torch.rand(5, 1, 48, 40, generator=g), 5, 1, 2)
    known = torch.rand(5, 48, 40, generator=g) if with_map else None
    full, p = _registry_run(v, 1.0, known, slice(0, 5), name)
    parts = torch.cat([_registry_run(v, 1.0, known, slice(k, min(k + split, 5)), name)[0]
                       for k in range(0, 5, split)])
    assert torch.equal(full, parts)
    assert int(p["echogenicity_source"][0]) == (0 if with_map else 2 if name == "us_speckle" else 1)


@pytest.mark.parametrize("name", ["us_speckle", "us_speckle_sector"])
def test_phantom_l0_is_the_identity_rendering_of_its_map_and_levels_degrade(name):
    """The phantom's image is its map rendered at the identity settings; L1 and L2 re-render the same map with
    the item's pattern speckle; L2 is further from L0 than L1 (SSIM) on every phantom."""
    from medq_synth.metrics import ssim
    from medq_synth.sources.phantoms import synthetic_item

    for i in range(4):
        it = synthetic_item("ultrasound", i)
        assert it.echogenicity is not None and it.image.shape == (1, 256, 256)
        assert 0.0 <= it.image.min() and it.image.max() <= 1.0
        v = torch.from_numpy(it.image)[None]
        known = torch.from_numpy(it.echogenicity)[None]
        l1, _ = _registry_run(v, 0.5, known, slice(0, 1), name)
        l2, _ = _registry_run(v, 1.0, known, slice(0, 1), name)
        s1, s2 = float(ssim(l1, v)[0]), float(ssim(l2, v)[0])
        assert s2 < s1 < 1.0, (i, s1, s2)


def test_despeckling_keeps_the_mean_power():
    e = torch.full((1, 64, 64), 0.3)
    e[:, 20:40, 20:40] = 0.01
    out = us.despeckle(e, 1.5)
    assert float(out.mean()) == pytest.approx(float(e.mean()), rel=1e-3)
    assert float(out[0, 5, 5]) == pytest.approx(0.3, rel=1e-4)
    assert np.isclose(float(out[0, 30, 30]), 0.01, rtol=0.05)


def test_sector_scan_is_black_outside_its_fan_and_speckled_inside():
    _, _, inside, radius = us.sector_geometry((128, 96), 60.0, 0.2)
    e = torch.full((1, 128, 96), 0.1)
    shown = us.sector_bmode(e, torch.tensor([0.2]), torch.tensor([5.0]), torch.tensor([0.6]), torch.tensor([2.0]),
                            torch.tensor([0.5]), torch.tensor([0.5]), torch.tensor([80.0]), torch.tensor([60.0]),
                            torch.tensor([3]), 60.0, 0.2)[0]
    assert bool((shown[~inside] == 0).all())
    # the fan: the apex 0.2 H above the top, the edges at +-30 deg from the vertical
    assert bool(inside[64, 48]) and not bool(inside[0, 0]) and not bool(inside[127, 0])
    x_edge = 48 + (40.5 + 0.2 * 128) * math.tan(math.radians(30))            # 86.2 on row 40
    assert bool(inside[40, int(x_edge) - 2]) and not bool(inside[40, int(x_edge) + 2])
    assert float(radius[0]) == pytest.approx(0.2 * 128 + 0.5 * 1.2, abs=1.0)
    # inside: speckle around the map's level, -10 dB at a 60 dB display = 0.83, less the log-speckle bias
    level = float(shown[inside].mean())
    assert 0.7 < level < 0.85 and float(shown[inside].std()) > 0.03


def test_real_ultrasound_images_are_degraded_by_both_models(tmp_path):
    """pydicom's ultrasound examples (colour B-mode renderings, already speckled): us_speckle re-acquires their
    own echo (source 2), the opt-in sector model re-renders their despeckled map (source 1); L2 is further from
    L0 than L1 (SSIM) for both; without a recorded spacing the documented default pixel size applies."""
    import json
    import shutil

    import pydicom

    from medq_synth import generate

    folder = tmp_path / "us"
    folder.mkdir()
    for name in ("examples_rgb_color.dcm", "examples_jpeg2k.dcm"):
        shutil.copy(Path(pydicom.__file__).parent / "data" / "test_files" / name, folder / name)
    out = tmp_path / "out"
    generate(str(folder), out, degradations=["us_speckle", "us_speckle_sector"], device="cpu", progress=False)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    ssim = {(r["source_id"], r["degradation"], r["level"]): r["ssim"] for r in rows if r["level"]}
    assert len(ssim) == 2 * 2 * 2
    for (src, deg, level), s in ssim.items():
        if level == 2:
            assert s < ssim[(src, deg, 1)] < 1.0, (src, deg)
    assert {r["params"]["echogenicity_source"] for r in rows if r["level"] and r["degradation"] == "us_speckle"} \
        == {2}
    assert {r["params"]["echogenicity_source"] for r in rows if r["level"] and r["degradation"] != "us_speckle"} \
        == {1}
    assert {r["params"]["pixel_mm"] for r in rows if r["level"]} == {0.2}          # no spacing: the default
