"""The channelized Hotelling observer against the analytic ideal observer (signal known exactly in white
Gaussian noise: d' = ||s|| / sigma), with training and test images from disjoint seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import eval_laguerre

from medq_synth.eval import metrics as M
from medq_synth.eval.cho import CHO, detectability, laguerre_gauss

N, A = 48, 5.0          # image side, signal width (px)


def _signal(amplitude: float) -> np.ndarray:
    yy, xx = np.mgrid[:N, :N]
    r2 = (yy - (N - 1) / 2) ** 2 + (xx - (N - 1) / 2) ** 2
    return amplitude * np.exp(-math.pi * r2 / A ** 2)


def _images(seed: int, n: int, sigma: float, signal: np.ndarray | None) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0.0, sigma, (n, N, N))
    return noise if signal is None else noise + signal


def _d_prime(sigma: float, amplitude: float = 1.0, n: int = 1500) -> tuple[float, object]:
    s = _signal(amplitude)
    obs = CHO(laguerre_gauss((N, N), A, 5)).fit(_images(1, n, sigma, None), _images(2, n, sigma, s))
    test = detectability(obs.statistic(_images(3, n, sigma, None)), obs.statistic(_images(4, n, sigma, s)))
    return test, obs


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_d_prime_equals_the_ideal_observer_in_white_noise(sigma):
    ideal = float(np.linalg.norm(_signal(1.0))) / sigma          # Barrett & Myers: SKE/BKE, white Gaussian noise
    test, _ = _d_prime(sigma)
    assert test.d_prime == pytest.approx(ideal, rel=0.10)
    assert test.auc == pytest.approx(0.5 * (1 + math.erf(ideal / 2)), abs=0.03)


def test_d_prime_falls_as_noise_rises_and_auc_is_mann_whitney():
    tests = [_d_prime(s)[0] for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a.d_prime > b.d_prime for a, b in zip(tests, tests[1:], strict=False))
    t0, t1 = np.array([0.1, 0.4, 0.4, 0.9]), np.array([0.4, 1.2, 0.8])
    ref = M.auroc(np.concatenate([t0, t1]), np.array([0, 0, 0, 0, 1, 1, 1], bool))
    assert detectability(t0, t1).auc == pytest.approx(ref)


def test_channels_and_posterior():
    u = laguerre_gauss((N, N), A, 4)
    np.testing.assert_allclose((u.reshape(4, -1) @ u.reshape(4, -1).T), np.eye(4), atol=2e-3)    # near orthonormal
    yy, xx = np.mgrid[:N, :N]
    g = 2 * math.pi * ((yy - (N - 1) / 2) ** 2 + (xx - (N - 1) / 2) ** 2) / A ** 2
    ref = np.exp(-g / 2) * eval_laguerre(2, g)
    np.testing.assert_allclose(u[2], ref / np.linalg.norm(ref))
    _, obs = _d_prime(1.0)
    m0, _, m1, _ = obs.stats
    p = obs.posterior(np.array([m0 - 10, (m0 + m1) / 2, m1 + 10]))
    assert p[0] < 0.01 and p[2] > 0.99 and 0.2 < p[1] < 0.8
