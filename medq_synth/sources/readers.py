"""File readers: DICOM, NIfTI, PNG/JPEG/TIFF, .npy and fastMRI HDF5 to items in physical units.

Volumes become 2-D items by a slice rule that is recorded on each item:
``middle`` (default: the central slice along the last axis, axial for RAS NIfTI and the frame axis for
multi-frame DICOM), ``all``, or ``step:N`` (every N-th slice starting from 0).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from ..items import PHASE_ENCODE, Item, ItemError, as_chw, normalise_modality, percentile_window

# Default soft-tissue display window for CT (centre 40 HU, width 400 HU), used when a DICOM carries none and
# to map 8-bit CT renderings back to HU. Recorded on every item it touches.
CT_DEFAULT_WINDOW = (-160.0, 240.0)
AIR_HU = -1000.0

RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
DICOM_SUFFIXES = {".dcm", ".dicom", ".ima"}


def file_kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if path.suffix.lower() in DICOM_SUFFIXES:
        return "dicom"
    if path.suffix.lower() in RASTER_SUFFIXES:
        return "raster"
    if path.suffix.lower() == ".npy":
        return "npy"
    if path.suffix.lower() in (".h5", ".hdf5"):
        return "fastmri"
    return None


def slice_indices(n: int, rule: str) -> list[int]:
    """Indices picked from ``n`` slices by ``rule`` (``middle``, ``all`` or ``step:N``)."""
    if rule == "middle":
        return [n // 2]
    if rule == "all":
        return list(range(n))
    if rule.startswith("step:"):
        step = int(rule.split(":", 1)[1])
        if step < 1:
            raise ValueError("step must be >= 1")
        return list(range(0, n, step))
    raise ValueError(f"unknown slice rule {rule!r} (middle, all or step:N)")


def physical_defaults(modality: str, img: np.ndarray) -> dict[str, Any]:
    """Units, window and background for an array already in the modality's physical units."""
    if modality == "ct":
        return {"units": "HU", "window": CT_DEFAULT_WINDOW, "background": AIR_HU}
    return {"units": "a.u.", "window": percentile_window(img), "background": float(np.min(img))}


def from_display(arr: np.ndarray, modality: str, max_value: float) -> dict[str, Any]:
    """An 8/16-bit rendering -> physical units. CT renderings are mapped back to HU through the default
    soft-tissue window (recorded); other modalities stay as display fractions in [0, 1]."""
    v = as_chw(arr) / max_value
    if modality == "ct":
        lo, hi = CT_DEFAULT_WINDOW
        return {"image": (lo + v * (hi - lo)).astype(np.float32), "units": "HU", "window": CT_DEFAULT_WINDOW,
                "background": lo, "meta": {"display_to_hu_window": list(CT_DEFAULT_WINDOW)}}
    return {"image": v.astype(np.float32), "units": "display", "window": (0.0, 1.0), "background": 0.0, "meta": {}}


def read_raster(data: bytes | Path, modality: str) -> list[dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            im.load()
            mpp = tiff_mpp(im)
            if im.mode in ("I;16", "I;16B", "I"):
                arr, top = np.asarray(im, dtype=np.float64), 65535.0
            else:
                arr, top = np.asarray(im.convert("L" if im.mode in ("L", "LA", "1") else "RGB")), 255.0
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ItemError(f"cannot decode image: {e}") from None
    if arr.ndim == 3 and arr.shape[-1] == 3 and np.array_equal(arr[..., 0], arr[..., 1]) \
            and np.array_equal(arr[..., 0], arr[..., 2]):
        arr = arr[..., 0]          # an RGB file holding a grey image stays one channel
    row = from_display(arr, modality, top)
    if mpp is not None:
        row["meta"].update(mpp=mpp, mpp_from="TIFF XResolution / ResolutionUnit")
    return [row]


def tiff_mpp(im: Any) -> float | None:
    """Microns per pixel from a TIFF's XResolution and ResolutionUnit (2 inch, 3 cm), if it records them."""
    tags = getattr(im, "tag_v2", None)
    if not tags or 282 not in tags:
        return None
    unit = int(tags.get(296, 2))
    per = {2: 25400.0, 3: 10000.0}.get(unit)
    xres = float(tags[282])
    return per / xres if per and xres > 0 else None


def read_dicom(path: Path, modality: str | None, rule: str, default: str | None = None) -> list[dict[str, Any]]:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # pydicom raises many types for corrupt files
        raise ItemError(f"cannot read DICOM: {e}") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ItemError("DICOM has no pixel data (PixelData element missing)")
    try:
        arr = ds.pixel_array.astype(np.float64)
    except Exception as e:
        raise ItemError(f"cannot decode DICOM pixel data: {e}") from None
    mod = normalise_modality(modality or getattr(ds, "Modality", "") or default or "unknown")
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2"))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    top = float(2 ** int(getattr(ds, "BitsStored", 8) or 8) - 1)
    if photometric == "PALETTE COLOR":
        # indices into the file's colour LUTs: shown through pydicom's apply_color_lut (8- or 16-bit entries)
        from pydicom.pixels import apply_color_lut

        try:
            arr = np.asarray(apply_color_lut(ds.pixel_array, ds))
        except Exception as e:
            raise ItemError(f"cannot apply the DICOM palette colour LUT: {e}") from None
        top = 65535.0 if arr.dtype == np.uint16 else 255.0
        arr = arr.astype(np.float64)
    colour = photometric in ("RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR") or (
        arr.ndim >= 3 and arr.shape[-1] == 3 and getattr(ds, "SamplesPerPixel", 1) == 3)
    if colour:
        stack = arr if frames > 1 else arr[None]
        return [_dicom_display(s, mod, ds, rule, i, frames, top) for i, s in _pick(stack, rule)]
    return _grey_dicom(ds, arr, mod, photometric, frames, rule)


def ultrasound_region(ds: Any, shape: tuple[int, int]) -> dict[str, Any]:
    """The tissue image region of an ultrasound DICOM (SequenceOfUltrasoundRegions: the first region with
    RegionSpatialFormat 1 = 2-D and RegionDataType 1 = tissue) as ``image_region`` [x0, y0, x1, y1] (px,
    inclusive) and its pixel spacing (PhysicalDeltaX/Y in cm when PhysicalUnits are 3 = cm), if it lies inside
    the image; a region that does not fit (a resampled file) is named in ``image_region_ignored``."""
    seq = getattr(ds, "SequenceOfUltrasoundRegions", None)
    if not seq:
        return {}
    for r in seq:
        if int(getattr(r, "RegionSpatialFormat", 0) or 0) != 1 or int(getattr(r, "RegionDataType", 0) or 0) != 1:
            continue
        box = [int(getattr(r, k, -1)) for k in ("RegionLocationMinX0", "RegionLocationMinY0",
                                                 "RegionLocationMaxX1", "RegionLocationMaxY1")]
        h, w = shape
        if not (0 <= box[0] <= box[2] < w and 0 <= box[1] <= box[3] < h):
            return {"image_region_ignored": f"DICOM ultrasound tissue region {box} lies outside the {w}x{h} image"}
        out: dict[str, Any] = {"image_region": box, "image_region_from": "DICOM SequenceOfUltrasoundRegions"}
        if int(getattr(r, "PhysicalUnitsXDirection", 0) or 0) == 3 and int(getattr(r, "PhysicalUnitsYDirection", 0)
                                                                            or 0) == 3:
            out["region_spacing_mm"] = [10.0 * float(r.PhysicalDeltaY), 10.0 * float(r.PhysicalDeltaX)]
        return out
    return {}


def _grey_dicom(ds: Any, arr: np.ndarray, mod: str, photometric: str, frames: int, rule: str) -> list[dict[str, Any]]:
    from pydicom.pixels import apply_modality_lut

    # Modality LUT (rescale slope / intercept, or a Modality LUT Sequence) through pydicom: stored values ->
    # physical units (HU for CT); no per-image normalisation.
    phys = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    meta0: dict[str, Any] = {"modality_lut": "ModalityLUTSequence" if "ModalityLUTSequence" in ds else
                             "rescale" if "RescaleSlope" in ds or "RescaleIntercept" in ds else "identity"}
    phase = str(getattr(ds, "InPlanePhaseEncodingDirection", "") or "").strip().upper()
    if phase in PHASE_ENCODE:
        meta0.update(phase_encode=phase, phase_encode_from="DICOM InPlanePhaseEncodingDirection")
    recon = getattr(ds, "ReconstructionDiameter", None)
    if recon is not None and str(recon).strip():
        meta0["reconstruction_diameter_mm"] = float(recon)
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        meta0["rescale"] = [float(getattr(ds, "RescaleSlope", 1) or 1), float(getattr(ds, "RescaleIntercept", 0) or 0)]
    units_hu = mod == "ct"
    voi, baked = _dicom_voi(ds, phys, units_hu)
    if baked is not None:
        phys = baked
    if photometric == "MONOCHROME1" and baked is None and not units_hu:
        # MONOCHROME1 shows low values bright: negate (a fixed map, not a per-image one) and swap the window
        phys = -phys
        voi = None if voi is None else (-voi[1], -voi[0])
        meta0["photometric"] = "MONOCHROME1: values negated so that high is bright"
    elif photometric == "MONOCHROME1":
        meta0["photometric"] = "MONOCHROME1: displayed inverted" if baked is not None else \
            "MONOCHROME1: HU kept, displayed as MONOCHROME2"
    stack = phys if frames > 1 else phys[None]
    spacing = getattr(ds, "PixelSpacing", None)
    spacing_mm = (float(spacing[0]), float(spacing[1])) if spacing is not None else None
    out = []
    for i, s in _pick(stack, rule):
        if baked is not None:
            d = {"units": "display", "window": (0.0, 1.0), "background": 0.0}
        else:
            d = physical_defaults(mod, s)
        meta: dict[str, Any] = {"slice_rule": rule, "slice_index": i, "n_slices": frames, **meta0}
        if baked is not None:
            meta["window_from"] = voi_label(ds) + " applied through pydicom (display units)"
        elif voi is not None:
            d["window"] = voi
            meta["window_from"] = voi_label(ds)
        else:
            meta["window_from"] = "default soft tissue (C 40, W 400 HU)" if mod == "ct" else "0.5/99.5 percentiles"
        row = {"image": as_chw(s), "modality": mod, "spacing_mm": spacing_mm, "meta": meta, **d}
        _region_meta(row, ds, s.shape[-2:])
        out.append(row)
    return out


def _region_meta(row: dict[str, Any], ds: Any, shape: tuple[int, int]) -> None:
    """An ultrasound file's image region (and its spacing, where the file gives no PixelSpacing)."""
    region = ultrasound_region(ds, tuple(shape))
    spacing = region.pop("region_spacing_mm", None)
    row["meta"].update(region)
    if spacing is not None and not row.get("spacing_mm"):
        row["spacing_mm"] = tuple(spacing)
        row["meta"]["spacing_from"] = "DICOM SequenceOfUltrasoundRegions PhysicalDeltaX/Y"


def voi_label(ds: Any) -> str:
    if "VOILUTSequence" in ds:
        return "DICOM VOI LUT Sequence"
    return f"DICOM WindowCenter/WindowWidth ({str(getattr(ds, 'VOILUTFunction', 'LINEAR')).upper()})"


def _dicom_voi(ds: Any, phys: np.ndarray, units_hu: bool) -> tuple[tuple[float, float] | None, np.ndarray | None]:
    """The display window of a DICOM (first preset), or, for a VOI that no window can express (a VOI LUT
    Sequence, a SIGMOID window) on a non-HU image, the image passed through pydicom's ``apply_voi_lut`` and
    scaled to [0, 1]. Returns (window, baked image)."""
    from pydicom.pixels import apply_voi_lut

    function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR").upper()
    has_window = "WindowCenter" in ds and "WindowWidth" in ds
    if "VOILUTSequence" in ds or (has_window and function == "SIGMOID"):
        if not units_hu:
            # a LUT is indexed by stored integers: pass integral values as integers (pydicom warns on floats)
            lut_in = phys.astype(np.int64) if np.array_equal(phys, np.round(phys)) else phys
            out = np.asarray(apply_voi_lut(lut_in, ds, index=0, prefer_lut=True), dtype=np.float64)
            if "VOILUTSequence" in ds:
                top = 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1.0
                lo, hi = 0.0, top
            else:          # the sigmoid's own output range: its values at the far ends of the input
                ends = np.asarray(apply_voi_lut(np.array([-1e12, 1e12]), ds, index=0), dtype=np.float64)
                lo, hi = float(ends.min()), float(ends.max())
            baked = (out - lo) / (hi - lo)
            if str(getattr(ds, "PhotometricInterpretation", "")) == "MONOCHROME1":
                baked = 1.0 - baked
            return None, baked
        if "VOILUTSequence" in ds:      # HU stay HU: the LUT's input range as a linear window
            desc = ds.VOILUTSequence[0].LUTDescriptor
            first = float(desc[1])
            n = float(desc[0] or 65536)
            return (first, first + n - 1.0), None
    if not has_window:
        return None, None
    from pydicom.multival import MultiValue

    c, w = (float(t[0]) if isinstance(t, (MultiValue, list, tuple)) else float(t)
            for t in (ds.WindowCenter, ds.WindowWidth))
    if function == "LINEAR_EXACT":
        return ((c - w / 2, c + w / 2) if w > 0 else None), None
    if w < 1:
        return None, None
    # PS3.3 C.11.2.1.2.1 (LINEAR): x <= c - 0.5 - (w - 1) / 2 is black, x > c - 0.5 + (w - 1) / 2 is white
    return (c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2), None


def _dicom_display(s: np.ndarray, mod: str, ds: Any, rule: str, i: int, frames: int, top: float) -> dict[str, Any]:
    """A colour DICOM frame (RGB after pydicom's colour conversion or palette LUT; ``top`` is white)."""
    d = from_display(s, mod, top)
    d["meta"].update({"slice_rule": rule, "slice_index": i, "n_slices": frames,
                      "photometric": str(getattr(ds, "PhotometricInterpretation", ""))})
    _region_meta(d, ds, s.shape[:2])
    d["modality"] = mod
    return d


def _pick(stack: np.ndarray, rule: str) -> list[tuple[int, np.ndarray]]:
    return [(i, stack[i]) for i in slice_indices(stack.shape[0], rule)]


def read_nifti(path: Path, modality: str, rule: str) -> list[dict[str, Any]]:
    """A NIfTI volume through nibabel: reoriented to the closest canonical (RAS+) orientation first (LPS, LAS or
    permuted volumes all come out the same way; oblique ones to their nearest axes, as nibabel defines), then
    axial slices along z shown the radiological way, like DICOM: anterior up, the patient's right on the left."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        axcodes = "".join(nib.aff2axcodes(img.affine))
        phase = nifti_phase_encode(img)
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float64)
    except Exception as e:
        raise ItemError(f"cannot read NIfTI: {e}") from None
    while data.ndim > 3 and data.shape[-1] == 1:       # singleton time / component axes
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
    if data.ndim != 3:
        raise ItemError(f"NIfTI has {data.ndim} dimensions; 2-D and 3-D images are supported")
    zooms = img.header.get_zooms()
    # display rows run along y (anterior-posterior), columns along x: PixelSpacing order (row, column)
    spacing_mm = (float(zooms[1]), float(zooms[0])) if len(zooms) >= 2 else None
    out = []
    for k in slice_indices(data.shape[2], rule):
        s = data[::-1, ::-1, k].T.copy()        # RAS: row 0 = most anterior, column 0 = most right
        d = physical_defaults(modality, s)
        out.append({"image": as_chw(s), "modality": modality, "spacing_mm": spacing_mm,
                    "meta": {"slice_rule": rule, "slice_index": k, "n_slices": data.shape[2],
                             "slice_axis": "z (inferior to superior)", "orientation_on_disk": axcodes,
                             "display": "RAS canonical; radiological (anterior up, patient right on the left)",
                             **phase},
                    **d})
    return out


def nifti_phase_encode(img: Any) -> dict[str, str]:
    """The in-plane phase-encode direction of the axial display (``read_nifti``) from the header's ``dim_info``:
    the phase dimension of the array on disk is followed through the canonical reorientation (nibabel's
    ``io_orientation``: disk axis i becomes RAS axis ornt[i, 0]); RAS x runs along the displayed columns
    (phase left-right: ``ROW``), y along the rows (``COL``). A phase axis along z (through the displayed
    plane, as in a sagittal acquisition shown axially) leaves the in-plane direction to the frequency axis:
    the other in-plane axis. Empty where the header records none."""
    import nibabel as nib

    try:
        freq, phase, _ = img.header.get_dim_info()
    except Exception:       # not a NIfTI-1/2 header (e.g. ANALYZE)
        return {}
    ornt = nib.orientations.io_orientation(img.affine)
    ras = {axis: int(ornt[axis, 0]) for axis in (freq, phase) if axis is not None and axis < len(ornt)}
    if phase in ras and ras[phase] in (0, 1):
        direction = "ROW" if ras[phase] == 0 else "COL"
    elif freq in ras and ras[freq] in (0, 1):
        direction = "COL" if ras[freq] == 0 else "ROW"
    else:
        return {}
    return {"phase_encode": direction, "phase_encode_from": f"NIfTI dim_info (phase dim {phase}, freq dim {freq})"}


def read_npy(path: Path, modality: str) -> list[dict[str, Any]]:
    try:
        arr = np.load(str(path), allow_pickle=False)
    except Exception as e:
        raise ItemError(f"cannot read .npy: {e}") from None
    if not np.issubdtype(arr.dtype, np.number):
        raise ItemError(f".npy has non-numeric dtype {arr.dtype}")
    img = as_chw(arr.astype(np.float64))
    finite = img[np.isfinite(img)]
    d = physical_defaults(modality, finite if finite.size else np.zeros(1))
    return [{"image": img, "modality": modality, "meta": {}, **d}]


def read_file(path: Path, modality: str | None, rule: str, default: str | None = None) -> list[dict[str, Any]]:
    """Read one file into item fields (image, units, window, background, modality, spacing_mm, meta).
    ``modality`` (a folder name, a manifest field) overrides the file's own; ``default`` (``--modality``)
    applies only where neither the file nor ``modality`` gives one."""
    kind = file_kind(path)
    if not path.exists():
        raise ItemError(f"file not found: {path}")
    if kind == "dicom":
        return read_dicom(path, modality, rule, default)
    if kind == "fastmri":
        from .fastmri import read_fastmri

        return read_fastmri(path, rule)
    modality = modality or default
    if modality is None:
        raise ItemError("no modality: the file format records none; pass --modality NAME, name a parent folder "
                        "after the modality (ct/, mri/, xray/ ...) or give a 'modality' field in a manifest")
    mod = normalise_modality(modality)
    if kind == "nifti":
        rows = read_nifti(path, mod, rule)
    elif kind == "raster":
        rows = read_raster(path, mod)
    elif kind == "npy":
        rows = read_npy(path, mod)
    else:
        raise ItemError(f"unsupported file type {path.suffix!r}")
    for r in rows:
        r.setdefault("modality", mod)
    return rows


def to_items(rows: list[dict[str, Any]], base_id: str, source: str, qa: Any = None,
             meta: dict[str, Any] | None = None) -> list[Item]:
    """Item objects from reader rows; slices of a volume get ``#z{index}`` ids when there are several."""
    items = []
    for r in rows:
        m = dict(meta or {})
        m.update(r.get("meta", {}))
        iid = base_id if r["meta"].get("n_slices", 1) == 1 else f"{base_id}#z{r['meta']['slice_index']}"
        items.append(Item(id=iid, source=source, modality=r["modality"], image=r["image"], units=r["units"],
                          window=tuple(float(x) for x in r["window"]), background=float(r["background"]),
                          spacing_mm=r.get("spacing_mm"), qa=qa, meta=m, kspace=r.get("kspace")))
    return items
