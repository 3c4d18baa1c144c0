"""Channelized Hotelling observer (Barrett & Myers, *Foundations of Image Science*, ch. 13-14), the model
observer of task-based image quality, with Laguerre-Gauss channels.

Why Laguerre-Gauss: the phantoms' lesions are discs, rotationally symmetric, on locally smooth backgrounds.
LG functions form a complete rotationally symmetric basis centred on the signal, and a few of them carry
such a signal with little loss of detectability (Gallas & Barrett 2003); Gabor channels add orientation
tuning, which symmetric discs do not need, at several times the channel count.

Use: ``channels = laguerre_gauss(shape, width_px, n)``, then ``CHO(channels).fit(absent, present)`` on
training images (signal absent / present at the known location), then ``statistic`` on test images drawn
from disjoint seeds, and ``detectability`` of the two sets of statistics: d' and AUC. ``posterior`` turns a
statistic into the probability of "present" from the statistic's Gaussian distribution under each
hypothesis, so an answer's confidence is the observer's, not a guess."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def laguerre_gauss(shape: tuple[int, int], width_px: float, n_channels: int,
                   centre: tuple[float, float] | None = None) -> np.ndarray:
    """``n_channels`` Laguerre-Gauss channels ``(J, H, W)``, u_j(r) = exp(-pi r^2 / a^2) L_j(2 pi r^2 / a^2),
    each of unit L2 norm on the pixel grid. ``width_px``: the Gaussian width a (px); ``centre``: (row, col)
    of the signal centre in pixel coordinates (default: the image centre)."""
    from scipy.special import eval_laguerre

    h, w = shape
    cy, cx = centre if centre is not None else ((h - 1) / 2, (w - 1) / 2)
    yy, xx = np.mgrid[:h, :w]
    g = 2 * math.pi * ((yy - cy) ** 2 + (xx - cx) ** 2) / width_px ** 2
    u = np.stack([np.exp(-g / 2) * eval_laguerre(j, g) for j in range(n_channels)])
    return u / np.sqrt((u ** 2).sum(axis=(1, 2), keepdims=True))


@dataclass
class Detectability:
    d_prime: float          # (mean_1 - mean_0) / sqrt((var_0 + var_1) / 2) of the test statistics
    auc: float              # empirical (Mann-Whitney, ties one half)
    auc_gaussian: float     # Phi(d' / sqrt 2): the AUC the d' implies for Gaussian statistics
    n_absent: int
    n_present: int


def detectability(t_absent: np.ndarray, t_present: np.ndarray) -> Detectability:
    """d' and AUC of a test statistic from its values on signal-absent and signal-present images."""
    from .metrics import auroc

    t0, t1 = np.asarray(t_absent, np.float64), np.asarray(t_present, np.float64)
    d = float((t1.mean() - t0.mean()) / math.sqrt(0.5 * (t0.var(ddof=1) + t1.var(ddof=1))))
    auc = auroc(np.concatenate([t0, t1]), np.r_[np.zeros(t0.size, bool), np.ones(t1.size, bool)])
    return Detectability(d, float(auc), 0.5 * (1 + math.erf(d / 2)), t0.size, t1.size)


class CHO:
    """The Hotelling observer in channel space: template w = S^-1 (mu_1 - mu_0), with S the mean of the two
    classes' channel covariances (a ridge of 1e-9 of its trace keeps a rank-deficient S invertible)."""

    def __init__(self, channels: np.ndarray) -> None:
        self.channels = np.asarray(channels, np.float64).reshape(len(channels), -1)
        self.w: np.ndarray | None = None
        self.stats: tuple[float, float, float, float] | None = None     # mean_0, var_0, mean_1, var_1

    def channelize(self, images: np.ndarray) -> np.ndarray:
        """``(N, H, W)`` images -> ``(N, J)`` channel outputs."""
        return np.asarray(images, np.float64).reshape(len(images), -1) @ self.channels.T

    def fit(self, absent: np.ndarray, present: np.ndarray) -> CHO:
        return self.fit_channels(self.channelize(absent), self.channelize(present))

    def fit_channels(self, v0: np.ndarray, v1: np.ndarray) -> CHO:
        """Fit from channel outputs ``(N, J)`` already computed (a scanning observer's channel maps)."""
        s = 0.5 * (np.cov(v0, rowvar=False) + np.cov(v1, rowvar=False))
        s = np.atleast_2d(s) + 1e-9 * np.trace(np.atleast_2d(s)) / len(self.channels) * np.eye(len(self.channels))
        self.w = np.linalg.solve(s, v1.mean(axis=0) - v0.mean(axis=0))
        t0, t1 = v0 @ self.w, v1 @ self.w
        self.stats = (float(t0.mean()), float(t0.var(ddof=1)), float(t1.mean()), float(t1.var(ddof=1)))
        return self

    def statistic(self, images: np.ndarray) -> np.ndarray:
        if self.w is None:
            raise RuntimeError("fit the observer first")
        return self.channelize(images) @ self.w

    def posterior(self, t: np.ndarray, prior_present: float = 0.5) -> np.ndarray:
        """P(present | t) from Gaussian fits of the training statistics under each hypothesis."""
        if self.stats is None:
            raise RuntimeError("fit the observer first")
        return gaussian_posterior(t, *self.stats, prior_present)


def gaussian_posterior(t: np.ndarray | float, m0: float, v0: float, m1: float, v1: float,
                       prior1: float = 0.5) -> np.ndarray:
    """P(hypothesis 1 | t) for a statistic with Gaussian distributions N(m0, v0) and N(m1, v1) under the two
    hypotheses and prior ``prior1`` of the second."""
    t = np.asarray(t, np.float64)
    log0 = -0.5 * (t - m0) ** 2 / v0 - 0.5 * math.log(v0) + math.log(1 - prior1)
    log1 = -0.5 * (t - m1) ** 2 / v1 - 0.5 * math.log(v1) + math.log(prior1)
    return 1.0 / (1.0 + np.exp(np.clip(log0 - log1, -700, 700)))
