"""``run --engine ray``: a degradation stage and a model stage on Ray Data actor pools, records into the same
store as the local loop (see ``medq_synth.scale`` for the engine's design and guarantees).

Stage 1 (``Degrader``, one actor per worker, holding its device): the samples of one shard, engine batch by
engine batch, only those whose result key is not in the store yet (resume), with the shard's load / degrade
errors and skip counts. Stage 2 (``Answerer``, one replica per GPU, or the requested number on CPUs): the
backend answers in chunks of ``--model-batch-size`` with the local loop's isolation (a failing chunk is
split until the failing query is alone), and scores. The driver appends records and errors as rows arrive.
A replica that dies is restarted by Ray and its batch retried; a query that keeps failing is recorded in
``errors.jsonl`` with its key, as in the local loop, and asked again by the next run."""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from typing import Any

from medq_synth.scale import (
    _actor_resources,
    _gpu_utilisation,
    _gpus,
    _stage_stats,
    _workers,
    actor_pool,
    connect,
    dumps,
    loads,
    on_gpus,
    unit_threads,
    use_threads,
)

from .records import Setting, make_record
from .runner import LoopStats, _answer_isolated


def shown(keep_all: bool, s, rec: dict) -> bool:
    """Whether an answer travels back with its images: a wrong one (the failure sheet's candidates), or
    every one when the caller keeps them all (a sweep's example strips)."""
    return keep_all or (s.kind == "mcq" and not rec.get("abstained") and not rec["correct"])


class Degrader:
    """Stage 1: the engine's samples of one (shard, degradation) unit. Units finer than the shard keep the
    model stage fed while the degradation stage works (a shard holds every degradation of its items). An
    actor may run several units at once (``medq_synth.scale.unit_threads``): the loaded shards are shared
    under a lock, and a shard's load errors travel with its first unit."""

    def __init__(self, options: dict[str, Any], setting: Setting, done: set[str], threads: int | None = None,
                 concurrency: int = 1) -> None:
        from medq_synth.engine import Generator

        use_threads(threads)
        self.gen = Generator(**options)
        self.by_name, self.shards = self.gen.shards()
        self.setting, self.done = setting, done
        self.loaded: OrderedDict[int, tuple[list, list]] = OrderedDict()      # shard -> (items, load errors)
        self.keep_loaded = concurrency + 1          # the shards in flight and the next one
        self.lock = threading.Lock()

    def _shard_items(self, index: int) -> tuple[list, list]:
        with self.lock:             # one load per shard, whichever unit of it comes first
            if index not in self.loaded:
                errors: list[dict] = []
                self.loaded[index] = (self.gen.load_shard(index, self.shards[index], self.by_name, errors), errors)
                while len(self.loaded) > self.keep_loaded:
                    self.loaded.popitem(last=False)
            self.loaded.move_to_end(index)
            return self.loaded[index]

    def _keep(self, job, skipped: Counter) -> bool:
        from .datasets import job_sample, skip_reason

        reason = skip_reason(job)
        if reason:
            skipped[reason] += 1
            return False
        return self.setting.key(job_sample(job, [])) not in self.done

    def _unit(self, index: int, deg: str, first: bool, errors: list[dict], skipped: Counter):
        """The unit's samples, engine batch by engine batch (the shard's load errors go with its first unit)."""
        from .datasets import engine_sample

        items, load_errors = self._shard_items(index)
        if first:
            errors += load_errors
        for results in self.gen.degrade_items(index, items, len(self.shards[index]), lambda _: None, errors,
                                              lambda job: deg in ("*", job.deg_name) and self._keep(job, skipped)):
            yield [engine_sample(r) for r in results]

    def __call__(self, batch: dict[str, Any]):
        for index, deg, first in zip(batch["shard"], batch["deg"], batch["first"], strict=True):
            index = int(index)
            t = time.perf_counter()
            errors: list[dict] = []
            skipped: Counter = Counter()
            samples = [s for part in self._unit(index, str(deg), bool(first), errors, skipped) for s in part]
            yield {"shard": [index], "deg": [str(deg)], "samples": [dumps(samples)], "errors": [dumps(errors)],
                   "skipped": [dumps(dict(skipped))], "degrade_s": [time.perf_counter() - t],
                   "degrade_gpu": [_gpu_utilisation()]}


class Answerer:
    """Stage 2: one model replica; answers and scores the samples of each row."""

    def __init__(self, model: Any, device: str, backend_options: dict[str, Any], setting: Setting, chunk: int,
                 keep_all: bool) -> None:
        from .api import _backend

        self.backend = _backend(model, device, backend_options)
        self.setting, self.chunk, self.keep_all = setting, chunk, keep_all

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, list] = {"shard": [], "records": [], "errors": [], "wrong": [], "model_s": [], "n": [],
                                "model_gpu": []}
        for i, payload in enumerate(batch["samples"]):
            samples = loads(payload)
            t = time.perf_counter()
            records, errors, wrong = [], loads(batch["errors"][i]), []
            for k in range(0, len(samples), self.chunk):
                part = samples[k: k + self.chunk]
                replies = _answer_isolated(self.backend, part, self.setting, self.setting.decoding)
                for s, r in zip(part, replies, strict=True):
                    if r.error:
                        errors.append({"stage": "model", "key": self.setting.key(s), "item": s.output_id,
                                       "model": self.setting.model, "reason": r.error})
                        continue
                    rec = make_record(s, self.setting, r)
                    records.append(rec)
                    if shown(self.keep_all, s, rec):
                        wrong.append((s, rec))
            out["shard"].append(batch["shard"][i])
            out["records"].append(dumps(records))
            out["errors"].append(dumps(errors))
            out["wrong"].append(dumps(wrong))
            out["model_s"].append(time.perf_counter() - t)
            out["n"].append(len(samples))
            out["model_gpu"].append(_gpu_utilisation())
        for k in ("skipped", "degrade_s", "degrade_gpu"):      # stage 1's figures pass through
            out[k] = batch[k]
        return out


class _Collect:
    """The part of the store's interface the local loop uses, in memory: a fused worker's records travel to
    the driver, which alone writes the store."""

    def __init__(self, done: set[str]) -> None:
        self.done_keys, self.records, self.errors = done, [], []

    def done(self, key: str) -> bool:
        return key in self.done_keys

    def add(self, records: list[dict]) -> None:
        self.records += records

    def error(self, entries: list[dict]) -> None:
        self.errors += entries


class _OneAtATime:
    """A backend that is not thread-safe, shared by an actor's concurrent units: one model call at a time
    (the units still degrade side by side)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.lock = backend, threading.Lock()

    def answer(self, queries, decoding):
        with self.lock:
            return self.backend.answer(queries, decoding)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


class Worker(Degrader):
    """The fused stage (``--replicas 0``): each worker degrades its units and answers them with its own model
    replica, overlapping the two with the local loop's producer thread, on its own device; no image crosses
    a process boundary. Suits nodes where one GPU holds both the synthesis and the model."""

    def __init__(self, options: dict[str, Any], setting: Setting, done: set[str], threads: int | None,
                 model: Any, device: str, backend_options: dict[str, Any], chunk: int, keep_all: bool,
                 concurrency: int = 1) -> None:
        from .api import _backend

        super().__init__(options, setting, done, threads, concurrency)
        backend = _backend(model, device, backend_options)
        self.backend = backend if backend.thread_safe or concurrency == 1 else _OneAtATime(backend)
        self.chunk, self.keep_all = chunk, keep_all

    def __call__(self, batch: dict[str, Any]):
        from .runner import evaluate

        for index, deg, first in zip(batch["shard"], batch["deg"], batch["first"], strict=True):
            t = time.perf_counter()
            errors: list[dict] = []
            skipped: Counter = Counter()
            coll, kept = _Collect(self.done), []
            stats = evaluate(self._unit(int(index), str(deg), bool(first), errors, skipped), self.backend,
                             self.setting, coll, self.chunk, progress=False,
                             on_record=lambda s, rec, kept=kept: kept.append((s, rec))
                             if shown(self.keep_all, s, rec) else None)
            wall = time.perf_counter() - t
            yield {"shard": [int(index)], "records": [dumps(coll.records)], "errors": [dumps(errors + coll.errors)],
                   "wrong": [dumps(kept)], "skipped": [dumps(dict(skipped))], "degrade_s": [wall - stats.model_s],
                   "model_s": [stats.model_s], "n": [stats.produced], "degrade_gpu": [_gpu_utilisation()],
                   "model_gpu": [None]}


def degrade_stage(ray: Any, ds: Any, cls: type, gen, setting: Setting, done: set[str], workers: int, device: str,
                  actors: int, extra: dict[str, Any] | None = None) -> tuple[Any, int]:
    """``ds`` mapped through a pool of ``workers`` stage-1 actors (``Degrader`` or the fused ``Worker``, with
    ``extra`` constructor arguments) on ``device``, ``actors`` counting every pool that must fit beside it;
    returns the dataset and the units each actor runs at once."""
    concurrency, threads = unit_threads(workers, device)
    compute, pool_args = actor_pool(ray, workers, concurrency)
    kwargs = {"options": gen.options, "setting": setting, "done": done, "threads": threads,
              "concurrency": concurrency, **(extra or {})}
    return ds.map_batches(cls, fn_constructor_kwargs=kwargs, batch_size=1, compute=compute, **pool_args,
                          **_actor_resources(device, actors)), concurrency


def work_units(gen, n_shards: int, whole_shards: bool = False) -> list[dict[str, Any]]:
    """(shard, degradation) units in the local engine's order: the clean outputs, then each model; or whole
    shards (``*``) for the fused stage, which overlaps degrading and answering inside the worker."""
    if whole_shards:
        return [{"shard": i, "deg": "*", "first": True} for i in range(n_shards)]
    names = ["none"] + list(dict.fromkeys(d.name for sel in gen.selections for d in sel.models))
    return [{"shard": i, "deg": d, "first": k == 0} for i in range(n_shards) for k, d in enumerate(names)]


def evaluate_ray(gen, model: Any, device: str, backend_options: dict[str, Any] | None, setting: Setting, store,
                 model_batch_size: int, replicas: int | None, on_record, keep_all: bool,
                 bar) -> tuple[LoopStats, list, Counter, dict]:
    """Run both stages over the shards not yet fully answered; returns (stats, load/degrade errors, skip
    counts, stage statistics). ``on_record(sample, record)`` sees each wrong answer (the failure sheet), or
    every answer with ``keep_all`` (a sweep's example strips), with its images."""
    ray = connect()
    stats = LoopStats()
    t0 = time.perf_counter()
    _, shards = gen.shards()
    workers = min(_workers(gen.workers), len(shards))
    # fused unless asked otherwise where the model has no GPU: a second stage would share the same cores and
    # ship every image between processes (measured: benchmarks/results/scale_bench_cpu.md)
    fused = replicas == 0 or (replicas is None and not on_gpus(device))
    n_replicas = workers if fused else (replicas or _gpus())
    sizes = [len(s) for s in shards]
    done = set(store.records)           # shipped with each actor's constructor (restartable, unlike a ref)
    units = work_units(gen, len(shards), whole_shards=fused)
    units_per_shard = len(units) // max(1, len(shards))
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    model_args = {"model": model, "device": device, "backend_options": backend_options or {},
                  "chunk": model_batch_size, "keep_all": keep_all}
    if fused:
        ds, concurrency = degrade_stage(ray, ds, Worker, gen, setting, done, workers, device, workers, model_args)
    else:
        ds, concurrency = degrade_stage(ray, ds, Degrader, gen, setting, done, workers, gen.options["device"],
                                        workers + n_replicas)
        ds = ds.map_batches(Answerer, fn_constructor_kwargs={**model_args, "setting": setting}, batch_size=1,
                            compute=ray.data.ActorPoolStrategy(size=n_replicas),
                            **_actor_resources(device, workers + n_replicas))
    stream_errors: list = []
    skipped: Counter = Counter()
    degrade_s, model_s, degrade_gpu, model_gpu, produced = [], [], [], [], 0
    for row in ds.iter_rows():
        records, errors = loads(row["records"]), loads(row["errors"])
        model_errors = [e for e in errors if e.get("stage") == "model"]
        stream_errors += [e for e in errors if e.get("stage") != "model"]
        store.add(records)
        store.error(model_errors)
        for s, rec in loads(row["wrong"]):
            on_record(s, rec)
        skipped.update(loads(row["skipped"]))
        stats.answered += len(records)
        stats.failed += len(model_errors)
        produced += int(row["n"])
        degrade_s.append(float(row["degrade_s"]))
        model_s.append(float(row["model_s"]))
        degrade_gpu.append(row["degrade_gpu"])
        model_gpu.append(row["model_gpu"])
        bar.update(sizes[int(row["shard"])] / units_per_shard)
    stats.produced = produced
    stats.model_s = sum(model_s)
    stats.wall_s = time.perf_counter() - t0
    stages = {"engine": "ray", "wall_s": round(stats.wall_s, 3),
              "stages": [_stage_stats("degrade" + (" (fused with the model)" if fused else ""), workers, degrade_s,
                                      produced, degrade_gpu, concurrency),
                         _stage_stats("model" + (" (in the degradation workers)" if fused else ""), n_replicas,
                                      model_s, produced, model_gpu)]}
    return stats, stream_errors, skipped, stages
