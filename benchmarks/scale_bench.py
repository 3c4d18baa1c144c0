"""Scale-out: the README's default job (`medq-synth run`: phantoms, every default degradation, the cho
observer) with the local engine against Ray with 1 and 2 degradation workers, the model fused into the
workers (the default without GPUs) and as a second stage; then a 4x larger job (phantoms:24), local against
Ray with one worker. On a GPU node: one worker and one model replica per GPU. Prints items/s and the ratio of
each Ray run's time to the local run's; writes benchmarks/results/scale_bench_<device>.md/json.

Every timed run is a fresh process, as a user's command is (cold: no cache in memory but the observer's on
disk, which a first untimed run fills), and the configurations are interleaved round by round, so that the
drift of a shared machine falls on all of them alike. Each process imports the package and, for Ray, joins
the running cluster (through RAY_ADDRESS, as users do) before its clock starts: the job's time is `run()`'s.
The process's whole wall time, start-up and connection included, is reported beside it. The cluster is
started once, before the rounds, and one untimed actor pipeline runs on it first (a running cluster has
served jobs before; its start-up is reported apart).

    python benchmarks/scale_bench.py                  # CPU: 3 rounds (the committed result)
    python benchmarks/scale_bench.py --device cuda    # GPU node: local on one GPU, ray with every GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import base_meta, write_results

ROOT = Path(__file__).resolve().parents[1]


def one_run(spec: dict) -> dict:
    """The child: import, join the cluster when asked, then time ``run()`` alone."""
    from medq_synth.eval.api import run

    engine = spec.get("engine", {})
    if engine:
        from medq_synth.scale import connect

        connect()
    t0 = time.perf_counter()
    m = run(spec["out"], device=spec["device"], progress=False, n_boot=200, sources=spec["sources"], **engine)
    wall = time.perf_counter() - t0
    stages = (m["run"].get("stages") or {}).get("stages") or []
    return {"wall_s": wall, "answered": int(m["run"]["answered"]),
            "stages": [{k: s.get(k) for k in ("stage", "workers", "units_at_once", "busy_s")} for s in stages]}


def child(spec: dict, env: dict) -> dict:
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, capture_output=True,
                       text=True, cwd=ROOT)
    if p.returncode:
        raise RuntimeError(f"{spec}: exit {p.returncode}\n{p.stderr[-3000:]}")
    got = json.loads(p.stdout.strip().splitlines()[-1])
    got["process_s"] = time.perf_counter() - t0
    return got


class _Importer:
    """An actor that only imports the engine: what an actor pool costs before any work."""

    def __init__(self) -> None:
        import medq_synth.engine  # noqa: F401

    def __call__(self, batch):
        return batch


def empty_pipeline_s(ray) -> float:
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"x": 0}]).map_batches(_Importer, batch_size=1,
                                                      compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
    list(ds.iter_rows())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the default job")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one_run(json.loads(a.child))))
        return
    import ray

    from medq_synth.eval.backends.cho_reader import SPECS, reader_for

    for m in SPECS:                      # train (or load) the observer once: every run reads it from disk
        reader_for(m)
    t0 = time.perf_counter()
    ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    cluster_s = time.perf_counter() - t0
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    empty_pipeline_s(ray)                # the cluster's first job (untimed), then the one we report
    empty_s = empty_pipeline_s(ray)
    gpus = int(ray.cluster_resources().get("GPU", 0)) if a.device != "cpu" else 0
    ray_kw = lambda w, r: {"engine": "ray", "workers": w, "replicas": r}      # noqa: E731
    configs = [("local", {})]
    for w in sorted({1, gpus}) if gpus else [1, 2]:
        if gpus:
            configs += [(f"ray, {w} worker(s) + {w} model replica(s) (default)", ray_kw(w, None)),
                        (f"ray, {w} worker(s), model fused in", ray_kw(w, 0))]
        else:
            configs += [(f"ray, {w} worker(s), model fused in (default)", ray_kw(w, None)),
                        (f"ray, {w} worker(s) + 1 model replica", ray_kw(w, 1))]
    big = [("local", {}), (configs[1][0], configs[1][1]), (configs[2][0], configs[2][1])]
    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plan = [("default", None, r, c) for r in range(a.rounds) for c in configs]
        plan += [("phantoms:24", ["phantoms:24"], 0, c) for c in big]
        for k, (job, sources, r, (name, kw)) in enumerate(plan):
            spec = {"out": str(Path(tmp) / f"{k}"), "device": a.device, "sources": sources, "engine": kw}
            got = child(spec, env)
            runs.setdefault((job, name), []).append(got)
            print(job, f"round {r + 1}", name, {k: (round(v, 2) if isinstance(v, float) else v)
                                                  for k, v in got.items() if k != "stages"}, flush=True)
    cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
    ray.shutdown()
    rows, cells = [], []
    for job in ("default", "phantoms:24"):
        local = runs[(job, "local")]
        for name, _ in (configs if job == "default" else big):
            rs = runs[(job, name)]
            walls = [g["wall_s"] for g in rs]
            # the ratio of each round's Ray run to the same round's local run, then the median of those
            ratios = [g["wall_s"] / loc["wall_s"] for g, loc in zip(rs, local, strict=True)]
            procs = [g["process_s"] / loc["process_s"] for g, loc in zip(rs, local, strict=True)]
            med = statistics.median(walls)
            row = {"job": job, "engine": name, "rounds": len(rs), "wall_s": round(med, 2),
                   "wall_s_all": [round(w, 2) for w in walls], "answered": rs[0]["answered"],
                   "items_per_s": round(rs[0]["answered"] / med, 2),
                   "time_vs_local": round(statistics.median(ratios), 3),
                   "time_vs_local_all": [round(x, 3) for x in ratios],
                   "process_vs_local": round(statistics.median(procs), 3),
                   "process_s": round(statistics.median(g["process_s"] for g in rs), 2),
                   "stages": rs[-1]["stages"]}
            rows.append(row)
            cells.append([job, name, str(len(rs)), f"{med:.1f} ({min(walls):.1f}-{max(walls):.1f})",
                          str(row["answered"]), f"{row['items_per_s']:.1f}",
                          f"{row['time_vs_local']:.2f}x ({min(ratios):.2f}-{max(ratios):.2f})",
                          f"{row['process_s']:.1f}", f"{row['process_vs_local']:.2f}x"])
    meta = {**base_meta(a.device), "ray": ray.__version__, "cluster_cpus": cluster_cpus, "cluster_gpus": gpus,
            "cluster_start_s": round(cluster_s, 1), "empty_actor_pipeline_s": round(empty_s, 2)}

    def overhead(job: str, name: str) -> str:
        r = next(r for r in rows if r["job"] == job and r["engine"] == name)
        return f"{100 * (r['time_vs_local'] - 1):+.1f} %"

    write_results(a.out, f"scale_bench_{torch.device(a.device).type}", meta, rows,
                  "Scale-out: local engine against Ray (a fresh process per run, one running cluster)",
                  ["job", "engine", "rounds", "job time, median (range) (s)", "answers", "items/s",
                   "time vs local, median of rounds (range)", "process wall, median (s)", "process vs local"],
                  cells,
                  [f"Overhead of Ray with one worker on the default job: {overhead('default', configs[1][0])} "
                   f"({configs[1][0]}), {overhead('default', configs[2][0])} ({configs[2][0]}); on the 4x job "
                   f"{overhead('phantoms:24', big[1][0])} and {overhead('phantoms:24', big[2][0])}. The job time "
                   "is run()'s, in a process that has imported the package and joined the cluster; the process "
                   "wall adds Python's start-up, the imports, joining the cluster and leaving it. An actor "
                   f"pipeline that only imports the engine takes {empty_s:.1f} s; starting the cluster "
                   f"({cluster_s:.1f} s) is not included."])


if __name__ == "__main__":
    main()
