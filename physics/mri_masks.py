"""k-space sampling masks: fastMRI's Cartesian masks (exactly), sigpy's 2-D Poisson disc, golden-angle radial.

Cartesian masks select phase-encode columns (the last axis, fastMRI's convention) and are drawn on the host
from a NumPy ``RandomState`` seeded with the mask seed, consuming draws in fastMRI's order, so that
``cartesian_mask(n, acc, cf, kind, seed)`` equals ``fastmri.data.subsample.<Kind>MaskFunc([cf], [acc])(shape,
seed=seed)`` bit for bit (tested against the released package). Acceleration is the nominal factor R (a
fraction 1 / R of the columns is kept on average); the centre fraction is the fraction of columns always kept
around DC (round(N cf) columns starting at (N - round(N cf) + 1) // 2).
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np

CARTESIAN_KINDS = ("random", "equispaced", "equispaced_fraction")
POISSON_POOL = 4          # Poisson-disc masks cached per (shape, acceleration); an item picks one of them


_local = threading.local()


def _rng(seed: int) -> np.random.RandomState:
    """A RandomState seeded with ``seed`` (32 bits), as fastMRI's ``temp_seed`` does. One per thread, reseeded:
    seeding costs ~1 us where constructing one costs ~70 us, most of a mask's cost."""
    rs = getattr(_local, "rs", None)
    if rs is None:
        rs = _local.rs = np.random.RandomState()
    rs.seed(int(seed) & 0xFFFFFFFF)
    return rs


def centre_columns(n_cols: int, center_fraction: float) -> np.ndarray:
    """fastMRI's calibration region: round(N cf) columns starting at (N - round(N cf) + 1) // 2, bool (N,)."""
    n_low = round(n_cols * center_fraction)
    mask = np.zeros(n_cols, dtype=bool)
    pad = (n_cols - n_low + 1) // 2
    mask[pad:pad + n_low] = True
    return mask


def cartesian_mask(n_cols: int, acceleration: float, center_fraction: float, kind: str, seed: int) -> np.ndarray:
    """A column mask, bool ``(n_cols,)`` (True = acquired), following fastMRI's mask functions:

    - ``random`` (RandomMaskFunc): each non-centre column with probability
      (N / R - N_low) / (N - N_low), so that N / R columns are kept on average;
    - ``equispaced`` (EquiSpacedMaskFunc): every R-th column (R rounded to an integer) from a random offset,
      plus the centre, so the realised acceleration falls below R;
    - ``equispaced_fraction`` (EquispacedMaskFractionFunc): the spacing adjusted for the centre so that N / R
      columns are kept.
    """
    if kind not in CARTESIAN_KINDS:
        raise ValueError(f"unknown Cartesian mask kind {kind!r} ({', '.join(CARTESIAN_KINDS)})")
    if acceleration < 1:
        raise ValueError(f"acceleration must be >= 1, not {acceleration}")
    rs = _rng(seed)
    rs.randint(1)                    # fastMRI's choose_acceleration draws the (cf, R) pair first
    centre = centre_columns(n_cols, center_fraction)
    n_low = int(centre.sum())
    accel = np.zeros(n_cols, dtype=bool)
    if kind == "random":
        prob = (n_cols / acceleration - n_low) / (n_cols - n_low) if n_cols > n_low else 0.0
        accel = rs.uniform(size=n_cols) < prob
    elif kind == "equispaced":
        step = max(1, round(acceleration))
        offset = rs.randint(0, high=step)
        accel[offset::step] = True
    else:
        adjusted = (acceleration * (n_low - n_cols)) / (n_low * acceleration - n_cols)
        offset = rs.randint(0, high=round(adjusted))
        accel[np.around(np.arange(offset, n_cols - 1, adjusted)).astype(np.uint64)] = True
    return centre | accel


POISSON_BISECTIONS = 48
POISSON_TOLERANCE = 0.02     # relative distance to the asked acceleration that ends the search


def sigpy_poisson(shape: tuple[int, int], acceleration: float, calib: int, seed: int) -> np.ndarray:
    """sigpy's variable-density Poisson disc (its compiled sampler and its density 1 / (1 + s r), corners
    cropped), bool ``(H, W)``, with sigpy's bisection on the slope s rewritten here: sigpy 0.1.27 loops
    ``while slope_min < slope_max``, which never ends once the two bounds stop moving (seen at 48 x 36, R = 8).
    This search stops after POISSON_BISECTIONS steps or within POISSON_TOLERANCE of R, keeping the closest."""
    from sigpy.mri.samp import _poisson

    ny, nx = shape
    y, x = np.mgrid[:ny, :nx].astype(np.float64)
    x = np.maximum(np.abs(x - nx / 2) - calib / 2, 0)
    y = np.maximum(np.abs(y - ny / 2) - calib / 2, 0)
    x /= max(x.max(), 1e-12)
    y /= max(y.max(), 1e-12)
    r = np.sqrt(x ** 2 + y ** 2)
    lo, hi = 0.0, float(max(nx, ny))
    best, best_gap = None, np.inf
    for _ in range(POISSON_BISECTIONS):
        slope = (lo + hi) / 2
        rx = np.clip((1 + r * slope) * nx / max(nx, ny), 1, None)
        ry = np.clip((1 + r * slope) * ny / max(nx, ny), 1, None)
        mask = _poisson(nx, ny, 30, rx, ry, (calib, calib), seed) * (r < 1)
        actual = nx * ny / max(mask.sum(), 1)
        if abs(actual - acceleration) < best_gap:
            best, best_gap = mask > 0, abs(actual - acceleration)
        if best_gap < POISSON_TOLERANCE * acceleration:
            break
        lo, hi = (slope, hi) if actual < acceleration else (lo, slope)
    return best


@lru_cache(maxsize=16)
def _poisson_pool(shape: tuple[int, int], acceleration: float, calib: int) -> np.ndarray:
    # sigpy's sampler is compiled with numba and a search costs ~0.4 s per 256^2 mask: draw a small pool once.
    return np.stack([sigpy_poisson(shape, acceleration, calib, k) for k in range(POISSON_POOL)])


def poisson_mask(shape: tuple[int, int], acceleration: float, calib: int, index: int) -> np.ndarray:
    """A 2-D variable-density Poisson-disc mask (``sigpy_poisson``, a ``calib`` x ``calib`` fully sampled
    centre), bool ``(H, W)``; ``index`` picks one of the cached pool of POISSON_POOL masks drawn with sigpy
    seeds 0..POISSON_POOL-1. The acceleration is rounded to 0.01 for the cache."""
    pool = _poisson_pool((int(shape[0]), int(shape[1])), round(float(acceleration), 2), int(calib))
    return pool[int(index) % POISSON_POOL]


GOLDEN_ANGLE = np.pi * (np.sqrt(5.0) - 1.0) / 2.0      # 111.25 deg between successive spokes


def radial_spokes(shape: tuple[int, int], acceleration: float) -> int:
    """Spokes for a radial acquisition at ``acceleration``: full (Nyquist) sampling of an N-pixel diameter
    needs pi N / 2 spokes, so R means ceil(pi N / (2 R))."""
    return max(1, int(np.ceil(np.pi * max(shape) / (2.0 * acceleration))))


def radial_mask(shape: tuple[int, int], acceleration: float, rotation: float) -> np.ndarray:
    """Golden-angle radial spokes through the k-space centre, gridded to the nearest Cartesian sample (a
    mask model of radial undersampling, not a non-uniform FFT), bool ``(H, W)``. ``rotation`` in [0, 1)
    turns the whole spoke set by that fraction of pi."""
    h, w = shape
    n = radial_spokes(shape, acceleration)
    angles = rotation * np.pi + GOLDEN_ANGLE * np.arange(n)
    r = np.arange(-max(h, w), max(h, w) + 1) * 0.5                         # half-pixel steps along a spoke
    rows = np.rint(h // 2 + np.outer(np.sin(angles), r)).astype(int).ravel()
    cols = np.rint(w // 2 + np.outer(np.cos(angles), r)).astype(int).ravel()
    keep = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    mask = np.zeros(shape, dtype=bool)
    mask[rows[keep], cols[keep]] = True
    return mask
