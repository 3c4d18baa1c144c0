"""Ultrasound speckle (``physics.ultrasound``, ``physics.us_display``) bound to its severity table.

Two kinds of item reach it:

- phantoms carry the echogenicity map their L0 image was rendered from (``_echogenicity``) and the speckle
  seed of that rendering (``_speckle_seed``): each severity re-renders the same scatterers with its settings
  (``echogenicity_source`` 0);
- any other ultrasound image is a scanner's display, speckle included: its echo is re-acquired from the
  display itself (``physics.us_display``; ``echogenicity_source`` 2), keeping its speckle, with the display's
  dynamic range, grain and tissue level estimated from the image and recorded. Only the tissue changes: the
  image region (the DICOM's SequenceOfUltrasoundRegions tissue region when it fits the image, else the whole
  image) holds the echo area (the largest connected non-black area, holes filled: the fan or rectangle with
  its anechoic parts); colour pixels (Doppler, colour bars, logos) and bright thin graphics (text, calipers,
  ROI boxes) keep their bits, and so does the black outside the echo area.

Severity is a poorer acquisition: a lower centre frequency (coarser grain, lower resolution), more thermal
noise rising with depth after time-gain compensation, a narrower dynamic range. Either way the output is the
input plus (rendering at the severity - rendering at the clean settings) from the same scatterers, so
severity 0 returns the input bit for bit and L2 is L1's acquisition made worse, not a new speckle draw.
"""

from __future__ import annotations

import numpy as np
import torch

from medq_synth.physics import ultrasound as us
from medq_synth.physics import us_display

from .registry import Draw, table_values

SETTINGS = ("center_frequency_mhz", "fractional_bandwidth", "f_number", "focus_fraction", "depth_of_field_fraction",
            "snr_db", "tgc_noise_rise_db", "dynamic_range_db")
COLOUR_CHROMA = 0.06        # max - min over RGB above this (15 of 255 grey levels): a colour pixel, kept
GRAPHIC_LEVEL, GRAPHIC_CONTRAST = 0.7, 0.3    # bright and far above the 5 x 5 median: text, calipers, boxes
BLACK = 0.02                # display fraction below which a pixel is background, not echo


def image_masks(v: np.ndarray, box: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Echo area and tissue pixels (bool ``(H, W)``) of a display ``v`` ``(C, H, W)``, and the number of pixels
    inside the echo area kept as they are (colour, graphics). ``box``: [x0, y0, x1, y1] (inclusive) or None."""
    from scipy import ndimage

    grey = v.mean(axis=0)
    chroma = v.max(axis=0) - v.min(axis=0)
    region = np.zeros(grey.shape, bool)
    if box is not None:
        x0, y0, x1, y1 = (int(t) for t in box)
        region[y0:y1 + 1, x0:x1 + 1] = True
    else:
        region[:] = True
    colour = chroma > COLOUR_CHROMA
    graphics = (grey >= GRAPHIC_LEVEL) & (grey - ndimage.median_filter(grey, 5) >= GRAPHIC_CONTRAST)
    keep = colour | ndimage.binary_dilation(graphics, iterations=1)
    echo = region & (grey > BLACK) & ~keep
    area = ndimage.binary_fill_holes(ndimage.binary_closing(echo, iterations=3))
    labels, n = ndimage.label(area)
    if n:
        sizes = ndimage.sum(area, labels, index=np.arange(1, n + 1))
        area = labels == 1 + int(np.argmax(sizes))
    inside = area & region
    tissue = inside & ~keep
    return inside, tissue, int((inside & keep).sum())


def _region_box(d: Draw, i: int) -> np.ndarray | None:
    box = d.inputs.get("_image_region")
    if box is None or int(box[i, 0]) < 0:
        return None
    return box[i].numpy()


def _displayed(d: Draw) -> dict[str, torch.Tensor]:
    """Per item: the masks, the display's estimates and the acquisition's change, for an image without a map."""
    v = d.inputs["v"].cpu().numpy()
    b, h, w = d.batch, *d.shape
    insides, tissues = np.zeros((b, h, w), bool), np.zeros((b, h, w), bool)
    est = np.zeros((b, 4))
    kept, source = np.zeros(b, np.int64), np.zeros(b, np.int64)
    for i in range(b):
        box = _region_box(d, i)
        source[i] = 0 if box is not None else 1
        insides[i], tissues[i], kept[i] = image_masks(v[i], box)
        est[i] = us_display.estimate_display(torch.from_numpy(v[i].mean(axis=0)), torch.from_numpy(tissues[i]))
    m, clean = d.magnitudes, d.identity
    ratio = clean["center_frequency_mhz"] / m["center_frequency_mhz"]
    widen = max(ratio * ratio - 1.0, 0.0) ** 0.5
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    # the noise added on top of the image's own, against its tissue level (dB below white)
    excess = max(10 ** (-m["tissue_snr_db"] / 10) - 10 ** (-clean["tissue_snr_db"] / 10), 0.0)
    noise = torch.from_numpy(excess * 10 ** (est[:, 3] / 10))
    return {"echogenicity_source": torch.full((b,), 2, dtype=torch.int64),
            "region_source": torch.from_numpy(source), "kept_pixels": torch.from_numpy(kept),
            "dynamic_range_estimated_db": t(est[:, 0]), "grain_axial_px": t(est[:, 1]),
            "grain_lateral_px": t(est[:, 2]), "tissue_level_db": t(est[:, 3]),
            "frequency_ratio": torch.full((b,), ratio, dtype=torch.float64),
            "extra_axial_sigma_px": t(est[:, 1] * widen), "extra_lateral_sigma_px": t(est[:, 2] * widen),
            "tissue_snr_db": d.const("tissue_snr_db"), "added_noise_power": noise,
            "dynamic_range_fraction": torch.full((b,), m["dynamic_range_db"] / clean["dynamic_range_db"],
                                                 dtype=torch.float64),
            "tissue_mask": torch.from_numpy(tissues.astype(np.uint8)), "_inside": torch.from_numpy(insides),
            "speckle_seed": d.pattern_seeds.clone()}


def speckle_params(d: Draw) -> dict[str, torch.Tensor]:
    base = table_values(*SETTINGS, "input_dynamic_range_db")(d)
    if d.inputs.get("_echogenicity") is None:
        return {**base, **_displayed(d)}
    own = d.inputs.get("_speckle_seed")
    seeds = torch.where(own >= 0, own, d.pattern_seeds) if own is not None else d.pattern_seeds.clone()
    clean = {f"_clean_{k}": torch.full((d.batch,), float(d.identity[k]), dtype=torch.float64) for k in SETTINGS}
    return {**base, **clean, "echogenicity_source": torch.zeros(d.batch, dtype=torch.int64), "speckle_seed": seeds}


def _settings(p: dict[str, torch.Tensor], device: torch.device, prefix: str = "") -> dict[str, torch.Tensor]:
    return {k: p[prefix + k].to(device) for k in SETTINGS}


def render(e: torch.Tensor, p: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """B-mode display ``(B, H, W)`` in [0, 1] of echogenicity ``e`` with the settings in ``p`` (``prefix``
    ``_clean_``: the table's identity settings)."""
    dev = e.device
    get = _settings(p, dev, prefix)
    env = us.bmode(e, p["pixel_mm"].to(dev), get["center_frequency_mhz"], get["fractional_bandwidth"],
                   get["f_number"], get["focus_fraction"], get["depth_of_field_fraction"], get["snr_db"],
                   p["speckle_seed"], get["tgc_noise_rise_db"])
    return us.log_compress(env, get["dynamic_range_db"])


def _depth(inside: torch.Tensor) -> torch.Tensor:
    """0 at the first row of the echo area, 1 at its last, per item ``(B, H, W)``."""
    rows = torch.arange(inside.shape[-2], device=inside.device, dtype=torch.float32)[None, :, None]
    has = inside.any(dim=-1, keepdim=True)
    top = torch.where(has, rows, torch.full_like(rows, float("inf"))).amin(dim=-2, keepdim=True)
    bottom = torch.where(has, rows, torch.full_like(rows, -1.0)).amax(dim=-2, keepdim=True)
    return ((rows - top) / (bottom - top).clamp_min(1.0)).clamp(0.0, 1.0).expand_as(inside)


def _reacquired(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The change of an image without a map, added to its tissue pixels only."""
    dev = v.device
    inside = p["_inside"].to(dev)
    tissue = p["tissue_mask"].to(dev).bool()
    grey = v.mean(dim=1)
    b = len(v)
    args = (inside, tissue, _depth(inside), p["dynamic_range_estimated_db"], p["tissue_level_db"])
    zero = torch.zeros(b, dtype=torch.float64)
    degraded = us_display.reacquire(grey, *args, p["extra_axial_sigma_px"], p["extra_lateral_sigma_px"],
                                    p["added_noise_power"], p["tgc_noise_rise_db"], p["dynamic_range_fraction"],
                                    p["speckle_seed"])
    clean = us_display.reacquire(grey, *args, zero, zero, zero, zero, torch.ones(b, dtype=torch.float64),
                                 p["speckle_seed"])
    return v + torch.where(tissue, degraded - clean, torch.zeros((), device=dev))[:, None].to(v.dtype)


def speckle_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Display in, display out: the input plus the change from the clean settings to the severity's."""
    known = p.get("_echogenicity")
    if known is None:
        return _reacquired(v, p)
    e = known.to(v)
    return v + (render(e, p) - render(e, p, "_clean_"))[:, None].to(v.dtype)


def echogenicity(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The map a sector scan renders ``(B, H, W)``: the item's own, or the despeckled power of its display."""
    known = p.get("_echogenicity")
    if known is not None:
        return known.to(v)
    power = us.echogenicity_from_display(v.mean(dim=1), p["input_dynamic_range_db"].to(v.device))
    return us.despeckle(power, float(p["despeckle_px"][0]))


def sector_params(d: Draw) -> dict[str, torch.Tensor]:
    """A re-acquisition with a curvilinear probe: rendered from the map (phantoms) or the despeckled display
    (``echogenicity_source`` 1), with fresh speckle on the new (depth, beam) grid."""
    has_map = d.inputs.get("_echogenicity") is not None
    return {**table_values(*SETTINGS, "input_dynamic_range_db", "despeckle_px", "sector_deg", "apex_fraction")(d),
            "echogenicity_source": torch.full((d.batch,), 0 if has_map else 1, dtype=torch.int64),
            "speckle_seed": d.pattern_seeds.clone()}


def sector_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """The same model acquired by a curvilinear probe and scan-converted: a fan, black outside it."""
    e = echogenicity(v, p)
    dev = e.device
    get = _settings(p, dev)
    shown = us.sector_bmode(e, p["pixel_mm"].to(dev), get["center_frequency_mhz"], get["fractional_bandwidth"],
                            get["f_number"], get["focus_fraction"], get["depth_of_field_fraction"], get["snr_db"],
                            get["dynamic_range_db"], p["speckle_seed"], float(p["sector_deg"][0]),
                            float(p["apex_fraction"][0]), get["tgc_noise_rise_db"])
    return shown[:, None].expand_as(v).contiguous()
