"""SSIM and PSNR against scikit-image (the oracle), and the batch invariance of the blocked reductions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medq_synth.metrics import psnr, ssim


def _pair(c: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A clean image and a noisy, blurred copy that agree on a 10 px border band (so that no window sees the
    padding where they differ: scikit-image and torch pad borders differently, and the maps agree there)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 0.9, (c, n, n))
    y = x.copy()
    inner = (slice(None), slice(10, n - 10), slice(10, n - 10))
    y[inner] = np.clip(0.6 * x[inner] + 0.4 * x[inner].mean() + rng.normal(0, 0.05, x[inner].shape), 0, 1)
    return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("c,n", [(1, 64), (3, 96), (1, 41)])
def test_ssim_and_psnr_match_scikit_image(c, n):
    x, y = _pair(c, n, seed=c * 100 + n)
    _, smap = structural_similarity(x.astype(np.float64), y.astype(np.float64), data_range=1.0, channel_axis=0,
                                    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
    ours = ssim(torch.from_numpy(y)[None], torch.from_numpy(x)[None])
    assert float(ours[0]) == pytest.approx(float(smap.mean()), abs=2e-6)
    ref = peak_signal_noise_ratio(x.astype(np.float64), y.astype(np.float64), data_range=1.0)
    assert float(psnr(torch.from_numpy(y)[None], torch.from_numpy(x)[None])[0]) == pytest.approx(ref, rel=1e-6)


def test_blocked_metrics_do_not_depend_on_the_batch():
    pairs = [_pair(3, 64, seed=s) for s in range(5)]
    xs = torch.stack([torch.from_numpy(a) for a, _ in pairs])
    ys = torch.stack([torch.from_numpy(b) for _, b in pairs])
    for fn in (ssim, psnr):
        whole = fn(ys, xs)
        one = torch.cat([fn(ys[i:i + 1], xs[i:i + 1]) for i in range(5)])
        assert torch.equal(whole, one)


def test_ssim_is_the_librarys_kernel():
    """The recorded SSIM is kornia's (the library kernel, 7x faster than the hand-written separable one it
    replaced: benchmarks/results/metrics_bench_cpu.md), bit for bit, inside the batch-invariant blocks."""
    from kornia.metrics import ssim as kornia_ssim

    x, y = _pair(3, 80, seed=7)
    xt, yt = torch.from_numpy(x)[None], torch.from_numpy(y)[None]
    ref = kornia_ssim(yt, xt, 11, max_val=1.0, eps=0.0).double().mean()
    assert float(ssim(yt, xt)[0]) == pytest.approx(float(ref), abs=1e-12)


def test_identical_images_score_exactly_one():
    flat = torch.zeros(1, 1, 64, 64)
    flat[..., 20:40, 20:40] = 0.5
    assert float(ssim(flat, flat)[0]) == 1.0 and float(psnr(flat, flat)[0]) == float("inf")
