"""MRI physics against its references: fastMRI (masks, centred FFT, RSS), TorchIO (Ghosting, Spike, BiasField),
MONAI (GibbsNoise), scipy's Rice distribution, analytic shifts and rotations; the motion severity measure
recomputed here from its definition; invariants (adjointness, round trips, batch and layout invariance)."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medq_synth.physics import kspace as K
from medq_synth.physics import mri, mri_masks, mri_motion

ROOT = Path(__file__).resolve().parents[1]


def _fastmri_subsample():
    """fastMRI's mask module, loaded from the installed package's file (its package __init__ pulls in
    training-only dependencies that the mask functions do not use)."""
    dist = importlib.metadata.distribution("fastmri")
    path = next(f for f in dist.files if str(f).endswith("data/subsample.py")).locate()
    spec = importlib.util.spec_from_file_location("fastmri_subsample", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _mr_slice() -> torch.Tensor:
    """pydicom's MR_small (64 x 64, real scanner values), as float32 (H, W)."""
    import pydicom
    from pydicom.data import get_testdata_file

    return torch.from_numpy(pydicom.dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(np.float32))


def _smooth(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, h, w, generator=g)
    return torch.nn.functional.avg_pool2d(x, 5, 1, 2)[0, 0]


# -- masks ----------------------------------------------------------------------------------------------------

FASTMRI_CLASSES = {"random": "RandomMaskFunc", "equispaced": "EquiSpacedMaskFunc",
                   "equispaced_fraction": "EquispacedMaskFractionFunc"}


@given(kind=st.sampled_from(sorted(FASTMRI_CLASSES)), n=st.integers(32, 400),
       setting=st.sampled_from([(4, 0.08), (8, 0.04), (6, 0.06), (12, 0.03)]), seed=st.integers(0, 2 ** 62))
def test_cartesian_masks_are_fastmris(kind, n, setting, seed):
    """Same columns as the released fastMRI mask functions for the same seed, hence the same centre-line count
    (round(N cf)) and acceleration."""
    acc, cf = setting
    func = getattr(_fastmri_subsample(), FASTMRI_CLASSES[kind])([cf], [acc])
    ref, n_low = func((1, n, 2), seed=seed & 0xFFFFFFFF)
    ours = mri_masks.cartesian_mask(n, acc, cf, kind, seed)
    assert np.array_equal(ref.numpy().ravel() > 0, ours)
    assert mri_masks.centre_columns(n, cf).sum() == n_low == round(n * cf)


@pytest.mark.parametrize("acc,cf", [(4, 0.08), (8, 0.04)])
def test_random_mask_acceleration_over_seeds(acc, cf):
    """fastMRI's definition: N / R columns on average (binomial bound over 400 seeds)."""
    n = 368
    kept = np.array([mri_masks.cartesian_mask(n, acc, cf, "random", s).sum() for s in range(400)])
    n_low = round(n * cf)
    p = (n / acc - n_low) / (n - n_low)
    sd = np.sqrt((n - n_low) * p * (1 - p) / len(kept))
    assert abs(kept.mean() - n / acc) < 4 * sd
    fraction = np.array([mri_masks.cartesian_mask(n, acc, cf, "equispaced_fraction", s).sum() for s in range(20)])
    assert np.all(np.abs(fraction - n / acc) <= 2)


@pytest.mark.parametrize("acc", [4.0, 8.0])
def test_poisson_disc_reaches_its_acceleration(acc):
    mask = mri_masks.poisson_mask((128, 128), acc, 16, 1)
    assert 1 / mask.mean() == pytest.approx(acc, rel=0.05)
    assert mask[64 - 8:64 + 8, 64 - 8:64 + 8].all()               # the calibration square


def test_radial_mask_spokes():
    mask = mri_masks.radial_mask((128, 128), 4.0, 0.0)
    assert mri_masks.radial_spokes((128, 128), 4.0) == int(np.ceil(np.pi * 128 / 8))
    assert mask[64, 64] and mask[64, :].any()
    assert 0.1 < mask.mean() < 0.5


# -- transforms and the forward model ---------------------------------------------------------------------------


@given(h=st.integers(4, 40), w=st.integers(4, 40), c=st.integers(1, 3), seed=st.integers(0, 1000))
def test_centred_fft_is_fastmris_and_unitary(h, w, c, seed):
    import fastmri

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, c, h, w, dtype=torch.complex64, generator=g)
    y = torch.randn(2, c, h, w, dtype=torch.complex64, generator=g)
    ref = torch.view_as_complex(fastmri.fft2c(torch.view_as_real(x)).contiguous())
    assert torch.allclose(K.fft2c(x), ref, atol=1e-5)
    assert torch.allclose(K.ifft2c(K.fft2c(x)), x, atol=1e-5)
    # adjointness: <F x, y> = <x, F^H y>
    lhs = (K.fft2c(x) * y.conj()).sum()
    rhs = (x * K.ifft2c(y).conj()).sum()
    assert abs(lhs - rhs) <= 1e-4 * float(x.abs().sum() * y.abs().max())
    # both layouts reconstruct the same magnitude, which is fastMRI's RSS
    rss_ref = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(torch.view_as_real(ref).contiguous())), dim=1)
    assert torch.allclose(K.KSpace(ref, centred=True).magnitude(), rss_ref, atol=1e-5)
    assert torch.allclose(K.KSpace.from_images(x).magnitude(), rss_ref, atol=1e-5)


@pytest.mark.parametrize("coils", [1, 8])
def test_round_trip_with_phase_and_coils(coils):
    """Simulation then zero-filled RSS with a full mask gives the magnitude back (1e-4 relative)."""
    x = _mr_slice()[None]
    phase = K.smooth_phase((64, 64), torch.tensor([[0.3, 1.0, -0.5, 0.8, 0.2, -1.2]]))
    maps = K.birdcage_maps(coils, (64, 64))
    assert torch.allclose(K.rss(maps[None]), torch.ones(1, 64, 64), atol=1e-5)
    k = K.acquire(x, phase, maps)
    full = mri.undersample(k, torch.ones(1, 64))
    assert torch.allclose(full.magnitude(), x, rtol=0, atol=1e-4 * float(x.max()))
    centred = K.KSpace(full.centred_data(), centred=True)
    assert torch.allclose(centred.magnitude(), x, rtol=0, atol=1e-4 * float(x.max()))


def test_sense_cg_recovers_what_zero_filling_aliases():
    x = _smooth(48, 48)[None] + 0.5
    maps = K.birdcage_maps(8, (48, 48))
    k = K.acquire(x, maps=maps)
    mask = torch.from_numpy(mri_masks.cartesian_mask(48, 2, 0.16, "equispaced", 3))[None].float()
    full = K.sense_cg(k, torch.ones(1, 48), maps, n_iter=5)
    assert torch.allclose(full.abs(), x, atol=1e-4)
    zero_filled = mri.undersample(k, mask).magnitude()
    sense = K.sense_cg(k, mask, maps, n_iter=30).abs()
    assert (sense - x).norm() < 0.2 * (zero_filled - x).norm()


# -- artefacts against TorchIO and MONAI ---------------------------------------------------------------------------


def _layouts(x: torch.Tensor) -> list[K.KSpace]:
    """The same single-coil k-space in FFT order and centred (as an image item and as raw data)."""
    k = K.acquire(x[None])
    return [k, K.KSpace(k.centred_data(), centred=True)]


@pytest.mark.parametrize("num_ghosts,intensity,restore", [(4, 0.5, None), (7, 1.0, 0.1), (10, 0.8, 0.25)])
@pytest.mark.parametrize("image", ["mr", "odd"])
def test_ghosting_equals_torchio(num_ghosts, intensity, restore, image):
    import torchio as tio

    x = _mr_slice() if image == "mr" else _smooth(45, 38) * 100
    t = tio.Ghosting(num_ghosts=num_ghosts, axis=1, intensity=intensity, restore=restore)
    ref = t(tio.ScalarImage(tensor=x[None, :, :, None])).data[0, :, :, 0]
    for k in _layouts(x):
        out = mri.ghosting(k, torch.tensor([num_ghosts]), torch.tensor([intensity]),
                           torch.tensor([restore or 0.0]), axis=-1).images()[0, 0].real
        assert torch.allclose(out, ref, atol=1e-5 * float(x.max()))
    assert (ref - x).abs().max() > 0.02 * x.max()          # the case is not trivially the identity


@pytest.mark.parametrize("positions,intensity", [([[0.3, 0.8]], 1.5), ([[0.52, 0.1], [0.9, 0.95]], 0.5),
                                                 ([[0.5, 0.5], [0.5, 0.5]], 0.2)])
def test_spike_equals_torchio(positions, intensity):
    import torchio as tio

    x = _mr_slice()
    pos = np.array([[*p, 0.0] for p in positions])
    ref = tio.Spike(spikes_positions=pos, intensity=intensity)(tio.ScalarImage(tensor=x[None, :, :, None])).data
    rows = torch.from_numpy(np.floor(pos[:, 0] * 64).astype(np.int64))[None]
    cols = torch.from_numpy(np.floor(pos[:, 1] * 64).astype(np.int64))[None]
    for k in _layouts(x):
        out = mri.spike(k, rows, cols, torch.tensor([intensity])).images()[0, 0].real
        assert torch.allclose(out, ref[0, :, :, 0], atol=1e-5 * float(x.max()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bias_field_equals_torchio(seed):
    import torchio as tio

    x = _smooth(40, 56, seed) + 0.1
    coef3 = np.random.default_rng(seed).uniform(-0.5, 0.5, 20)        # TorchIO's order-3 terms, z included
    ref = tio.BiasField(coefficients=coef3.tolist(), order=3)(tio.ScalarImage(tensor=x[None, :, :, None])).data
    terms = [(a, b, c) for a in range(4) for b in range(4 - a) for c in range(4 - a - b)]
    ours = torch.tensor([[coef3[i] for i, t in enumerate(terms) if t[2] == 0]])   # z^c vanishes on a slice
    out = x * mri.bias_field((40, 56), ours)[0]
    assert torch.allclose(out, ref[0, :, :, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.8])
@pytest.mark.parametrize("shape", [(64, 64), (45, 60)])
def test_gibbs_equals_monai(alpha, shape):
    from monai.transforms import GibbsNoise

    x = _mr_slice() if shape == (64, 64) else _smooth(*shape) * 50
    ref = torch.as_tensor(GibbsNoise(alpha)(x[None]))[0]
    for k in _layouts(x):
        out = mri.gibbs(k, torch.tensor([alpha])).images()[0, 0].real
        assert torch.allclose(out, ref, atol=1e-5 * float(x.max()))


@pytest.mark.parametrize("a_over_sigma", [0.0, 1.0, 3.0])
def test_rician_noise_has_rician_moments(a_over_sigma):
    from scipy.stats import rice

    sigma = 0.2
    a = a_over_sigma * sigma
    x = torch.full((2, 256, 256), a)
    out = mri.rician(x, torch.tensor([sigma, sigma]), torch.tensor([5, 6]))
    mean, var = rice.stats(a_over_sigma, scale=sigma, moments="mv")
    n = out.numel()
    assert out.mean().item() == pytest.approx(float(mean), abs=5 * np.sqrt(var / n))
    assert out.var().item() == pytest.approx(float(var), rel=0.03)


def test_kspace_noise_keeps_sigma_in_the_image():
    k = K.acquire(torch.zeros(1, 128, 128))
    noisy = mri.kspace_noise(k, torch.tensor([0.3]), torch.tensor([9]))
    img = noisy.images()
    assert img.real.std().item() == pytest.approx(0.3, rel=0.02)
    assert img.imag.std().item() == pytest.approx(0.3, rel=0.02)


# -- motion ------------------------------------------------------------------------------------------------------


def test_zero_motion_reproduces_the_input():
    x = _mr_slice()[None, None].to(torch.complex64)
    seg = mri_motion.line_segments(torch.tensor([[0.3, 0.7]]), torch.from_numpy(mri_motion.line_times(64)))
    out = mri_motion.rigid_motion(x, torch.zeros(1, 3, 3), seg).magnitude()
    assert torch.allclose(out, x.real[:, 0], atol=1e-5 * float(x.real.max()))


def test_single_pose_translation_and_rotation_are_exact_moves():
    """One pose for every column: an integer translation is np.roll, a quarter turn is rot90."""
    x = _mr_slice()[None, None].to(torch.complex64)
    seg = torch.zeros(1, 64, dtype=torch.int64)
    moved = mri_motion.rigid_motion(x, torch.tensor([[[0.0, 3.0, -5.0]]]), seg).images()[0, 0]
    assert torch.allclose(moved.real, torch.roll(x[0, 0].real, (3, -5), dims=(0, 1)), atol=1e-3)
    turned = mri_motion.rigid_motion(x, torch.tensor([[[np.pi / 2, 0.0, 0.0]]]), seg).images()[0, 0]
    assert torch.allclose(turned.real, torch.rot90(x[0, 0].real, 1), atol=1e-2)


def _measure_oracle(image: np.ndarray, poses_mm: np.ndarray, event_times: np.ndarray, pixel_mm: float,
                    shots: int) -> float:
    """The severity measure from its definition, with NumPy: column energy fractions of the centred spectrum,
    the column times of a sequential (shots 0) or interleaved acquisition, RMS displacement over a disc of half
    the smaller side."""
    h, w = image.shape
    energy = (np.abs(np.fft.fftshift(np.fft.fft2(image))) ** 2).sum(axis=0)
    energy /= energy.sum()
    t = (np.arange(w) + 0.5) / w if shots == 0 else (np.arange(w) % shots + 0.5) / shots
    seg = (event_times[None, :] <= t[:, None]).sum(axis=1)
    r = min(h, w) / 2
    d = np.sqrt((poses_mm[:, 1] / pixel_mm) ** 2 + (poses_mm[:, 2] / pixel_mm) ** 2 + poses_mm[:, 0] ** 2 * r ** 2 / 2)
    return float((energy * d[seg]).sum())


@pytest.mark.parametrize("phantom,name", [("mri-000", "random_motion_artifact"), ("MR_small", "random_motion_artifact"),
                                          ("mri-000", "mri_motion_interleaved")])
def test_motion_lands_in_its_band_and_error_grows(phantom, name):
    from medq_synth.degradations import REGISTRY
    from medq_synth.sources.phantoms import real_item, synthetic_item

    item = synthetic_item("mri", 0) if phantom == "mri-000" else real_item("dicom", "MR_small.dcm")[0]
    deg = REGISTRY.resolve(name, "mri")
    assert deg.name in ("mri_motion", "mri_motion_interleaved")
    n = 200
    x = torch.from_numpy(item.image)[None]
    lo, hi = item.window
    px = float(np.mean(item.spacing_mm))
    ctx = {"window_lo": torch.full((n,), lo, dtype=torch.float64),
           "window_hi": torch.full((n,), hi, dtype=torch.float64),
           "pixel_mm": torch.full((n,), px, dtype=torch.float64)}
    v = ((x - lo) / (hi - lo)).expand(n, -1, -1, -1)
    errors = {}
    for level, severity in ((1, 0.5), (2, 1.0)):
        table = deg.magnitudes(severity, 256)
        band = (table["measure_px"] * (1 - table["band"]), table["measure_px"] * (1 + table["band"]))
        p = deg.sample_params(severity, torch.arange(n) + 7 * level, tuple(x.shape[-2:]),
                              pattern_seeds=torch.arange(n), inputs={"v": v, **ctx})
        shots = round(table["n_shots"])
        oracle = np.array([_measure_oracle(item.image[0], p["poses"][i].numpy(), p["event_times"][i].numpy(), px,
                                           shots) for i in range(n)])
        assert np.allclose(oracle, p["measure_px"].numpy(), rtol=1e-6)
        inside = (oracle >= band[0] * (1 - 1e-9)) & (oracle <= band[1] * (1 + 1e-9))
        assert inside.mean() >= 0.95, (level, inside.mean())
        assert np.abs(np.rad2deg(p["poses"][..., 0].numpy())).max() <= table["max_rotation_deg"] + 1e-9
        assert np.linalg.norm(p["poses"][..., 1:].numpy(), axis=-1).max() <= table["max_translation_mm"] + 1e-9
        sub = {k: t[:20] for k, t in p.items()}
        out = deg.apply(v[:20], {**sub, **{k: t[:20] for k, t in ctx.items()}})
        errors[level] = (out - v[:20]).pow(2).mean().sqrt().item()
    assert 0 < errors[1] < errors[2]


def test_interleaved_order_puts_every_shot_across_k_space():
    t = mri_motion.line_times(12, "interleaved", 3)
    assert np.allclose(t[:3], [1 / 6, 0.5, 5 / 6]) and np.allclose(t[3:6], t[:3])
    seg = mri_motion.line_segments(torch.tensor([[0.4]]), torch.from_numpy(t))
    assert seg[0].tolist() == [0, 1, 1] * 4


# -- batch invariance and imports ----------------------------------------------------------------------------------

MRI_DEGRADATIONS = ["mri_undersampling", "mri_undersampling_equispaced", "mri_undersampling_poisson",
                    "mri_undersampling_radial", "mri_motion", "mri_motion_interleaved", "mri_ghosting",
                    "mri_bias_field", "mri_spike", "mri_gibbs", "mri_noise"]


@pytest.mark.parametrize("name", MRI_DEGRADATIONS)
@given(split=st.integers(1, 4), raw=st.booleans())
def test_mri_degradations_are_batch_invariant(name, split, raw):
    """An item's output is bit-identical whatever batch it is computed in (image items and raw k-space)."""
    from medq_synth.degradations import REGISTRY

    deg = REGISTRY.resolve(name)
    n, h, w = 5, 40, 36
    g = torch.Generator().manual_seed(3)
    v = torch.nn.functional.avg_pool2d(torch.rand(n, 1, h, w, generator=g), 3, 1, 1)
    ctx = {"window_lo": torch.zeros(n, dtype=torch.float64), "window_hi": torch.ones(n, dtype=torch.float64),
           "pixel_mm": torch.full((n,), 1.2, dtype=torch.float64)}
    if raw:
        maps = K.birdcage_maps(4, (h + 8, w))
        ctx["_kspace"] = K.fft2c(K.coil_images(torch.nn.functional.pad(v[:, 0], (0, 0, 4, 4)), maps=maps))

    def run(sl: slice) -> torch.Tensor:
        part = {k: t[sl] for k, t in ctx.items()}
        seeds = torch.arange(n)[sl] + 100
        p = deg.sample_params(1.0, seeds, (h, w), pattern_seeds=seeds + 1, inputs={"v": v[sl], **part})
        return deg.apply(v[sl], {**p, **part})

    full = run(slice(0, n))
    parts = torch.cat([run(slice(k, min(k + split, n))) for k in range(0, n, split)])
    assert torch.equal(full, parts)
    assert full.shape == v.shape and torch.isfinite(full).all()


def test_physics_imports_nothing_above_it():
    for path in sorted((ROOT / "physics").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("medq_synth"):
                assert node.module.startswith(("medq_synth.physics", "medq_synth.kernels")), (path.name, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("medq_synth") or alias.name.startswith("medq_synth.physics")
    # the engine sits above: physics may use the kernels (its operators), never the engine


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", MRI_DEGRADATIONS)
def test_mri_degradations_on_cuda_match_the_cpu_and_are_batch_invariant(name):
    """cuFFT and the CUDA kernels: the same values as the CPU (float32 rounding) and bit-identical whatever
    the batch (the FFT blocks keep cuFFT's plan fixed)."""
    from medq_synth.degradations import REGISTRY

    deg = REGISTRY.resolve(name)
    n, h, w = 20, 128, 96
    v = torch.nn.functional.avg_pool2d(torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(5)), 3, 1, 1)
    ctx = {"window_lo": torch.zeros(n, dtype=torch.float64), "window_hi": torch.ones(n, dtype=torch.float64),
           "pixel_mm": torch.full((n,), 1.0, dtype=torch.float64)}

    def run(x: torch.Tensor, sl: slice) -> torch.Tensor:
        part = {k: t[sl] for k, t in ctx.items()}
        seeds = torch.arange(n)[sl]
        p = deg.sample_params(1.0, seeds, (h, w), pattern_seeds=seeds + 1, inputs={"v": x[sl], **part})
        return deg.apply(x[sl], {**p, **part})

    gpu = v.cuda()
    full = run(gpu, slice(0, n))
    parts = torch.cat([run(gpu, slice(k, min(k + 7, n))) for k in range(0, n, 7)])
    assert torch.equal(full, parts)
    cpu = run(v, slice(0, n))
    if name == "mri_noise":          # CUDA's generators draw other numbers than the CPU's: compare the noise level
        assert (full.cpu() - v).std().item() == pytest.approx((cpu - v).std().item(), rel=0.05)
    else:
        assert torch.allclose(full.cpu(), cpu, atol=1e-4)
