"""``--engine ray``: the same shards, degradations and records as the local engine, spread over a Ray cluster.

Ray Data runs the stages (``map_batches`` over actor pools, not a scheduler of our own):
- ``generate``: one stage of shard writers. Each actor rebuilds the run's Generator from its options, holds
  its device (``num_gpus=1`` per actor where the cluster has GPUs), and computes and commits whole shards
  into the shared output folder with the same writer as the local engine (PNGs, then the HDF5 shard, then
  the rows file that marks it complete). The driver reads the committed shards back, exactly as a resumed
  local run does, and writes the manifest.
- ``run``: a degradation stage (the same actors, yielding the samples of each engine batch) feeding a model
  stage with one replica per GPU (or per requested CPU replica), or with the model fused into the workers
  (``--replicas 0``, the default without GPUs), that answers and scores; the driver appends
  the records to the same store (``predictions.jsonl``, ``errors.jsonl``), so resume works across engines.
  ``vllm:`` models go through ``ray.data.llm``'s vLLM processor instead (``medq_synth.eval.ray_llm``).

Outputs depend only on (seed, item, degradation, level) and on the shard layout, never on which worker
computed what, so any number of workers writes the same files. Ray Data restarts a killed actor and retries
its task (its actor pools default to ``max_restarts=-1`` and ``max_task_retries=-1``); a shard is committed
atomically, so a retried shard is computed again from scratch, identically, and a shard another attempt
already committed is skipped: nothing lost, nothing twice.

Ray is an optional extra (``pip install medq-synth[ray]``), imported only here and only when asked for.
"""

from __future__ import annotations

import os
import pickle
import time
from typing import Any


class ScaleError(Exception):
    """Ray is missing or the cluster cannot run the job; the message says why."""


def connect() -> Any:
    """Join ``RAY_ADDRESS`` when set, else start (or reuse) a local cluster; returns the ray module."""
    try:
        import ray
    except ImportError as e:
        raise ScaleError(f"--engine ray needs Ray: pip install 'medq-synth[ray]' ({e})") from None
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 logging_level="WARNING")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False            # our own bars report progress
    ctx.print_on_execution_start = False
    import logging

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    return ray


def _gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def on_gpus(device: str) -> bool:
    """Whether actors hold a GPU each: the cluster has GPUs and the run may use them."""
    return device != "cpu" and _gpus() > 0


def _workers(asked: int | None) -> int:
    import ray

    if asked:
        return int(asked)
    return max(1, _gpus() or int(ray.cluster_resources().get("CPU", 1)) // 2)


def _actor_resources(device: str, actors: int = 1) -> dict[str, Any]:
    """One GPU per actor where the cluster has GPUs and the run may use them, else one CPU, or an equal
    share of the cluster's CPUs when ``actors`` (all stages together) would not fit: a pool that cannot
    start all its actors would wait for ever."""
    import ray

    if on_gpus(device):
        return {"num_gpus": 1, "num_cpus": 1}
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return {"num_cpus": min(1.0, cpus / max(1, actors))}


def unit_threads(workers: int, device: str) -> tuple[int, int]:
    """(units each stage-1 actor runs at once, torch threads per unit). On a GPU: one unit at a time (its
    batches fill the device; two would double its memory), with the actor's share of the CPUs as threads.
    On CPUs: one unit per core of the actor's share, on one torch thread each. Units are independent (every
    output has its own seed), so running them side by side is coarse-grained parallelism, where intra-op
    threads on a 256 x 256 batch mostly wait on each other (it is what lets one worker on 2 cores match the
    local engine despite the actor's start-up: ``benchmarks/results/scale_bench_cpu.md``)."""
    import ray

    share = max(1, int(ray.cluster_resources().get("CPU", 1)) // max(1, workers))
    if on_gpus(device):
        return 1, share
    return share, 1


def actor_pool(ray: Any, size: int, concurrency: int) -> tuple[Any, dict[str, Any]]:
    """Ray Data's actor pool of ``size`` actors, each running ``concurrency`` calls at once (the units are
    thread-safe), and the remote arguments that go with it: recent Ray takes the call limit on the
    strategy, older Ray as the actor's ``max_concurrency``."""
    import inspect

    params = inspect.signature(ray.data.ActorPoolStrategy).parameters
    if concurrency <= 1:
        return ray.data.ActorPoolStrategy(size=size), {}
    extra = {"enable_true_multi_threading": True} if "enable_true_multi_threading" in params else {}
    if "max_concurrent_calls_per_actor" in params:
        return ray.data.ActorPoolStrategy(size=size, max_concurrent_calls_per_actor=concurrency, **extra), {}
    return ray.data.ActorPoolStrategy(size=size, **extra), {"max_concurrency": concurrency}


def use_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


def _gpu_utilisation() -> float | None:
    try:
        import torch

        return float(torch.cuda.utilization()) if torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - pynvml missing or no NVML: not measured
        return None


class ShardWriter:
    """A generate worker: computes and commits whole shards (skipping any another attempt committed)."""

    def __init__(self, options: dict[str, Any], threads: int | None = None) -> None:
        from .engine import Generator

        use_threads(threads)
        self.gen = Generator(**options)
        self.by_name, self.shards = self.gen.shards()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = {"shard": [], "busy_s": [], "gpu_util": []}
        for index in batch["shard"]:
            index = int(index)
            t = time.perf_counter()
            if not self.gen.out.shard_done(index):
                self.gen._shard(index, self.shards[index], self.by_name, lambda _: None)
            out["shard"].append(index)
            out["busy_s"].append(time.perf_counter() - t)
            out["gpu_util"].append(_gpu_utilisation())
        return out


def _stage_stats(name: str, workers: int, busy: list[float], items: int, gpu: list[float | None],
                 units_at_once: int = 1) -> dict:
    """``busy_s``: the units' times summed (units an actor runs side by side each count in full)."""
    used = [float(g) for g in gpu if g is not None and g == g]        # None (or NaN through Arrow): unmeasured
    total = sum(busy)
    return {"stage": name, "workers": workers, "units_at_once": units_at_once, "busy_s": round(total, 3),
            "items": items, "items_per_busy_s": round(items / total, 3) if total else None,
            "gpu_utilisation_pct": round(sum(used) / len(used), 1) if used else None}


def commit_shards(gen, pending: list[int], shard_sizes: list[int], bar) -> dict[str, Any]:
    """Compute and commit ``pending`` shards on the cluster; returns the stage statistics."""
    ray = connect()
    if not pending:
        return {"engine": "ray", "stages": []}
    workers = min(_workers(gen.workers), len(pending))
    t0 = time.perf_counter()
    ds = ray.data.from_items([{"shard": i} for i in pending], override_num_blocks=len(pending))
    units, threads = unit_threads(workers, gen.options["device"])
    compute, pool_args = actor_pool(ray, workers, units)
    ds = ds.map_batches(ShardWriter, fn_constructor_kwargs={"options": gen.options, "threads": threads},
                        batch_size=1, compute=compute, **pool_args, **_actor_resources(gen.options["device"], workers))
    busy, gpu, done = [], [], set()
    for row in ds.iter_rows():
        done.add(int(row["shard"]))
        busy.append(float(row["busy_s"]))
        gpu.append(row["gpu_util"])
        bar.update(shard_sizes[int(row["shard"])])
    missing = sorted(set(pending) - done)
    if missing or not all(gen.out.shard_done(i) for i in pending):
        raise ScaleError(f"the cluster returned without committing shards {missing}")
    wall = time.perf_counter() - t0
    entries = sum(shard_sizes[i] for i in pending)
    return {"engine": "ray", "wall_s": round(wall, 3), "entries_per_s": round(entries / wall, 3) if wall else None,
            "stages": [_stage_stats("degrade+write", workers, busy, entries, gpu, units)]}


def dumps(obj: Any) -> bytes:
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes) -> Any:
    return pickle.loads(data)
