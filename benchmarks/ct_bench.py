"""CT operators: slices/s of forward projection, backprojection, FBP, the whole low-dose cycle (FP, Poisson
+ electronic noise, log, filter, BP) and the exact transpose, for parallel and fan beams, in one process, for:
- medq-synth (``medq_synth.kernels.ct``: Triton on CUDA, numba-compiled loops on the CPU), batched;
- a naive ``grid_sample`` projector: one view at a time, every ray sampled at unit steps by bilinear
  interpolation (the usual pure-torch baseline), and its matching backprojector;
- astra-toolbox (``pip install 'medq-synth[astra]'``): one slice at a time (astra has no 2-D batching), the CPU
  projectors ``linear`` / ``line_fanflat`` or CUDA ``cuda`` when a GPU is present; astra's CPU FBP is
  parallel-only ("n/a" for fan). Its backprojection is its projector's transpose.
Each operation is warmed up on one slice (JIT compilation, caches), then timed on the batch; the best of
``--repeats`` counts. The baselines may run on the first ``--baseline-batch`` slices only: astra works slice by
slice and the naive projector view by view, so their slices/s hardly depend on the batch, and on a CPU a
64-slice batch would take them most of an hour. Prints the ratios ours / baseline and writes a markdown table
and a JSON record (card, versions, date) under benchmarks/results/.

    python benchmarks/ct_bench.py                                      # GPU: 512 px, batch 64, 360 and 720 views
    python benchmarks/ct_bench.py --device cpu --baseline-batch 8 --repeats 1   # the committed CPU result
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import base_meta, write_results

from medq_synth.kernels import ct as K
from medq_synth.kernels import ct_torch
from medq_synth.kernels.geometry import Geometry, default_geometry
from medq_synth.physics import ct

PIXEL_MM = 0.7


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, x, device: torch.device, repeats: int) -> float:
    """Seconds per slice of ``fn`` on the batch ``x``, after a warm-up on its first slice."""
    fn(x[:1])
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best / x.shape[0]


# -- naive grid_sample baseline ------------------------------------------------------------------------------
def naive_forward(x: torch.Tensor, g: Geometry, pixel_mm: float) -> torch.Tensor:
    """Per view: sample every ray at unit (pixel) steps with grid_sample, sum, times the step length."""
    from medq_synth.kernels.geometry import rays

    b, h, w = x.shape
    n = int(math.ceil(math.hypot(h, w))) + 1
    t = (torch.arange(n, device=x.device, dtype=torch.float64) - (n - 1) / 2)
    out = []
    for v in range(g.n_views):
        o, d = rays(g, pixel_mm, x.device, slice(v, v + 1))
        o, d = o[0], d[0]                                      # (D, 2)
        if g.kind == "fan":                                    # move the origin to the point nearest the centre
            o = o - (o * d).sum(-1, keepdim=True) * d
        pts = o[:, None, :] + t[None, :, None] * d[:, None, :]    # (D, n, 2) pixel units, y up
        grid = torch.stack([pts[..., 0] / ((w - 1) / 2), -pts[..., 1] / ((h - 1) / 2)], -1).float()
        s = F.grid_sample(x[:, None], grid[None].expand(b, -1, -1, -1), align_corners=True, padding_mode="zeros")
        out.append(s[:, 0].sum(-1) * pixel_mm)
    return torch.stack(out, 1)


def naive_backproject(q: torch.Tensor, g: Geometry, pixel_mm: float, shape: tuple[int, int]) -> torch.Tensor:
    """Per view: the detector coordinate of every pixel, 1-D linear interpolation by grid_sample."""
    b = q.shape[0]
    acc = torch.zeros(b, shape[0] * shape[1], device=q.device)
    for v in range(g.n_views):
        idx, wt = ct_torch.bp_taps(g, shape, pixel_mm, slice(v, v + 1), q.device)
        gx = (idx[0] / ((g.n_det - 1) / 2) - 1).float()
        grid = torch.stack([gx, torch.zeros_like(gx)], -1)[None, None].expand(b, -1, -1, -1)
        s = F.grid_sample(q[:, None, v: v + 1, :], grid, align_corners=True, padding_mode="zeros")
        acc += s[:, 0, 0] * wt[0]
    return (acc * g.view_step).reshape(b, *shape)


def naive_fbp(p, g, pixel_mm, shape):
    f = naive_backproject(ct_torch.fbp_filter(p, g, "ramp"), g, pixel_mm, shape)
    return f * 0.5 if g.kind == "fan" else f


def _noise(p: torch.Tensor) -> torch.Tensor:
    i0 = torch.full((p.shape[0],), 2.5e5, device=p.device)
    return ct.transmission_noise(p, i0, torch.full_like(i0, 10.0), torch.arange(len(i0)))


# -- astra ---------------------------------------------------------------------------------------------------
def astra_ops(g: Geometry, size: int, use_cuda: bool):
    """astra's forward projection, backprojection and FBP, one slice at a time (numpy arrays in pixel units)."""
    import astra

    vol = astra.create_vol_geom(size, size)
    ang = g.angles().numpy()
    if g.kind == "parallel":
        pg = astra.create_proj_geom("parallel", g.det_spacing / PIXEL_MM, g.n_det, ang)
        proj = "cuda" if use_cuda else "linear"
    else:
        pg = astra.create_proj_geom("fanflat", g.det_spacing / PIXEL_MM, g.n_det, ang, g.sid / PIXEL_MM,
                                    (g.sdd - g.sid) / PIXEL_MM)
        proj = "cuda" if use_cuda else "line_fanflat"
    pid = astra.create_projector(proj, pg, vol)

    def fp(x):
        return [astra.create_sino(img, pid)[1] for img in x]

    def bp(s):
        return [astra.create_backprojection(sino, pid)[1] for sino in s]

    fbp = None
    if use_cuda or g.kind == "parallel":
        def fbp(s):
            for sino in s:
                rec = astra.data2d.create("-vol", vol)
                sid = astra.data2d.create("-sino", pg, sino)
                cfg = astra.astra_dict("FBP_CUDA" if use_cuda else "FBP")
                cfg.update(ReconstructionDataId=rec, ProjectionDataId=sid)
                if not use_cuda:
                    cfg["ProjectorId"] = pid
                alg = astra.algorithm.create(cfg)
                astra.algorithm.run(alg)
                astra.algorithm.delete(alg)
                astra.data2d.delete([rec, sid])
    return fp, bp, fbp


OPS = ("forward", "backproject", "fbp", "low_dose_cycle", "transpose")


def check_against_torch(x: torch.Tensor, p: torch.Tensor, g: Geometry, shape: tuple[int, int]) -> dict[str, float]:
    """Max |ours - torch| / max |torch| on the first two slices: the timed kernels compute the right thing."""
    def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
        return float((ours - ref).abs().max() / ref.abs().max())

    q = ct_torch.fbp_filter(p[:2], g)
    return {"forward": rel(p[:2], ct_torch.forward(x[:2], g, PIXEL_MM)),
            "backprojection": rel(K.backproject(q, g, PIXEL_MM, shape), ct_torch.backproject(q, g, PIXEL_MM, shape))}


def bench_config(kind: str, views: int, x: torch.Tensor, shape: tuple[int, int], dev: torch.device,
                 a: argparse.Namespace, has_astra: bool) -> list[dict]:
    """One geometry and view count: every implementation, every operation (None: not available)."""
    g = default_geometry(kind, shape, PIXEL_MM, n_views=views)
    p = K.forward(x, g, PIXEL_MM)
    check = check_against_torch(x, p, g, shape)
    print(f"{kind:8} {views:4} {K.backend(dev)} vs the torch reference (2 slices), max relative error: "
          + "  ".join(f"{k} {v:.1e}" for k, v in check.items()), flush=True)
    nb = a.baseline_batch or a.batch
    impls = {"medq-synth": (x, p, {
        "forward": lambda x: K.forward(x, g, PIXEL_MM),
        "backproject": lambda p: K.backproject(p, g, PIXEL_MM, shape),
        "fbp": lambda p: K.fbp(p, g, PIXEL_MM, shape),
        "low_dose_cycle": lambda x: K.fbp(_noise(K.forward(x, g, PIXEL_MM)), g, PIXEL_MM, shape),
        "transpose": lambda p: K.adjoint(p, g, PIXEL_MM, shape)})}
    if not a.no_naive:
        impls["naive grid_sample"] = (x[:nb], p[:nb], {
            "forward": lambda x: naive_forward(x, g, PIXEL_MM),
            "backproject": lambda p: naive_backproject(p, g, PIXEL_MM, shape),
            "fbp": lambda p: naive_fbp(p, g, PIXEL_MM, shape),
            "low_dose_cycle": lambda x: naive_fbp(_noise(naive_forward(x, g, PIXEL_MM)), g, PIXEL_MM, shape)})
    if has_astra:
        fp, bp, fbp = astra_ops(g, shape[0], dev.type == "cuda")

        def cycle(xs) -> None:
            sino = torch.from_numpy(np.stack(fp(xs))) * PIXEL_MM
            fbp((_noise(sino) / PIXEL_MM).numpy())
        ops = {"forward": fp, "backproject": bp, "transpose": bp}
        if fbp:
            ops.update(fbp=fbp, low_dose_cycle=cycle)
        impls["astra"] = (x[:nb].cpu().numpy(), (p[:nb].cpu() / PIXEL_MM).numpy(), ops)
    rows = []
    for name, (xs, ps, ops) in impls.items():
        row = {"geometry": kind, "views": views, "impl": name, "slices": len(xs)}
        if name == "medq-synth":
            row["max_rel_err_vs_torch"] = check
        for op in OPS:
            fn = ops.get(op)
            row[op] = 1.0 / timed(fn, xs if op in ("forward", "low_dose_cycle") else ps, dev, a.repeats) \
                if fn else None
        rows.append(row)
        print(f"{kind:8} {views:4} {name:18} " + "  ".join(
            f"{op} {row[op]:8.2f}/s" if row[op] else f"{op} n/a" for op in OPS), flush=True)
    ours = rows[0]
    for row in rows[1:]:
        print(f"{'':14} medq-synth / {row['impl']}: " + "  ".join(
            f"{op} {ours[op] / row[op]:.1f}x" for op in OPS if row[op] and ours[op]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--views", type=int, nargs="+", default=[360, 720])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-batch", type=int, default=0, help="slices timed for naive and astra (0: --batch)")
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--no-astra", action="store_true")
    ap.add_argument("--threads", type=int, default=0,
                    help="CPU threads for ours (0: torch's default); astra's CPU projectors use one")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args()
    dev = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)        # the numba kernels follow torch's thread count
    torch.manual_seed(0)
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    ph = torch.from_numpy(resize(shepp_logan_phantom(), (a.size, a.size), anti_aliasing=True)).float() * 0.02
    x = ph[None].repeat(a.batch, 1, 1).to(dev)
    shape = (a.size, a.size)
    try:
        import astra  # noqa: F401
        has_astra = not a.no_astra
    except ImportError:
        has_astra = False
    rows = [row for kind in ("parallel", "fan") for views in a.views
            for row in bench_config(kind, views, x, shape, dev, a, has_astra)]
    meta = {**base_meta(dev), "size": a.size, "batch": a.batch, "baseline_batch": a.baseline_batch or a.batch,
            "repeats": a.repeats, "pixel_mm": PIXEL_MM, "backend": K.backend(dev)}
    if meta["backend"] == "numba":
        import numba

        meta["numba"] = numba.__version__
    try:
        import astra

        meta["astra"] = astra.__version__
    except ImportError:
        pass
    cells = []
    for r in rows:
        cells.append([r["geometry"], str(r["views"]), f"{r['impl']} ({r['slices']} slices)"]
                     + [f"{r[op]:.2f}" if r[op] else "n/a" for op in OPS])
        if r["impl"] != "medq-synth":
            ours = next(o for o in rows if o["impl"] == "medq-synth" and o["geometry"] == r["geometry"]
                        and o["views"] == r["views"])
            # like with like only: astra's "backprojection" is its projector's transpose, not FBP's
            unlike = {"backproject"} if r["impl"] == "astra" else set()
            cells.append(["", "", f"medq-synth / {r['impl']}"]
                         + ["(other operator)" if op in unlike and r[op] else f"{ours[op] / r[op]:.1f}x" if r[op]
                            else "" for op in OPS])
    stem = f"ct_bench_{dev.type}" + (f"_{a.threads}thread" if a.threads else "")
    write_results(a.out, stem, meta, rows,
                  f"CT operators: slices/s at {a.size}x{a.size}, batch {a.batch}",
                  ["geometry", "views", "implementation", "forward", "backprojection", "FBP", "low-dose cycle",
                   "transpose"], cells,
                  ["Correctness, checked first on two slices per configuration (max relative error of our forward "
                   "projection and FBP backprojection against the torch reference): "
                   + "; ".join(f"{r['geometry']} {r['views']}: " + ", ".join(
                       f"{k} {v:.1e}" for k, v in r["max_rel_err_vs_torch"].items())
                       for r in rows if r["impl"] == "medq-synth") + ".",
                   "The low-dose cycle is forward projection, Poisson + electronic noise, log, filter and "
                   "backprojection. Backprojection: FBP's pixel-driven one for medq-synth and the naive baseline, "
                   "the projector's transpose for astra (its only backprojector), so that column has no ratio: "
                   "compare transpose with transpose. astra runs one slice at a time on one thread; its CPU FBP is "
                   "parallel-beam only (n/a). cpu_threads is the thread count of ours."])


if __name__ == "__main__":
    main()
