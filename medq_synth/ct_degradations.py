"""The CT family (``physics.ct``, ``physics.ct_fov``) bound to its severity tables.

Each item is simulated in HU on its own pixel size. A body cut by the image border is first extended beyond
the field of view (``physics.ct_fov``: recorded per output as ``fov_truncated``, ``extension_method`` and the
body ellipse), projected and reconstructed on that canvas, and the change is cropped back to the image. The
change is inserted as a difference in the display domain, so a severity that changes nothing returns the
item's own bytes. The limited-angle wedge starts at an angle drawn per item from its pattern stream (shared
by its levels, so L1's missing wedge lies inside L2's).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from medq_synth.kernels.geometry import Geometry, default_geometry
from medq_synth.physics import ct, ct_fov

from .physical import to_physical
from .registry import Draw, table_values

CT_FILTER = "shepp-logan"
CT_FAN_VIEWS = 720          # full fan scan (see severities.toml, ct_sparse_view)
CT_PARALLEL_VIEWS = 360     # full 180 deg parallel scan (ct_limited_angle)
OUTLINE_KEYS = ("body_cx_mm", "body_cy_mm", "body_a_mm", "body_b_mm", "body_theta_deg", "extension_fill_hu")


def field_of_view(d: Draw) -> dict[str, torch.Tensor]:
    """Per item: whether the body is cut by the border and, if so, the ellipse it is extended to."""
    hu = to_physical(d.inputs["v"], d.inputs).cpu().double().numpy()
    recon = d.inputs.get("_recon_diameter_mm")
    rows = []
    for i in range(d.batch):
        px = float(d.inputs["pixel_mm"][i])
        if not ct_fov.truncated(hu[i]):
            rows.append((0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
            continue
        diameter = None if recon is None else float(recon[i])
        o = ct_fov.body_outline(hu[i], px, diameter)
        rows.append((1, o.method, o.cx, o.cy, o.a, o.b, math.degrees(o.theta), o.fill_hu))
    t = np.array(rows, dtype=np.float64).reshape(d.batch, 8)
    out = {"fov_truncated": torch.from_numpy(t[:, 0]).to(torch.int64),
           "extension_method": torch.from_numpy(t[:, 1]).to(torch.int64)}
    out.update({k: torch.from_numpy(t[:, 2 + j].copy()) for j, k in enumerate(OUTLINE_KEYS)})
    return out


def _outline(p: dict[str, torch.Tensor], i: int) -> ct_fov.Outline:
    cx, cy, a, b, theta, fill = (float(p[k][i]) for k in OUTLINE_KEYS)
    return ct_fov.Outline(cx, cy, a, b, math.radians(theta), fill, int(p["extension_method"][i]))


def ct_apply(geometry, change):
    """A registry ``apply`` from ``geometry(shape, pixel_mm, p of one item) -> Geometry`` and ``change(hu
    (B, H, W), geometry, pixel_mm, p of those items, shape) -> the change in HU on the centred grid shape``:
    items are grouped by pixel size and drawn geometry (truncated ones one at a time, projected on their
    extended canvas and reconstructed on the image's own pixels at its centre), and the change is added to
    the input in the display domain."""
    def apply(v: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        hu = to_physical(v, p)
        delta = torch.zeros_like(hu)
        groups: dict[tuple, list[int]] = {}
        for i in range(len(v)):
            g = geometry(tuple(hu.shape[-2:]), float(p["pixel_mm"][i]), {k: t[i] for k, t in p.items()})
            key = (float(p["pixel_mm"][i]), g) if not int(p["fov_truncated"][i]) else ("truncated", i)
            groups.setdefault(key, []).append(i)
        for key, sel in groups.items():
            px = float(p["pixel_mm"][sel[0]])
            sub = {k: t[sel] for k, t in p.items()}
            if key[0] != "truncated":
                g = geometry(tuple(hu.shape[-2:]), px, {k: t[0] for k, t in sub.items()})
                delta[sel] = change(hu[sel], g, px, sub, tuple(hu.shape[-2:])).to(delta)
                continue
            (i,) = sel
            canvas, _ = ct_fov.extend(hu[i:i + 1], px, _outline(p, i))
            g = geometry(tuple(canvas.shape[-2:]), px, {k: t[0] for k, t in sub.items()})
            delta[i] = change(canvas, g, px, sub, tuple(hu.shape[-2:]))[0].to(delta)
        span = (p["window_hi"] - p["window_lo"]).to(v)[:, None, None, None]
        return v + delta[:, None].to(v) / span
    return apply


def _fan(shape: tuple[int, int], px: float, p: dict[str, torch.Tensor]) -> Geometry:
    return default_geometry("fan", shape, px, n_views=CT_FAN_VIEWS)


def _parallel(shape: tuple[int, int], px: float, p: dict[str, torch.Tensor]) -> Geometry:
    """The full 180 deg parallel scan, starting where the item's measured arc starts: the measured arc is
    [start, start + arc), the missing wedge [start + arc, start + 180) = [missing_start, missing_start + 180
    - arc), modulo 180 deg."""
    from dataclasses import replace

    g = default_geometry("parallel", shape, px, n_views=CT_PARALLEL_VIEWS)
    start = float(p["missing_start_deg"]) + float(p["arc_deg"]) - 180.0
    return replace(g, start=math.radians(start % 180.0))


def low_dose_params(d: Draw) -> dict[str, torch.Tensor]:
    return {**table_values("dose_fraction", "i0_full", "sigma_e")(d), "noise_seed": d.seeds.clone(),
            **field_of_view(d)}


def sparse_view_params(d: Draw) -> dict[str, torch.Tensor]:
    return {**table_values("n_views", rounded=("n_views",))(d), **field_of_view(d)}


def limited_angle_params(d: Draw) -> dict[str, torch.Tensor]:
    return {**table_values("arc_deg")(d), "missing_start_deg": 180.0 * d.pattern[:, 0], **field_of_view(d)}


Shape = tuple[int, int]


def _low_dose(hu: torch.Tensor, g: Geometry, px: float, p: dict[str, torch.Tensor], shape: Shape) -> torch.Tensor:
    return ct.low_dose_change(hu, g, px, float(p["i0_full"][0]), p["dose_fraction"], p["sigma_e"],
                              p["noise_seed"], CT_FILTER, shape)


def _sparse_view(hu: torch.Tensor, g: Geometry, px: float, p: dict[str, torch.Tensor], shape: Shape) -> torch.Tensor:
    return ct.fewer_views_change(hu, g, g.sparse(int(p["n_views"][0])), px, CT_FILTER, shape)


def _limited_angle(hu: torch.Tensor, g: Geometry, px: float, p: dict[str, torch.Tensor], shape: Shape
                   ) -> torch.Tensor:
    return ct.fewer_views_change(hu, g, g.limited(math.radians(float(p["arc_deg"][0]))), px, CT_FILTER, shape)


# (name, sampler, apply, pattern uniforms per item)
ENTRIES = [
    ("ct_low_dose", low_dose_params, ct_apply(_fan, _low_dose), 0),
    ("ct_sparse_view", sparse_view_params, ct_apply(_fan, _sparse_view), 0),
    ("ct_limited_angle", limited_angle_params, ct_apply(_parallel, _limited_angle), 1),
]
