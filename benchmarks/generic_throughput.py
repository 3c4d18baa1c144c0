"""Throughput of the generic degradations: batched medq-synth path vs a per-item loop, in the same run.

items/s at 512 x 512 (grey, float32), batch 64, level L2, for each generic degradation:
- ours: ``sample_params`` + ``apply`` on the whole batch (torch + kornia), on --device;
- baseline: one image at a time with torchvision.transforms.v2.functional (PIL-free tensors) or, where
  torchvision has no such operator (motion blur, the movement double exposure), the same maths with plain
  torch on one image at a time.
Writes a markdown table and a JSON record (card, versions, date) under benchmarks/results/.

    python benchmarks/generic_throughput.py --device cpu --repeats 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import base_meta, write_results

try:        # the baseline's library (pip install 'medq-synth[bench]'); without it those rows time ours alone
    import torchvision
    import torchvision.transforms.v2.functional as TF
except ImportError:
    torchvision = TF = None

from medq_synth.degradations import REGISTRY

SIZE, BATCH = 512, 64
GENERIC = ("gaussian_noise", "gaussian_blur", "motion_blur", "low_resolution", "adjust_brightness", "exposure",
           "reduce_contrast", "rotation", "movement")
NEEDS_TORCHVISION = {"gaussian_blur", "low_resolution", "rotation", "movement"}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _line_kernel(length: int, angle: float, device: torch.device) -> torch.Tensor:
    k = torch.zeros(length, length, device=device)
    c = (length - 1) / 2
    for t in torch.linspace(-c, c, 4 * length).tolist():
        x = round(c + t * math.cos(math.radians(angle)))
        y = round(c - t * math.sin(math.radians(angle)))
        k[y, x] = 1.0
    return (k / k.sum())[None, None]


def baseline_fn(name: str, p: dict, i: int, device: torch.device):
    """One-image-at-a-time equivalent of degradation ``name`` with item ``i``'s parameters."""
    if name == "gaussian_noise":
        return lambda im: im + p["sigma"][i].item() * torch.randn_like(im)
    if name == "gaussian_blur":
        s = p["sigma_px"][i].item()
        k = 2 * math.ceil(3 * s) + 1
        return lambda im: TF.gaussian_blur(im, [k, k], [s, s])
    if name == "motion_blur":
        ker = _line_kernel(int(p["length_px"][i].item()), p["angle_deg"][i].item(), device)
        pad = ker.shape[-1] // 2
        return lambda im: F.conv2d(F.pad(im[None], (pad,) * 4, mode="reflect"), ker)[0]
    if name == "low_resolution":
        f = p["factor"][i].item()
        small = [round(SIZE / f)] * 2
        return lambda im: TF.resize(TF.resize(im, small, antialias=True), [SIZE, SIZE],
                                    interpolation=TF.InterpolationMode.BICUBIC)
    if name == "adjust_brightness":
        return lambda im: im + p["shift"][i].item()
    if name == "exposure":
        return lambda im: p["gain"][i].item() * im + p["offset"][i].item()
    if name == "reduce_contrast":
        c = p["contrast"][i].item()
        return lambda im: im.mean() + c * (im - im.mean())
    if name == "rotation":
        return lambda im: TF.rotate(im, p["angle_deg"][i].item(), interpolation=TF.InterpolationMode.BILINEAR)
    if name == "movement":
        d = p["shift_frac"][i].item() * SIZE
        th, w = p["direction_rad"][i].item(), p["weight"][i].item()
        ang = p["angle_deg"][i].item()
        return lambda im: (1 - w) * im + w * TF.affine(im, ang, [d * math.cos(th), d * math.sin(th)], 1.0, [0.0],
                                                        interpolation=TF.InterpolationMode.BILINEAR)
    raise KeyError(name)


def timed(fn, device: torch.device, repeats: int) -> float:
    fn()                                   # warm-up (kernel selection, caches)
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    x = F.avg_pool2d(torch.rand(BATCH, 1, SIZE, SIZE), 7, 1, 3).to(device)
    seeds = torch.arange(BATCH, dtype=torch.int64)
    fill = torch.zeros(BATCH, dtype=torch.float64)
    rows = []
    for deg in (REGISTRY.resolve(n) for n in GENERIC):      # physics models have their own benchmarks
        params = deg.sample_params(1.0, seeds, (SIZE, SIZE), fill)
        ours = timed(lambda deg=deg: deg.apply(x, deg.sample_params(1.0, seeds, (SIZE, SIZE), fill)), device,
                     a.repeats)
        if TF is None and deg.name in NEEDS_TORCHVISION:
            rows.append({"degradation": deg.name, "ours_items_s": BATCH / ours, "baseline_items_s": None,
                         "speedup": None})
            print(f"{deg.name:<18} ours {BATCH / ours:9.1f} items/s   (no torchvision: no baseline)", flush=True)
            continue
        fns = [baseline_fn(deg.name, params, i, device) for i in range(BATCH)]
        base = timed(lambda fns=fns: [f(x[i]) for i, f in enumerate(fns)], device, a.repeats)
        rows.append({"degradation": deg.name, "ours_items_s": BATCH / ours, "baseline_items_s": BATCH / base,
                     "speedup": base / ours})
        print(f"{deg.name:<18} ours {BATCH / ours:9.1f} items/s   per-item {BATCH / base:9.1f} items/s   "
              f"ratio {base / ours:6.2f}x", flush=True)
    tv = torchvision.__version__ if torchvision else "not installed"
    meta = {**base_meta(device), "torchvision": tv, "kornia": __import__("kornia").__version__,
            "size": SIZE, "batch": BATCH, "level": "L2", "repeats": a.repeats}
    write_results(a.out, f"generic_throughput_{device.type}", meta, rows,
                  f"Generic degradations: items/s at {SIZE}x{SIZE}, batch {BATCH}, L2",
                  ["degradation", "medq-synth batched (items/s)", "per-item loop (items/s)", "ratio"],
                  [[r["degradation"], f"{r['ours_items_s']:.1f}",
                    f"{r['baseline_items_s']:.1f}" if r["baseline_items_s"] else "n/a (no torchvision)",
                    f"{r['speedup']:.2f}x" if r["speedup"] else "-"] for r in rows])

if __name__ == "__main__":
    main()
