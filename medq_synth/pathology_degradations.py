"""Histopathology overlays (``physics.pathology``) bound to their tables: MedQ-Deg's bubble_artifact,
blood_cell_artifact and dark_spots_artifact, on histopathology items. Positions, sizes and shapes come from the
item's pattern stream (recorded as arrays), so L2 draws the L1 overlay and more: the same bubble larger, the
same cells plus others, the same spots larger."""

from __future__ import annotations

import math

import torch

from medq_synth.physics import pathology

from .registry import Draw

MAX_CELLS = 64
N_SPOTS = 5


def _positions(d: Draw, offset: int, n: int, margin: float) -> torch.Tensor:
    """``n`` (x, y) pixel centres per item from pattern uniforms, ``margin`` (fraction) from every edge."""
    h, w = d.shape
    u = d.pattern[:, offset:offset + 2 * n].reshape(d.batch, n, 2)
    frac = margin + (1 - 2 * margin) * u
    return frac * torch.tensor([w, h], dtype=torch.float64)


def bubble_params(d: Draw) -> dict[str, torch.Tensor]:
    size = min(d.shape)
    return {"radius_px": d.const("radius_fraction") * size, "blur_sigma_px": d.const("blur_sigma_px"),
            "aspect": 0.75 + 0.25 * d.pattern[:, 2], "centre": _positions(d, 0, 1, 0.3)[:, 0]}


def bubble_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    if float(p["radius_px"].max()) <= 0:
        return v.clone()
    return pathology.bubble(v, p["centre"], p["radius_px"], p["aspect"], p["blur_sigma_px"])


def blood_cell_params(d: Draw) -> dict[str, torch.Tensor]:
    n = min(MAX_CELLS, round(d.magnitudes["n_cells"]))
    radius = d.magnitudes["radius_fraction"] * min(d.shape)
    return {"n_cells": torch.full((d.batch,), n), "centres": _positions(d, 0, MAX_CELLS, 0.02),
            "radii": radius * (0.85 + 0.3 * d.pattern[:, 2 * MAX_CELLS:3 * MAX_CELLS]),
            "active": (torch.arange(MAX_CELLS)[None, :] < n).expand(d.batch, MAX_CELLS).to(torch.uint8)}


def blood_cell_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    return pathology.blood_cells(v, p["centres"], p["radii"], p["active"].bool())


def dark_spot_params(d: Draw) -> dict[str, torch.Tensor]:
    size = min(d.shape)
    u = d.pattern[:, 2 * N_SPOTS:]
    return {"radius_fraction": d.const("radius_fraction"), "centres": _positions(d, 0, N_SPOTS, 0.05),
            "radii": d.magnitudes["radius_fraction"] * size * (0.7 + 0.6 * u[:, :N_SPOTS]),
            "elongation": 1.0 + u[:, N_SPOTS:2 * N_SPOTS], "angle_rad": math.pi * u[:, 2 * N_SPOTS:3 * N_SPOTS]}


def dark_spot_apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    if float(p["radius_fraction"].max()) <= 0:
        return v.clone()
    return pathology.dark_spots(v, p["centres"], p["radii"], p["elongation"], p["angle_rad"])


# (name, sampler, apply, pattern uniforms per item)
ENTRIES = [
    ("path_bubble", bubble_params, bubble_apply, 3),
    ("path_blood_cell", blood_cell_params, blood_cell_apply, 3 * MAX_CELLS),
    ("path_dark_spots", dark_spot_params, dark_spot_apply, 5 * N_SPOTS),
]
