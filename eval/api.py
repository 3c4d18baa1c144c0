"""Python API of ``medq-synth run``, ``eval`` and ``report``."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .backends import Backend, BackendError, Decoding, load_backend
from .datasets import engine_batches, generated_batches, tsv_batches
from .prompts import check_template
from .records import Setting
from .report import write_report
from .runner import FailureSheet, LoopStats, evaluate
from .store import Store


class EvalError(Exception):
    """The evaluation cannot start (bad model spec, no data): the message says why."""


def _backend(model: str | Backend, device: str, options: dict[str, Any] | None = None) -> Backend:
    if isinstance(model, Backend):
        return model
    try:
        return load_backend(model, device=device, **(options or {}))
    except BackendError as e:
        raise EvalError(str(e)) from None


def _finish(out: Path, store: Store, setting: Setting, stats: LoopStats, extra: dict[str, Any],
            judge: str | Backend | None, device: str, n_boot: int) -> dict[str, Any]:
    if judge is not None:
        from .judge import judge_records

        jb = _backend(judge, device)
        failures = judge_records(jb, [r for r in store.records.values() if r["label"] == setting.label])
        store.rewrite()
        store.error(failures)
    info = {"run": {**extra, "model": setting.model, "label": setting.label, "template": setting.template,
                    "decoding": asdict(setting.decoding), **stats.to_json()}}
    metrics = write_report(out, list(store.records.values()), store.unresolved(), [out], info, n_boot)
    m = metrics["labels"].get(setting.label) or {}
    if not m.get("n") and m.get("n_abstained"):
        reasons = "; ".join(sorted(m["abstain_reasons"]))[:400]
        raise EvalError(f"{setting.model} could read none of the {m['n_abstained']} questions, so there is no "
                        f"accuracy to report ({reasons}); choose a model with --model")
    return metrics


def run(out: str | Path, model: str | Backend = "cho", sources: list[str] | None = None,
        degradations: list[str] | None = None, levels: tuple[int, ...] = (0, 1, 2),
        severities: tuple[float, ...] = (), seed: int = 0, device: str = "auto", batch_size: int = 16,
        limit: int | None = None, template: str = "medq-deg", decoding: Decoding | None = None,
        model_batch_size: int = 8, label: str | None = None, progress: bool = True, judge: str | None = None,
        n_boot: int = 1000, backend_options: dict[str, Any] | None = None, parser: str = "",
        modality: str | None = None, on_record: Any = None, severities_file: str | None = None,
        engine: str = "local", workers: int | None = None, replicas: int | None = None,
        phase_encode: str | None = None, mpp: float | None = None) -> dict[str, Any]:
    """Degrade on ``device`` and answer (``medq-synth run``); returns metrics.json. ``backend_options`` go to
    the backend's constructor (hf: ``dtype``, ``processor_kwargs``). ``engine="ray"``: both stages on a Ray
    cluster (``workers`` degradation actors, ``replicas`` model replicas; ``medq_synth.scale``)."""
    from medq_synth.engine import GenerateError, Generator

    out = Path(out)
    decoding = decoding or Decoding()
    try:
        check_template(template)
        gen = Generator(sources or ["phantoms"], out, degradations=degradations, levels=levels,
                        severities=severities, seed=seed, device=device, batch_size=batch_size, limit=limit,
                        progress=False, modality=modality, severities_file=severities_file, engine=engine,
                        workers=workers, phase_encode=phase_encode, mpp=mpp)
    except (GenerateError, ValueError) as e:
        raise EvalError(str(e)) from None
    # on Ray, a model spec is loaded by each replica on its own device, not here (the majority baseline,
    # which needs the whole set's answers, is fitted here and shipped)
    remote_spec = engine == "ray" and isinstance(model, str) and model != "majority"
    backend = None if remote_spec else _backend(model, device, backend_options)
    name = model if isinstance(model, str) else backend.name
    setting = Setting(model=name, label=label or name, template=template, decoding=decoding,
                      data_tag=f"seed={seed}", parser=parser)
    store = Store(out)
    store.error(gen.run_errors)
    if backend is not None and backend.needs_prior:
        backend.fit(_gold_answers(gen))
    from tqdm import tqdm

    # the engine advances by fractions of a source entry: show the count rounded
    bar = tqdm(total=None, desc="degrade", unit="entry", disable=not progress, position=0, dynamic_ncols=True,
               bar_format="{desc}: {n:.0f} entries [{elapsed}, {rate_fmt}]")
    skipped: Counter = Counter()
    batches = engine_batches(gen, lambda s: not store.done(setting.key(s)), bar.update, skipped)
    sheet = FailureSheet(out)

    def record(sample, rec) -> None:
        sheet(sample, rec)
        if on_record is not None:           # e.g. the sweep's example strips
            on_record(sample, rec)

    stages = None
    try:
        if engine == "ray":
            from medq_synth.scale import ScaleError

            from .ray_llm import evaluate_vllm_ray
            from .ray_run import evaluate_ray

            try:
                if remote_spec and model.startswith("vllm:"):      # ray.data.llm's vLLM processor
                    stats, stream_errors, ray_skipped, stages = evaluate_vllm_ray(
                        gen, model.removeprefix("vllm:"), setting, store, model_batch_size, replicas, record,
                        on_record is not None, bar)
                else:
                    stats, stream_errors, ray_skipped, stages = evaluate_ray(
                        gen, model if remote_spec else backend, device, backend_options, setting, store,
                        model_batch_size, replicas, record, on_record is not None, bar)
            except ScaleError as e:
                raise EvalError(str(e)) from None
            skipped.update(ray_skipped)
            store.error(stream_errors)
        else:
            stats = evaluate(batches, backend, setting, store, model_batch_size, progress=progress,
                             on_record=record)
            store.error(getattr(gen, "stream_errors", []))
    except GenerateError as e:
        raise EvalError(str(e)) from None
    finally:
        bar.close()
    extra = {"command": "run", "sources": gen.source_specs, "degradations": [s.name for s in gen.selections],
             "levels": list(gen.levels), "severities": list(gen.severities), "seed": seed,
             "device": str(gen.device), "limit": limit, "skipped": dict(sorted(skipped.items())),
             "engine": engine, **({"stages": stages} if stages else {})}
    return _finish(out, store, setting, stats, extra, judge, device, n_boot)


def _gold_answers(gen) -> list[tuple[str, str | None]]:
    """(letters, gold) of every clean item with a question: the majority baseline's prior."""
    sources, refs = gen._open_sources()
    by_name = {s.name: s for s in sources}
    answers = []
    for ref in refs:
        items, _ = gen._load(by_name, ref, -1)
        answers += [("".join(sorted(it.qa.options)), it.qa.answer) for it in items if it.qa and it.qa.options]
    return answers


def evaluate_data(data: str | Path, out: str | Path, model: str | Backend = "cho", device: str = "auto",
                  template: str = "medq-deg", decoding: Decoding | None = None, model_batch_size: int = 8,
                  label: str | None = None, progress: bool = True, judge: str | None = None,
                  n_boot: int = 1000, backend_options: dict[str, Any] | None = None,
                  parser: str = "") -> dict[str, Any]:
    """Evaluate a generated folder or a VLMEvalKit TSV (``medq-synth eval``); returns metrics.json."""
    data, out = Path(data), Path(out)
    try:
        check_template(template)
    except ValueError as e:
        raise EvalError(str(e)) from None
    if not data.exists():
        raise EvalError(f"--data {data} does not exist")
    backend = _backend(model, device, backend_options)
    name = model if isinstance(model, str) else backend.name
    setting = Setting(model=name, label=label or name, template=template, decoding=decoding or Decoding(),
                      data_tag=f"data={data.resolve()}", parser=parser)
    store = Store(out)
    errors: list[dict[str, Any]] = []
    make = (lambda: generated_batches(data, errors)) if data.is_dir() else (lambda: tsv_batches(data, errors))
    if backend.needs_prior:
        backend.fit([(s.letters, s.answer) for b in make() for s in b if s.kind == "mcq"])
        errors.clear()
    stats = evaluate(make(), backend, setting, store, model_batch_size, progress=progress,
                     on_record=FailureSheet(out))
    store.error(errors)
    if stats.produced == 0:
        raise EvalError("no evaluable rows in --data: " + "; ".join(e["reason"] for e in errors[:5]))
    return _finish(out, store, setting, stats, {"command": "eval", "data": str(data)}, judge, device, n_boot)


def report(dirs: list[str | Path], out: str | Path = "report", n_boot: int = 1000) -> dict[str, Any]:
    """Merge the predictions of several run folders into one leaderboard (``medq-synth report``)."""
    paths = [Path(d) for d in dirs]
    records: dict[str, dict[str, Any]] = {}
    unresolved: list[dict[str, Any]] = []
    for d in paths:
        if not (d / "predictions.jsonl").exists():
            raise EvalError(f"{d} has no predictions.jsonl")
        st = Store(d)
        for k, r in st.records.items():
            records.setdefault(k, r)
        unresolved += st.unresolved()
    metrics = write_report(Path(out), list(records.values()), unresolved, paths, {"merged": [str(p) for p in paths]},
                           n_boot)
    return json.loads(json.dumps(metrics, default=float))
