"""MRI through the engine: fastMRI raw data in (degraded in its own k-space), one MedQ-Deg id resolved per
modality, L2 worse than L1, byte-identical outputs whatever the batch size."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medq_synth import generate
from medq_synth.writer import read_output

from .test_generate import file_hashes

HEADER = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <acquisitionSystemInformation><systemFieldStrength_T>2.8936</systemFieldStrength_T>
    <receiverChannels>{coils}</receiverChannels></acquisitionSystemInformation>
  <encoding>
    <encodedSpace><matrixSize><x>96</x><y>48</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>192</x><y>96</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>48</x><y>40</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>96</x><y>80</y><z>4.5</z></fieldOfView_mm></reconSpace>
  </encoding>
  <sequenceParameters><TR>2750</TR><TE>27.0</TE></sequenceParameters>
</ismrmrdHeader>"""


def _np_ifft2c(k: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _np_fft2c(x: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), axes=axes, norm="ortho"), axes=axes)


def _np_rss_crop(k: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """fastMRI's target: RSS over coils of the centred inverse FFT, centre-cropped (NumPy, independent)."""
    img = np.sqrt((np.abs(_np_ifft2c(k)) ** 2).sum(axis=-3))
    h, w = img.shape[-2:]
    top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
    return img[..., top:top + crop[0], left:left + crop[1]]


def write_fastmri(path: Path, multicoil: bool, n_slices: int = 3) -> np.ndarray:
    """A fastMRI-layout file: 'kspace' (slices, [coils,] 96, 48) complex64 (readout oversampled 2x), the ISMRMRD
    header, attributes and 'reconstruction_rss' (slices, 48, 40). Returns the k-space."""
    import h5py
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(4)
    coils = 4 if multicoil else 1
    yy, xx = np.mgrid[0:96, 0:48]
    slices = []
    for s in range(n_slices):
        obj = ((yy - 48) ** 2 / 20 ** 2 + (xx - 24) ** 2 / 16 ** 2 < 1).astype(float) * (1 + 0.3 * s)
        obj = gaussian_filter(obj + 0.5 * rng.random((96, 48)) * obj, 1.0)
        phase = 0.5 * (xx - 24) / 24 + 0.3 * ((yy - 48) / 48) ** 2
        sens = np.stack([np.exp(-((yy - 48 - 30 * np.cos(a)) ** 2 + (xx - 24 - 30 * np.sin(a)) ** 2) / 2000.0)
                         * np.exp(1j * a) for a in np.linspace(0, 2 * np.pi, coils, endpoint=False)])
        slices.append(_np_fft2c(obj * np.exp(1j * phase) * sens) * 1e-4)
    k = np.stack(slices).astype(np.complex64)
    k = k if multicoil else k[:, 0]
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("ismrmrd_header", data=np.bytes_(HEADER.format(coils=coils)))
        f.create_dataset("reconstruction_rss", data=_np_rss_crop(k if multicoil else k[:, None], (48, 40)))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["patient_id"] = "synthetic"
        f.attrs["max"] = 1.0
    return k


@pytest.mark.parametrize("multicoil", [False, True])
def test_fastmri_file_is_read_and_degraded_in_its_own_kspace(tmp_path, multicoil):
    from medq_synth.sources import open_source

    path = tmp_path / "file_brain_AXT2.h5"
    k = write_fastmri(path, multicoil)
    src = open_source(str(path))
    (ref,) = src.refs()
    (item,) = src.load(ref)
    assert item.modality == "mri" and item.meta["slice_index"] == 1
    with __import__("h5py").File(path, "r") as f:
        target = f["reconstruction_rss"][1]
    assert item.image.shape == (1, 48, 40)
    assert np.allclose(item.image[0], target, rtol=0, atol=1e-5 * target.max())       # L0 is the file's RSS
    assert item.kspace.shape == ((4 if multicoil else 1), 96, 48)
    assert item.spacing_mm == (2.0, 2.0)
    assert item.meta["ismrmrd"]["field_strength_T"] == pytest.approx(2.8936)
    assert item.meta["file_attrs"]["acquisition"] == "CORPD_FBK"

    out = tmp_path / "out"
    generate(str(path), out, degradations=["undersampling_artifact", "mri_noise"], device="cpu", progress=False)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    clean = next(r for r in rows if r["degradation"] == "none")
    assert np.allclose(read_output(out, clean)[0][0], target, atol=1e-5 * target.max())
    import h5py

    for r in (r for r in rows if r["degradation"] == "mri_undersampling"):
        with h5py.File(out / r["shard"], "r") as f:
            mask = f[r["key"]]["params/mask"][()]
        assert mask.shape == (48,)                                  # the raw grid's phase-encode columns
        kk = k[1] if multicoil else k[1][None]
        expected = _np_rss_crop(kk * mask[None, None, :], (48, 40))
        got = read_output(out, r)[0][0]
        assert np.allclose(got, expected, rtol=0, atol=1e-5 * target.max())
        assert r["params"]["realised_acceleration"] == pytest.approx(48 / mask.sum(), rel=1e-5)
    noise = {r["level"]: read_output(out, r)[0][0] for r in rows if r["degradation"] == "mri_noise"}
    assert np.std(noise[2] - target) > np.std(noise[1] - target) > 0


def test_bad_fastmri_files_are_reported(tmp_path):
    import h5py

    folder = tmp_path / "raw"
    folder.mkdir()
    with h5py.File(folder / "no_kspace.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((2, 8, 8)))
    with h5py.File(folder / "real_kspace.h5", "w") as f:
        f.create_dataset("kspace", data=np.zeros((2, 8, 8)))
    (folder / "corrupt.h5").write_bytes(b"not hdf5")
    write_fastmri(folder / "good.h5", multicoil=True, n_slices=1)
    s = generate(str(folder), tmp_path / "out", degradations=["mri_gibbs"], device="cpu", progress=False)
    reasons = " | ".join(e["reason"] for e in s.errors)
    assert s.n_items == 1
    assert "no 'kspace' dataset" in reasons and "must be complex" in reasons and "cannot read HDF5" in reasons


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    from pydicom.data import get_testdata_file

    root = tmp_path_factory.mktemp("mixed")
    (root / "mri").mkdir()
    (root / "ct").mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), root / "mri" / "MR_small.dcm")
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "ct" / "CT_small.dcm")
    from nibabel.testing import data_path  # nibabel's T1 test volume (33 x 41 x 25 at 2 mm)

    shutil.copy(Path(data_path) / "anatomical.nii", root / "mri" / "anatomical.nii")
    write_fastmri(root / "mri" / "knee.h5", multicoil=True, n_slices=1)
    return root


MEDQ_IDS = ["undersampling_artifact", "ghosting_artifact", "bias_field_artifact", "random_motion_artifact"]


def test_one_id_resolves_per_modality_and_batch_size_changes_nothing(mixed_folder, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    generate(str(mixed_folder), a, degradations=MEDQ_IDS, device="cpu", batch_size=1, progress=False, export_tsv=True)
    generate(str(mixed_folder), b, degradations=MEDQ_IDS, device="cpu", batch_size=16, progress=False,
             export_tsv=True)
    assert file_hashes(a) == file_hashes(b)
    rows = [json.loads(x) for x in (a / "manifest.jsonl").read_text().splitlines()]
    by_modality: dict[str, set] = {}
    for r in rows:
        by_modality.setdefault(r["modality"], set()).add(r["degradation"])
    assert by_modality["mri"] == {"none", "mri_undersampling", "mri_ghosting", "mri_bias_field", "mri_motion"}
    assert by_modality["ct"] == {"none", "movement"}
    assert {r["medq_deg_id"] for r in rows if r["degradation"] in ("mri_motion", "movement")} \
        == {"random_motion_artifact"}
    # L2 is worse than L1 (SSIM) for every MRI degradation on the real MR slices (pydicom, nibabel) and the raw file
    ssim = {(r["source_id"], r["degradation"], r["level"]): r["ssim"] for r in rows if r["modality"] == "mri"}
    for (src, deg, level), s in ssim.items():
        if level == 2:
            assert s < ssim[(src, deg, 1)] < 1.0, (src, deg)
    assert sum(1 for key in ssim if key[2] == 2) == 3 * 4
    with (a / "benchmark.tsv").open() as fh:      # no questions in these files: the TSV holds no rows
        assert list(csv.DictReader(fh, delimiter="\t")) == []


def test_mri_levels_share_one_pattern_and_a_sweep_is_monotone(tmp_path):
    """L1 and L2 of an item draw the same pattern: nested undersampling masks, the same ghost count; across a
    continuous sweep the error against the clean image grows with the severity (for nested masks the complex
    error is the missing k-space energy, by Parseval)."""
    import h5py

    out = tmp_path / "sweep"
    generate("phantoms:1", out, degradations=["mri_undersampling", "mri_ghosting", "mri_motion"], device="cpu",
             severities=(0.25, 0.5, 0.75, 1.0), levels=(0,), progress=False, limit=6)
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    items = sorted({r["source_id"] for r in rows if r["modality"] == "mri"})
    assert items == ["phantoms/mri-000", "phantoms/pydicom-MR_small"]
    for item in items:
        mine = [r for r in rows if r["source_id"] == item]
        masks = {}
        for r in mine:
            if r["degradation"] == "mri_undersampling":
                with h5py.File(out / r["shard"], "r") as f:
                    masks[r["severity"]] = f[r["key"]]["params/mask"][()].astype(bool)
        assert all((masks[b] <= masks[a]).all() for a, b in zip(sorted(masks), sorted(masks)[1:], strict=False))
        assert len({r["params"]["num_ghosts"] for r in mine if r["degradation"] == "mri_ghosting"}) == 1
        clean = read_output(out, next(r for r in mine if r["degradation"] == "none"))[0]
        for deg in ("mri_undersampling", "mri_ghosting", "mri_motion"):
            sweep = sorted((r for r in mine if r["degradation"] == deg), key=lambda r: r["severity"])
            err = [float(np.sqrt(np.mean((read_output(out, r)[0] - clean) ** 2))) for r in sweep]
            assert len(err) == 4 and all(x < y for x, y in zip(err, err[1:], strict=False)), (item, deg, err)
