"""MRI artefacts as operators on k-space (and the two image-domain ones, bias field and Rician noise).

Every function is batched over items and takes per-item parameters as ``(B,)`` tensors (or ``(B, ...)``
arrays); k-space is a ``physics.kspace.KSpace`` (``(B, C, H, W)``, phase encoding along W), positions and
weights are in centred k-space coordinates. Units: intensities in the image's scanner units (a.u.), noise
sigma in the same units per real component, fractions of k-space dimensionless. No function normalises an
image by its own statistics; the spike's amplitude is relative to the k-space maximum because that is how the
model is defined (TorchIO's ``Spike``).

References reproduced (tests compare the numbers): TorchIO 1.x ``Ghosting``, ``Spike`` and ``BiasField``
(their deterministic transforms, which return the real part of the inverse FFT: ``images().real`` here), MONAI
``GibbsNoise`` (same), fastMRI's masks (``mri_masks``). Outputs of the engine are magnitudes (``magnitude()``,
root-sum-of-squares over coils), as a scanner displays them.
"""

from __future__ import annotations

import math

import torch

from . import rng
from .kspace import KSpace, centring_phase, polynomial_field


def undersample(k: KSpace, mask: torch.Tensor) -> KSpace:
    """Keep the acquired samples: ``mask`` centred, ``(B, W)`` for Cartesian columns or ``(B, H, W)``
    (Poisson disc, radial); 1 = acquired. Missing samples are zero (zero-filled reconstruction)."""
    m = mask.to(torch.float32)
    m = m[:, None, None, :] if m.dim() == 2 else m[:, None]
    return k.weighted(m)


def ghosting_weights(n: int, num_ghosts: torch.Tensor, intensity: torch.Tensor,
                     restore: torch.Tensor) -> torch.Tensor:
    """TorchIO's ghosting profile along one k-space axis of ``n`` samples (centred), ``(B, n)`` float32.

    Every ``num_ghosts``-th plane from index 0 is scaled by ``1 - intensity``; then the centre is restored:
    the plane n // 2 alone if ``restore`` is 0, else the ``round(restore n)`` planes
    [n // 2 - size // 2, n // 2 + size // 2) (TorchIO's slice, whose length is even)."""
    idx = torch.arange(n)[None, :]
    ghosts = num_ghosts.to(torch.int64)[:, None]
    hit = (idx % ghosts.clamp_min(1) == 0) & (ghosts > 0)
    w = torch.where(hit, 1.0 - intensity.to(torch.float64)[:, None], torch.ones((), dtype=torch.float64))
    size = torch.round(restore.to(torch.float64) * n).to(torch.int64)[:, None]
    mid = n // 2
    centre = torch.where(size > 0, (idx >= mid - size // 2) & (idx < mid + size // 2), idx == mid)
    return torch.where(centre, torch.ones_like(w), w).to(torch.float32)


def ghosting(k: KSpace, num_ghosts: torch.Tensor, intensity: torch.Tensor, restore: torch.Tensor,
             axis: int = -1) -> KSpace:
    """Discrete ghosts along ``axis`` (-1: phase encoding, W; -2: H): periodic k-space planes attenuated by
    ``intensity`` (0 none, 1 removed) every ``num_ghosts`` planes gives ``num_ghosts`` replicas spaced N / n."""
    h, w = k.shape
    n = w if axis in (-1, 3) else h
    prof = ghosting_weights(n, num_ghosts, intensity, restore).to(k.data.device)
    weight = prof[:, None, None, :] if n == w and axis in (-1, 3) else prof[:, None, :, None]
    return k.weighted(weight)


def spike(k: KSpace, rows: torch.Tensor, cols: torch.Tensor, intensity: torch.Tensor) -> KSpace:
    """Herringbone artefact: add ``intensity`` x max|k| (per item and coil, a real value) at the centred
    positions ``rows``, ``cols`` (int64, ``(B, S)``), one spike after the other with the maximum taken again
    after each (TorchIO's ``Spike``: a second spike on the DC sample is scaled by the first one's result)."""
    b, c, h, w = k.data.shape
    r, q = rows.to(k.data.device), cols.to(k.data.device)
    if k.centred:
        # The spike is real in TorchIO's frame fftshift(fft2(x)); fft2c(x) differs from it by the phase of its
        # input shift, applied here so that a spike has the same image-domain effect in either layout.
        phase = centring_phase(h, w, k.data.device)[r, q]                      # (B, S)
    else:                                                                      # centred -> FFT order
        phase = torch.ones(r.shape, dtype=k.data.dtype, device=r.device)
        r, q = (r - h // 2) % h, (q - w // 2) % w
    out = k.data.clone()
    bi = torch.arange(b, device=r.device)[:, None]
    ci = torch.arange(c, device=r.device)[None, :]
    scale = intensity.to(device=r.device, dtype=torch.float32)[:, None]
    for s in range(r.shape[1]):                      # a few spikes, each a function of the previous ones
        peak = out.abs().amax(dim=(-2, -1))                                    # (B, C)
        out[bi, ci, r[:, s, None], q[:, s, None]] += (peak * scale).to(out.dtype) * phase[:, s, None]
    return KSpace(out, k.centred)


def gibbs_mask(shape: tuple[int, int], alpha: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """MONAI's Gibbs low-pass, ``(B, H, W)`` bool: keep the centred samples within
    r = (1 - alpha) max(H, W) sqrt(2) / 2 of ((H - 1) / 2, (W - 1) / 2); alpha = 0 keeps everything."""
    h, w = shape
    radius = (1.0 - alpha.to(device=device, dtype=torch.float64)) * max(h, w) * math.sqrt(2.0) / 2.0
    i = torch.arange(h, dtype=torch.float64, device=device)[:, None] - (h - 1) / 2
    j = torch.arange(w, dtype=torch.float64, device=device)[None, :] - (w - 1) / 2
    dist = torch.sqrt(i ** 2 + j ** 2)
    return dist[None] <= radius[:, None, None]


def gibbs(k: KSpace, alpha: torch.Tensor) -> KSpace:
    """Gibbs ringing by k-space truncation (MONAI ``GibbsNoise``): a circular low-pass of the centred k-space."""
    return k.weighted(gibbs_mask(k.shape, alpha, k.data.device)[:, None])


BIAS_ORDER = 3


def bias_field(shape: tuple[int, int], coefficients: torch.Tensor, order: int = BIAS_ORDER) -> torch.Tensor:
    """A smooth multiplicative field exp(sum_{a+b<=order} c_ab x^a y^b), ``(B, H, W)`` (TorchIO's
    ``BiasField`` on a slice: its terms with a z power vanish there)."""
    return torch.exp(polynomial_field(shape, coefficients, order))


def rician(magnitude: torch.Tensor, sigma: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Rician noise: sqrt((x + sigma n1)^2 + (sigma n2)^2), n1, n2 standard normal per pixel; ``magnitude``
    ``(B, H, W)`` in scanner units, ``sigma`` ``(B,)`` in the same units (per real component)."""
    n = rng.normal(seeds, (2, *magnitude.shape[-2:]), magnitude.device, magnitude.dtype)
    s = sigma.to(magnitude)[:, None, None]
    return torch.sqrt((magnitude + s * n[:, 0]) ** 2 + (s * n[:, 1]) ** 2)


def kspace_noise(k: KSpace, sigma: torch.Tensor, seeds: torch.Tensor) -> KSpace:
    """Thermal noise on acquired k-space: complex white Gaussian noise of ``sigma`` per real component on every
    sample of every coil (the orthonormal DFT keeps sigma in the image: a single coil's magnitude is Rician,
    a root-sum-of-squares over C coils is noncentral chi with 2C degrees of freedom)."""
    b, c, h, w = k.data.shape
    n = rng.normal(seeds, (2, c, h, w), k.data.device, torch.float32)
    s = sigma.to(torch.float32).to(k.data.device)[:, None, None, None]
    return KSpace(k.data + torch.complex(s * n[:, 0], s * n[:, 1]), k.centred)
