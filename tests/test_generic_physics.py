"""Values and invariants of the generic degradations (physics.generic) and their registry binding."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medq_synth.degradations import REGISTRY
from medq_synth.physics import generic

GENERIC = ["gaussian_noise", "gaussian_blur", "motion_blur", "low_resolution", "adjust_brightness", "exposure",
           "reduce_contrast", "rotation", "movement"]


def _img(b=4, c=1, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g)
    return torch.nn.functional.avg_pool2d(x, 5, 1, 2)   # some spatial correlation


def _apply(name, v, severity, seed0=1):
    d = REGISTRY.resolve(name)
    seeds = torch.arange(seed0, seed0 + len(v), dtype=torch.int64)
    p = d.sample_params(severity, seeds, tuple(v.shape[-2:]), torch.zeros(len(v), dtype=torch.float64))
    return d.apply(v, p), p


@pytest.mark.parametrize("name", GENERIC)
def test_severity_zero_is_identity(name):
    v = _img()
    out, _ = _apply(name, v, 0.0)
    assert torch.allclose(out, v, atol=1e-6)


@pytest.mark.parametrize("name", GENERIC)
@given(split=st.integers(1, 5), c=st.sampled_from([1, 3]))
def test_batch_size_invariance(name, split, c):
    """An item's output is bit-identical whatever batch it is computed in."""
    v = _img(b=6, c=c, h=48, w=40)
    full, _ = _apply(name, v, 1.0)
    parts = [_apply(name, v[k:k + split], 1.0, seed0=1 + k)[0] for k in range(0, 6, split)]
    assert torch.equal(full, torch.cat(parts))


def test_noise_std_matches_sigma():
    v = torch.full((2, 1, 256, 256), 0.5)
    out, p = _apply("gaussian_noise", v, 1.0)
    assert float(p["sigma"][0]) == pytest.approx(0.079)
    assert (out - v).std().item() == pytest.approx(0.079, rel=0.02)
    assert (out[0] - out[1]).abs().mean() > 0.01      # independent streams per item


def test_blur_preserves_mean_and_matches_gaussian_width():
    v = torch.zeros(1, 1, 129, 129)
    v[..., 64, 64] = 1.0
    out = generic.gaussian_blur(v, torch.tensor([3.0]))
    assert out.sum().item() == pytest.approx(1.0, rel=1e-4)
    yy, xx = torch.meshgrid(torch.arange(129.0), torch.arange(129.0), indexing="ij")
    var = (out[0, 0] * (xx - 64) ** 2).sum().item()
    assert math.sqrt(var) == pytest.approx(3.0, rel=0.02)


def test_motion_blur_is_a_line_average():
    v = torch.zeros(1, 1, 65, 65)
    v[..., 32, 32] = 1.0
    out = generic.motion_blur(v, torch.tensor([9.0]), torch.tensor([0.0]))
    row = out[0, 0, 32]
    assert out.sum().item() == pytest.approx(1.0, rel=1e-4)
    assert row.sum().item() == pytest.approx(1.0, rel=1e-3)          # all the energy on the horizontal line
    assert (row > 1e-3).sum().item() == 9


def test_rotation_by_90_matches_rot90():
    v = _img(b=1, h=33, w=33)
    out = generic.rotation(v, torch.tensor([90.0]), torch.tensor([0.0]))
    # kornia: positive angles are counter-clockwise in the displayed image
    assert torch.allclose(out, torch.rot90(v, 1, dims=(-2, -1)), atol=1e-5)


def test_rotation_fills_corners_with_background():
    v = torch.full((1, 1, 64, 64), 0.5)
    out = generic.rotation(v, torch.tensor([45.0]), torch.tensor([-2.4]))
    assert out[0, 0, 0, 0].item() == pytest.approx(-2.4, abs=1e-5)
    assert out[0, 0, 32, 32].item() == pytest.approx(0.5, abs=1e-5)


def test_contrast_keeps_display_mean_and_scales_deviation():
    v = _img(b=2, c=3)
    out = generic.reduce_contrast(v, torch.tensor([0.3, 0.65]))
    mu = v.mean(dim=(-2, -1), keepdim=True)
    assert torch.allclose(out.mean(dim=(-2, -1), keepdim=True), mu, atol=1e-6)
    assert torch.allclose(out - mu, (v - mu) * torch.tensor([0.3, 0.65]).view(2, 1, 1, 1), atol=1e-6)


def test_contrast_mean_is_of_the_displayed_image():
    """A CT-like item far outside its window (air at -2.4, bone at 1.8): the mean is the clipped display's,
    computed here with NumPy, not the raw mean the air would drag down."""
    rng = np.random.default_rng(3)
    raw = rng.uniform(0.2, 0.8, (1, 1, 48, 48))
    raw[..., :16, :] = -2.4
    raw[..., -6:, -6:] = 1.8
    v = torch.from_numpy(raw).float()
    mu = np.clip(raw, 0, 1).mean()
    assert abs(mu - raw.mean()) > 0.5                               # the clamp matters here
    out = generic.reduce_contrast(v, torch.tensor([0.5])).double().numpy()
    np.testing.assert_allclose(out, mu + 0.5 * (raw - mu), atol=1e-6)


def test_brightness_and_exposure_are_affine():
    v = _img(b=1)
    assert torch.allclose(generic.adjust_brightness(v, torch.tensor([-0.3])), v - 0.3)
    assert torch.allclose(generic.exposure(v, torch.tensor([1.19]), torch.tensor([-0.471])), 1.19 * v - 0.471,
                          atol=1e-6)


def test_low_resolution_keeps_size_and_removes_detail():
    v = _img(b=1, h=64, w=64)
    out = generic.low_resolution(v, torch.tensor([8.0]))
    assert out.shape == v.shape
    hf = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean().item()  # noqa: E731
    assert hf(out) < 0.5 * hf(v)
    const = torch.full((1, 1, 40, 40), 0.3)
    assert torch.allclose(generic.low_resolution(const, torch.tensor([3.0])), const, atol=1e-6)


def test_movement_weight_zero_and_translation():
    v = _img(b=1, h=64, w=64)
    assert torch.allclose(generic.movement(v, torch.tensor([[5.0, 0.0]]), torch.tensor([0.0]), torch.tensor([0.0]),
                                           torch.tensor([0.0])), v)
    moved = generic.movement(v, torch.tensor([[4.0, 0.0]]), torch.tensor([0.0]), torch.tensor([1.0]),
                             torch.tensor([0.0]))
    assert torch.allclose(moved[..., 4:], v[..., :-4], atol=1e-5)     # integer shift to the right
    assert torch.all(moved[..., :4] == 0)


def test_params_are_per_item_and_seeded():
    d = REGISTRY.resolve("rotation")
    a = d.sample_params(1.0, torch.tensor([5, 6, 7, 8]), (64, 64))
    b = d.sample_params(1.0, torch.tensor([7, 8]), (64, 64))
    assert torch.equal(a["angle_deg"][2:], b["angle_deg"])
    assert set(np.abs(a["angle_deg"].numpy()).round(6)) == {153.0}


def test_physics_imports_without_kornia_at_import_time():
    import subprocess
    import sys

    code = ("import sys; sys.modules['kornia'] = None; import medq_synth.physics.generic as g; "
            "import torch; print(g.adjust_brightness(torch.zeros(1,1,2,2), torch.tensor([0.5])).sum().item())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2.0"


@given(block=st.sampled_from([2, 3, 8]), split=st.integers(1, 7), taps=st.sampled_from([3, 5, 11]))
def test_blocked_convolution_is_batch_invariant_for_any_block(block, split, taps):
    """The GPU uses multi-item blocks: an item's result must not depend on its block mates."""
    import kornia

    from medq_synth.physics.blocks import blocked

    x = _img(b=7, c=1, h=40, w=36, seed=3)
    sig = torch.full((7, 2), taps / 6)
    f = lambda t, s: kornia.filters.gaussian_blur2d(t, (taps, taps), s)  # noqa: E731
    full = blocked(f, x, sig, block=block)
    parts = torch.cat([blocked(f, x[k:k + split], sig[k:k + split], block=block) for k in range(0, 7, split)])
    assert torch.equal(full, parts)
