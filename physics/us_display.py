"""A poorer re-acquisition of an ultrasound image that is already a speckled, log-compressed B-mode display.

A real B-mode image (a DICOM from a scanner) carries its speckle, its probe's resolution and its scanner's
display: there is no echogenicity map to re-render from, and drawing new speckle would replace the image's own
(L0 and L1 would then differ mostly by a fresh draw, not by severity). So the display is read back to the echo
it shows and that echo is degraded, keeping its speckle:

1. ``estimate_display``: the display's dynamic range from the speckle itself: in fully developed speckle the
   log-compressed intensity has a standard deviation of 10 / ln 10 x pi / sqrt 6 = 5.57 dB whatever the
   scanner (Burckhardt 1978; Wagner et al. 1983), so DR = 5.57 dB / std(v) over homogeneous tissue (the median
   of local standard deviations); the grain (the PSF's size, px) from the intensity's lag-1 autocorrelation,
   rho = exp(-1 / (2 sigma^2)) for a Gaussian PSF; the tissue's median level (dB below white);
2. ``reacquire``: echo amplitude A = 10^((v - 1) DR / 20) (0 dB = white) with a phase drawn per pixel, so that
   it is a circular field whose envelope is A itself; a lower centre frequency f1 < f0 widens the pulse-echo
   PSF by f0 / f1 in both directions, applied as the extra Gaussian of sigma = grain sqrt((f0 / f1)^2 - 1)
   (Gaussian widths add in quadrature; unit energy, so the mean power is kept); thermal noise (circular
   Gaussian) of power 10^(-SNR / 10) at the top of the tissue, rising by ``noise_rise_db`` to its bottom
   (time-gain compensation amplifies the noise with the attenuation it makes up for); envelope; shown with the
   tissue's median level kept at its grey (the operator's gain) and the dynamic range narrowed by
   ``dr_fraction``.

The result at the clean settings (f1 = f0, no added noise, the same range) is the input up to rounding; the
engine adds the difference between the two renderings to the input, so severity 0 returns it bit for bit.
Units: display fractions v in [0, 1]; dB of echo power; grain and widths in pixels of the image.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import rng
from .ultrasound import dft, gaussian_transfer, padding

SPECKLE_LOG_STD_DB = 10.0 / math.log(10.0) * math.pi / math.sqrt(6.0)     # 5.57 dB
DR_RANGE_DB = (30.0, 90.0)          # estimates outside this are clipped (scanners show 30-90 dB)
GRAIN_RANGE_PX = (0.4, 8.0)
LOCAL_PX = 9                        # window of the local standard deviations


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(x[None, None], k, 1, k // 2, count_include_pad=False)[0, 0]


def _grain(i: torch.Tensor, tissue: torch.Tensor, dim: int) -> float:
    """Gaussian PSF sigma (px) along ``dim`` from the lag-1 autocorrelation of the intensity's fluctuation."""
    d = i - _box(i, 15)
    n = d.shape[dim]
    a, b = d.narrow(dim, 1, n - 1), d.narrow(dim, 0, n - 1)
    both = tissue.narrow(dim, 1, n - 1) & tissue.narrow(dim, 0, n - 1)
    if int(both.sum()) < 100:
        return GRAIN_RANGE_PX[0]
    rho = float((a * b)[both].mean() / (d[tissue] ** 2).mean().clamp_min(1e-30))
    if rho <= math.exp(-1.0 / (2.0 * GRAIN_RANGE_PX[0] ** 2)):
        return GRAIN_RANGE_PX[0]
    sigma = math.sqrt(-1.0 / (2.0 * math.log(min(rho, 0.9999))))
    return min(max(sigma, GRAIN_RANGE_PX[0]), GRAIN_RANGE_PX[1])


def estimate_display(v: torch.Tensor, tissue: torch.Tensor) -> tuple[float, float, float, float]:
    """For one grey display ``v`` ``(H, W)`` and its tissue pixels ``tissue`` (bool): the dynamic range (dB),
    the grain along the depth (rows) and laterally (columns) in px, and the tissue's median level (dB below
    white). Homogeneous tissue: whole ``LOCAL_PX`` windows of tissue whose mean is neither black nor white."""
    v = v.double()
    t = tissue.double()
    whole = _box(t, LOCAL_PX) > 0.999
    mean = _box(v, LOCAL_PX)
    std = (_box(v * v, LOCAL_PX) - mean ** 2).clamp_min(0.0).sqrt()
    ok = whole & (mean > 0.15) & (mean < 0.85)
    if int(ok.sum()) >= 50:
        dr = SPECKLE_LOG_STD_DB / max(float(std[ok].median()), 1e-6)
    else:
        dr = 60.0           # too little tissue to read: the common scanner setting (recorded as the estimate)
    dr = min(max(dr, DR_RANGE_DB[0]), DR_RANGE_DB[1])
    intensity = torch.pow(10.0, (v - 1.0) * dr / 10.0)
    level = float((v[tissue].median() - 1.0) * dr) if bool(tissue.any()) else -dr / 2
    return dr, _grain(intensity, tissue, 0), _grain(intensity, tissue, 1), level


def _blur(field: torch.Tensor, sigma_rows: torch.Tensor, sigma_cols: torch.Tensor) -> torch.Tensor:
    """Unit-energy Gaussian blur of complex fields ``(B, H, W)`` (sigmas ``(B,)`` px; 0 leaves an item as is)."""
    b, h, w = field.shape
    p = padding((h, w))
    f = F.pad(torch.view_as_real(field).permute(0, 3, 1, 2), (p, p, p, p), mode="reflect")
    f = torch.view_as_complex(f.permute(0, 2, 3, 1).contiguous())
    hx = gaussian_transfer(sigma_cols[:, None], w + 2 * p, field.device)
    hz = gaussian_transfer(sigma_rows[:, None], h + 2 * p, field.device)
    hx = (hx / torch.sqrt((hx ** 2).mean(dim=-1, keepdim=True))).to(torch.complex64)
    hz = (hz / torch.sqrt((hz ** 2).mean(dim=-1, keepdim=True))).to(torch.complex64)
    f = dft(dft(f, -1) * hx[:, None, :], -1, inverse=True)
    f = dft(dft(f, -2) * hz[:, :, None], -2, inverse=True)
    return f[:, p:p + h, p:p + w]


def reacquire(v: torch.Tensor, inside: torch.Tensor, tissue: torch.Tensor, depth: torch.Tensor, dr_db: torch.Tensor,
              level_db: torch.Tensor, extra_rows_px: torch.Tensor, extra_cols_px: torch.Tensor,
              noise_power: torch.Tensor, noise_rise_db: torch.Tensor, dr_fraction: torch.Tensor,
              seeds: torch.Tensor) -> torch.Tensor:
    """The display ``(B, H, W)`` of the echo in ``v`` ``(B, H, W)`` re-acquired (module steps 2). ``inside``
    (bool ``(B, H, W)``): the image's echo area (outside it the amplitude is 0: no echo leaks in); ``tissue``:
    its echo pixels (the others inside it, graphics and colour, count as tissue at the median level); ``depth``
    ``(B, H, W)``: 0 at the top of the tissue, 1 at its bottom; per item ``(B,)``: the display's range and
    tissue level (dB), the extra PSF sigmas (px), the added noise power at the top (relative to white) and its
    rise (dB), the range's narrowing factor; ``seeds`` int64: the phase field (and the noise from a substream),
    the same for every severity of an item."""
    b, h, w = v.shape
    dev = v.device
    dr = dr_db.to(dev, torch.float32)[:, None, None]
    level = level_db.to(dev, torch.float32)[:, None, None]
    amp = torch.where(tissue, torch.pow(10.0, (v.float() - 1.0) * dr / 20.0),
                      torch.where(inside, torch.pow(10.0, level / 20.0), torch.zeros((), device=dev)))
    phase = rng.uniform_field(seeds, (h, w), dev) * (2.0 * math.pi)
    field = torch.polar(amp, phase)
    blur = (extra_rows_px > 0) | (extra_cols_px > 0)
    if bool(blur.any()):
        field = torch.where(blur.to(dev)[:, None, None], _blur(field, extra_rows_px.to(dev), extra_cols_px.to(dev)),
                            field)
    sigma = torch.sqrt(noise_power.to(dev, torch.float32))[:, None, None] * torch.pow(
        10.0, noise_rise_db.to(dev, torch.float32)[:, None, None] * depth.float() / 20.0)
    n = rng.normal(rng.substreams(seeds, "us-reacquire-noise"), (2, h, w), dev, torch.float32) / math.sqrt(2.0)
    field = field + sigma * torch.complex(n[:, 0], n[:, 1])
    power_db = 10.0 * torch.log10((field.abs() ** 2).clamp_min(1e-30))
    grey = 1.0 + level / dr                                   # the tissue level's grey, kept
    shown = grey + (power_db - level) / (dr * dr_fraction.to(dev, torch.float32)[:, None, None])
    return shown.clamp(0.0, 1.0)
