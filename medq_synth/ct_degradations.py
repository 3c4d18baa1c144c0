"""The CT family (``physics.ct``, ``physics.ct_fov``) bound to its severity tables.

Each item is simulated in HU on its own pixel size. A body cut by the image border is first extended beyond
the field of view (``physics.ct_fov``: recorded per output as ``fov_truncated``, ``extension_method`` and the
body ellipse), projected and reconstructed on that canvas, and the change is cropped back to the image. The
change is inserted as a difference in the display domain, so a severity that changes nothing returns the
item's own bytes. The limited-angle wedge starts at an angle drawn per item from its pattern stream (shared
by its levels, so L1's missing wedge lies inside L2's): the missing wedge is [start, start + 180 - arc) of the
180 degree parallel scan, and a batch with different wedges is still one backprojection.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

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


class CleanScans:
    """The clean projections of recently seen images and their full-scan reconstructions, keyed by the items
    (``_item_key``: the engine's digest of each item's id and image, so no image is copied off the device to
    be hashed), the extension canvas, the geometry, the pixel size (and the reconstruction grid): an item's L1
    and L2, and low dose and sparse view (the same fan scan), project the same image, so one projection
    serves them all. A recomputed entry has the same bits (the operators are deterministic and
    batch-invariant), so the cache changes no output. Thread-safe (Ray workers run units in threads); bounded
    by ``max_bytes``."""

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def _memo(self, key: tuple, make) -> torch.Tensor:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while sum(t.numel() * t.element_size() for t in self._items.values()) > self.max_bytes and \
                    len(self._items) > 1:
                self._items.popitem(last=False)
        return value

    @staticmethod
    def _key(hu: torch.Tensor, p: dict[str, torch.Tensor], g: Geometry, px: float) -> tuple | None:
        keys = p.get("_item_key")
        if keys is None:
            return None
        canvas = tuple(float(p[k].sum()) for k in OUTLINE_KEYS) if int(p["fov_truncated"].sum()) else ()
        return tuple(keys.tolist()), canvas, tuple(hu.shape), str(hu.device), g, px

    def sinogram(self, hu: torch.Tensor, p: dict[str, torch.Tensor], g: Geometry, px: float) -> torch.Tensor:
        key = self._key(hu, p, g, px)
        make = lambda: ct.acquire(hu, g, px)  # noqa: E731
        return make() if key is None else self._memo(("sinogram", *key), make)

    def reconstruction(self, hu: torch.Tensor, p: dict[str, torch.Tensor], g: Geometry, px: float,
                       shape: tuple[int, int]) -> torch.Tensor:
        from medq_synth.kernels import ct as K

        key = self._key(hu, p, g, px)
        make = lambda: K.fbp(self.sinogram(hu, p, g, px), g, px, shape, CT_FILTER)  # noqa: E731
        return make() if key is None else self._memo(("fbp", *key, shape), make)


CLEAN = CleanScans()


def field_of_view(d: Draw) -> dict[str, torch.Tensor]:
    """Per item: whether the body is cut by the border (checked on the batch's device) and, if so, the ellipse
    it is extended to (fitted on the host, for those items only)."""
    hu = to_physical(d.inputs["v"], d.inputs)
    cut = ct_fov.truncated_batch(hu).cpu().tolist()
    recon = d.inputs.get("_recon_diameter_mm")
    rows = []
    for i in range(d.batch):
        px = float(d.inputs["pixel_mm"][i])
        if not cut[i]:
            rows.append((0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
            continue
        diameter = None if recon is None else float(recon[i])
        o = ct_fov.body_outline(hu[i].cpu().double().numpy(), px, diameter)
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
            canvas = ct_fov.extend(hu[i:i + 1], px, _outline(p, i))
            g = geometry(tuple(canvas.shape[-2:]), px, {k: t[0] for k, t in sub.items()})
            delta[i] = change(canvas, g, px, sub, tuple(hu.shape[-2:]))[0].to(delta)
        span = (p["window_hi"] - p["window_lo"]).to(v)[:, None, None, None]
        return v + delta[:, None].to(v) / span
    return apply


def _fan(shape: tuple[int, int], px: float, p: dict[str, torch.Tensor]) -> Geometry:
    return default_geometry("fan", shape, px, n_views=CT_FAN_VIEWS)


def _parallel(shape: tuple[int, int], px: float, p: dict[str, torch.Tensor]) -> Geometry:
    return default_geometry("parallel", shape, px, n_views=CT_PARALLEL_VIEWS)


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
                              p["noise_seed"], CT_FILTER, shape, CLEAN.sinogram(hu, p, g, px))


def _sparse_view(hu: torch.Tensor, g: Geometry, px: float, p: dict[str, torch.Tensor], shape: Shape) -> torch.Tensor:
    return ct.fewer_views_change(hu, g, g.sparse(int(p["n_views"][0])), px, CT_FILTER, shape,
                                 CLEAN.sinogram(hu, p, g, px), CLEAN.reconstruction(hu, p, g, px, shape))


def _limited_angle(hu: torch.Tensor, g: Geometry, px: float, p: dict[str, torch.Tensor], shape: Shape
                   ) -> torch.Tensor:
    return ct.limited_angle_change(hu, g, math.radians(float(p["arc_deg"][0])),
                                   torch.deg2rad(p["missing_start_deg"]), px, CT_FILTER, shape,
                                   CLEAN.sinogram(hu, p, g, px), CLEAN.reconstruction(hu, p, g, px, shape))


# (name, sampler, apply, pattern uniforms per item)
ENTRIES = [
    ("ct_low_dose", low_dose_params, ct_apply(_fan, _low_dose), 0),
    ("ct_sparse_view", sparse_view_params, ct_apply(_fan, _sparse_view), 0),
    ("ct_limited_angle", limited_angle_params, ct_apply(_parallel, _limited_angle), 1),
]
