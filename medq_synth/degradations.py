"""The registered degradations: physics bound to the severity tables (``data/severities.toml``) through named
samplers (Draw -> per-item parameters). The MRI family lives in ``mri_degradations``."""

from __future__ import annotations

import math

import torch

from medq_synth.physics import generic

from .physical import chunked
from .registry import Degradation, Draw, Registry, Sampler, table_values
from .severity import load_tables


def _sign(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0).to(torch.float64)


# -- samplers: Draw -> per-item parameters ------------------------------------------------------------------


def noise_params(d: Draw) -> dict[str, torch.Tensor]:
    return {"sigma": d.const("sigma"), "noise_seed": d.seeds.clone()}


def motion_blur_params(d: Draw) -> dict[str, torch.Tensor]:
    # The kernel length is rounded to an odd size by the physics; record the length actually used.
    length = d.magnitudes["length_px"]
    used = generic.motion_kernel_size(length) if length > 1 else 1.0
    return {"length_px": torch.full((d.batch,), float(used), dtype=torch.float64),
            "angle_deg": 180.0 * d.uniforms[:, 0]}


def rotation_params(d: Draw) -> dict[str, torch.Tensor]:
    return {"angle_deg": d.magnitudes["angle_deg"] * _sign(d.uniforms[:, 0]), "fill": d.fill.clone()}


def movement_params(d: Draw) -> dict[str, torch.Tensor]:
    return {"shift_frac": d.const("shift_frac"), "direction_rad": 2 * math.pi * d.uniforms[:, 0],
            "angle_deg": d.magnitudes["angle_deg"] * _sign(d.uniforms[:, 1]), "weight": d.const("weight"),
            "fill": d.fill.clone()}


def build_registry() -> Registry:
    t = load_tables()
    reg = Registry()

    def add(name: str, sampler: Sampler, fn, **kw) -> None:
        table = t[name]
        if table.modalities:
            kw.setdefault("modalities", frozenset(table.modalities))
        reg.register(Degradation(table, sampler, fn, **kw))

    add("gaussian_noise", noise_params, lambda v, p: generic.gaussian_noise(v, p["sigma"], p["noise_seed"]))
    add("gaussian_blur", table_values("sigma_px"), lambda v, p: generic.gaussian_blur(v, p["sigma_px"]))
    add("motion_blur", motion_blur_params, lambda v, p: generic.motion_blur(v, p["length_px"], p["angle_deg"]),
        n_uniform=1)
    add("low_resolution", table_values("factor"), lambda v, p: generic.low_resolution(v, p["factor"]))
    add("adjust_brightness", table_values("shift"), lambda v, p: generic.adjust_brightness(v, p["shift"]))
    add("exposure", table_values("gain", "offset"), lambda v, p: generic.exposure(v, p["gain"], p["offset"]))
    add("reduce_contrast", table_values("contrast"), lambda v, p: generic.reduce_contrast(v, p["contrast"]))
    add("rotation", rotation_params, lambda v, p: generic.rotation(v, p["angle_deg"], p["fill"]), n_uniform=1)
    add("movement", movement_params, _movement_apply, n_uniform=2)

    from . import ct_degradations as ct
    from . import mri_degradations as mri

    for name, sampler, fn, n_pattern in ct.ENTRIES:
        add(name, sampler, fn, n_pattern=n_pattern, physical=True, image_dependent=True)
    from . import ultrasound_degradations as us

    for name, sampler, fn, n_pattern in mri.ENTRIES:
        add(name, sampler, fn, n_pattern=n_pattern, physical=True, image_dependent=True,
            phase_encoded=name in mri.PHASE_ENCODED)
    add("us_speckle", us.speckle_params, chunked(us.speckle_apply), physical=True, image_dependent=True)
    add("us_speckle_sector", us.sector_params, chunked(us.sector_apply), physical=True, image_dependent=True)

    from . import xray_degradations as xr

    add("xray_exposure", xr.exposure_params, xr.exposure_apply, n_pattern=1)
    add("xray_motion_blur", xr.motion_blur_params, xr.motion_blur_apply, n_pattern=2)

    from . import pathology_degradations as path

    for name, sampler, fn, n_pattern in path.ENTRIES:       # sizes in um through each slide's pixel size
        add(name, sampler, fn, n_pattern=n_pattern, physical=True, image_dependent=True)
    return reg


def _movement_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    size = max(v.shape[-2:])
    d = p["shift_frac"] * size
    shift = torch.stack([d * torch.cos(p["direction_rad"]), d * torch.sin(p["direction_rad"])], dim=1)
    return generic.movement(v, shift, p["angle_deg"], p["weight"], p["fill"])


REGISTRY = build_registry()


def registry_for(severities: str | None) -> Registry:
    """The registry with the tables of a ``--severities`` TOML file (same schema as data/severities.toml; its
    entries replace the packaged ones, the others stay), or the packaged one."""
    if not severities:
        return REGISTRY
    from pathlib import Path

    try:
        text = Path(severities).read_text()
    except OSError as e:
        raise ValueError(f"--severities {severities}: {e}") from None
    try:
        return REGISTRY.with_tables(load_tables(text))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"--severities {severities}: {e}") from None
