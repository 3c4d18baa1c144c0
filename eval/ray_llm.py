"""``run --engine ray --model vllm:ID``: the model stage is ``ray.data.llm``'s vLLM processor
(``vLLMEngineProcessorConfig`` + ``build_processor``), fed by the same degradation stage as the other
backends (``eval.ray_run.Degrader``).

Each sample becomes one processor row: OpenAI-style ``messages`` (the images as PNG data URLs, then the
prompt) and ``sampling_params`` (greedy, ``logprobs`` = 20), the pickled sample carried along (the processor
carries every column to ``postprocess``). ``postprocess`` reads ``generated_text`` and the first generated
position's ``logprobs`` (``{token_id: {"logprob", "rank", "decoded_token"}}``, as Ray's vLLM stage writes
them) into letter probabilities exactly as the local vLLM backend does, and scores the record. Rows that
failed in the engine (``should_continue_on_error``: a non-empty ``__inference_error__``, which bypasses
postprocess) become errors with their key, asked again by the next run. A shard whose samples are all
answered or failed sends one placeholder row (one token, no image) so that its load / degrade errors still
reach the driver. Votes (``--trials``) are not offered on this path: the processor keeps one completion per
request; use ``--engine local`` for them."""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any

from medq_synth.scale import ScaleError, _gpus, _stage_stats, _workers, connect, dumps, loads

from .backends.base import Reply, renormalise
from .ray_run import shown
from .records import Setting, make_record
from .runner import LoopStats

TOP_LOGPROBS = 20


def explode(row: dict[str, Any]) -> list[dict[str, Any]]:
    """One processor row per sample of a shard payload; the shard's errors and skip counts ride on the
    first (a placeholder row when the shard has no sample left)."""
    samples = loads(row["samples"])
    meta = {"shard": int(row["shard"]), "deg": str(row["deg"]), "shard_errors": row["errors"],
            "skipped": row["skipped"], "degrade_s": float(row["degrade_s"])}
    blank = {"shard_errors": dumps([]), "skipped": dumps({}), "degrade_s": 0.0}
    if not samples:
        return [{**meta, "sample": b""}]
    return [{**(meta if i == 0 else {**meta, **blank}), "sample": dumps(s)} for i, s in enumerate(samples)]


def preprocess(setting: Setting, row: dict[str, Any]) -> dict[str, Any]:
    from .backends.openai import data_url

    carry = {k: row[k] for k in ("shard", "deg", "shard_errors", "skipped", "degrade_s", "sample")}
    if not row["sample"]:
        return {**carry, "messages": [{"role": "user", "content": "."}],
                "sampling_params": {"temperature": 0.0, "max_tokens": 1}}
    s = loads(row["sample"])
    content = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in s.images]
    content.append({"type": "text", "text": setting.prompt(s)})
    d = setting.decoding
    return {**carry, "messages": [{"role": "user", "content": content}],
            "sampling_params": {"temperature": 0.0, "max_tokens": d.max_new_tokens,
                                "logprobs": TOP_LOGPROBS if d.letter_probs else None}}


def _first_position(logprobs: Any) -> list[tuple[str, float]]:
    """(decoded token, log-probability) of the first generated position, most likely first."""
    if logprobs is None or len(logprobs) == 0:
        return []
    first = logprobs[0]
    entries = first.values() if isinstance(first, dict) else (v for _k, v in first)
    out = [(str(e.get("decoded_token") or ""), float(e["logprob"])) for e in entries if e is not None]
    return sorted(out, key=lambda t: -t[1])


def postprocess(setting: Setting, keep_all: bool, row: dict[str, Any]) -> dict[str, Any]:
    meta = {k: row[k] for k in ("shard", "deg", "shard_errors", "skipped", "degrade_s")}
    if not row["sample"]:
        return {**meta, "record": b"", "error": b"", "keep": b""}
    s = loads(row["sample"])
    top = _first_position(row.get("logprobs"))
    probs = None
    if top and s.letters and setting.decoding.letter_probs:
        mass = {c: 0.0 for c in s.letters}
        for tok, lp in top:
            if tok.strip().upper() in mass:
                mass[tok.strip().upper()] += math.exp(lp)
        probs = renormalise(mass, s.letters)
    reply = Reply(text=str(row.get("generated_text") or "").strip(), letter_probs=probs, first_logprobs=top or None)
    rec = make_record(s, setting, reply)
    keep = shown(keep_all, s, rec)
    return {**meta, "record": dumps(rec), "error": b"", "keep": dumps((s, rec)) if keep else b""}


def evaluate_vllm_ray(gen, model_id: str, setting: Setting, store, model_batch_size: int, replicas: int | None,
                      on_record, keep_all: bool, bar) -> tuple[LoopStats, list, Counter, dict]:
    """As ``ray_run.evaluate_ray``, with ``ray.data.llm``'s vLLM processor as the model stage."""
    import functools

    from .ray_run import Degrader, degrade_stage, work_units

    if setting.decoding.trials:
        raise ScaleError("--trials with vllm on --engine ray: ray.data.llm keeps one completion per request; "
                         "run the votes with --engine local")
    ray = connect()
    from ray.data import llm as ray_llm

    stats = LoopStats()
    t0 = time.perf_counter()
    _, shards = gen.shards()
    sizes = [len(s) for s in shards]
    workers = min(_workers(gen.workers), len(shards))
    n_replicas = replicas or max(1, _gpus())
    config = ray_llm.vLLMEngineProcessorConfig(
        model_source=model_id, batch_size=model_batch_size, concurrency=n_replicas,
        engine_kwargs={"max_logprobs": TOP_LOGPROBS, "limit_mm_per_prompt": {"image": 2}},
        chat_template_stage=True, tokenize_stage=True, detokenize_stage=True,
        prepare_multimodal_stage={"enabled": True}, should_continue_on_error=True)
    processor = ray_llm.build_processor(config, preprocess=functools.partial(preprocess, setting),
                                        postprocess=functools.partial(postprocess, setting, keep_all))
    units = work_units(gen, len(shards))
    units_per_shard = len(units) // max(1, len(shards))
    ds = ray.data.from_items(units, override_num_blocks=len(units))
    ds, concurrency = degrade_stage(ray, ds, Degrader, gen, setting, set(store.records), workers,
                                    gen.options["device"], workers + 1)
    ds = processor(ds.flat_map(explode))
    stream_errors: list = []
    skipped: Counter = Counter()
    degrade_s: list[float] = []
    seen_units: set[tuple[int, str]] = set()
    for row in ds.iter_rows():
        stream_errors += [e for e in loads(row["shard_errors"]) if e.get("stage") != "model"]
        skipped.update(loads(row["skipped"]))
        degrade_s.append(float(row["degrade_s"]))
        unit = (int(row["shard"]), str(row["deg"]))
        if unit not in seen_units:
            seen_units.add(unit)
            bar.update(sizes[unit[0]] / units_per_shard)
        failed = row.get("__inference_error__")
        if failed:
            if row["sample"]:
                s = loads(row["sample"])
                store.error([{"stage": "model", "key": setting.key(s), "item": s.output_id,
                              "model": setting.model, "reason": f"vLLM: {failed}"}])
                stats.failed += 1
            continue
        if row["record"]:
            store.add([loads(row["record"])])
            stats.answered += 1
            stats.produced += 1
        if row["keep"]:
            on_record(*loads(row["keep"]))
    stats.wall_s = time.perf_counter() - t0
    stages = {"engine": "ray", "wall_s": round(stats.wall_s, 3),
              "stages": [_stage_stats("degrade", workers, degrade_s, stats.produced + stats.failed, [], concurrency),
                         {"stage": "model (ray.data.llm vLLM)", "workers": n_replicas}]}
    return stats, stream_errors, skipped, stages
