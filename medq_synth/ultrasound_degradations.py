"""Ultrasound speckle (``physics.ultrasound``) bound to its severity table.

The model re-renders the B-mode image from an echogenicity map: the phantoms carry theirs (``_echogenicity``,
the map their L0 image was rendered from at the table's identity settings); any other ultrasound image is
already speckled, so its map is estimated by inverting the log compression (the table's input dynamic range)
and taking a local mean of the power (``despeckle``), and the new speckle replaces the old rather than
multiplying it (recorded per output as ``echogenicity_source``: 0 the item's map, 1 the despeckled image). The
speckle field comes from the item's pattern seed, shared by its levels: L2 is the same scatterers imaged with a
coarser pulse, more noise and a narrower dynamic range.
"""

from __future__ import annotations

import torch

from medq_synth.physics import ultrasound as us

from .registry import Draw, table_values

SETTINGS = ("center_frequency_mhz", "fractional_bandwidth", "f_number", "focus_fraction", "depth_of_field_fraction",
            "snr_db", "dynamic_range_db")


def speckle_params(d: Draw) -> dict[str, torch.Tensor]:
    has_map = d.inputs.get("_echogenicity") is not None
    return {**table_values(*SETTINGS, "input_dynamic_range_db", "despeckle_px")(d),
            "echogenicity_source": torch.full((d.batch,), 0 if has_map else 1, dtype=torch.int64),
            "speckle_seed": d.pattern_seeds.clone()}


def echogenicity(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The map to render ``(B, H, W)``: the item's own, or the despeckled power of its display."""
    known = p.get("_echogenicity")
    if known is not None:
        return known.to(v)
    power = us.echogenicity_from_display(v.mean(dim=1), p["input_dynamic_range_db"].to(v.device))
    return us.despeckle(power, float(p["despeckle_px"][0]))


def _settings(p: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: p[k].to(device) for k in SETTINGS}


def render(e: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """B-mode display ``(B, H, W)`` in [0, 1] of echogenicity ``e`` with the settings in ``p``."""
    dev = e.device
    get = _settings(p, dev)
    env = us.bmode(e, p["pixel_mm"].to(dev), get["center_frequency_mhz"], get["fractional_bandwidth"],
                   get["f_number"], get["focus_fraction"], get["depth_of_field_fraction"], get["snr_db"],
                   p["speckle_seed"])
    return us.log_compress(env, get["dynamic_range_db"])


def speckle_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Display in, display out: the B-mode image is what the window shows."""
    return render(echogenicity(v, p), p)[:, None].expand_as(v).contiguous()


def sector_params(d: Draw) -> dict[str, torch.Tensor]:
    return {**speckle_params(d), **table_values("sector_deg", "apex_fraction")(d)}


def sector_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same model acquired by a curvilinear probe and scan-converted: a fan, black outside it."""
    e = echogenicity(v, p)
    dev = e.device
    get = _settings(p, dev)
    shown = us.sector_bmode(e, p["pixel_mm"].to(dev), get["center_frequency_mhz"], get["fractional_bandwidth"],
                            get["f_number"], get["focus_fraction"], get["depth_of_field_fraction"], get["snr_db"],
                            get["dynamic_range_db"], p["speckle_seed"], float(p["sector_deg"][0]),
                            float(p["apex_fraction"][0]))
    return shown[:, None].expand_as(v).contiguous()
