"""MRI degradations: slices/s of each default MRI model at L2, batched medq-synth vs the field's libraries doing
the same work one slice at a time, in one process:
- ours: the registry path (``sample_params`` from each item's pattern, then ``apply``) on a batch of
  magnitude images, on --device; the ``apply`` column leaves out the parameter draw (host side: masks,
  motion paths);
- baselines, per slice with ours' drawn parameters: TorchIO 1.x ``Ghosting``, ``Spike``, ``BiasField`` and
  ``Motion`` (SimpleITK resampling of each pose), MONAI ``GibbsNoise`` and ``RandRicianNoise``; for
  undersampling (neither library has an image-domain one) the naive torch pipeline: fftshift(fft2(ifftshift))
  -> mask -> the inverse with shifts -> magnitude.
Before timing, each model's k-space operator is checked against the baseline on two slices where both compute
the same thing (max |difference| / max |image|): TorchIO and MONAI return the real part of the inverse FFT,
so the check compares that. Motion (TorchIO interpolates each pose with SimpleITK, we rotate bilinearly and
translate exactly in k-space) and Rician noise (independent draws) are different computations: n/a.
Writes a markdown table and a JSON record (card, versions, date) under benchmarks/results/.

    python benchmarks/mri_bench.py                                          # GPU: 256 and 512 px, batch 64
    python benchmarks/mri_bench.py --device cpu --baseline-batch 8 --repeats 2    # the committed CPU result
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import base_meta, best_of, write_results

from medq_synth.degradations import REGISTRY
from medq_synth.physics import kspace as K
from medq_synth.physics import mri

DEGRADATIONS = ["mri_undersampling", "mri_motion", "mri_ghosting", "mri_bias_field", "mri_spike", "mri_gibbs",
                "mri_noise"]
PIXEL_MM = 1.0


def batch_of_slices(size: int, batch: int, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Display-normalised MRI phantoms resampled to ``size``, and the engine's physical context."""
    from medq_synth.sources.phantoms import synthetic_item

    imgs = [torch.from_numpy(synthetic_item("mri", 2 * (i % 3)).image) for i in range(batch)]
    v = F.interpolate(torch.stack(imgs), size=(size, size), mode="bilinear", align_corners=False).clamp_min(0)
    ctx = {"window_lo": torch.zeros(batch, dtype=torch.float64), "window_hi": torch.ones(batch, dtype=torch.float64),
           "pixel_mm": torch.full((batch,), PIXEL_MM, dtype=torch.float64)}
    return v.to(device), ctx


def draw(name: str, v: torch.Tensor, ctx: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    deg = REGISTRY.resolve(name)
    seeds = torch.arange(len(v), dtype=torch.int64)
    return deg.sample_params(1.0, seeds, tuple(v.shape[-2:]), pattern_seeds=seeds + 10_000, inputs={"v": v, **ctx})


# -- per-slice baselines with our parameters -----------------------------------------------------------------


def _tio(x: torch.Tensor) -> object:
    import torchio as tio

    return tio.ScalarImage(tensor=x[None, :, :, None].cpu())


def baseline(name: str, p: dict[str, torch.Tensor], i: int):
    """One-slice function (H, W) -> (H, W) doing item ``i``'s degradation with the reference library."""
    if name == "mri_undersampling":
        mask = p["mask"][i].to(torch.float32)

        def naive(x: torch.Tensor) -> torch.Tensor:
            k = torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x), norm="ortho"))
            return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k * mask.to(x.device)), norm="ortho")).abs()
        return naive
    if name == "mri_gibbs":
        from monai.transforms import GibbsNoise

        t = GibbsNoise(float(p["alpha"][i]))
        return lambda x: torch.as_tensor(t(x[None]))[0]
    if name == "mri_noise":
        from monai.transforms import RandRicianNoise

        t = RandRicianNoise(prob=1.0, std=float(p["sigma"][i]), sample_std=False)
        return lambda x: torch.as_tensor(t(x[None]))[0]
    import torchio as tio

    if name == "mri_ghosting":
        t = tio.Ghosting(num_ghosts=int(p["num_ghosts"][i]), axis=1, intensity=float(p["intensity"][i]), restore=None)
    elif name == "mri_spike":
        h, w = p["_shape"]
        pos = np.stack([p["rows"][i].numpy() / h, p["cols"][i].numpy() / w, np.zeros(p["rows"].shape[1])], axis=1)
        t = tio.Spike(spikes_positions=pos + 1e-9, intensity=float(p["intensity"][i]))
    elif name == "mri_bias_field":
        c2 = iter(p["coefficients"][i].tolist())
        coef = [next(c2) if z == 0 else 0.0 for a in range(4) for b in range(4 - a) for z in range(4 - a - b)]
        t = tio.BiasField(coefficients=coef, order=3)
    elif name == "mri_motion":
        poses = p["poses"][i]
        times = p["event_times"][i].numpy()
        degrees = np.array([[0.0, 0.0, math.degrees(float(r))] for r in poses[1:, 0]])
        translation = np.array([[float(dy), float(dx), 0.0] for dy, dx in poses[1:, 1:]])
        t = tio.Motion(degrees=degrees, translation=translation, times=times, image_interpolation="linear")
    else:
        raise KeyError(name)
    return lambda x: t(_tio(x)).data[0, :, :, 0]


def ours_operator(name: str, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """Our k-space operator's output in the baselines' terms (real part of the inverse FFT, or the magnitude
    for undersampling), for the correctness check; None where the computations differ."""
    k = K.acquire(x)
    if name == "mri_undersampling":
        return mri.undersample(k, p["mask"]).magnitude()
    if name == "mri_ghosting":
        return mri.ghosting(k, p["num_ghosts"], p["intensity"], p["restore"]).images()[:, 0].real
    if name == "mri_spike":
        return mri.spike(k, p["rows"], p["cols"], p["intensity"]).images()[:, 0].real
    if name == "mri_gibbs":
        return mri.gibbs(k, p["alpha"]).images()[:, 0].real
    if name == "mri_bias_field":
        return x * mri.bias_field(tuple(x.shape[-2:]), p["coefficients"].to(x.device))
    return None


def run(size: int, batch: int, baseline_batch: int, repeats: int, device: torch.device) -> list[dict]:
    v, ctx = batch_of_slices(size, batch, device)
    x = v[:, 0]
    rows = []
    for name in DEGRADATIONS:
        deg = REGISTRY.resolve(name)
        p = draw(name, v, ctx)
        p_host = {k: t.cpu() for k, t in p.items()}
        p_host["_shape"] = (size, size)
        nb = min(baseline_batch, batch)
        try:
            fns = [baseline(name, p_host, i) for i in range(nb)]
        except ImportError as e:              # a GPU image may lack TorchIO or MONAI: time ours alone
            print(f"{name}: baseline unavailable ({e})")
            fns = None
        ours_op = ours_operator(name, x[:2], {k: t[:2] for k, t in p.items()})
        check = None
        if ours_op is not None and fns is not None:
            ref = torch.stack([fns[i](x[i].cpu()) for i in range(2)])
            check = float((ours_op.cpu() - ref).abs().max() / x[:2].abs().max().cpu())
        t_all = best_of(lambda deg=deg: deg.apply(v, {**draw(deg.name, v, ctx), **ctx}), repeats, device)
        t_apply = best_of(lambda deg=deg, p=p: deg.apply(v, {**p, **ctx}), repeats, device)
        base_rate = None
        if fns is not None:
            xs = x[:nb].cpu()
            base_rate = nb / best_of(lambda fns=fns, xs=xs: [f(xs[i]) for i, f in enumerate(fns)], repeats,
                                     torch.device("cpu"))
        row = {"degradation": name, "size": size, "batch": batch, "baseline_batch": nb,
               "ours_slices_per_s": batch / t_all, "ours_apply_slices_per_s": batch / t_apply,
               "baseline_slices_per_s": base_rate, "baseline": baseline_name(name), "check_max_rel_diff": check,
               "ratio": batch / t_all / base_rate if base_rate else None}
        rows.append(row)
        print(f"{size:4d} {name:18s} ours {row['ours_slices_per_s']:10.1f}/s "
              f"(apply {row['ours_apply_slices_per_s']:10.1f}/s)  {row['baseline']:28s} "
              f"{_fmt(base_rate, '.1f')}/s  ratio {_fmt(row['ratio'], '.1f')}x  check {_fmt(check, '.1e')}")
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def baseline_name(name: str) -> str:
    return {"mri_undersampling": "naive torch (fftshift)", "mri_motion": "TorchIO Motion",
            "mri_ghosting": "TorchIO Ghosting", "mri_bias_field": "TorchIO BiasField", "mri_spike": "TorchIO Spike",
            "mri_gibbs": "MONAI GibbsNoise", "mri_noise": "MONAI RandRicianNoise"}[name]


def _version(lib: str) -> str:
    try:
        return __import__(lib).__version__
    except ImportError:
        return "missing"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--baseline-batch", type=int, default=16, help="slices the per-slice baselines are timed on")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    device = torch.device(a.device)
    rows = [r for s in a.sizes for r in run(s, a.batch, a.baseline_batch, a.repeats, device)]
    meta = {**base_meta(device), **{lib: _version(lib) for lib in ("torchio", "monai")}, "batch": a.batch,
            "baseline_batch": a.baseline_batch, "level": "L2", "repeats": a.repeats}
    cells = [[r["degradation"], str(r["size"]), f"{r['ours_slices_per_s']:.1f}", f"{r['ours_apply_slices_per_s']:.1f}",
              r["baseline"], _fmt(r["baseline_slices_per_s"], ".1f"), _fmt(r["ratio"], ".1f") + "x",
              _fmt(r["check_max_rel_diff"], ".1e")] for r in rows]
    stem = "mri_bench_" + ("gpu" if device.type == "cuda" else "cpu")
    write_results(a.out, stem, meta, rows, f"MRI degradations: slices/s at L2, batch {a.batch}",
                  ["degradation", "px", "ours (draw + apply)", "ours (apply)", "baseline (per slice)",
                   "baseline", "ratio", "check"], cells,
                  ["Ratio = ours (draw + apply) / baseline. check = max |ours - baseline| / max |image| on two "
                   "slices (TorchIO/MONAI return the real part of the inverse FFT; ours is compared in those "
                   "terms); n/a where the two compute different things (see the script's docstring)."])


if __name__ == "__main__":
    main()
