"""Which degradations remove task information, and why: the set over which the default job's mean accuracy
must fall from L0 to L1 to L2 (issue 12). A degradation removes information when it is not invertible on the
object: it adds random noise, or its operator has a null space (blur, downsampling, unacquired projections or
k-space). The others change how the image is shown (brightness, contrast, exposure), where it is (rotation,
movement), or add a deterministic, structured artifact; a reader can be fooled by them, but in principle
the lesion is still there, so their accuracy may stay flat."""

from __future__ import annotations

INFORMATION_REMOVING: dict[str, str] = {
    "gaussian_noise": "adds random noise",
    "gaussian_blur": "a low-pass filter: the lesion's high spatial frequencies are attenuated",
    "motion_blur": "a line kernel whose transfer function has zeros",
    "low_resolution": "downsampling discards the frequencies above the new Nyquist limit",
    "ct_low_dose": "fewer photons: more quantum noise in every projection",
    "ct_sparse_view": "projections that are never acquired",
    "ct_limited_angle": "a missing wedge of projection angles",
    "mri_undersampling": "phase-encode lines that are never acquired",
    "mri_undersampling_equispaced": "phase-encode lines that are never acquired",
    "mri_undersampling_poisson": "k-space samples that are never acquired",
    "mri_undersampling_radial": "k-space samples that are never acquired",
    "mri_noise": "adds thermal noise",
    "mri_gibbs": "k-space truncated: the highest frequencies are gone",
    "us_speckle": "a coarser pulse-echo PSF: lower resolution and larger speckle grains",
    "us_speckle_sector": "a coarser pulse-echo PSF: lower resolution and larger speckle grains",
    "xray_motion_blur": "a motion path kernel: blur during the exposure",
}


def removes_information(name: str) -> bool:
    return name in INFORMATION_REMOVING
