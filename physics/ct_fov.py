"""The CT field of view: a body cut by the image border, and its extension before projecting.

A scanner's rays cross the whole patient, but a reconstruction cropped to a region (or a display field smaller
than the body) holds only part of it. Projected as it is, a crop attenuates far too little (the low-dose noise
of an 85 mm crop of a trunk comes out at a third of the right level) and its cut borders become edges that no
projection of the patient has (limited-angle wedges along the border). Truncation correction in practice
extrapolates the missing object with water-equivalent material fitted to what is measured (Ohnesorge et al.
2000, Med. Phys. 27(1):39; Hsieh et al. 2004, Med. Phys. 31(9):2385, water cylinders fitted at the truncated
edge). We do the same in the image domain, where the outline of the patient is visible in part:

1. ``truncated``: the body touches the border (tissue, above ``TISSUE_HU``, on more than ``MIN_BORDER_FRACTION``
   of the border pixels);
2. ``body_outline``: an ellipse for the whole body, fitted (least squares, scikit-image's ``EllipseModel``) to
   the visible skin (tissue / air edges inside the image, not on its border) of the largest tissue component,
   accepted if it holds the visible body and reaches past the border; otherwise a centred disc of the
   reconstruction diameter the file records, otherwise the reference adult trunk (``REFERENCE_TRUNK_MM``);
3. ``extend``: a canvas holding that ellipse; inside it, the image's border values continued outwards and
   blended (over ``BLEND_MM``) into water-equivalent tissue at the median HU of the cut border (clipped to
   -100..100 HU), except where the border itself shows air (the skin is visible there); air outside. The
   image itself sits unchanged in the canvas's centre.

Units: HU, mm (x to the right along the columns, y down along the rows, from the image centre).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

TISSUE_HU = -500.0              # air / tissue threshold (HU)
MIN_BORDER_FRACTION = 0.02      # of the border pixels in tissue: below this the body is taken as whole
REFERENCE_TRUNK_MM = (330.0, 250.0)   # lateral x AP width of an adult abdomen (ICRP 89 reference male, ~33 x 24 cm)
MAX_SEMI_AXIS_MM = 300.0        # a fitted outline wider than 600 mm is rejected as unphysical
BLEND_MM = 10.0                 # border values fade into the water-equivalent fill over this distance
FILL_HU_RANGE = (-100.0, 100.0)
MARGIN_PX = 4

METHODS = {0: "none (the body is inside the image)", 1: "ellipse fitted to the visible skin",
           2: "disc of the recorded reconstruction diameter", 3: "reference adult trunk ellipse (330 x 250 mm)"}


@dataclass(frozen=True)
class Outline:
    """The body ellipse (mm from the image centre; rotation ``theta`` rad from the x axis) and how it was found."""

    cx: float
    cy: float
    a: float
    b: float
    theta: float
    fill_hu: float
    method: int


def border(hu: np.ndarray) -> np.ndarray:
    return np.concatenate([hu[0], hu[-1], hu[1:-1, 0], hu[1:-1, -1]])


def truncated(hu: np.ndarray) -> bool:
    """Whether the body in ``hu`` ``(H, W)`` is cut by the image border."""
    return bool(truncated_batch(torch.from_numpy(np.asarray(hu))[None])[0])


def truncated_batch(hu: torch.Tensor) -> torch.Tensor:
    """``truncated`` for a batch ``(B, H, W)`` on its own device, bool ``(B,)``."""
    edge = torch.cat([hu[:, 0], hu[:, -1], hu[:, 1:-1, 0], hu[:, 1:-1, -1]], dim=1)
    return (edge > TISSUE_HU).double().mean(dim=1) > MIN_BORDER_FRACTION


def _body_mask(hu: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = ndimage.binary_opening(hu > TISSUE_HU, iterations=1)
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def _fit(hu: np.ndarray, pixel_mm: float, body: np.ndarray) -> tuple[float, ...] | None:
    from scipy import ndimage
    from skimage.measure import EllipseModel

    h, w = hu.shape
    edge = body & ~ndimage.binary_erosion(body)
    edge[:2, :] = edge[-2:, :] = edge[:, :2] = edge[:, -2:] = False     # cut borders are not skin
    rows, cols = np.nonzero(edge)
    if len(rows) < 20:
        return None
    pts = np.stack([(cols + 0.5 - w / 2) * pixel_mm, (rows + 0.5 - h / 2) * pixel_mm], axis=1)
    if hasattr(EllipseModel, "from_estimate"):          # scikit-image >= 0.26
        model = EllipseModel.from_estimate(pts)
        if not model:
            return None
        (xc, yc), (a, b), theta = model.center, model.axis_lengths, model.theta
    else:
        model = EllipseModel()
        if not model.estimate(pts):
            return None
        xc, yc, a, b, theta = model.params
    xc, yc, a, b, theta = (float(t) for t in (xc, yc, a, b, theta))
    if not all(math.isfinite(t) for t in (xc, yc, a, b, theta)) or max(a, b) > MAX_SEMI_AXIS_MM or min(a, b) <= 0:
        return None
    # the ellipse must hold the visible body (97 % of its pixels) and reach past the image border
    by, bx = np.nonzero(body)
    inside = _inside((bx + 0.5 - w / 2) * pixel_mm, (by + 0.5 - h / 2) * pixel_mm, xc, yc, a, b, theta)
    reach = max(abs(xc) + max(a, b) - w * pixel_mm / 2, abs(yc) + max(a, b) - h * pixel_mm / 2)
    if inside.mean() < 0.97 or reach <= 0:
        return None
    return xc, yc, a, b, theta


def _inside(x: np.ndarray, y: np.ndarray, xc: float, yc: float, a: float, b: float, theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    u = (x - xc) * c + (y - yc) * s
    v = -(x - xc) * s + (y - yc) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def body_outline(hu: np.ndarray, pixel_mm: float, recon_diameter_mm: float | None = None) -> Outline:
    """The outline of the whole body for a truncated image ``hu`` ``(H, W)`` (see the module's steps)."""
    cut = border(hu)
    tissue = cut[cut > TISSUE_HU]
    fill = float(np.clip(np.median(tissue), *FILL_HU_RANGE)) if tissue.size else 0.0
    fit = _fit(hu, pixel_mm, _body_mask(hu))
    if fit is not None:
        return Outline(*fit, fill_hu=fill, method=1)
    fov = max(hu.shape) * pixel_mm
    if recon_diameter_mm is not None and math.isfinite(recon_diameter_mm) and recon_diameter_mm > fov * 1.05:
        r = recon_diameter_mm / 2
        return Outline(0.0, 0.0, r, r, 0.0, fill_hu=fill, method=2)
    a, b = (max(t / 2, fov / 2 * 1.05) for t in REFERENCE_TRUNK_MM)
    return Outline(0.0, 0.0, a, b, 0.0, fill_hu=fill, method=3)


def canvas_size(shape: tuple[int, int], pixel_mm: float, outline: Outline) -> tuple[int, int]:
    """A canvas (px) holding the image at its centre and the whole outline, with the image's parity."""
    h, w = shape
    half = max(outline.a, outline.b)
    need = [2 * (abs(outline.cy) + half) / pixel_mm + 2 * MARGIN_PX, 2 * (abs(outline.cx) + half) / pixel_mm +
            2 * MARGIN_PX]
    out = []
    for n, want in zip((h, w), need, strict=True):
        m = max(n, math.ceil(want))
        out.append(m + ((m - n) % 2))
    return out[0], out[1]


def extend(hu: torch.Tensor, pixel_mm: float, outline: Outline) -> torch.Tensor:
    """The extended canvas ``(1, Hc, Wc)`` (HU) of one image ``hu`` ``(1, H, W)``, which sits unchanged at its
    centre (the canvas has the image's parity, so its central H x W pixels are the image's)."""
    h, w = hu.shape[-2:]
    hc, wc = canvas_size((h, w), pixel_mm, outline)
    pt, pl = (hc - h) // 2, (wc - w) // 2
    pad = (pl, wc - w - pl, pt, hc - h - pt)
    dev = hu.device
    cont = F.pad(hu[None].double(), pad, mode="replicate")[0, 0]
    rows = torch.arange(hc, dtype=torch.float64, device=dev)[:, None]
    cols = torch.arange(wc, dtype=torch.float64, device=dev)[None, :]
    # distance (mm) from the image rectangle, and position (mm) from the image centre
    dr = torch.clamp(pt - rows, min=0) + torch.clamp(rows - (pt + h - 1), min=0)
    dc = torch.clamp(pl - cols, min=0) + torch.clamp(cols - (pl + w - 1), min=0)
    dist = torch.sqrt(dr ** 2 + dc ** 2) * pixel_mm
    x = (cols + 0.5 - wc / 2) * pixel_mm
    y = (rows + 0.5 - hc / 2) * pixel_mm
    c, s = math.cos(outline.theta), math.sin(outline.theta)
    u = (x - outline.cx) * c + (y - outline.cy) * s
    v = -(x - outline.cx) * s + (y - outline.cy) * c
    body = (u / outline.a) ** 2 + (v / outline.b) ** 2 <= 1.0
    weight = torch.exp(-dist / BLEND_MM)
    # where the border shows air (the skin is in the image there), air continues outwards
    inside = torch.where(cont > TISSUE_HU, weight * cont + (1.0 - weight) * outline.fill_hu, cont)
    canvas = torch.where(body, inside, torch.full_like(inside, -1000.0))
    canvas[pt:pt + h, pl:pl + w] = hu[0].double()
    return canvas[None].to(hu.dtype)
