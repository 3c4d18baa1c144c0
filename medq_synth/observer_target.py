"""The observer target of ``calibrate``: the channelized Hotelling observer's detectability d' of a disc
signal (known exactly, at known positions) in the calibration items' own backgrounds, against severity.

For each item, K signal positions inside the image; the item is degraded at severity s twice, with and
without the discs, with the same seeds (so the pair differs by the signal alone, as degraded); patches
around the positions give signal-present and signal-absent sets; a CHO with Laguerre-Gauss channels is
trained on half the items and tested on the other half (disjoint backgrounds), and the other way round. The
disc's amplitude is set once, on the clean images, for d'(0) = D0 (default 3), and kept for every severity,
so d'(s) / d'(0) is the fraction of the task information a degradation leaves. Display-domain models only
(the physical ones need physical images with the signal inserted before the acquisition)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .eval.cho import CHO, detectability, laguerre_gauss
from .seeding import output_seed, pattern_seed

RADIUS_PX = 4.0
CHANNELS = 5
POSITIONS = 16
D0 = 3.0


def _positions(h: int, w: int, k: int, margin: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    return [(int(rng.integers(margin, h - margin)), int(rng.integers(margin, w - margin))) for _ in range(k)]


def _disc(h: int, w: int, centres: list[tuple[int, int]]) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w] + 0.5
    out = np.zeros((h, w))
    for cy, cx in centres:
        out += np.clip(RADIUS_PX + 0.5 - np.hypot(xx - (cx + 0.5), yy - (cy + 0.5)), 0.0, 1.0)
    return out


class ObserverCurve:
    """d'(s) of one display-domain degradation on a fixed set of clean display images (each (C, H, W))."""

    def __init__(self, deg, images: list[np.ndarray], seed: int = 0) -> None:
        self.deg, self.seed = deg, seed
        self.images = [np.asarray(im, np.float32) for im in images]
        rng = np.random.default_rng(seed)
        half = int(math.ceil(3 * RADIUS_PX * 1.6))
        self.half = half
        self.channels = laguerre_gauss((2 * half + 1, 2 * half + 1), 1.6 * RADIUS_PX, CHANNELS)
        self.sites = [_positions(im.shape[-2], im.shape[-1], POSITIONS, half + 1, rng) for im in self.images]
        self.amplitude = 0.05
        d = self.d_prime(0.0)
        self.amplitude *= D0 / max(d, 1e-6)            # d' of a linear observer scales with the amplitude

    def _patches(self, severity: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        absent, present, group = [], [], []
        for i, (im, sites) in enumerate(zip(self.images, self.sites, strict=True)):
            sig = _disc(im.shape[-2], im.shape[-1], sites) * self.amplitude
            pair = np.stack([im, im + sig[None]]).astype(np.float32)
            v = torch.from_numpy(pair)
            if severity > 0:
                item = f"observer-target/{i}"
                seeds = torch.tensor([output_seed(self.seed, item, self.deg.name, f"s{severity:.4f}")] * 2)
                pats = torch.tensor([pattern_seed(self.seed, item, self.deg.name)] * 2)
                fill = torch.zeros(2, dtype=torch.float64)
                inputs = {"v": v} if self.deg.image_dependent else None
                v = self.deg.apply(v, self.deg.sample_params(float(severity), seeds, tuple(v.shape[-2:]), fill, pats,
                                                             inputs))
            g = v.clamp(0.0, 1.0).mean(dim=1).numpy()      # the observer reads the displayed luminance
            h = self.half
            for cy, cx in sites:
                absent.append(g[0, cy - h: cy + h + 1, cx - h: cx + h + 1])
                present.append(g[1, cy - h: cy + h + 1, cx - h: cx + h + 1])
                group.append(i)
        return np.array(absent), np.array(present), np.array(group)

    def d_prime(self, severity: float) -> float:
        """Trained on the even items and tested on the odd ones, then the other way round: the mean."""
        a, p, g = self._patches(severity)
        out = []
        for train in (g % 2 == 0, g % 2 == 1):
            obs = CHO(self.channels).fit(a[train], p[train])
            out.append(detectability(obs.statistic(a[~train]), obs.statistic(p[~train])).d_prime)
        return float(np.mean(out))


def curve(deg, images: list[np.ndarray], severities: list[float], seed: int = 0) -> dict[str, Any]:
    oc = ObserverCurve(deg, images, seed)
    d = {0.0: oc.d_prime(0.0)}
    for s in severities:
        d[float(s)] = oc.d_prime(float(s))
    return {"amplitude": oc.amplitude, "d_prime": d}
