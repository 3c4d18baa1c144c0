"""Medical IO through the libraries: DICOM modality / VOI LUTs and MONOCHROME1 through pydicom, every
compressed transfer syntax pydicom's plugins decode, NIfTI orientation through nibabel, --modality."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UncompressedTransferSyntaxes

from medq_synth import generate
from medq_synth.sources.readers import read_dicom, read_nifti

from .conftest import read_rows

TEST_FILES = Path(os.path.dirname(pydicom.__file__)) / "data" / "test_files"


def _l0_display(path: Path, tmp: Path, modality: str | None = None) -> np.ndarray:
    """The L0 PNG that generate writes for one file."""
    src = tmp / "src"
    src.mkdir(parents=True, exist_ok=True)
    target = src / path.name
    target.write_bytes(path.read_bytes())
    generate(str(src), tmp / "out", degradations=["gaussian_noise"], levels=(0,), device="cpu", progress=False,
             modality=modality)
    (row,) = read_rows(tmp / "out")
    return np.asarray(Image.open(tmp / "out" / row["image"]), dtype=np.float64)




def test_voi_lut_sequence_is_applied_through_pydicom(tmp_path):
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    del ds.WindowCenter, ds.WindowWidth
    item = pydicom.Dataset()
    n, first = 1024, int(ds.pixel_array.min())
    item.add_new(0x00283002, "US", [n, first, 16])                                  # LUT Descriptor
    item.add_new(0x00283006, "US", [int(65535 * (k / (n - 1)) ** 0.5) for k in range(n)])   # a gamma VOI
    ds.VOILUTSequence = pydicom.Sequence([item])
    path = tmp_path / "voi.dcm"
    ds.save_as(path)
    expected = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, prefer_lut=True) / 65535.0 * 255.0
    got = _l0_display(path, tmp_path)
    assert got.shape == expected.shape and np.abs(got - expected).max() <= 1.0


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT"])
def test_window_follows_the_standard_formula(tmp_path, function):
    ds = pydicom.dcmread(TEST_FILES / "CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 40, 81, function
    path = tmp_path / "ct.dcm"
    ds.save_as(path)
    hu = apply_modality_lut(ds.pixel_array, ds)
    ref = ds.copy()
    ref.BitsStored, ref.PixelRepresentation = 16, 0        # pydicom's output range y = 0 .. 65535
    del ref.RescaleSlope, ref.RescaleIntercept
    expected = apply_voi_lut(hu, ref, index=0) / 65535.0 * 255.0
    got = _l0_display(path, tmp_path)
    assert np.abs(got - expected).max() <= 1.0


def test_monochrome1_is_shown_inverted(tmp_path):
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    mono2 = _l0_display(TEST_FILES / "MR_small.dcm", tmp_path / "a")
    ds.PhotometricInterpretation = "MONOCHROME1"
    (tmp_path / "b").mkdir()
    ds.save_as(tmp_path / "b" / "m1.dcm")
    mono1 = _l0_display(tmp_path / "b" / "m1.dcm", tmp_path / "b")
    assert np.abs(mono1 - (255.0 - mono2)).max() <= 1.0


def _compressed_files() -> dict[str, Path]:
    """One readable file per compressed transfer syntax among pydicom's test files (the two files that no
    decoder can read, a corrupt 12-bit JPEG and a J2K with a stray delimiter, are pydicom's own negative cases)."""
    broken = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}
    out: dict[str, Path] = {}
    for p in sorted(TEST_FILES.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            ts = ds.file_meta.TransferSyntaxUID
        except Exception:
            continue
        if ts not in UncompressedTransferSyntaxes and p.name not in broken and "PixelData" in \
                pydicom.dcmread(p, specific_tags=["PixelData"]):
            out.setdefault(ts.name, p)
    return out


COMPRESSED = _compressed_files()


def test_the_clinical_syntaxes_are_covered():
    assert {"JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])",
            "JPEG-LS Lossless Image Compression", "JPEG-LS Lossy (Near-Lossless) Image Compression",
            "JPEG Extended (Process 2 and 4)", "JPEG 2000 Image Compression", "RLE Lossless",
            "JPEG Baseline (Process 1)"} <= set(COMPRESSED)


@pytest.mark.parametrize("syntax", sorted(COMPRESSED))
def test_every_compressed_syntax_decodes(syntax):
    path = COMPRESSED[syntax]
    (row, *_) = read_dicom(path, "xray", "middle")      # NM, OT, SC ...: read as a radiograph
    ds = pydicom.dcmread(path)
    assert row["image"].shape[-2:] == (ds.Rows, ds.Columns)
    if row["units"] != "display":       # grey: the physical values are pydicom's modality-LUT output
        ref = apply_modality_lut(ds.pixel_array, ds)
        ref = ref if ds.get("NumberOfFrames", 1) in (None, 1) else ref[int(ds.NumberOfFrames) // 2]
        sign = -1.0 if ds.PhotometricInterpretation == "MONOCHROME1" else 1.0
        np.testing.assert_array_equal(row["image"][0], sign * ref)


def test_lossless_syntaxes_match_the_uncompressed_original():
    plain = pydicom.dcmread(TEST_FILES / "MR_small.dcm").pixel_array
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        (row,) = read_dicom(TEST_FILES / name, None, "middle")
        ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
        np.testing.assert_array_equal(row["image"][0], apply_modality_lut(plain, ds))


def _asymmetric() -> np.ndarray:
    """(x, y, z) volume, RAS voxel order: a bright block at the patient's right-anterior corner of every slice."""
    vol = np.zeros((40, 30, 5), np.float32)
    vol[30:38, 22:28, :] = 100.0          # large x = right, large y = anterior (RAS)
    vol[2:6, 2:6, :] = 50.0               # left-posterior, a smaller block
    return vol


def test_nifti_orientation_through_nibabel(tmp_path):
    vol = _asymmetric()
    ras = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(vol, ras), tmp_path / "ras.nii.gz")
    # the same anatomy stored LPS: x and y run the other way in voxel order
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    lps[:2, 3] = [39.0, 29.0]
    nib.save(nib.Nifti1Image(vol[::-1, ::-1].copy(), lps), tmp_path / "lps.nii.gz")
    assert "".join(nib.aff2axcodes(lps)) == "LPS"
    (a,) = read_nifti(tmp_path / "ras.nii.gz", "mri", "middle")
    (b,) = read_nifti(tmp_path / "lps.nii.gz", "mri", "middle")
    np.testing.assert_array_equal(a["image"], b["image"])
    img = a["image"][0]
    assert img.shape == (30, 40)                                  # rows along y, columns along x
    assert img[:8, :10].max() == 100.0 and img[-6:, -6:].max() == 50.0   # right-anterior top left (radiological)
    assert b["meta"]["orientation_on_disk"] == "LPS"


def test_modality_flag_for_folders_of_plain_files(tmp_path):
    src = tmp_path / "scans"
    src.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8)).save(src / "a.png")
    kw = dict(degradations=["gaussian_noise"], levels=(0,), device="cpu", progress=False)
    with pytest.raises(Exception, match="--modality"):
        generate(str(src), tmp_path / "none", **kw)
    generate(str(src), tmp_path / "out", modality="ultrasound", **kw)
    assert [r["modality"] for r in read_rows(tmp_path / "out")] == ["ultrasound"]
