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


def timed_run(out: Path, device: str, sources: list[str] | None, **engine) -> tuple[float, int, float | None]:
    """Wall time, answers, and the seconds spent inside the Ray actors' calls (all stages; None locally)."""
    from medq_synth.eval.api import run

    t0 = time.perf_counter()
    m = run(out, device=device, progress=False, n_boot=200, sources=sources, **engine)
    stages = (m["run"].get("stages") or {}).get("stages")
    busy = sum(s["busy_s"] for s in stages) if stages else None
    return time.perf_counter() - t0, int(m["run"]["answered"]), busy


class _Importer:
    """An actor that only imports the engine: what an actor pool costs before any work."""

    def __init__(self) -> None:
        import medq_synth.engine  # noqa: F401

    def __call__(self, batch):
        return batch


def empty_pipeline_s() -> float:
    import ray

    t0 = time.perf_counter()
    ds = ray.data.from_items([{"x": 0}]).map_batches(_Importer, batch_size=1,
                                                      compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
    list(ds.iter_rows())
    return time.perf_counter() - t0


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
    empty_s = empty_pipeline_s()
    rows, cells = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for job, sources, configs in jobs:
            base = None
            for i, (name, kw) in enumerate(configs):
                wall, n, busy = timed_run(Path(tmp) / f"{job}-{i}", a.device, sources, **kw)
                base = base or wall
                row = {"job": job, "engine": name, "wall_s": round(wall, 2), "answered": n,
                       "items_per_s": round(n / wall, 2), "time_vs_local": round(wall / base, 3),
                       "actor_busy_s": None if busy is None else round(busy, 2)}
                rows.append(row)
                cells.append([job, name, f"{wall:.1f}", str(n), f"{n / wall:.1f}", f"{wall / base:.2f}x",
                              "-" if busy is None else f"{busy:.1f}"])
                print(row, flush=True)
    meta = {**base_meta(a.device), "ray": ray.__version__, "cluster_cpus": int(ray.cluster_resources().get("CPU", 0)),
            "cluster_gpus": gpus, "cluster_start_s": round(cluster_s, 1), "empty_actor_pipeline_s": round(empty_s, 2)}
    def overhead(job: str, fused: bool) -> str:
        local = next(r for r in rows if r["job"] == job and r["engine"] == "local")
        one = next(r for r in rows if r["job"] == job and r["engine"].startswith("ray, 1 worker")
                   and ("fused" in r["engine"]) == fused)
        return f"{100 * (one['time_vs_local'] - 1):+.1f} % ({one['wall_s'] - local['wall_s']:+.1f} s)"

    write_results(a.out, f"scale_bench_{torch.device(a.device).type}", meta, rows,
                  "Scale-out: local engine against Ray (same process, one running cluster)",
                  ["job", "engine", "wall time (s)", "answers", "items/s", "time vs local",
                   "time inside the actors' calls (s, all stages)"], cells,
                  [f"Overhead of Ray with one worker on the default job: {overhead('default', False)} with the model "
                   f"as a second stage, {overhead('default', True)} fused; on the 4x job: "
                   f"{overhead('phantoms:24', False)} and {overhead('phantoms:24', True)}. An actor pipeline that "
                   f"only imports the engine takes {empty_s:.1f} s. Cluster start-up ({cluster_s:.1f} s) is not "
                   "included: a job joins a running cluster through RAY_ADDRESS."])


if __name__ == "__main__":
    main()
