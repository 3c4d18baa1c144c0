"""The generic MedQ-Deg degradations, bound to their severity tables (``data/severities.toml``)."""

from __future__ import annotations

import math

import torch

from medq_synth.physics import generic

from .registry import Degradation, Registry
from .severity import load_tables


def _const(b: int, value: float) -> torch.Tensor:
    return torch.full((b,), float(value), dtype=torch.float64)


def _sign(u: torch.Tensor) -> torch.Tensor:
    return torch.where(u < 0.5, -1.0, 1.0).to(torch.float64)


def build_registry() -> Registry:
    t = load_tables()
    reg = Registry()
    n = len

    reg.register(Degradation(
        t["gaussian_noise"],
        lambda m, u, s, f: {"sigma": _const(n(s), m["sigma"]), "noise_seed": s.clone()},
        lambda v, p: generic.gaussian_noise(v, p["sigma"], p["noise_seed"])))
    reg.register(Degradation(
        t["gaussian_blur"],
        lambda m, u, s, f: {"sigma_px": _const(n(s), m["sigma_px"])},
        lambda v, p: generic.gaussian_blur(v, p["sigma_px"])))
    reg.register(Degradation(
        t["motion_blur"],
        # Kernel length is rounded to an odd size by the physics; record the length actually used.
        lambda m, u, s, f: {"length_px": _const(n(s), generic.motion_kernel_size(m["length_px"])
                                                if m["length_px"] > 1 else 1.0),
                            "angle_deg": 180.0 * u[:, 0]},
        lambda v, p: generic.motion_blur(v, p["length_px"], p["angle_deg"]), n_uniform=1))
    reg.register(Degradation(
        t["low_resolution"],
        lambda m, u, s, f: {"factor": _const(n(s), m["factor"])},
        lambda v, p: generic.low_resolution(v, p["factor"])))
    reg.register(Degradation(
        t["adjust_brightness"],
        lambda m, u, s, f: {"shift": _const(n(s), m["shift"])},
        lambda v, p: generic.adjust_brightness(v, p["shift"])))
    reg.register(Degradation(
        t["exposure"],
        lambda m, u, s, f: {"gain": _const(n(s), m["gain"]), "offset": _const(n(s), m["offset"])},
        lambda v, p: generic.exposure(v, p["gain"], p["offset"])))
    reg.register(Degradation(
        t["reduce_contrast"],
        lambda m, u, s, f: {"contrast": _const(n(s), m["contrast"])},
        lambda v, p: generic.reduce_contrast(v, p["contrast"])))
    reg.register(Degradation(
        t["rotation"],
        lambda m, u, s, f: {"angle_deg": m["angle_deg"] * _sign(u[:, 0]), "fill": f.clone()},
        lambda v, p: generic.rotation(v, p["angle_deg"], p["fill"]), n_uniform=1))
    reg.register(Degradation(t["movement"], _movement_params, _movement_apply, n_uniform=2))
    return reg


def _movement_params(m: dict[str, float], u: torch.Tensor, s: torch.Tensor, f: torch.Tensor) -> dict:
    theta = 2 * math.pi * u[:, 0]
    return {"shift_frac": _const(len(s), m["shift_frac"]), "direction_rad": theta,
            "angle_deg": m["angle_deg"] * _sign(u[:, 1]), "weight": _const(len(s), m["weight"]), "fill": f.clone()}


def _movement_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    size = max(v.shape[-2:])
    d = p["shift_frac"] * size
    shift = torch.stack([d * torch.cos(p["direction_rad"]), d * torch.sin(p["direction_rad"])], dim=1)
    return generic.movement(v, shift, p["angle_deg"], p["weight"], p["fill"])


REGISTRY = build_registry()
