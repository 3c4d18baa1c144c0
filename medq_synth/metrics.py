"""Full-reference image quality against the clean (L0) image, on the display-normalised, clipped images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medq_synth.physics.blocks import blocked

SSIM_WINDOW = 11    # Gaussian window of Wang et al. 2004: 11 taps, sigma 1.5
SSIM_SIGMA = 1.5
K1, K2 = 0.01, 0.03


def psnr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per item for images in [0, 1] (data range 1); +inf where identical. float64 ``(B,)``."""
    mse = blocked(lambda a, b: ((a - b) ** 2).mean(dim=(1, 2, 3), dtype=torch.float64), x, ref)
    return 10.0 * torch.log10(1.0 / mse)


def _blur(x: torch.Tensor, taps: int) -> torch.Tensor:
    """Separable Gaussian filter (reflect border), one channel at a time."""
    t = torch.arange(taps, device=x.device, dtype=x.dtype) - (taps - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * SSIM_SIGMA ** 2))
    g = g / g.sum()
    b, c, h, w = x.shape
    y = F.pad(x.reshape(b * c, 1, h, w), (taps // 2,) * 4, mode="reflect")
    y = F.conv2d(y, g.view(1, 1, 1, -1))
    y = F.conv2d(y, g.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def _ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per item (Gaussian window 11 taps, sigma 1.5, K1 0.01, K2 0.03, data range 1; the mean of
    the channels' maps). The map is float32, its mean accumulates in float64. float64 ``(B,)``."""
    taps = min(SSIM_WINDOW, *(d - 1 if d % 2 == 0 else d for d in x.shape[-2:]))
    x, ref = x.float(), ref.float()
    mx, my = _blur(x, taps), _blur(ref, taps)
    sxx = _blur(x * x, taps) - mx * mx
    syy = _blur(ref * ref, taps) - my * my
    sxy = _blur(x * ref, taps) - mx * my
    c1, c2 = K1 ** 2, K2 ** 2
    m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return m.mean(dim=(1, 2, 3), dtype=torch.float64)


def ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``ssim_map``'s mean per item, computed on fixed-shape blocks (see physics.blocks). float64 ``(B,)``."""
    return blocked(_ssim, x, ref)
