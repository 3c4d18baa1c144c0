"""MRI k-space models follow the file's phase-encode direction: DICOM InPlanePhaseEncodingDirection (ROW:
left-right, COL: up-down), NIfTI dim_info (followed through the canonical reorientation), fastMRI's layout, and
``--phase-encode`` for files that record none; the direction used is recorded per output."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from medq_synth import generate
from medq_synth.writer import read_output

N = 96
MODELS = ["mri_ghosting", "mri_motion", "mri_undersampling"]


def _disc() -> np.ndarray:
    yy, xx = np.mgrid[:N, :N]
    img = np.where((yy - N / 2) ** 2 + (xx - N / 2) ** 2 < 14 ** 2, 800.0, 0.0)
    img[(yy - N / 2 + 4) ** 2 + (xx - N / 2 - 3) ** 2 < 16] = 1200.0
    return img


def _bands(d: np.ndarray) -> tuple[float, float]:
    """Mean squared change above and below the object (its columns) and beside it (its rows)."""
    lo, hi = N // 2 - 16, N // 2 + 16
    vertical = np.concatenate([d[:lo, lo:hi], d[hi:, lo:hi]])
    horizontal = np.concatenate([d[lo:hi, :lo], d[lo:hi, hi:]], axis=1)
    return float((vertical ** 2).mean()), float((horizontal ** 2).mean())


def _energy(out) -> dict[tuple[str, str], tuple[float, float, dict]]:
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    clean = {r["source_id"]: read_output(out, r)[0][0] for r in rows if r["degradation"] == "none"}
    return {(r["source_id"].rsplit("/", 1)[-1], r["degradation"]):
            (*_bands(read_output(out, r)[0][0] - clean[r["source_id"]]), r) for r in rows if r["level"] == 2}


def _check(energy, name: str, direction: str) -> None:
    for model in MODELS:
        vertical, horizontal, row = energy[(name, model)]
        assert row["meta"]["phase_encode"] == direction
        assert row["params"]["phase_encode_vertical"] == (direction == "COL")
        if direction == "COL":
            assert vertical > 3 * horizontal, (model, vertical, horizontal)
        else:
            assert horizontal > 3 * vertical, (model, vertical, horizontal)


def test_dicom_phase_encode_direction(tmp_path):
    """Acceptance: the same object in a DICOM header saying ROW and one saying COL (pydicom's
    examples_overlay.dcm, an MR with InPlanePhaseEncodingDirection = COL, its pixels replaced by a disc)."""
    src = tmp_path / "mri"
    src.mkdir()
    img = _disc().astype(np.uint16)
    for pe in ("ROW", "COL"):
        ds = pydicom.dcmread(get_testdata_file("examples_overlay.dcm"))
        for tag in [t for t in ds.keys() if t.group == 0x6000]:       # the overlay plane does not fit 96 px
            del ds[tag]
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.InPlanePhaseEncodingDirection = pe
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = N, N, 16, 16, 15
        ds.PixelRepresentation = 0
        ds.PixelData = img.tobytes()
        for key in ("WindowCenter", "WindowWidth"):
            if key in ds:
                del ds[key]
        ds.save_as(src / f"{pe}.dcm", enforce_file_format=True)
    out = tmp_path / "out"
    generate([str(src)], out, degradations=MODELS, levels=(0, 2), device="cpu", progress=False)
    energy = _energy(out)
    _check(energy, "ROW.dcm", "ROW")
    _check(energy, "COL.dcm", "COL")


def test_the_real_file_records_its_direction(tmp_path):
    src = tmp_path / "mri"
    src.mkdir()
    (src / "overlay.dcm").write_bytes(open(get_testdata_file("examples_overlay.dcm"), "rb").read())
    out = tmp_path / "out"
    generate([str(src)], out, degradations=["mri_ghosting"], levels=(1,), device="cpu", progress=False)
    (row,) = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert row["meta"]["phase_encode"] == "COL" and "InPlanePhaseEncodingDirection" in row["meta"]["phase_encode_from"]
    assert row["params"]["phase_encode_vertical"] == 1


def _nifti(path, phase_dim: int, affine: np.ndarray, img: np.ndarray) -> None:
    im = nib.Nifti1Image(img[..., None].astype(np.float32), affine)
    im.header.set_dim_info(freq=1 - phase_dim, phase=phase_dim, slice=2)
    nib.save(im, str(path))


def test_nifti_phase_dimension(tmp_path):
    """Acceptance: NIfTI phase dimension 0 vs 1. With an identity (RAS) affine, array axis 0 is x, shown along
    the columns (left-right); axis 1 is y, shown along the rows. The image is symmetric, so the display's
    flips do not move the object."""
    src = tmp_path / "mri"
    src.mkdir()
    for dim in (0, 1):
        _nifti(src / f"phase{dim}.nii.gz", dim, np.eye(4), _disc().T)
    out = tmp_path / "out"
    generate([str(src)], out, degradations=MODELS, levels=(0, 2), device="cpu", progress=False)
    energy = _energy(out)
    _check(energy, "phase0.nii.gz", "ROW")
    _check(energy, "phase1.nii.gz", "COL")


def test_nifti_phase_follows_the_reorientation():
    """An array stored with its axes swapped (axis 0 along y): nibabel's own orientation says phase dim 0 is
    then shown up-down."""
    from medq_synth.sources.readers import nifti_phase_encode

    swapped = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)
    im = nib.Nifti1Image(np.zeros((8, 8, 1), np.float32), swapped)
    im.header.set_dim_info(freq=1, phase=0, slice=2)
    assert nib.aff2axcodes(swapped)[0] == "A"               # the oracle: axis 0 runs anterior (y)
    assert nifti_phase_encode(im)["phase_encode"] == "COL"
    im.header.set_dim_info(freq=0, phase=1, slice=2)
    assert nifti_phase_encode(im)["phase_encode"] == "ROW"
    bare = nib.Nifti1Image(np.zeros((8, 8, 1), np.float32), np.eye(4))
    assert nifti_phase_encode(bare) == {}


@pytest.mark.parametrize("flag,direction", [(None, "ROW"), ("col", "COL")])
def test_phase_encode_option_for_files_that_record_none(tmp_path, flag, direction):
    src = tmp_path / "mri"
    src.mkdir()
    np.save(src / "disc.npy", _disc())
    out = tmp_path / "out"
    generate([str(src)], out, degradations=["mri_ghosting"], levels=(2,), device="cpu", progress=False,
             phase_encode=flag)
    (row,) = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert row["meta"]["phase_encode"] == direction
    assert row["meta"]["phase_encode_from"].startswith("--phase-encode" if flag else "default")
