"""X-ray models (``physics.xray``) bound to their tables: they own MedQ-Deg's ``exposure_artifact`` and
``xray_motion_blur_artifact`` on X-ray items (the generic ``exposure`` keeps the first id elsewhere).

Both work on the line integral: the item's display window is taken to span 0..``line_integral_range`` of it
(the phantoms' radiographs are in line-integral units with exactly that window; for a display-domain radiograph
this is an assumption, recorded with every output).
"""

from __future__ import annotations

import torch

from medq_synth.physics import xray

from .registry import Draw, table_values

MAX_CURVATURE = 0.25      # control-point offset / chord of the motion path: from straight to a clear arc


def exposure_params(d: Draw) -> dict[str, torch.Tensor]:
    """Over- or under-exposure, drawn per item from its pattern stream (both levels of an item err the same
    way): ``direction`` +1 over, -1 under; ``relative_exposure`` = exposure_factor ** direction."""
    direction = torch.where(d.pattern[:, 0] < 0.5, -1, 1).to(torch.int64)
    factor = d.const("exposure_factor")
    return {**table_values("exposure_factor", "photons_per_pixel", "saturation", "line_integral_range")(d),
            "direction": direction, "relative_exposure": factor ** direction.double(),
            "noise_seed": d.pattern_seeds.clone()}


def exposure_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The change of the displayed line integral, added to the input (so an unchanged exposure is the input)."""
    span = p["line_integral_range"].to(v)[:, None, None]
    line = v.mean(dim=1) * span
    shown = xray.exposure_change(line, p["photons_per_pixel"], p["relative_exposure"], p["saturation"],
                                 p["noise_seed"])
    return v + ((shown - line) / span)[:, None]


def motion_blur_params(d: Draw) -> dict[str, torch.Tensor]:
    return {"length_px": d.const("length_px"), "angle_deg": 180.0 * d.pattern[:, 0],
            "curvature": MAX_CURVATURE * (2.0 * d.pattern[:, 1] - 1.0)}


def motion_blur_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    length = float(p["length_px"][0])
    if length <= 1.0:
        return v.clone()
    kernels = xray.motion_kernel(length, p["angle_deg"], p["curvature"])
    return xray.motion_blur(v, kernels.to(v.device))
