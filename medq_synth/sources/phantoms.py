"""The embedded default data: seeded procedural phantoms plus real images shipped by installed packages.

Procedural phantoms (256 x 256, fixed per index, independent of ``--seed``):
- CT (HU, 1.5 mm pixels): abdomen with fat, liver, spleen, kidneys, aorta, vertebra and 0-3 focal lesions
  (40-70 HU against their surroundings, kept clear of the aorta, the vertebra and the fat layer).
- MRI (T2-weighted magnitude, a.u., CSF = 1): head with scalp, skull, CSF, grey and white matter, ventricles
  and 0-3 hyperintense white-matter lesions (T2 signal 0.56-0.62 against white matter 0.42); odd indices are
  raw 8-coil acquisitions (smooth phase, birdcage coils, centred k-space) whose image is the root-sum-of-squares
  reconstruction.
- Ultrasound (B-mode, 60 dB log compression): an echogenicity map of layered soft tissue with anechoic cysts
  (with posterior enhancement) and hyperechoic lesions, rendered with speckle through the us_speckle model at
  its identity settings (7.5 MHz, F# 2); the item carries the map.
- X-ray (PA chest radiograph as the line integral p = sum mu dl through ellipsoids, 1.5625 mm pixels): torso,
  lungs, heart, spine, ribs and 0-3 dense pulmonary nodules (7.8-14 mm radius, 0.07 / mm) away from the
  lung edges.
Lesion centres keep clear of the image midlines so that the side and quadrant answers are unambiguous.
Each phantom carries one multiple-choice question whose answer is known by construction.

Real images (read at run time from the installed packages, no QA): pydicom's ``CT_small.dcm``,
``693_J2KI.dcm`` (512^2 head CT), ``MR_small.dcm`` and ``examples_overlay.dcm``; scikit-image's retina
(fundus) and immunohistochemistry (histopathology) photographs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..items import QA, Item, ItemError
from ..seeding import derive_seed
from .readers import AIR_HU, CT_DEFAULT_WINDOW, from_display, read_dicom, to_items

SIZE = 256
SYNTHETIC = ("ct", "mri", "ultrasound", "xray")
REAL = (("dicom", "CT_small.dcm"), ("dicom", "MR_small.dcm"), ("dicom", "693_J2KI.dcm"),
        ("dicom", "examples_overlay.dcm"), ("skimage", "retina"), ("skimage", "immunohistochemistry"))
REAL_MAX_PX = 512
QUADRANTS = {"upper-left": (0, 0), "upper-right": (1, 0), "lower-left": (0, 1), "lower-right": (1, 1)}


def quadrant_of(x: float, y: float, h: int, w: int) -> str:
    """The quadrant (a QUADRANTS name) holding the point at column ``x``, row ``y`` of an ``h x w`` image."""
    return ("lower" if y >= h / 2 else "upper") + "-" + ("right" if x >= w / 2 else "left")


@dataclass(frozen=True)
class Lesion:
    x: float      # column of the centre, px
    y: float      # row of the centre, px
    r: float      # radius, px
    kind: str


def _grid(n: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(n) + 0.5) / n * 2 - 1          # pixel centres on [-1, 1]
    return np.meshgrid(c, c)                        # X along columns, Y along rows (down)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float, n: int = SIZE) -> np.ndarray:
    """Anti-aliased ellipse indicator (partial volume over about one pixel at the edge)."""
    q = np.sqrt(((x - cx) / a) ** 2 + ((y - cy) / b) ** 2)
    dist_px = (q - 1) * min(a, b) * n / 2
    return np.clip(0.5 - dist_px, 0.0, 1.0)


def _place(rng: np.random.Generator, allowed: np.ndarray, count: int, radii: list[float]) -> list[tuple[float, float]]:
    """Lesion centres (col, row) inside ``allowed`` (bool HxW), clear of the midlines and of each other."""
    n = allowed.shape[0]
    cand = np.argwhere(allowed)
    out: list[tuple[float, float]] = []
    for r in radii[:count]:
        for _ in range(2000):
            row, col = cand[rng.integers(len(cand))]
            if abs(col + 0.5 - n / 2) < r + 4 or abs(row + 0.5 - n / 2) < r + 4:
                continue
            if all((col - c) ** 2 + (row - w) ** 2 > (r + rr + 6) ** 2 for (c, w), rr in zip(out, radii, strict=False)):
                out.append((float(col) + 0.5, float(row) + 0.5))
                break
    return out


def _disc(cx: float, cy: float, r: float, n: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    return np.clip(r + 0.5 - np.hypot(xx - cx, yy - cy), 0.0, 1.0)


def _lesions(rng: np.random.Generator, allowed: np.ndarray, r_lo: float, r_hi: float,
             kinds: list[str]) -> list[Lesion]:
    count = int(rng.integers(0, 4))
    # Distinct radii (>= 1.5 px apart), largest first, so "the largest lesion" is well defined.
    radii = sorted((r_lo + (r_hi - r_lo) * k / 3 + rng.uniform(0, 0.5) for k in range(4)), reverse=True)
    radii = [float(v) for v in rng.permutation(radii)[:count]]
    radii.sort(reverse=True)
    centres = _place(rng, allowed, count, radii)
    return [Lesion(x, y, r, kinds[int(rng.integers(len(kinds)))]) for (x, y), r in zip(centres, radii, strict=False)]


CT_LESION_HU = (40.0, 70.0)     # |contrast| of the focal lesions against their surroundings (HU)
CT_LESION_REGION = (0.75, 0.7)   # semi-axes of the lesion region, as fractions of the body's (clear of fat)
CT_CLEARANCE = 0.06              # extra clearance of lesion centres from the aorta and vertebra ([-1, 1] units)


def ct_phantom(rng: np.random.Generator) -> tuple[np.ndarray, list[Lesion]]:
    """Abdominal CT slice in HU (1.5 mm pixels)."""
    x, y = _grid()
    j = lambda s: 1 + rng.uniform(-s, s)  # noqa: E731 - small multiplicative jitter
    a, b = 0.86 * j(0.05), 0.64 * j(0.05)
    body = _ellipse(x, y, 0, 0.05, a, b)
    inner = _ellipse(x, y, 0, 0.06, a * 0.9, b * 0.87)
    img = AIR_HU + body * (-100 - AIR_HU) + inner * (40 - (-100))
    organs = [((-0.36, -0.05, 0.38 * j(0.08), 0.33 * j(0.08)), 60.0),   # liver (patient right = image left)
              ((0.46, 0.0, 0.15, 0.21 * j(0.1)), 48.0),                   # spleen
              ((-0.3, 0.3, 0.1, 0.14), 32.0), ((0.3, 0.3, 0.1, 0.14), 32.0)]  # kidneys
    for (cx, cy, ea, eb), hu in organs:
        m = _ellipse(x, y, cx, cy, ea, eb)
        img = img * (1 - m) + hu * m
    aorta = _ellipse(x, y, 0.09, 0.22, 0.06, 0.06)
    img = img * (1 - aorta) + 180.0 * aorta
    cortex = _ellipse(x, y, 0, 0.42, 0.13, 0.12)
    marrow = _ellipse(x, y, 0, 0.42, 0.1, 0.09)
    img = img * (1 - cortex) + 800.0 * cortex
    img = img * (1 - marrow) + 250.0 * marrow
    clear = _ellipse(x, y, 0, 0.42, 0.13 + CT_CLEARANCE, 0.12 + CT_CLEARANCE) + _ellipse(
        x, y, 0.09, 0.22, 0.06 + CT_CLEARANCE, 0.06 + CT_CLEARANCE)
    region = _ellipse(x, y, 0, 0.06, a * CT_LESION_REGION[0], b * CT_LESION_REGION[1])
    allowed = (inner > 0.99) & (clear < 0.01) & (region > 0.99)
    lesions = _lesions(rng, allowed, 4.0, 9.0, ["hypodense", "hypodense", "hyperdense"])
    for les in lesions:
        c = rng.uniform(*CT_LESION_HU) * (-1 if les.kind == "hypodense" else 1)
        img = img + c * _disc(les.x, les.y, les.r)
    return img, lesions


MRI_LESION_INTENSITY = (0.56, 0.62)   # T2 signal of the white-matter lesions (a.u., CSF = 1; white matter 0.42)


def mri_phantom(rng: np.random.Generator) -> tuple[np.ndarray, list[Lesion]]:
    """Axial T2-weighted brain magnitude in a.u. (CSF = 1)."""
    x, y = _grid()
    s = 1 + rng.uniform(-0.04, 0.04)
    layers = [(0.74, 0.9, 0.72), (0.7, 0.86, 0.08), (0.66, 0.82, 0.95), (0.63, 0.79, 0.62), (0.5, 0.64, 0.42)]
    img = np.zeros((SIZE, SIZE))
    for a, b, val in layers:                      # scalp, skull, CSF, grey matter, white matter
        m = _ellipse(x, y, 0, 0, a * s, b * s)
        img = img * (1 - m) + val * m
    for cx in (-0.1, 0.1):                        # lateral ventricles
        m = _ellipse(x, y, cx * s, -0.05, 0.06, 0.22 * s)
        img = img * (1 - m) + 0.97 * m
    wm = _ellipse(x, y, 0, 0, 0.46 * s, 0.6 * s) > 0.99
    vent = (_ellipse(x, y, -0.1 * s, -0.05, 0.12, 0.3 * s) + _ellipse(x, y, 0.1 * s, -0.05, 0.12, 0.3 * s)) > 0.01
    lesions = _lesions(rng, wm & ~vent, 3.0, 7.0, ["hyperintense"])
    for les in lesions:
        m = _disc(les.x, les.y, les.r)
        img = img * (1 - m) + rng.uniform(*MRI_LESION_INTENSITY) * m
    return img, lesions


def ultrasound_phantom(rng: np.random.Generator) -> tuple[np.ndarray, list[Lesion]]:
    """Log-compressed B-mode echogenicity (display fraction, 60 dB), without speckle."""
    rows = (np.arange(SIZE) + 0.5) / SIZE
    depth = np.repeat(rows[:, None], SIZE, axis=1)
    img = np.where(depth < 0.04, 0.02, 0.5)
    img = np.where((depth >= 0.04) & (depth < 0.07), 0.82, img)                       # skin
    fat_end = 0.2 + rng.uniform(-0.03, 0.03)
    img = np.where((depth >= 0.07) & (depth < fat_end), 0.33, img)                     # subcutaneous fat
    musc = (depth >= fat_end) & (depth < fat_end + 0.22)
    img = np.where(musc, 0.45 + 0.06 * np.sin(depth * 140 + rng.uniform(0, 6)), img)   # striated muscle
    img = np.where((depth >= fat_end + 0.22) & (depth < fat_end + 0.24), 0.78, img)    # fascia
    img = img * (1 - 0.25 * depth)                                                     # residual attenuation
    x, y = _grid()
    allowed = (depth > fat_end + 0.28) & (depth < 0.9)
    allowed[:, :12] = allowed[:, -12:] = False
    lesions = _lesions(rng, allowed, 6.0, 14.0, ["cyst", "hyperechoic"])
    cols = (np.arange(SIZE) + 0.5)[None, :]
    for les in lesions:
        m = _disc(les.x, les.y, les.r)
        if les.kind == "cyst":                    # posterior acoustic enhancement below the cyst
            below = (np.abs(cols - les.x) < les.r) & (depth * SIZE > les.y)
            img = img + 0.12 * below * np.exp(-(depth * SIZE - les.y) / (4 * les.r))
            img = img * (1 - m) + 0.03 * m
        else:
            img = img * (1 - m) + 0.86 * m
    return np.clip(img, 0.0, 1.0), lesions


def _ellipsoid_thickness(xm: np.ndarray, ym: np.ndarray, cx: float, cy: float, a: float, b: float,
                         c: float) -> np.ndarray:
    q = 1 - ((xm - cx) / a) ** 2 - ((ym - cy) / b) ** 2
    return 2 * c * np.sqrt(np.clip(q, 0, None))


XRAY_MM_PER_PX = 400.0 / SIZE
MU_SOFT, MU_BONE = 0.02, 0.048   # mm^-1 at ~70 keV (water-like soft tissue, cortical-bone-like)
XRAY_NODULE_RADIUS_PX = (5.0, 9.0)
XRAY_LUNG_MIN_MM = 80.0         # nodules sit where the lung is at least this thick
XRAY_NODULE_MU = 0.07            # mm^-1: attenuation of the nodules (dense: 3.5x soft tissue)


def xray_phantom(rng: np.random.Generator) -> tuple[np.ndarray, list[Lesion]]:
    """PA chest radiograph as the line integral p (dimensionless), 1.5625 mm pixels."""
    c = (np.arange(SIZE) + 0.5 - SIZE / 2) * XRAY_MM_PER_PX
    xm, ym = np.meshgrid(c, c)
    s = 1 + rng.uniform(-0.04, 0.04)
    soft = _ellipsoid_thickness(xm, ym, 0, 20, 170 * s, 215 * s, 110)
    lungs = sum(_ellipsoid_thickness(xm, ym, sx * 78 * s, -25, 62 * s, 125 * s, 80) for sx in (-1, 1))
    heart = _ellipsoid_thickness(xm, ym, 28, 45, 66 * s, 55, 60)
    soft = np.clip(soft - lungs + heart, 0, None)
    bone = 30.0 * (np.abs(xm) < 16) * (ym > -190) * (soft > 0)
    for k in range(9):                              # ribs: curved bands over each lung
        y0 = -150 + 30 * k * s
        for sx in (-1, 1):
            yc = y0 + 0.004 * (xm - sx * 10) ** 2 * (sx * xm > 12)
            band = (np.abs(ym - yc) < 5) * (sx * xm > 12) * (sx * xm < 150 * s)
            bone = bone + 8.0 * band * (soft > 0)
    p = MU_SOFT * soft + MU_BONE * bone
    lung_px = lungs > XRAY_LUNG_MIN_MM
    lesions = _lesions(rng, lung_px, *XRAY_NODULE_RADIUS_PX, ["nodule"])
    for les in lesions:
        r_mm = les.r * XRAY_MM_PER_PX
        d = np.hypot(xm - (les.x - SIZE / 2) * XRAY_MM_PER_PX, ym - (les.y - SIZE / 2) * XRAY_MM_PER_PX)
        p = p + XRAY_NODULE_MU * 2 * np.sqrt(np.clip(r_mm ** 2 - d ** 2, 0, None))
    return p, lesions


def _question(rng: np.random.Generator, lesions: list[Lesion], noun: str, region: str) -> QA:
    """One MCQ whose answer follows from the lesion list: presence in a quadrant, count, or side."""
    kinds = ["presence", "count"] + (["side"] if lesions else [])
    kind = kinds[int(rng.integers(len(kinds)))]
    base = {"capability": "Imaging Perception" if kind == "count" else "Clinical Understanding",
            "task": f"lesion_{kind}", "lesions": [[round(v.x, 2), round(v.y, 2), round(v.r, 2), v.kind]
                                                  for v in lesions]}
    if kind == "count":
        opts = {"A": "0", "B": "1", "C": "2", "D": "3"}
        return QA(f"How many {noun}s are visible in this {region} image?", opts, "ABCD"[len(lesions)], base)
    if kind == "side":
        big = lesions[0]
        side = "left" if big.x < SIZE / 2 else "right"
        return QA(f"On which side of the image is the largest {noun}?",
                  {"A": "Left side of the image", "B": "Right side of the image"}, "A" if side == "left" else "B",
                  base)
    held = {quadrant_of(v.x, v.y, SIZE, SIZE) for v in lesions}
    occupied = [q for q in QUADRANTS if q in held]
    pool = occupied if occupied and rng.uniform() < 0.5 else list(QUADRANTS)
    quad = pool[int(rng.integers(len(pool)))]
    base["region"] = quad
    return QA(f"Is there a {noun} in the {quad} quadrant of this {region} image?", {"A": "Yes", "B": "No"},
              "A" if quad in occupied else "B", base)


_SPEC: dict[str, dict[str, Any]] = {
    "ct": dict(fn=ct_phantom, units="HU", window=CT_DEFAULT_WINDOW, background=AIR_HU, spacing=(1.5, 1.5),
               noun="focal lesion", region="abdominal CT"),
    "mri": dict(fn=mri_phantom, units="a.u. (T2-weighted, CSF = 1)", window=(0.0, 1.0), background=0.0,
                spacing=(0.9, 0.9), noun="hyperintense lesion", region="brain MRI"),
    "ultrasound": dict(fn=ultrasound_phantom, units="display (log-compressed B-mode, 60 dB)", window=(0.0, 1.0),
                       background=0.0, spacing=(0.2, 0.2), noun="focal lesion", region="ultrasound"),
    "xray": dict(fn=xray_phantom, units="line integral (dimensionless)", window=(0.0, 6.0), background=0.0,
                 spacing=(XRAY_MM_PER_PX, XRAY_MM_PER_PX), noun="pulmonary nodule", region="chest X-ray"),
}


MRI_COILS = 8
MRI_PHASE_RAD = 1.5     # limit of each smooth-phase coefficient (rad): B0 / receive phase of a few radians


def mri_acquisition(magnitude: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """A multi-coil raw acquisition of a magnitude phantom: a smooth seeded phase (order 2), 8 birdcage coils
    (sigpy, normalised to a root-sum-of-squares of 1), centred k-space. Returns (k-space (C, H, W) complex64,
    its RSS reconstruction (H, W), what was simulated)."""
    import torch

    from medq_synth.physics.kspace import KSpace, birdcage_maps, coil_images, fft2c, smooth_phase

    coeffs = torch.from_numpy(rng.uniform(-MRI_PHASE_RAD, MRI_PHASE_RAD, (1, 6)))
    mag = torch.from_numpy(magnitude.astype(np.float32))[None]
    phase = smooth_phase(mag.shape[-2:], coeffs)
    k = fft2c(coil_images(mag, phase, birdcage_maps(MRI_COILS, tuple(mag.shape[-2:]))))
    recon = KSpace(k, centred=True).magnitude()[0].numpy()
    return k[0].numpy(), recon, {"coils": MRI_COILS, "coil_maps": "sigpy birdcage, RSS-normalised",
                                 "phase_coefficients_rad": [round(float(c), 6) for c in coeffs[0]]}


def ultrasound_rendering(display_map: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The phantom's log-compressed echogenicity map (60 dB) -> (linear echogenicity, B-mode display rendered
    through the speckle model at the us_speckle table's identity settings, i.e. what L0 looks like)."""
    import torch

    from ..severity import load_tables
    from ..ultrasound_degradations import SETTINGS, render

    clean = load_tables()["us_speckle"].values(0.0)
    e = torch.from_numpy(10.0 ** ((display_map.astype(np.float64) - 1.0) * clean["input_dynamic_range_db"] / 10.0))
    p = {k: torch.tensor([clean[k]], dtype=torch.float64) for k in SETTINGS}
    p["pixel_mm"] = torch.tensor([_SPEC["ultrasound"]["spacing"][0]], dtype=torch.float64)
    p["speckle_seed"] = torch.tensor([seed], dtype=torch.int64)
    e = e.float()[None]
    return e[0].numpy(), render(e, p)[0].numpy()


def synthetic_item(modality: str, index: int, source: str = "phantoms") -> Item:
    """Phantom ``index`` of ``modality``; odd MRI indices are raw multi-coil acquisitions (their image is the
    RSS reconstruction of the k-space they carry), even ones magnitude images; ultrasound phantoms are B-mode
    renderings (with speckle) of the echogenicity map they carry."""
    spec = _SPEC[modality]
    rng = np.random.default_rng(derive_seed("phantom", modality, index))
    img, lesions = spec["fn"](rng)
    qa = _question(rng, lesions, spec["noun"], spec["region"])
    meta: dict[str, Any] = {"phantom": modality, "phantom_index": index, "n_lesions": len(lesions)}
    kspace = echo = None
    if modality == "mri" and index % 2 == 1:
        kspace, img, meta["raw_acquisition"] = mri_acquisition(img, rng)
    if modality == "ultrasound":
        meta["speckle_seed"] = derive_seed("phantom-speckle", index)
        echo, img = ultrasound_rendering(img, meta["speckle_seed"])
        meta["rendering"] = "us_speckle at its identity settings"
    return Item(id=f"{source}/{modality}-{index:03d}", source=source, modality=modality,
                image=img.astype(np.float32)[None], units=spec["units"], window=spec["window"],
                background=spec["background"], spacing_mm=spec["spacing"], qa=qa, meta=meta, kspace=kspace,
                echogenicity=echo)


def real_item(kind: str, name: str, source: str = "phantoms") -> list[Item]:
    if kind == "dicom":
        from pydicom.data import get_testdata_file

        path = get_testdata_file(name, download=False)
        if path is None:
            raise ItemError(f"pydicom test file {name} is not installed")
        from pathlib import Path

        rows = read_dicom(Path(path), None, "middle")
        return to_items(rows, f"{source}/pydicom-{name.removesuffix('.dcm')}", source,
                        meta={"file": f"pydicom:{name}"})
    from skimage import data

    arr = getattr(data, name)()
    meta: dict[str, Any] = {"file": f"skimage.data.{name}"}
    if max(arr.shape[:2]) > REAL_MAX_PX:
        # The 1411^2 retina alone would be a third of the default run's pixels: resample it (area).
        from PIL import Image

        h, w = arr.shape[:2]
        size = (round(w * REAL_MAX_PX / max(h, w)), round(h * REAL_MAX_PX / max(h, w)))
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BOX))
        meta["resized_from"] = [h, w]
    modality = "fundus" if name == "retina" else "histopathology"
    row = from_display(arr, modality, 255.0)
    row.update(modality=modality, meta=meta)
    return to_items([row], f"{source}/skimage-{name}", source)


def phantom_refs(per_modality: int) -> list[tuple[str, Any]]:
    """Order: each round has one phantom of every synthetic modality, then up to two real images, so that
    ``--limit`` keeps a mix of modalities."""
    refs: list[tuple[str, Any]] = []
    real = list(REAL)
    for i in range(max(per_modality, (len(real) + 1) // 2)):
        if i < per_modality:
            refs += [("synthetic", (m, i)) for m in SYNTHETIC]
        refs += [("real", r) for r in real[2 * i: 2 * i + 2]]
    return refs
