"""Scale-out: the README's default job (`medq-synth run`: phantoms, every default degradation, the cho
observer) with the local engine, then on Ray with 1 and 2 degradation workers, each with the model as a
second stage (one replica) and fused into the workers (`--replicas 0`); then a 4x larger job (phantoms:24)
local against Ray with one worker, to separate Ray's fixed cost from its per-item cost. On a GPU node: one
worker and one replica per GPU. All in one process against one Ray cluster. Prints items/s and the ratio of
each Ray run's time to the local run's; writes benchmarks/results/scale_bench_<device>.md/json.

The cluster is started before the timed runs (its start-up is reported apart): users point `RAY_ADDRESS`
at a running cluster, so a job does not pay for it. Each timed run starts its own actors (a fresh
process, imports, the trained observer from the on-disk cache), and every run writes a fresh folder.

    python benchmarks/scale_bench.py                  # CPU: local, ray x1, ray x2 (the committed result)
    python benchmarks/scale_bench.py --device cuda    # GPU node: local on one GPU, ray with every GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _common import base_meta, write_results

ROOT = Path(__file__).resolve().parents[1]


def timed_run(out: Path, device: str, sources: list[str] | None, **engine) -> tuple[float, int]:
    from medq_synth.eval.api import run

    t0 = time.perf_counter()
    m = run(out, device=device, progress=False, n_boot=200, sources=sources, **engine)
    return time.perf_counter() - t0, int(m["run"]["answered"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    import ray

    from medq_synth.eval.backends.cho_reader import SPECS, reader_for
    from medq_synth.scale import connect

    for m in SPECS:                      # train (or load) the observer once, outside every timed run
        reader_for(m)
    t0 = time.perf_counter()
    connect()
    cluster_s = time.perf_counter() - t0
    gpus = int(ray.cluster_resources().get("GPU", 0)) if a.device != "cpu" else 0
    ray_kw = lambda w, r: {"engine": "ray", "workers": w, "replicas": r}      # noqa: E731
    sizes = sorted({1, gpus}) if gpus else [1, 2]
    default = [("local", {})]
    for w in sizes:
        default += [(f"ray, {w} worker(s) + {max(1, gpus and w)} model replica(s)", ray_kw(w, max(1, gpus and w))),
                    (f"ray, {w} worker(s), model fused in", ray_kw(w, 0))]
    jobs = [("default", None, default),
            ("phantoms:24", ["phantoms:24"], [("local", {}), ("ray, 1 worker + 1 model replica", ray_kw(1, 1)),
                                              ("ray, 1 worker, model fused in", ray_kw(1, 0))])]
    rows, cells = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for job, sources, configs in jobs:
            base = None
            for i, (name, kw) in enumerate(configs):
                wall, n = timed_run(Path(tmp) / f"{job}-{i}", a.device, sources, **kw)
                base = base or wall
                row = {"job": job, "engine": name, "wall_s": round(wall, 2), "answered": n,
                       "items_per_s": round(n / wall, 2), "time_vs_local": round(wall / base, 3)}
                rows.append(row)
                cells.append([job, name, f"{wall:.1f}", str(n), f"{n / wall:.1f}", f"{wall / base:.2f}x"])
                print(row, flush=True)
    meta = {**base_meta(a.device), "ray": ray.__version__, "cluster_cpus": int(ray.cluster_resources().get("CPU", 0)),
            "cluster_gpus": gpus, "cluster_start_s": round(cluster_s, 1)}
    def overhead(job: str, fused: bool) -> str:
        local = next(r for r in rows if r["job"] == job and r["engine"] == "local")
        one = next(r for r in rows if r["job"] == job and r["engine"].startswith("ray, 1 worker")
                   and ("fused" in r["engine"]) == fused)
        return f"{100 * (one['time_vs_local'] - 1):+.1f} % ({one['wall_s'] - local['wall_s']:+.1f} s)"

    write_results(a.out, f"scale_bench_{torch.device(a.device).type}", meta, rows,
                  "Scale-out: local engine against Ray (same process, one running cluster)",
                  ["job", "engine", "wall time (s)", "answers", "items/s", "time vs local"], cells,
                  [f"Overhead of Ray with one worker on the default job: {overhead('default', False)} with the model "
                   f"as a second stage, {overhead('default', True)} fused; on the 4x job: "
                   f"{overhead('phantoms:24', False)} and {overhead('phantoms:24', True)}. Cluster start-up "
                   f"({cluster_s:.1f} s) is not included: a job joins a running cluster through RAY_ADDRESS."])


if __name__ == "__main__":
    main()
