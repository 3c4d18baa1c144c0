"""Quality metrics against the degradations they measure: seconds per output of the SSIM + PSNR that every
output records (kornia's SSIM inside fixed-shape blocks), of the separable-convolution SSIM medq-synth used
before (same numbers, written by hand; the baseline, run in the same process), and of two degradations, on
fundus-sized RGB images (1411 x 1411). Before timing, the two SSIMs are compared.

    python benchmarks/metrics_bench.py                          # GPU
    python benchmarks/metrics_bench.py --device cpu             # the committed CPU result
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import base_meta, best_of, write_results

from medq_synth.degradations import REGISTRY
from medq_synth.metrics import psnr, ssim
from medq_synth.physics.blocks import blocked


def _blur(x: torch.Tensor, taps: int = 11, sigma: float = 1.5) -> torch.Tensor:
    t = torch.arange(taps, device=x.device, dtype=x.dtype) - (taps - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    b, c, h, w = x.shape
    y = F.pad(x.reshape(b * c, 1, h, w), (taps // 2,) * 4, mode="reflect")
    y = F.conv2d(F.conv2d(y, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))
    return y.reshape(b, c, h, w)


def hand_ssim(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The previous implementation: one channel at a time, separable Gaussian, reflect border."""
    def one(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mx, my = _blur(a), _blur(b)
        sxx, syy, sxy = _blur(a * a) - mx * mx, _blur(b * b) - my * my, _blur(a * b) - mx * my
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        return m.mean(dim=(1, 2, 3), dtype=torch.float64)
    return blocked(one, x, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=1411)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    dev = torch.device(a.device)
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(a.batch, 3, a.size, a.size, generator=g).to(dev)
    seeds = torch.arange(a.batch, dtype=torch.int64)
    fill = torch.zeros(a.batch, dtype=torch.float64)
    degraded = {}
    timings = {}
    for name in ("gaussian_blur", "gaussian_noise"):
        deg = REGISTRY.resolve(name)

        def run(deg=deg) -> torch.Tensor:
            return deg.apply(clean, deg.sample_params(1.0, seeds, (a.size, a.size), fill, seeds))
        degraded[name] = run().clamp(0, 1)
        timings[name] = best_of(run, a.repeats, dev) / a.batch
    y = degraded["gaussian_blur"]
    diff = float((ssim(y, clean) - hand_ssim(y, clean)).abs().max())
    for label, fn in (("ssim + psnr (kornia, blocked)", ssim), ("ssim + psnr (hand-written, before)", hand_ssim)):
        timings[label] = best_of(lambda fn=fn: (fn(y, clean), psnr(y, clean)), a.repeats, dev) / a.batch
    base = timings["ssim + psnr (hand-written, before)"]
    meta = {**base_meta(dev), "kornia": __import__("kornia").__version__, "image": f"{a.size}x{a.size} RGB",
            "batch": a.batch, "max abs SSIM difference": f"{diff:.1e}"}
    rows = [{"operation": k, "s_per_output": round(v, 5), "speedup_vs_hand_ssim": round(base / v, 2)}
            for k, v in timings.items()]
    cells = [[r["operation"], f"{r['s_per_output']:.4f}", f"{r['speedup_vs_hand_ssim']:.2f}x"] for r in rows]
    write_results(a.out, f"metrics_bench_{dev.type}", meta, rows, "Metric time per output vs degradation time",
                  ["operation", "s per output", "vs hand-written SSIM"], cells,
                  ["Every output records SSIM and PSNR against its L0; the metric should cost less than the "
                   "degradation it measures."])


if __name__ == "__main__":
    main()
