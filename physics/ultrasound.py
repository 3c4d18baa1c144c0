"""Ultrasound B-mode speckle: a convolution (COLE-style) model on an echogenicity map, batched.

Units: echogenicity E is backscattered power relative to the display's 0 dB (linear, dimensionless; E = 1 is
white at any dynamic range); depth runs down the rows, the lateral direction along the columns; lengths in mm
through each item's pixel size; centre frequency f0 in MHz with c = 1540 m/s (1.54 mm/us), so the wavelength
is c / f0 mm; fractional bandwidth at -6 dB; F-number; SNR and dynamic range in dB.

Model (physics.md section 3; Gaussian approximations of a focused linear array):
1. scatterers s = sqrt(E) z, z circular complex Gaussian with E|z|^2 = 1 per pixel (fully developed speckle);
2. point-spread function, in baseband (the complex envelope of the Gaussian-modulated pulse: the carrier only
   rotates the phase of a circular field, so the envelope statistics are the same): separable Gaussian,
   axial sigma_z = c sqrt(2 ln 2) / (2 pi B f0) (the pulse-echo envelope of a pulse with -6 dB bandwidth B f0)
   and lateral sigma_x(z) = sigma_x0 sqrt(1 + ((z - z_f) / L)^2) with sigma_x0 = lambda F# / (2 sqrt(2 ln 2))
   (FWHM lambda F# at the focus z_f, widening away from it over L, a depth of field as a fraction of the
   depth); each 1-D kernel has unit energy, so E[|PSF * s|^2] = E on a homogeneous region;
3. echo r = PSF * s + thermal noise (circular complex Gaussian of power 10^(-SNR / 10));
4. envelope A = |r| (Rayleigh in fully developed speckle: mean / std = sqrt(pi / (4 - pi)) = 1.913);
5. log compression v = 1 + 10 log10(A^2) / DR, clipped to [0, 1] (the fixed 0 dB reference is the
   echogenicity scale, never the image's own maximum).

Convolutions are FFT products on a reflect-padded field (padding fixed by the image size, so an item's result
does not depend on its batch); the lateral kernel varies with depth, which is an elementwise product in the
(row, lateral frequency) domain.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import rng
from .blocks import blocked

SOUND_MM_PER_US = 1.54
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def wavelength_mm(f0_mhz: torch.Tensor) -> torch.Tensor:
    return SOUND_MM_PER_US / f0_mhz


def axial_sigma_mm(f0_mhz: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
    """Axial sigma (mm) of the pulse-echo envelope for a Gaussian pulse of -6 dB fractional bandwidth."""
    return SOUND_MM_PER_US * math.sqrt(2.0 * math.log(2.0)) / (2.0 * math.pi * bandwidth * f0_mhz)


def lateral_sigma_mm(f0_mhz: torch.Tensor, f_number: torch.Tensor) -> torch.Tensor:
    """Lateral sigma (mm) at the focus: FWHM = wavelength x F-number."""
    return wavelength_mm(f0_mhz) * f_number / FWHM_PER_SIGMA


def padding(shape: tuple[int, int]) -> int:
    """Reflect padding of the scatterer field (px): fixed by the image size, never by the batch."""
    return max(8, math.ceil(max(shape) / 10))


def dft(x: torch.Tensor, dim: int, inverse: bool = False) -> torch.Tensor:
    fn = torch.fft.ifft if inverse else torch.fft.fft
    return blocked(lambda t: fn(t, dim=dim), x)


def _unit_energy(h: torch.Tensor) -> torch.Tensor:
    """Scale transfer functions (last axis = frequency) so their kernels have unit energy (Parseval)."""
    return h / torch.sqrt((h.abs() ** 2).mean(dim=-1, keepdim=True)).clamp_min(1e-30)


def gaussian_transfer(sigma_px: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """exp(-2 pi^2 sigma^2 f^2) over ``fftfreq(n)``: the DFT of a Gaussian kernel; ``sigma_px`` ``(..., 1)``."""
    f = torch.fft.fftfreq(n, device=device, dtype=torch.float64)
    return torch.exp(-2.0 * math.pi ** 2 * sigma_px.to(device=device, dtype=torch.float64) ** 2 * f ** 2)


def psf_sigmas_px(shape: tuple[int, int], pixel_mm: torch.Tensor, f0_mhz: torch.Tensor, bandwidth: torch.Tensor,
                  f_number: torch.Tensor, focus_fraction: torch.Tensor,
                  depth_of_field_fraction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Axial sigma ``(B,)`` and lateral sigma per row ``(B, H)``, in pixels of the unpadded image."""
    h = shape[0]
    px = pixel_mm.to(torch.float64)
    sz = axial_sigma_mm(f0_mhz.double(), bandwidth.double()) / px
    sx0 = lateral_sigma_mm(f0_mhz.double(), f_number.double()) / px
    depth = torch.arange(h, dtype=torch.float64)[None, :] + 0.5
    zf = focus_fraction.double()[:, None] * h
    dof = depth_of_field_fraction.double()[:, None] * h
    return sz, sx0[:, None] * torch.sqrt(1.0 + ((depth - zf) / dof) ** 2)


def bmode(echogenicity: torch.Tensor, pixel_mm: torch.Tensor, f0_mhz: torch.Tensor, bandwidth: torch.Tensor,
          f_number: torch.Tensor, focus_fraction: torch.Tensor, depth_of_field_fraction: torch.Tensor,
          snr_db: torch.Tensor, seeds: torch.Tensor, noise_rise_db: torch.Tensor | None = None) -> torch.Tensor:
    """The envelope A ``(B, H, W)`` of the echo from ``echogenicity`` ``(B, H, W)`` (linear power); all other
    parameters ``(B,)`` in the module's units; ``seeds`` int64 ``(B,)`` (scatterers; the noise from a
    substream); ``noise_rise_db``: the thermal noise's rise from the top row to the bottom one (TGC). Log
    compression is ``log_compress``."""
    b, h, w = echogenicity.shape
    dev = echogenicity.device
    p = padding((h, w))
    z = rng.normal(seeds, (2, h + 2 * p, w + 2 * p), dev, torch.float32) / math.sqrt(2.0)
    sz, sx = psf_sigmas_px((h, w), pixel_mm, f0_mhz, bandwidth, f_number, focus_fraction, depth_of_field_fraction)
    return noisy_envelope(echo(echogenicity, torch.complex(z[:, 0], z[:, 1]), sz, sx), snr_db, seeds, noise_rise_db)


def noisy_envelope(r: torch.Tensor, snr_db: torch.Tensor, seeds: torch.Tensor,
                   noise_rise_db: torch.Tensor | None = None) -> torch.Tensor:
    """|r + n|: thermal noise n circular complex Gaussian of power 10^(-SNR / 10) at the top row (a substream
    of ``seeds``), rising by ``noise_rise_db`` ``(B,)`` linearly in dB to the bottom row: time-gain compensation
    amplifies the noise together with the echoes whose attenuation (2 alpha f z dB) it makes up for."""
    b, h, w = r.shape
    noise = rng.normal(rng.substreams(seeds, "us-thermal"), (2, h, w), r.device, torch.float32) / math.sqrt(2.0)
    level = -snr_db.to(device=r.device, dtype=torch.float32)[:, None, None]
    if noise_rise_db is not None:
        depth = (torch.arange(h, device=r.device, dtype=torch.float32) + 0.5) / h
        level = level + noise_rise_db.to(device=r.device, dtype=torch.float32)[:, None, None] * depth[None, :, None]
    sigma_n = torch.pow(10.0, level / 20.0)
    return (r + sigma_n * torch.complex(noise[:, 0], noise[:, 1])).abs()


def echo(echogenicity: torch.Tensor, z: torch.Tensor, sigma_axial_px: torch.Tensor,
         sigma_lateral_px: torch.Tensor) -> torch.Tensor:
    """The noiseless complex echo ``(B, H, W)``: scatterers sqrt(E) z on the reflect-padded grid (``z``:
    circular complex Gaussian ``(B, H + 2P, W + 2P)``, P = ``padding``) filtered by the PSF: lateral (a
    Gaussian per row, ``sigma_lateral_px`` ``(B, H)``), then axial (``sigma_axial_px`` ``(B,)``), each of unit
    energy, as products in the Fourier domain."""
    b, h, w = echogenicity.shape
    dev = echogenicity.device
    p = padding((h, w))
    amp = F.pad(torch.sqrt(echogenicity.clamp_min(0.0))[:, None], (p, p, p, p), mode="reflect")[:, 0]
    hp, wp = amp.shape[-2:]
    s = amp * z
    sx = F.pad(sigma_lateral_px[:, None], (p, p), mode="replicate")[:, 0]     # the padded rows keep the edge width
    hx = _unit_energy(gaussian_transfer(sx[..., None], wp, dev)).to(torch.complex64)    # (B, Hp, Wp)
    s = dft(dft(s, -1) * hx, -1, inverse=True)
    hz = _unit_energy(gaussian_transfer(sigma_axial_px[:, None], hp, dev)).to(torch.complex64)   # (B, Hp)
    return dft(dft(s, -2) * hz[:, :, None], -2, inverse=True)[:, p:p + h, p:p + w]


def log_compress(envelope: torch.Tensor, dynamic_range_db: torch.Tensor) -> torch.Tensor:
    """Display v = 1 + 20 log10(A) / DR, clipped to [0, 1] (``dynamic_range_db`` ``(B,)``)."""
    dr = dynamic_range_db.to(envelope)[:, None, None]
    return (1.0 + 20.0 * torch.log10(envelope.clamp_min(1e-12)) / dr).clamp(0.0, 1.0)


def echogenicity_from_display(v: torch.Tensor, dynamic_range_db: torch.Tensor) -> torch.Tensor:
    """Invert log compression: E = 10^((v - 1) DR / 10) for a display v in [0, 1] of dynamic range DR."""
    dr = dynamic_range_db.to(v)[:, None, None]
    return torch.pow(10.0, (v.clamp(0.0, 1.0) - 1.0) * dr / 10.0)


def despeckle(echogenicity: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """A local mean of the power (Gaussian, ``sigma_px``): the echogenicity estimate of an image that is already
    speckled, so that new speckle replaces the old instead of multiplying it."""
    b, h, w = echogenicity.shape
    p = padding((h, w))
    e = F.pad(echogenicity[:, None], (p, p, p, p), mode="reflect")[:, 0].to(torch.complex64)
    sig = torch.full((b, 1), sigma_px, dtype=torch.float64)
    gx = gaussian_transfer(sig, e.shape[-1], e.device).to(torch.complex64)
    gz = gaussian_transfer(sig, e.shape[-2], e.device).to(torch.complex64)
    e = dft(dft(e, -1) * gx[:, None, :], -1, inverse=True)
    e = dft(dft(e, -2) * gz[:, :, None], -2, inverse=True)
    return e.real[:, p:p + h, p:p + w].clamp_min(0.0)


# -- curvilinear (sector) geometry ---------------------------------------------------------------------------


def sector_geometry(shape: tuple[int, int], sector_deg: float, apex_fraction: float,
                    device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """A curvilinear probe whose apex sits ``apex_fraction`` x H above the image's top centre, imaging a
    ``sector_deg`` fan down to the bottom of the image. Returns, for grid_sample (align_corners=False):
    the Cartesian position of every (depth row, beam column) sample of the acquisition grid ``(1, H, W, 2)``,
    the acquisition-grid position of every output pixel (scan conversion) ``(1, H, W, 2)``, the output pixels
    inside the fan ``(H, W)`` bool, and the radius of each acquisition row ``(H,)`` in pixels (on the host:
    it scales the per-item PSF widths, which live there)."""
    h, w = shape
    half = math.radians(sector_deg) / 2
    apex_y = -apex_fraction * h
    r_min, r_max = -apex_y, h - apex_y
    rows = torch.arange(h, dtype=torch.float64, device=device) + 0.5
    cols = torch.arange(w, dtype=torch.float64, device=device) + 0.5
    radius = r_min + rows / h * (r_max - r_min)
    theta = -half + cols / w * 2 * half
    x = w / 2 + radius[:, None] * torch.sin(theta)[None, :]
    y = apex_y + radius[:, None] * torch.cos(theta)[None, :]
    to_polar = torch.stack([x / w * 2 - 1, y / h * 2 - 1], dim=-1)[None].float()
    dx = cols[None, :] - w / 2
    dy = rows[:, None] - apex_y
    r = torch.sqrt(dx ** 2 + dy ** 2)
    t = torch.atan2(dx, dy)
    inside = (r >= r_min) & (r <= r_max) & (t.abs() <= half)
    to_cart = torch.stack([(t + half) / (2 * half) * 2 - 1, (r - r_min) / (r_max - r_min) * 2 - 1], dim=-1)
    host_radius = r_min + (torch.arange(h, dtype=torch.float64) + 0.5) / h * (r_max - r_min)
    return to_polar, to_cart[None].float(), inside, host_radius


def sector_bmode(echogenicity: torch.Tensor, pixel_mm: torch.Tensor, f0_mhz: torch.Tensor, bandwidth: torch.Tensor,
                 f_number: torch.Tensor, focus_fraction: torch.Tensor, depth_of_field_fraction: torch.Tensor,
                 snr_db: torch.Tensor, dynamic_range_db: torch.Tensor, seeds: torch.Tensor, sector_deg: float,
                 apex_fraction: float, noise_rise_db: torch.Tensor | None = None) -> torch.Tensor:
    """Display ``(B, H, W)`` of a curvilinear scan: the map is sampled on the (depth, beam) acquisition grid,
    speckle is formed there (the lateral PSF in beams: its width in mm over the beam spacing r dtheta, which
    shrinks the grain in beams as the beams diverge with depth), log-compressed, then scan-converted back to
    the Cartesian grid (bilinear); outside the fan the display is black."""
    b, h, w = echogenicity.shape
    dev = echogenicity.device
    to_polar, to_cart, inside, radius = sector_geometry((h, w), sector_deg, apex_fraction, dev)
    polar = F.grid_sample(echogenicity[:, None], to_polar.expand(b, -1, -1, -1), mode="bilinear",
                          padding_mode="zeros", align_corners=False)[:, 0]
    p = padding((h, w))
    z = rng.normal(seeds, (2, h + 2 * p, w + 2 * p), dev, torch.float32) / math.sqrt(2.0)
    row_mm = (radius[-1] - radius[0]).item() / h * pixel_mm.double()                       # (B,)
    sz = axial_sigma_mm(f0_mhz.double(), bandwidth.double()) / row_mm
    depth = (radius - radius[0])[None, :] * pixel_mm.double()[:, None]                   # (B, H) mm below the top
    zf = focus_fraction.double()[:, None] * h * pixel_mm.double()[:, None]
    dof = depth_of_field_fraction.double()[:, None] * h * pixel_mm.double()[:, None]
    focal = lateral_sigma_mm(f0_mhz.double(), f_number.double())[:, None]
    width_mm = focal * torch.sqrt(1 + ((depth - zf) / dof) ** 2)
    beam_mm = radius[None, :] * (math.radians(sector_deg) / w) * pixel_mm.double()[:, None]
    r = echo(polar, torch.complex(z[:, 0], z[:, 1]), sz, width_mm / beam_mm)
    shown = log_compress(noisy_envelope(r, snr_db, seeds, noise_rise_db), dynamic_range_db.to(dev))
    fan = F.grid_sample(shown[:, None], to_cart.expand(b, -1, -1, -1), mode="bilinear", padding_mode="border",
                        align_corners=False)[:, 0]
    return torch.where(inside[None], fan, torch.zeros_like(fan))
