"""fastMRI raw data: HDF5 files with a ``kspace`` dataset, single-coil ``(slices, H, W)`` or multi-coil
``(slices, coils, H, W)``, complex, centred, readout along H and phase encoding along W.

Each picked slice becomes an MRI item that carries its k-space; its image (L0) is the root-sum-of-squares of
the zero-filled inverse FFT of the full k-space, centre-cropped to the reconstruction size (fastMRI's
``reconstruction_rss`` shape if the file has one, else the ISMRMRD header's reconSpace matrix): for the public
knee and brain files that is exactly the file's own ``reconstruction_rss``. The file's attributes and the
header's geometry are kept in ``meta``; pixel spacing comes from the header's reconSpace field of view.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np

from ..items import ItemError, percentile_window

UNITS = "a.u. (root-sum-of-squares of the raw k-space)"
RECONSTRUCTIONS = ("reconstruction_rss", "reconstruction_esc")


def _num(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def parse_header(xml: bytes | str) -> dict[str, Any]:
    """Geometry and sequence fields of an ISMRMRD header (namespace-agnostic; missing fields are left out)."""
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as e:
        return {"header_error": f"unparseable ISMRMRD header: {e}"}

    def find(path: str) -> str | None:
        node = root
        for tag in path.split("/"):
            node = next((c for c in node if c.tag.rsplit("}", 1)[-1] == tag), None)
            if node is None:
                return None
        return node.text

    out: dict[str, Any] = {}
    for space in ("encodedSpace", "reconSpace"):
        mat = [_num(find(f"encoding/{space}/matrixSize/{a}")) for a in "xyz"]
        fov = [_num(find(f"encoding/{space}/fieldOfView_mm/{a}")) for a in "xyz"]
        if all(v is not None for v in mat[:2]):
            out[f"{space}_matrix"] = [int(v) for v in mat if v is not None]
        if all(v is not None for v in fov[:2]):
            out[f"{space}_fov_mm"] = [v for v in fov if v is not None]
    for key, path in (("field_strength_T", "acquisitionSystemInformation/systemFieldStrength_T"),
                      ("receiver_channels", "acquisitionSystemInformation/receiverChannels"),
                      ("TR_ms", "sequenceParameters/TR"), ("TE_ms", "sequenceParameters/TE"),
                      ("TI_ms", "sequenceParameters/TI"), ("flip_angle_deg", "sequenceParameters/flipAngle_deg")):
        val = _num(find(path))
        if val is not None:
            out[key] = val
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def read_fastmri(path: Path, rule: str) -> list[dict[str, Any]]:
    """Reader rows (with ``kspace``) for the slices of a fastMRI file picked by ``rule``."""
    import h5py
    import torch

    from medq_synth.physics.kspace import KSpace, centre_crop

    from .readers import slice_indices

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ItemError(f"cannot read HDF5: {e}") from None
    with f:
        if "kspace" not in f:
            raise ItemError("HDF5 file has no 'kspace' dataset (not fastMRI raw data)")
        ds = f["kspace"]
        if ds.ndim not in (3, 4) or not np.issubdtype(ds.dtype, np.complexfloating):
            raise ItemError(f"'kspace' must be complex (slices, [coils,] H, W), not {ds.dtype} {ds.shape}")
        multicoil = ds.ndim == 4
        header: dict[str, Any] = {}
        meta: dict[str, Any] = {"file_attrs": {k: _jsonable(v) for k, v in sorted(f.attrs.items())},
                                "acquisition_coils": int(ds.shape[1]) if multicoil else 1}
        if "ismrmrd_header" in f:
            raw = f["ismrmrd_header"][()]
            raw = raw.tobytes() if isinstance(raw, np.ndarray) else raw
            raw = raw.encode() if isinstance(raw, str) else bytes(raw)
            header = parse_header(raw)
            meta["ismrmrd_header_sha1"] = hashlib.sha1(raw).hexdigest()
            meta["ismrmrd"] = header
        grid = tuple(ds.shape[-2:])
        recon = next((tuple(f[r].shape[-2:]) for r in RECONSTRUCTIONS if r in f), None)
        if recon is None and "reconSpace_matrix" in header:
            recon = tuple(header["reconSpace_matrix"][:2])
        crop = (min(recon[0], grid[0]), min(recon[1], grid[1])) if recon else grid
        spacing = None
        if "reconSpace_fov_mm" in header and "reconSpace_matrix" in header:
            fov, mat = header["reconSpace_fov_mm"], header["reconSpace_matrix"]
            spacing = (fov[0] / mat[0], fov[1] / mat[1])
        rows = []
        for i in slice_indices(ds.shape[0], rule):
            k = np.asarray(ds[i], dtype=np.complex64)
            k = k if multicoil else k[None]
            if not np.isfinite(k).all():
                raise ItemError(f"slice {i}: k-space contains NaN or Inf values")
            image = centre_crop(KSpace(torch.from_numpy(k)[None], centred=True).magnitude(), crop)[0].numpy()
            rows.append({"image": image[None].astype(np.float32), "kspace": np.ascontiguousarray(k),
                         "modality": "mri", "units": UNITS, "window": percentile_window(image),
                         "background": 0.0, "spacing_mm": spacing,
                         "meta": {**meta, "slice_rule": rule, "slice_index": i, "n_slices": int(ds.shape[0]),
                                  "phase_encode": "ROW", "phase_encode_from": "fastMRI layout (phase along W)",
                                  "kspace_shape": list(k.shape), "recon_crop": list(crop)}})
        return rows
