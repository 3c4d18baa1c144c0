"""Ultrasound speckle: slices/s of the B-mode rendering (scatterers, depth-dependent PSF, thermal noise,
envelope, log compression) at L2, batched medq-synth vs the same model written with NumPy one image at a time,
in one process. Before timing, the two are run on the same scatterer field and compared (max |difference| of
the envelope / its max). Writes a markdown table and a JSON record (card, versions, date) under
benchmarks/results/.

    python benchmarks/us_bench.py                                 # GPU: 256 and 512 px, batch 64
    python benchmarks/us_bench.py --device cpu --repeats 2        # the committed CPU result
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
from _common import base_meta, best_of, write_results

from medq_synth.degradations import REGISTRY
from medq_synth.physics import ultrasound as us

PIXEL_MM = 0.2


def numpy_echo(e: np.ndarray, z: np.ndarray, sz: float, sx: np.ndarray) -> np.ndarray:
    """One image: the same model with NumPy (reflect padding, a Gaussian transfer per row, then axial)."""
    h, w = e.shape
    p = us.padding((h, w))
    s = np.pad(np.sqrt(np.clip(e, 0, None)), p, mode="reflect") * z
    hp, wp = s.shape
    fx, fz = np.fft.fftfreq(wp), np.fft.fftfreq(hp)
    sxp = np.pad(sx, p, mode="edge")
    hx = np.exp(-2 * np.pi ** 2 * sxp[:, None] ** 2 * fx[None] ** 2)
    hx /= np.sqrt((hx ** 2).mean(axis=1, keepdims=True))
    s = np.fft.ifft(np.fft.fft(s, axis=1) * hx, axis=1)
    hz = np.exp(-2 * np.pi ** 2 * sz ** 2 * fz ** 2)
    hz /= np.sqrt((hz ** 2).mean())
    return np.fft.ifft(np.fft.fft(s, axis=0) * hz[:, None], axis=0)[p:p + h, p:p + w]


def numpy_bmode(e: np.ndarray, rng: np.random.Generator, sz: float, sx: np.ndarray, snr_db: float,
                dr_db: float) -> np.ndarray:
    h, w = e.shape
    p = us.padding((h, w))
    z = (rng.standard_normal((h + 2 * p, w + 2 * p)) + 1j * rng.standard_normal((h + 2 * p, w + 2 * p))) / math.sqrt(2)
    r = numpy_echo(e, z, sz, sx)
    n = (rng.standard_normal((h, w)) + 1j * rng.standard_normal((h, w))) / math.sqrt(2)
    a = np.abs(r + 10 ** (-snr_db / 20) * n)
    return np.clip(1 + 20 * np.log10(np.maximum(a, 1e-12)) / dr_db, 0, 1)


def run(size: int, batch: int, baseline_batch: int, repeats: int, device: torch.device) -> dict:
    from medq_synth.sources.phantoms import synthetic_item

    deg = REGISTRY.resolve("us_speckle")
    items = [synthetic_item("ultrasound", i % 4) for i in range(batch)]
    e = torch.nn.functional.interpolate(torch.stack([torch.from_numpy(it.echogenicity)[None] for it in items]),
                                        size=(size, size), mode="bilinear", align_corners=False)[:, 0].to(device)
    v = torch.nn.functional.interpolate(torch.stack([torch.from_numpy(it.image) for it in items]),
                                        size=(size, size), mode="bilinear", align_corners=False).to(device)
    ctx = {"window_lo": torch.zeros(batch, dtype=torch.float64), "window_hi": torch.ones(batch, dtype=torch.float64),
           "pixel_mm": torch.full((batch,), PIXEL_MM, dtype=torch.float64), "_echogenicity": e}
    seeds = torch.arange(batch)

    def ours() -> torch.Tensor:
        p = deg.sample_params(1.0, seeds, (size, size), pattern_seeds=seeds + 1000, inputs={"v": v, **ctx})
        return deg.apply(v, {**p, **ctx})

    p = deg.sample_params(1.0, seeds, (size, size), pattern_seeds=seeds + 1000, inputs={"v": v, **ctx})
    sz, sx = us.psf_sigmas_px((size, size), ctx["pixel_mm"], p["center_frequency_mhz"], p["fractional_bandwidth"],
                              p["f_number"], p["focus_fraction"], p["depth_of_field_fraction"])
    # correctness first: the same scatterers through both implementations
    g = torch.Generator().manual_seed(0)
    pad = us.padding((size, size))
    z = torch.complex(torch.randn(2, size + 2 * pad, size + 2 * pad, generator=g),
                      torch.randn(2, size + 2 * pad, size + 2 * pad, generator=g)) / math.sqrt(2)
    mine = us.echo(e[:2].cpu(), z, sz[:2], sx[:2]).abs().numpy()
    ref = np.stack([np.abs(numpy_echo(e[i].cpu().double().numpy(), z[i].numpy().astype(np.complex128),
                                      float(sz[i]), sx[i].numpy())) for i in range(2)])
    check = float(np.abs(mine - ref).max() / ref.max())
    t_ours = best_of(ours, repeats, device)
    nb = min(baseline_batch, batch)
    e_host = e[:nb].cpu().double().numpy()
    snr, dr = float(p["snr_db"][0]), float(p["dynamic_range_db"][0])
    rng = np.random.default_rng(0)
    t_base = best_of(lambda: [numpy_bmode(e_host[i], rng, float(sz[i]), sx[i].numpy(), snr, dr) for i in range(nb)],
                     repeats, torch.device("cpu"))
    row = {"size": size, "batch": batch, "baseline_batch": nb, "ours_slices_per_s": batch / t_ours,
           "baseline_slices_per_s": nb / t_base, "check_max_rel_diff": check}
    row["ratio"] = row["ours_slices_per_s"] / row["baseline_slices_per_s"]
    print(f"{size:4d}  ours {row['ours_slices_per_s']:9.1f}/s  numpy per image {row['baseline_slices_per_s']:8.1f}/s"
          f"  ratio {row['ratio']:5.2f}x  check {check:.1e}")
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--baseline-batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    device = torch.device(a.device)
    rows = [run(s, a.batch, a.baseline_batch, a.repeats, device) for s in a.sizes]
    meta = {**base_meta(device), "numpy": np.__version__, "batch": a.batch, "baseline_batch": a.baseline_batch,
            "level": "L2", "repeats": a.repeats}
    cells = [[str(r["size"]), f"{r['ours_slices_per_s']:.1f}", f"{r['baseline_slices_per_s']:.1f}",
              f"{r['ratio']:.2f}x", f"{r['check_max_rel_diff']:.1e}"] for r in rows]
    stem = "us_bench_" + ("gpu" if device.type == "cuda" else "cpu")
    write_results(a.out, stem, meta, rows, f"Ultrasound speckle: slices/s at L2, batch {a.batch}",
                  ["px", "ours (draw + render)", "NumPy, one image at a time", "ratio", "check"], cells,
                  ["check = max |ours - NumPy| / max on the same scatterer field (two slices), before timing."])


if __name__ == "__main__":
    main()
