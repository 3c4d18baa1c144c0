"""Items: one clean 2-D image in physical units, with its modality, display window and optional QA."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

MODALITIES = ("ct", "mri", "xray", "ultrasound", "histopathology", "dermoscopy", "endoscopy", "fundus")

_MODALITY_ALIASES = {
    "ct": "ct", "computed tomography": "ct", "cta": "ct",
    "mri": "mri", "mr": "mri", "magnetic resonance": "mri", "magnetic resonance imaging": "mri",
    "xray": "xray", "x-ray": "xray", "x ray": "xray", "radiograph": "xray", "radiography": "xray", "cr": "xray",
    "dx": "xray", "cxr": "xray", "mammography": "xray", "mg": "xray",
    "ultrasound": "ultrasound", "us": "ultrasound", "ultrasonography": "ultrasound", "sonography": "ultrasound",
    "histopathology": "histopathology", "pathology": "histopathology", "histology": "histopathology",
    "microscopy": "histopathology", "sm": "histopathology", "whole slide": "histopathology",
    "dermoscopy": "dermoscopy", "dermatology": "dermoscopy", "dermoscopic": "dermoscopy",
    "endoscopy": "endoscopy", "colonoscopy": "endoscopy", "es": "endoscopy",
    "fundus": "fundus", "fundus photography": "fundus", "retina": "fundus", "retinal": "fundus",
}

MIN_SIDE_PX = 16
PHASE_ENCODE = ("ROW", "COL")     # DICOM InPlanePhaseEncodingDirection: phase encoded along a row / a column
OPTION_LETTERS = "ABCDE"


class ItemError(Exception):
    """A bad input: the message is the one-line reason written to errors.jsonl."""


def normalise_modality(name: object) -> str:
    """Map a modality label (``CT``, ``MR``, ``X-ray``, ``US`` ...) to one of MODALITIES, or raise ItemError."""
    key = str(name).strip().lower().replace("_", " ")
    if key in _MODALITY_ALIASES:
        return _MODALITY_ALIASES[key]
    raise ItemError(f"unknown modality {name!r} (known: {', '.join(MODALITIES)})")


@dataclass
class QA:
    question: str
    options: dict[str, str]          # letter -> text, 2-5 options
    answer: str | None               # letter, None when the source has no answer
    extra: dict[str, Any] = field(default_factory=dict)   # category, capability, region, ...

    def to_fields(self) -> dict[str, Any]:
        row = {"question": self.question, "options": self.options, "answer": self.answer}
        row.update(self.extra)
        return row


@dataclass
class Item:
    """One clean image.

    image: float32 ``(C, H, W)``, C in {1, 3}, in ``units`` (HU for CT, line integral for radiographs,
    arbitrary scanner units for MRI, display fraction for photographs).
    window: ``(lo, hi)`` in the same units, mapped to display black and white; recorded in the manifest.
    background: the physical value of "outside the object" (air: -1000 HU for CT), used as fill.
    kspace: raw MRI data, complex64 ``(coils, H_k, W_k)``, centred (DC at H_k // 2, W_k // 2), phase encoding
    along the last axis; ``image`` is then its root-sum-of-squares reconstruction, centre-cropped to
    ``image``'s size. MRI models degrade this k-space itself; the others act on ``image``.
    echogenicity: for ultrasound items rendered from a known map (the phantoms), the backscattered power
    ``(H, W)`` (linear, 0 dB = 1) that ``image`` is the B-mode rendering of; the speckle model re-renders it.
    """

    id: str
    source: str
    modality: str
    image: np.ndarray
    units: str
    window: tuple[float, float]
    background: float = 0.0
    spacing_mm: tuple[float, float] | None = None
    qa: QA | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    kspace: np.ndarray | None = None
    echogenicity: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @cached_property
    def content_key(self) -> int:
        """A 63-bit digest of the item's id, image and window: equal keys mean the same pixels."""
        h = hashlib.sha256(self.id.encode())
        h.update(np.ascontiguousarray(self.image).tobytes())
        h.update(np.asarray(self.window, dtype=np.float64).tobytes())
        return int.from_bytes(h.digest()[:8], "big") >> 1

    @property
    def phase_encode(self) -> str:
        """In-plane phase-encode direction, DICOM's terms: ``ROW`` (left-right) or ``COL`` (up-down)."""
        return str(self.meta.get("phase_encode", "ROW"))

    @property
    def raw_signature(self) -> tuple:
        """What raw data the item carries (batches never mix items that differ in it)."""
        return (None if self.kspace is None else tuple(self.kspace.shape), self.echogenicity is not None)


def as_chw(arr: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 3|4) or (C, H, W) -> float32 (C, H, W) with C in {1, 3}; raises ItemError otherwise."""
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[None]
    elif a.ndim == 3 and a.shape[-1] in (3, 4) and a.shape[0] not in (1, 3):
        a = np.moveaxis(a[..., :3], -1, 0)
    elif a.ndim == 3 and a.shape[0] == 4:
        a = a[:3]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ItemError(f"unsupported image shape {tuple(np.shape(arr))}: expected HxW, HxWx3 or CxHxW with C in 1, 3")
    return np.ascontiguousarray(a, dtype=np.float32)


def validate(item: Item) -> Item:
    """Check an item's shape, values, window and QA; raise ItemError with a one-line reason."""
    img = item.image
    if img.ndim != 3 or img.shape[0] not in (1, 3):
        raise ItemError(f"unsupported image shape {img.shape}")
    h, w = img.shape[1:]
    if min(h, w) < MIN_SIDE_PX:
        raise ItemError(f"image is {h}x{w} px; at least {MIN_SIDE_PX}x{MIN_SIDE_PX} is needed")
    finite = np.isfinite(img)
    if not finite.all():
        n_nan, n_inf = int(np.isnan(img).sum()), int(np.isinf(img).sum())
        raise ItemError(f"image contains {n_nan} NaN and {n_inf} Inf values")
    if item.kspace is not None:
        k = item.kspace
        if k.ndim != 3 or not np.iscomplexobj(k):
            raise ItemError(f"k-space must be complex (coils, H, W), not {k.dtype} {k.shape}")
        if k.shape[1] < h or k.shape[2] < w:
            raise ItemError(f"k-space grid {k.shape[1:]} is smaller than the image {h}x{w}")
        if not np.isfinite(k).all():
            raise ItemError("k-space contains NaN or Inf values")
    if item.echogenicity is not None:
        e = item.echogenicity
        if e.shape != (h, w) or not np.isfinite(e).all() or (e < 0).any():
            raise ItemError(f"echogenicity map must be finite, >= 0 and {h}x{w}, not {e.shape}")
    lo, hi = item.window
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ItemError(f"invalid display window {item.window}: need finite lo < hi")
    if item.modality not in MODALITIES:
        normalise_modality(item.modality)
    if item.qa is not None:
        opts = item.qa.options
        if not 2 <= len(opts) <= 5:
            raise ItemError(f"question has {len(opts)} options; 2 to 5 are needed")
        if item.qa.answer is not None and item.qa.answer not in opts:
            raise ItemError(f"answer {item.qa.answer!r} is not one of the options {sorted(opts)}")
    return item


def percentile_window(img: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> tuple[float, float]:
    """A display window from the image's own percentiles: used only for data in arbitrary units (MRI
    magnitude), recorded in the manifest, and never inside a physics model."""
    a, b = np.percentile(img, [lo, hi])
    if not b > a:
        a, b = float(img.min()), float(img.max())
    if not b > a:
        b = a + 1.0
    return float(a), float(b)
