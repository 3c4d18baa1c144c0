"""The MRI family: k-space physics (``physics.kspace``, ``mri``, ``mri_masks``, ``mri_motion``) bound to the
severity tables. MRI items reach these models in one of two forms:

- image items (DICOM, NIfTI, PNG, the magnitude phantoms): the magnitude in scanner units is taken as a
  single-coil, zero-phase acquisition (what TorchIO and MONAI assume); its k-space is one FFT, kept in FFT
  order (no shifts);
- raw-data items (fastMRI HDF5 files, the multi-coil phantoms): the acquired, centred multi-coil k-space
  travels with the item (``_kspace``); the models act on it and reconstruct by root-sum-of-squares, cropped
  to the item's image (fastMRI's 320 x 320 for knee data), so L0 is the file's own reconstruction.

Every random choice (mask, motion path, ghost count, spike positions, field shape, noise field) comes from
the item's pattern stream, shared by all levels: L2 is the same corruption as L1, only stronger (nested masks,
a scaled motion path, the same field raised to a higher power).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medq_synth.physics import mri, mri_masks, mri_motion
from medq_synth.physics.kspace import KSpace, acquire, centre_crop

from .physical import chunked, to_display, to_physical
from .registry import Draw, Sampler, table_values

MASK_SEED_BITS = 0xFFFFFFFF     # fastMRI's masks take a 32-bit NumPy seed
MAX_SPIKES = 3
BIAS_TERMS = (mri.BIAS_ORDER + 1) * (mri.BIAS_ORDER + 2) // 2
GHOST_RANGE = (4, 10)           # TorchIO RandomGhosting's default number of ghosts


# -- the two item forms -----------------------------------------------------------------------------------


def _kspace(x: torch.Tensor, p: dict[str, torch.Tensor]) -> KSpace:
    """The item's acquired k-space if it has one, else its magnitude's (single coil, FFT order)."""
    raw = p.get("_kspace")
    return KSpace(raw, centred=True) if raw is not None else acquire(x)


def _coil_images(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    raw = p.get("_kspace")
    return KSpace(raw, centred=True).images() if raw is not None else x[:, None].to(torch.complex64)


def _grid(d: Draw) -> tuple[int, int]:
    """The k-space grid the draw is for (the raw data's, which can be larger than the image)."""
    raw = d.inputs.get("_kspace")
    return tuple(raw.shape[-2:]) if raw is not None else d.shape  # type: ignore[return-value]


def _finish(out: torch.Tensor, x: torch.Tensor, p: dict[str, torch.Tensor], v: torch.Tensor) -> torch.Tensor:
    return to_display(centre_crop(out, tuple(x.shape[-2:])), p, v)


def kspace_model(operate):
    """A registry ``apply`` from ``operate(k: KSpace, p) -> KSpace``: acquire, operate, reconstruct, display."""
    def apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        x = to_physical(v, p)
        return _finish(operate(_kspace(x, p), p).magnitude(), x, p, v)
    apply.__name__ = f"kspace_model({operate.__name__})"
    return apply


# -- undersampling ----------------------------------------------------------------------------------------


def _mask_seeds(d: Draw) -> list[int]:
    return [int(s) & MASK_SEED_BITS for s in d.pattern_seeds.tolist()]


def undersampling_params(kind: str) -> Sampler:
    """Masks drawn per item from its pattern seed: ``random`` / ``equispaced_fraction`` (fastMRI Cartesian
    columns), ``poisson`` (sigpy 2-D Poisson disc from a cached pool), ``radial`` (golden-angle spokes)."""
    def sample(d: Draw) -> dict[str, torch.Tensor]:
        h, w = _grid(d)
        acc = d.magnitudes["acceleration"]
        out: dict[str, torch.Tensor] = {"acceleration": d.const("acceleration")}
        if kind in mri_masks.CARTESIAN_KINDS:
            cf = d.magnitudes["center_fraction"]
            seeds = _mask_seeds(d)
            masks = np.stack([mri_masks.cartesian_mask(w, acc, cf, kind, s) for s in seeds])
            out["center_fraction"] = d.const("center_fraction")
            out["n_center_columns"] = torch.full((d.batch,), int(mri_masks.centre_columns(w, cf).sum()))
            out["mask_seed"] = torch.tensor(seeds, dtype=torch.int64)
        elif kind == "poisson":
            index = (d.pattern[:, 0] * mri_masks.POISSON_POOL).floor().to(torch.int64)
            # the calibration square keeps at most half the acquired samples (else no mask reaches R)
            calib = min(round(d.magnitudes["calibration_px"]), int(math.sqrt(h * w / acc / 2)))
            masks = np.stack([mri_masks.poisson_mask((h, w), acc, calib, int(i)) if acc > 1 else np.ones((h, w), bool)
                              for i in index.tolist()])
            out["pool_index"] = index
            out["calibration_px"] = torch.full((d.batch,), float(calib), dtype=torch.float64)
        else:
            rotation = d.pattern[:, 0]
            masks = np.stack([mri_masks.radial_mask((h, w), acc, float(r)) if acc > 1 else np.ones((h, w), bool)
                              for r in rotation.tolist()])
            out["spoke_rotation"] = rotation
            out["n_spokes"] = torch.full((d.batch,), mri_masks.radial_spokes((h, w), acc))
        mask = torch.from_numpy(masks.astype(np.uint8))
        kept = mask.flatten(1).double().mean(dim=1)
        out["realised_acceleration"] = 1.0 / kept.clamp_min(1e-12)
        out["mask"] = mask
        return out
    sample.__name__ = f"undersampling_params({kind})"
    return sample


def undersampling(k: KSpace, p: dict[str, torch.Tensor]) -> KSpace:
    return mri.undersample(k, p["mask"].to(k.data.device))


# -- motion -----------------------------------------------------------------------------------------------


def _order(n_shots: int) -> tuple[str, int]:
    """The acquisition order a table's ``n_shots`` means: 0 sequential, S >= 1 interleaved in S shots."""
    return ("interleaved", n_shots) if n_shots > 0 else ("sequential", 1)


def motion_params(d: Draw) -> dict[str, torch.Tensor]:
    """Segmented rigid motion scaled so that its energy-weighted displacement lands in the level's band."""
    x = to_physical(d.inputs["v"], d.inputs)
    energy = _kspace(x, d.inputs).column_energy().cpu()
    m = d.magnitudes
    res = mri_motion.sample_motion(d.pattern, energy, d.inputs["pixel_mm"], _grid(d), round(m["n_events"]),
                                   d.const("measure_px"), m["band"], m["max_rotation_deg"],
                                   m["max_translation_mm"], *_order(round(m["n_shots"])), reach_px=m["reach_px"])
    poses = res.pop("poses")
    return {**res, "n_events": d.const("n_events", rounded=True), "n_shots": d.const("n_shots", rounded=True),
            "band": d.const("band"), "rotation_deg": torch.rad2deg(poses[..., 0].abs().amax(dim=1)),
            "translation_mm": poses[..., 1:].norm(dim=-1).amax(dim=1), "poses": poses}


def motion_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    x = to_physical(v, p)
    images = _coil_images(x, p)
    w = images.shape[-1]
    (shots,) = torch.unique(p["n_shots"]).tolist()             # one table value per batch
    times = torch.from_numpy(mri_motion.line_times(w, *_order(round(shots))))
    segments = mri_motion.line_segments(p["event_times"].cpu(), times)
    poses = mri_motion.to_pixels(p["poses"], p["pixel_mm"]).to(torch.float32)
    out = mri_motion.rigid_motion(images, poses, segments).magnitude()
    return _finish(out, x, p, v)


# -- the other artefacts -----------------------------------------------------------------------------------


def ghosting_params(d: Draw) -> dict[str, torch.Tensor]:
    lo, hi = GHOST_RANGE
    return {"num_ghosts": (lo + (d.pattern[:, 0] * (hi - lo + 1)).floor()).to(torch.int64),
            "intensity": d.const("intensity"), "restore": d.const("restore")}


def ghosting(k: KSpace, p: dict[str, torch.Tensor]) -> KSpace:
    return mri.ghosting(k, p["num_ghosts"], p["intensity"], p["restore"], axis=-1)


def spike_params(d: Draw) -> dict[str, torch.Tensor]:
    h, w = _grid(d)
    n = round(d.magnitudes["n_spikes"])
    u = d.pattern
    return {"n_spikes": torch.full((d.batch,), n), "intensity": d.const("intensity"),
            "rows": (u[:, :n] * h).floor().to(torch.int64),
            "cols": (u[:, MAX_SPIKES:MAX_SPIKES + n] * w).floor().to(torch.int64)}


def spike(k: KSpace, p: dict[str, torch.Tensor]) -> KSpace:
    return mri.spike(k, p["rows"], p["cols"], p["intensity"])


def gibbs(k: KSpace, p: dict[str, torch.Tensor]) -> KSpace:
    return mri.gibbs(k, p["alpha"])


def bias_params(d: Draw) -> dict[str, torch.Tensor]:
    c = d.magnitudes["coefficient_max"]
    return {"coefficient_max": d.const("coefficient_max"), "coefficients": c * (2.0 * d.pattern[:, :BIAS_TERMS] - 1.0)}


def bias_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Image domain: the receive field multiplies every coil image alike, so it multiplies the reconstruction."""
    x = to_physical(v, p)
    return to_display(x * mri.bias_field(tuple(x.shape[-2:]), p["coefficients"].to(x.device)), p, v)


def noise_params(d: Draw) -> dict[str, torch.Tensor]:
    span = (d.inputs["window_hi"] - d.inputs["window_lo"]).to(torch.float64)
    return {"sigma_fraction": d.const("sigma_fraction"), "sigma": d.const("sigma_fraction") * span,
            "noise_seed": d.pattern_seeds.clone()}


def noise_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rician on an image item's magnitude; on raw data, complex noise on every coil's k-space, then RSS."""
    x = to_physical(v, p)
    if p.get("_kspace") is None:
        return to_display(mri.rician(x, p["sigma"], p["noise_seed"]), p, v)
    noisy = mri.kspace_noise(KSpace(p["_kspace"], centred=True), p["sigma"], p["noise_seed"])
    return _finish(noisy.magnitude(), x, p, v)


# (name, sampler, apply, pattern uniforms per item)
ENTRIES = [
    ("mri_undersampling", undersampling_params("random"), kspace_model(undersampling), 0),
    ("mri_undersampling_equispaced", undersampling_params("equispaced_fraction"), kspace_model(undersampling), 0),
    ("mri_undersampling_poisson", undersampling_params("poisson"), kspace_model(undersampling), 1),
    ("mri_undersampling_radial", undersampling_params("radial"), kspace_model(undersampling), 1),
    ("mri_motion", motion_params, motion_apply, mri_motion.n_pattern()),
    ("mri_motion_interleaved", motion_params, motion_apply, mri_motion.n_pattern()),
    ("mri_ghosting", ghosting_params, kspace_model(ghosting), 1),
    ("mri_bias_field", bias_params, bias_apply, BIAS_TERMS),
    ("mri_spike", spike_params, kspace_model(spike), 2 * MAX_SPIKES),
    ("mri_gibbs", table_values("alpha"), kspace_model(gibbs), 0),
    ("mri_noise", noise_params, noise_apply, 0),
]
ENTRIES = [(name, sampler, chunked(fn), n) for name, sampler, fn, n in ENTRIES]
# the models that act on k-space lines, written for phase encoding along the columns (the engine transposes
# items encoded up-down); the bias field is a smooth image-domain product, with no encoding direction
PHASE_ENCODED = frozenset(name for name, *_ in ENTRIES if name != "mri_bias_field")
