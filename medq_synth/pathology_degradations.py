"""Histopathology overlays (``physics.pathology``) bound to their tables: MedQ-Deg's bubble_artifact,
blood_cell_artifact and dark_spots_artifact, on histopathology items, at the slide's physical scale: sizes are
in micrometres, converted per item through its microns per pixel (the file's, ``--mpp``, or the documented
default; recorded as ``mpp``). Positions, sizes and shapes come from the item's pattern stream (recorded as
arrays), so L2 draws the L1 overlay and more: the same bubble larger, the same cells plus others, the same spots
larger. Red cells gather in clusters (haemorrhage), not evenly spread."""

from __future__ import annotations

import math

import torch

from medq_synth.physics import pathology

from .registry import Draw

MAX_CELLS = 64
MAX_CLUSTERS = 3
N_SPOTS = 5


def _mpp(d: Draw) -> torch.Tensor:
    """Microns per pixel of each item, ``(B,)``: its pixel size (mm) x 1000."""
    return d.inputs["pixel_mm"].to(torch.float64) * 1000.0


def _positions(d: Draw, offset: int, n: int, margin: float) -> torch.Tensor:
    """``n`` (x, y) pixel centres per item from pattern uniforms, ``margin`` (fraction) from every edge."""
    h, w = d.shape
    u = d.pattern[:, offset:offset + 2 * n].reshape(d.batch, n, 2)
    frac = margin + (1 - 2 * margin) * u
    return frac * torch.tensor([w, h], dtype=torch.float64)


def bubble_params(d: Draw) -> dict[str, torch.Tensor]:
    mpp = _mpp(d)
    return {"mpp": mpp, "radius_um": d.const("radius_um"), "radius_px": d.const("radius_um") / mpp,
            "blur_sigma_px": d.const("blur_sigma_um") / mpp, "aspect": 0.75 + 0.25 * d.pattern[:, 2],
            "centre": _positions(d, 0, 1, 0.3)[:, 0]}


def bubble_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    if float(p["radius_px"].max()) <= 0:
        return v.clone()
    return pathology.bubble(v, p["centre"], p["radius_px"], p["aspect"], p["blur_sigma_px"])


def blood_cell_params(d: Draw) -> dict[str, torch.Tensor]:
    """Cells in 1-3 clusters per item: cluster centres drawn over the image, each cell offset from its cluster's
    centre by a Gaussian of ``cluster_sigma_um`` (Box-Muller on pattern uniforms), diameters of
    ``cell_diameter_um`` x 0.9-1.1."""
    mpp = _mpp(d)[:, None]
    h, w = d.shape
    n = min(MAX_CELLS, round(d.magnitudes["n_cells"]))
    u = d.pattern
    k = 4 * MAX_CELLS
    n_clusters = 1 + (u[:, k] * MAX_CLUSTERS).floor().clamp(max=MAX_CLUSTERS - 1)
    cluster_of = (u[:, 3 * MAX_CELLS:4 * MAX_CELLS] * n_clusters[:, None]).floor().to(torch.int64)
    centres = _positions(d, k + 1, MAX_CLUSTERS, 0.15)                                 # (B, K, 2)
    spread = d.magnitudes["cluster_sigma_um"] / mpp                                      # (B, 1) px
    r1, r2 = u[:, :MAX_CELLS].clamp_min(1e-12), u[:, MAX_CELLS:2 * MAX_CELLS]
    radius = torch.sqrt(-2.0 * torch.log(r1)) * spread
    offset = torch.stack([radius * torch.cos(2 * math.pi * r2), radius * torch.sin(2 * math.pi * r2)], dim=-1)
    pos = torch.gather(centres, 1, cluster_of[..., None].expand(-1, -1, 2)) + offset
    pos = torch.stack([pos[..., 0].clamp(0.0, w - 1e-3), pos[..., 1].clamp(0.0, h - 1e-3)], dim=-1)
    diameter = d.magnitudes["cell_diameter_um"] * (0.9 + 0.2 * u[:, 2 * MAX_CELLS:3 * MAX_CELLS])
    return {"mpp": mpp[:, 0], "n_cells": torch.full((d.batch,), n), "n_clusters": n_clusters.to(torch.int64),
            "cell_diameter_um": d.const("cell_diameter_um"), "cluster_sigma_um": d.const("cluster_sigma_um"),
            "centres": pos, "radii": diameter / 2.0 / mpp,
            "active": (torch.arange(MAX_CELLS)[None, :] < n).expand(d.batch, MAX_CELLS).to(torch.uint8)}


def blood_cell_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return pathology.blood_cells(v, p["centres"], p["radii"], p["active"].bool())


def dark_spot_params(d: Draw) -> dict[str, torch.Tensor]:
    mpp = _mpp(d)
    u = d.pattern[:, 2 * N_SPOTS:]
    return {"mpp": mpp, "radius_um": d.const("radius_um"), "centres": _positions(d, 0, N_SPOTS, 0.05),
            "radii": (d.magnitudes["radius_um"] / mpp)[:, None] * (0.7 + 0.6 * u[:, :N_SPOTS]),
            "elongation": 1.0 + u[:, N_SPOTS:2 * N_SPOTS], "angle_rad": math.pi * u[:, 2 * N_SPOTS:3 * N_SPOTS]}


def dark_spot_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    if float(p["radius_um"].max()) <= 0:
        return v.clone()
    return pathology.dark_spots(v, p["centres"], p["radii"], p["elongation"], p["angle_rad"])


# (name, sampler, apply, pattern uniforms per item)
ENTRIES = [
    ("path_bubble", bubble_params, bubble_apply, 3),
    ("path_blood_cell", blood_cell_params, blood_cell_apply, 4 * MAX_CELLS + 1 + 2 * MAX_CLUSTERS),
    ("path_dark_spots", dark_spot_params, dark_spot_apply, 5 * N_SPOTS),
]
