"""CT acquisition physics: HU <-> linear attenuation, photon-count noise on the sinogram, reduced views and
arcs, reconstruction by FBP, and the insertion of the simulated effect into an image.

Units: images in HU; mu in mm^-1 at the stated effective energy; line integrals p = sum mu dl dimensionless
(the pixel size in mm enters through the projector); I0 in photons per detector bin per view at full dose;
electronic noise sigma_e in photon counts. Pure batched functions on ``B x H x W`` tensors; no per-image
normalisation anywhere (the dose of an image never depends on its content).

Operators come from ``medq_synth.kernels`` (Joseph projector, its transpose, pixel-driven FBP)."""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from medq_synth.kernels import ct as K
from medq_synth.kernels.geometry import Geometry

from . import rng

# Water at ~70 keV effective energy: 0.0192 mm^-1 (NIST XCOM, 70 keV: 0.1929 cm^2/g x 1 g/cm^3 = 0.01929 mm^-1;
# LoDoPaB-CT uses 0.020). Air is taken as 0 (0.02 m^-1, negligible over 0.5 m).
MU_WATER = 0.0193
MIN_COUNT = 1.0      # counts below this are clamped before the log (torch-radon's rule; LoDoPaB uses 0.1)


def hu_to_mu(hu: torch.Tensor, mu_water: float = MU_WATER) -> torch.Tensor:
    """mu = mu_water (1 + HU / 1000), clamped at 0 (below -1000 HU is not physical), mm^-1."""
    return (mu_water * (1.0 + hu / 1000.0)).clamp_min(0.0)


def mu_to_hu(mu: torch.Tensor, mu_water: float = MU_WATER) -> torch.Tensor:
    return 1000.0 * (mu / mu_water - 1.0)


def transmission_noise(p: torch.Tensor, i0: torch.Tensor, sigma_e: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Noisy line integrals from clean ones ``p`` (``B x V x D``): counts I = Poisson(I0 e^-p) + N(0, sigma_e^2)
    per item (``i0``, ``sigma_e``: ``(B,)`` photons per bin and counts), clamped at MIN_COUNT, p = -ln(I / I0).
    Each item draws from its own streams (``seeds``: int64 ``(B,)``; the electronic noise from a substream),
    so its noise does not depend on the batch."""
    i0 = i0.to(p)[:, None, None]
    lam = (i0.double() * torch.exp(-p.double())).float()
    electronic = rng.normal(rng.substreams(seeds, "ct-electronic"), tuple(lam.shape[1:]), p.device, p.dtype)
    counts = rng.poisson(seeds, lam) + sigma_e.to(p)[:, None, None] * electronic
    return -torch.log(counts.clamp_min(MIN_COUNT) / i0)


def reconstruct(p: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int],
                window: str = "ramp") -> torch.Tensor:
    """FBP of line integrals -> HU."""
    return mu_to_hu(K.fbp(p, g, pixel_mm, shape, window))


def insert(hu: torch.Tensor, recon_degraded: torch.Tensor, recon_clean: torch.Tensor,
           mode: str = "difference") -> torch.Tensor:
    """``difference``: input + (recon of degraded data - recon of clean data), so the output differs from the
    input by the simulated effect alone, not by the reconstruction's own blur; ``full``: the degraded
    reconstruction itself."""
    _check_mode(mode)
    return hu + (recon_degraded - recon_clean) if mode == "difference" else recon_degraded


def _check_mode(mode: str) -> None:
    if mode not in ("difference", "full"):
        raise ValueError(f"insertion mode is 'difference' or 'full', not {mode!r}")


def acquire(hu: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    """Clean line integrals ``(B, V, D)`` of images in HU through the acquisition ``g``."""
    return K.forward(hu_to_mu(hu), g, pixel_mm)


def inserted_noise(p: torch.Tensor, i0_full: float, dose_fraction: torch.Tensor, sigma_e: torch.Tensor,
                   seeds: torch.Tensor) -> torch.Tensor:
    """Line integrals of a reduced-dose scan made from full-dose ones ``p`` (``B x V x D``), by noise insertion
    (Yu et al. 2012; Zeng et al. 2015): the full-dose data already carry the noise of I0 = ``i0_full`` photons
    per bin, so only what the lower dose adds is drawn. Counts at dose fraction a are a lam + n, with lam =
    I0 e^-p and n Gaussian of variance a (1 - a) lam + (1 - a^2) sigma_e^2: with the full-dose variance
    a^2 (lam + sigma_e^2) this gives a lam + sigma_e^2, the reduced-dose Poisson and electronic variance. Counts
    are clamped at MIN_COUNT before the log; p_ld = -ln(counts / (a I0)). At a = 1 nothing is added (p_ld = p
    exactly). ``dose_fraction``, ``sigma_e`` (counts): ``(B,)``; ``seeds``: int64 ``(B,)``."""
    a = dose_fraction.to(torch.float64)[:, None, None].to(p.device)
    se = sigma_e.to(torch.float64)[:, None, None].to(p.device)
    lam = i0_full * torch.exp(-p.double())
    var = (a * (1.0 - a) * lam + (1.0 - a * a) * se * se).clamp_min(0.0)
    z = rng.normal(rng.substreams(seeds, "ct-insertion"), tuple(p.shape[1:]), p.device, torch.float64)
    counts = a * lam + torch.sqrt(var) * z
    return torch.where(var > 0, -torch.log(counts.clamp_min(MIN_COUNT) / (a * i0_full)), p.double()).to(p.dtype)


def low_dose(hu: torch.Tensor, g: Geometry, pixel_mm: float, i0_full: float, dose_fraction: torch.Tensor,
             sigma_e: torch.Tensor, seeds: torch.Tensor, window: str = "ramp",
             mode: str = "difference") -> torch.Tensor:
    """Low-dose CT of the acquisition ``g``. HU in, HU out.

    ``difference``: the image is taken as a full-dose reconstruction (I0 = ``i0_full`` photons per bin) and
    the reduced-dose noise is inserted into its projections (``low_dose_change``), so dose fraction 1 returns
    the image unchanged; ``full``: the whole acquisition at I0 = dose_fraction x ``i0_full`` is simulated
    (Poisson + electronic noise, ``transmission_noise``) and reconstructed."""
    _check_mode(mode)
    shape = tuple(hu.shape[-2:])
    if mode == "full":
        p = acquire(hu, g, pixel_mm)
        noisy = transmission_noise(p, dose_fraction.to(p) * i0_full, sigma_e.to(p), seeds)
        return reconstruct(noisy, g, pixel_mm, shape, window)
    return hu + low_dose_change(hu, g, pixel_mm, i0_full, dose_fraction, sigma_e, seeds, window)


def low_dose_change(hu: torch.Tensor, g: Geometry, pixel_mm: float, i0_full: float, dose_fraction: torch.Tensor,
                    sigma_e: torch.Tensor, seeds: torch.Tensor, window: str = "ramp",
                    shape: tuple[int, int] | None = None, sinogram: torch.Tensor | None = None) -> torch.Tensor:
    """The change (HU) that the inserted reduced-dose noise makes, reconstructed on the centred grid ``shape``
    (default: the image's; a smaller one is the same pixels' central part, which is all an extended canvas
    needs). FBP is linear and HU affine in mu: recon(noisy) - recon(clean) = 1000 / mu_w FBP(noisy - clean),
    one reconstruction instead of two and no cancellation of two large images. ``sinogram``: the clean
    projections of ``hu`` in ``g`` when the caller has them (``acquire``)."""
    p = acquire(hu, g, pixel_mm) if sinogram is None else sinogram
    noisy = inserted_noise(p, i0_full, dose_fraction, sigma_e, seeds)
    return K.fbp(noisy - p, g, pixel_mm, shape or tuple(hu.shape[-2:]), window) * (1000.0 / MU_WATER)


def view_subset(g_full: Geometry, g_reduced: Geometry) -> slice | None:
    """The views of ``g_full`` that ``g_reduced`` consists of, as a slice, or None if its angles are not
    among them (then it is projected anew). Sparse view with a divisor of the full count and every limited
    arc from ``Geometry.limited`` are subsets: their sinograms are the full scan's rows, not a re-projection."""
    if replace(g_reduced, n_views=g_full.n_views, arc=g_full.arc) != g_full:
        return None
    step = g_reduced.view_step / g_full.view_step
    stride = round(step)
    if abs(step - stride) > 1e-9 or stride < 1 or (g_reduced.n_views - 1) * stride >= g_full.n_views:
        return None
    return slice(0, (g_reduced.n_views - 1) * stride + 1, stride)


def fewer_views(hu: torch.Tensor, g_full: Geometry, g_reduced: Geometry, pixel_mm: float,
                window: str = "ramp", mode: str = "difference") -> torch.Tensor:
    """Sparse view or limited angle: the reconstruction from ``g_reduced``'s views against the full scan's
    (``difference``: the input plus ``fewer_views_change``; ``full``: the reduced reconstruction itself)."""
    _check_mode(mode)
    if mode == "difference":
        return hu + fewer_views_change(hu, g_full, g_reduced, pixel_mm, window)
    views = view_subset(g_full, g_reduced)
    p = acquire(hu, g_full, pixel_mm)[:, views] if views is not None else acquire(hu, g_reduced, pixel_mm)
    return mu_to_hu(K.fbp(p, g_reduced, pixel_mm, tuple(hu.shape[-2:]), window) * _arc_scale(g_full, g_reduced))


def _arc_scale(g_full: Geometry, g_reduced: Geometry) -> float:
    """A reduced arc is reconstructed with the backprojection normalised to the arc actually measured (pi over
    the views, as astra's and most FBPs do): without it the image would lose arc/pi of its attenuation and
    turn dark instead of showing the missing wedge's streaks and directional blur."""
    if g_reduced.arc < g_full.arc - 1e-9:
        if g_reduced.kind == "fan":
            # FBP's 1/2 weight assumes every line is seen twice over 2 pi; a shorter fan arc needs Parker
            # weights. Limited angle is simulated on a 180 degree parallel acquisition, as in the literature.
            raise ValueError("a fan-beam arc below 360 degrees needs short-scan weights: use a parallel geometry")
        return g_full.arc / g_reduced.arc
    return 1.0


def fewer_views_change(hu: torch.Tensor, g_full: Geometry, g_reduced: Geometry, pixel_mm: float,
                       window: str = "ramp", shape: tuple[int, int] | None = None,
                       sinogram: torch.Tensor | None = None, reference: torch.Tensor | None = None) -> torch.Tensor:
    """FBP of ``g_reduced``'s views minus FBP of the full scan (HU), on the centred grid ``shape`` (default:
    the image's). Reduced scans that are subsets of the full one reuse its sinogram's rows. The caller may
    pass what it already has: ``sinogram``, the full scan's clean projections (``acquire``), and
    ``reference``, their FBP on ``shape`` (mu, mm^-1)."""
    shape = shape or tuple(hu.shape[-2:])
    scale = _arc_scale(g_full, g_reduced)
    p_full = acquire(hu, g_full, pixel_mm) if sinogram is None else sinogram
    views = view_subset(g_full, g_reduced)
    p = p_full[:, views] if views is not None else acquire(hu, g_reduced, pixel_mm)
    degraded = K.fbp(p, g_reduced, pixel_mm, shape, window) * scale
    if reference is None:
        reference = K.fbp(p_full, g_full, pixel_mm, shape, window)
    return (degraded - reference) * (1000.0 / MU_WATER)


def missing_wedge(g: Geometry, arc: float, missing_start: torch.Tensor) -> torch.Tensor:
    """Which views of a 180 degree parallel scan ``g`` a limited-angle scan of ``arc`` (rad) measures, per item:
    the missing wedge is [start, start + pi - arc) modulo pi (``missing_start`` ``(B,)`` rad), bool ``(B, V)``.
    A parallel view at theta + pi is the view at theta with the detector reversed, so any arc of pi folds onto
    the scan's views."""
    if g.kind != "parallel" or abs(g.arc - math.pi) > 1e-9:
        raise ValueError("a drawn missing wedge needs a 180 degree parallel-beam scan")
    theta = g.angles()[None, :]
    offset = torch.remainder(theta - missing_start.double()[:, None], math.pi)
    return offset >= (math.pi - arc) - 1e-9


def limited_angle_change(hu: torch.Tensor, g: Geometry, arc: float, missing_start: torch.Tensor,
                         pixel_mm: float, window: str = "ramp", shape: tuple[int, int] | None = None,
                         sinogram: torch.Tensor | None = None, reference: torch.Tensor | None = None
                         ) -> torch.Tensor:
    """Limited angle with a missing wedge per item (``missing_wedge``): the FBP of the measured views only,
    normalised to the arc actually measured (as ``fewer_views``), minus the full scan's FBP (HU), on the centred
    grid ``shape``. The whole batch is one backprojection of the sinogram with each item's missing views set
    to zero (filtering acts on each view alone, so zeroing views before or after it is the same).
    ``sinogram`` / ``reference``: the full scan's clean projections and their FBP (mu), when at hand."""
    shape = shape or tuple(hu.shape[-2:])
    p_full = acquire(hu, g, pixel_mm) if sinogram is None else sinogram
    measured = missing_wedge(g, arc, missing_start).to(p_full.device)
    scale = (g.n_views / measured.sum(dim=1).clamp_min(1)).to(p_full.dtype)
    degraded = K.fbp(p_full * measured[:, :, None].to(p_full.dtype), g, pixel_mm, shape, window)
    if reference is None:
        reference = K.fbp(p_full, g, pixel_mm, shape, window)
    return (degraded * scale[:, None, None] - reference) * (1000.0 / MU_WATER)
