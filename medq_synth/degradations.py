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

    ct_only = frozenset({"ct"})
    reg.register(Degradation(
        t["ct_low_dose"],
        lambda m, u, s, f: {"dose_fraction": _const(n(s), m["dose_fraction"]), "i0_full": _const(n(s), m["i0_full"]),
                            "sigma_e": _const(n(s), m["sigma_e"]), "noise_seed": s.clone()},
        _ct_apply(_low_dose), modalities=ct_only, physical=True))
    reg.register(Degradation(
        t["ct_sparse_view"],
        lambda m, u, s, f: {"n_views": _const(n(s), round(m["n_views"]))},
        _ct_apply(_sparse_view), modalities=ct_only, physical=True))
    reg.register(Degradation(
        t["ct_limited_angle"],
        lambda m, u, s, f: {"arc_deg": _const(n(s), m["arc_deg"])},
        _ct_apply(_limited_angle), modalities=ct_only, physical=True))
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



# -- CT: the physics works in HU on the item's own pixel size ------------------------------------------------
CT_FILTER = "shepp-logan"
CT_FAN_VIEWS = 720          # full fan scan (see severities.toml, ct_sparse_view)
CT_PARALLEL_VIEWS = 360     # full 180 deg parallel scan (ct_limited_angle)


def _ct_apply(simulate):
    """Wrap ``simulate(hu (B, H, W), pixel_mm, params of those items) -> hu`` as a registry ``apply`` on
    display-normalised input: back to HU through each item's window, simulate, and forward again."""
    def apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        lo = p["window_lo"].to(v)[:, None, None]
        span = (p["window_hi"] - p["window_lo"]).to(v)[:, None, None]
        hu = lo + v.mean(dim=1) * span              # CT is single-channel; a colour rendering is averaged
        out = torch.empty_like(hu)
        for px in torch.unique(p["pixel_mm"]).tolist():
            sel = (p["pixel_mm"] == px).nonzero().flatten().tolist()
            out[sel] = simulate(hu[sel], float(px), {k: t[sel] for k, t in p.items()})
        return ((out - lo) / span)[:, None].expand_as(v).contiguous()
    return apply


def _low_dose(hu: torch.Tensor, px: float, p: dict[str, torch.Tensor]) -> torch.Tensor:
    from medq_synth.kernels.geometry import default_geometry
    from medq_synth.physics import ct

    g = default_geometry("fan", tuple(hu.shape[-2:]), px, n_views=CT_FAN_VIEWS)
    return ct.low_dose(hu, g, px, float(p["i0_full"][0]), p["dose_fraction"], p["sigma_e"], p["noise_seed"],
                       CT_FILTER)


def _sparse_view(hu: torch.Tensor, px: float, p: dict[str, torch.Tensor]) -> torch.Tensor:
    from medq_synth.kernels.geometry import default_geometry
    from medq_synth.physics import ct

    g = default_geometry("fan", tuple(hu.shape[-2:]), px, n_views=CT_FAN_VIEWS)
    return ct.fewer_views(hu, g, g.sparse(int(p["n_views"][0])), px, CT_FILTER)


def _limited_angle(hu: torch.Tensor, px: float, p: dict[str, torch.Tensor]) -> torch.Tensor:
    from medq_synth.kernels.geometry import default_geometry
    from medq_synth.physics import ct

    g = default_geometry("parallel", tuple(hu.shape[-2:]), px, n_views=CT_PARALLEL_VIEWS)
    return ct.fewer_views(hu, g, g.limited(math.radians(float(p["arc_deg"][0]))), px, CT_FILTER)


REGISTRY = build_registry()
