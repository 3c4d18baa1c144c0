"""Full-reference image quality against the clean (L0) image, on the display-normalised, clipped images."""

from __future__ import annotations

import torch

from medq_synth.physics.blocks import blocked, spatial_mean

SSIM_WINDOW = 11    # Gaussian window of Wang et al. 2004: 11 taps, sigma 1.5 (kornia's constants)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per item for images in [0, 1] (data range 1); +inf where identical. float64 ``(B,)``."""
    mse = blocked(lambda a, b: spatial_mean((a - b) ** 2, channels=True), x, ref)
    return 10.0 * torch.log10(1.0 / mse)


def _ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per item through ``kornia.metrics.ssim`` (Gaussian window 11 taps, sigma 1.5, K1 0.01,
    K2 0.03, data range 1, reflect border; the mean of the channels' maps). The window shrinks to the largest
    odd size an image smaller than 11 px allows. The map is float32, its mean accumulates in float64.
    float64 ``(B,)``."""
    from kornia.metrics import ssim as kornia_ssim

    taps = min(SSIM_WINDOW, *(d - 1 if d % 2 == 0 else d for d in x.shape[-2:]))
    # eps 0: kornia's default 1e-12 is 1e-5 of the smallest denominator (C1 C2 = 9e-8 on a flat region) and
    # would score identical images below 1; the denominator is never 0 (C1, C2 > 0)
    m = kornia_ssim(x.float(), ref.float(), taps, max_val=1.0, eps=0.0)
    return spatial_mean(m, channels=True)


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``ssim_map``'s mean per item, computed on fixed-shape blocks (see physics.blocks). float64 ``(B,)``."""
    return blocked(_ssim, x, ref)
