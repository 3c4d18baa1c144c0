"""The ``medq-synth`` command."""

from __future__ import annotations

import argparse
import sys


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _levels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in _csv_list(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"levels must be integers such as 0,1,2, not {text!r}") from None


def _engine_args(p: argparse.ArgumentParser, replicas: bool = False) -> None:
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local (one process) or ray (RAY_ADDRESS, else a local cluster; pip install medq-synth[ray])")
    p.add_argument("--workers", type=int, default=None,
                   help="ray: degradation actors (default: one per GPU, else half the cluster's CPUs)")
    if replicas:
        p.add_argument("--replicas", type=int, default=None,
                       help="ray: model replicas (default: one per GPU; without GPUs, 0: the model runs inside "
                            "each worker)")


def _acquisition_args(p: argparse.ArgumentParser) -> None:
    """Acquisition facts for files that record none (each output records the value used and its origin)."""
    p.add_argument("--phase-encode", type=str.lower, choices=("row", "col"), default=None,
                   help="MRI in-plane phase-encode direction where the file records none (DICOM "
                        "InPlanePhaseEncodingDirection, NIfTI dim_info): row = left-right (default), col = up-down")
    p.add_argument("--mpp", type=float, default=None, metavar="UM",
                   help="histopathology microns per pixel where the file records none (default 0.5, a 20x scan)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medq-synth", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="degrade items and write shards, PNGs and a manifest")
    g.add_argument("--source", action="append", default=None,
                   help="phantoms[:N], a VLMEvalKit .tsv, a .jsonl/.csv manifest or a folder (repeatable)")
    g.add_argument("--out", required=True, help="output folder (a rerun with the same arguments resumes)")
    g.add_argument("--degradations", type=_csv_list, default=None,
                   help="comma-separated names or MedQ-Deg ids (default: all that apply)")
    g.add_argument("--levels", type=_levels, default=(0, 1, 2), help="levels to render, e.g. 0,1,2")
    g.add_argument("--severity", type=float, nargs="+", default=(), metavar="S",
                   help="continuous severities in [0, 1] to render as well (L1 = 0.5, L2 = 1.0)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--batch-size", type=int, default=16)
    g.add_argument("--limit", type=int, default=None, help="first N source entries only")
    g.add_argument("--export-tsv", action="store_true", help="also write benchmark.tsv (VLMEvalKit format)")
    g.add_argument("--shard-items", type=int, default=16, help="source entries per shard (resume unit)")
    g.add_argument("--slices", default="middle", help="slice rule for volumes: middle, all or step:N")
    g.add_argument("--severities", default=None, metavar="FILE",
                   help="severity tables (TOML, as written by calibrate) replacing the packaged ones they name")
    g.add_argument("--modality", default=None,
                   help="modality of files that record none (PNG, JPEG, .npy, NIfTI) outside a folder named after one")
    _acquisition_args(g)
    g.add_argument("--no-progress", action="store_true")
    _engine_args(g)

    ls = sub.add_parser("list", help="list the registered degradations and their severity tables")
    ls.add_argument("--severities", default=None, metavar="FILE", help="show these tables instead of the packaged")

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", default="cho",
                       help="hf:PATH_OR_ID, vllm:ID, openai:MODEL@URL, cho (default: the channelized Hotelling "
                       "observer), observer (classical blob detector), random or majority")
    model.add_argument("--template", default="medq-deg", help="prompt template: medq-deg, medq-bench or verbal")
    model.add_argument("--parser", choices=("vlmevalkit", "cascade", "strict"), default="",
                       help="answer parser that scores accuracy (default: vlmevalkit, the released MedQ-Deg "
                            "evaluator, for the medq-deg template; cascade for the others); all three are reported")
    model.add_argument("--trials", type=int, default=0, help="T sampled answers per item for vote confidence")
    model.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the T trials")
    model.add_argument("--max-new-tokens", type=int, default=16)
    model.add_argument("--no-letter-probs", action="store_true", help="skip option-letter probabilities")
    model.add_argument("--model-batch-size", type=int, default=8, help="queries per model call")
    model.add_argument("--label", default=None, help="name of this model in reports (default: the spec)")
    model.add_argument("--judge", default=None, help="backend spec of the judge for reasoning items")
    model.add_argument("--dtype", default=None, help="hf: torch dtype (default bfloat16 on CUDA, float32 on CPU)")
    model.add_argument("--processor-arg", action="append", default=[], metavar="KEY=VALUE",
                       help="hf: processor option, JSON value (e.g. max_pixels=200704); repeatable")
    model.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    model.add_argument("--no-progress", action="store_true")

    r = sub.add_parser("run", parents=[model], help="degrade and evaluate in one process (no files in between)")
    r.add_argument("--source", action="append", default=None, help="as for generate (default: phantoms)")
    r.add_argument("--out", required=True, help="output folder (a rerun resumes and skips answered items)")
    r.add_argument("--degradations", type=_csv_list, default=None)
    r.add_argument("--levels", type=_levels, default=(0, 1, 2))
    r.add_argument("--severity", type=float, nargs="+", default=(), metavar="S")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=16, help="degradation batch size")
    r.add_argument("--limit", type=int, default=None)
    r.add_argument("--modality", default=None, help="as for generate")
    _acquisition_args(r)
    r.add_argument("--severities", default=None, metavar="FILE", help="as for generate")
    _engine_args(r, replicas=True)

    e = sub.add_parser("eval", parents=[model], help="evaluate a generate folder or a VLMEvalKit TSV")
    e.add_argument("--data", required=True, help="a folder written by generate, or a .tsv")
    e.add_argument("--out", required=True)

    sw = sub.add_parser("sweep", help="models x degradations x a severity grid: curves, breaking points (s50)")
    sw.add_argument("--out", required=True, help="output folder (a rerun with the same arguments resumes)")
    sw.add_argument("--model", action="append", default=None,
                    help="model spec, repeatable (default: cho); as for run")
    sw.add_argument("--grid", default="0:1:0.1", help="severities: start:stop:step (stop included) or a comma list")
    sw.add_argument("--source", action="append", default=None, help="as for generate (default: phantoms)")
    sw.add_argument("--degradations", type=_csv_list, default=None)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--device", default="auto")
    sw.add_argument("--limit", type=int, default=None)
    sw.add_argument("--batch-size", type=int, default=16)
    sw.add_argument("--model-batch-size", type=int, default=8)
    sw.add_argument("--template", default="medq-deg")
    sw.add_argument("--severities", default=None, metavar="FILE", help="as for generate")
    _engine_args(sw, replicas=True)
    sw.add_argument("--bootstrap", type=int, default=1000)
    sw.add_argument("--no-progress", action="store_true")

    cb = sub.add_parser("calibrate", help="choose L1/L2 per degradation from a measured target; write a table")
    cb.add_argument("--out", required=True, help="the severity table to write (TOML)")
    cb.add_argument("--target", default="ssim=0.9,0.8",
                    help="ssim=L1,L2 or psnr=L1,L2 (mean against L0), or reference=PAIRS.tsv (released L0 + L1/L2 "
                         "rows of the same base items)")
    cb.add_argument("--source", action="append", default=None, help="calibration items (default: phantoms)")
    cb.add_argument("--degradations", type=_csv_list, default=None)
    cb.add_argument("--seed", type=int, default=0)
    cb.add_argument("--device", default="auto")
    cb.add_argument("--limit", type=int, default=None)
    cb.add_argument("--step", type=float, default=0.05, help="severity grid step searched")
    cb.add_argument("--severities", default=None, metavar="FILE", help="the table to start from")
    cb.add_argument("--no-progress", action="store_true")

    rp = sub.add_parser("report", help="merge run folders into one leaderboard")
    rp.add_argument("dirs", nargs="+")
    rp.add_argument("--out", default="report", help="where to write the merged report (default: ./report)")
    rp.add_argument("--bootstrap", type=int, default=1000)

    sv = sub.add_parser("serve", help="serve a backend over an OpenAI-compatible API (for local checks)")
    sv.add_argument("--model", default="observer")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--device", default="auto")
    return p


def cmd_list(a: argparse.Namespace) -> int:
    from .degradations import registry_for
    from .registry import CATEGORIES

    try:
        registry = registry_for(a.severities)
    except ValueError as e:
        print(f"medq-synth list: error: {e}", file=sys.stderr)
        return 2
    for d in registry:
        mods = "all" if len(d.modalities) == 8 else ",".join(sorted(d.modalities))
        alias = d.table.medq_deg_id or "-"
        optin = "" if d.in_default else "  (opt-in: run when named)"
        print(f"{d.name}  [{CATEGORIES[d.category]}]  modalities: {mods}  MedQ-Deg id: {alias}{optin}")
        if d.table.description:
            print(f"    {d.table.description}")
        for p in d.table.params.values():
            floor = f"; at least {p.min_L1:g} / {p.min_L2:g} px" if p.min_L1 is not None else ""
            print(f"    {p.name}: L0 {p.identity:g}  L1 {p.L1:g}  L2 {p.L2:g}  ({p.unit}; {p.scale}{floor})")
            print(f"        provenance: {p.provenance}")
        if d.table.recorded:
            print("    recorded per output:")
            for name, text in d.table.recorded.items():
                print(f"      {name}: {text}")
    return 0


def _print_stages(stages: dict | None) -> None:
    """--engine ray: workers, busy time, items/s per busy second and GPU utilisation of each stage."""
    for st in (stages or {}).get("stages", []):
        gpu = st.get("gpu_utilisation_pct")
        rate = st.get("items_per_busy_s")
        print(f"ray stage {st['stage']}: {st['workers']} actor(s)"
              + (f" x {st['units_at_once']} units at once" if st.get("units_at_once", 1) > 1 else "")
              + (f", {st['items']} items, {st['busy_s']:.1f} s busy, {rate} items/s busy" if "busy_s" in st else "")
              + (f", GPU {gpu:.0f} %" if gpu is not None else ""))


def cmd_generate(a: argparse.Namespace) -> int:
    from .engine import GenerateError, generate

    try:
        s = generate(a.source or ["phantoms"], a.out, degradations=a.degradations, levels=a.levels,
                     severities=tuple(a.severity), seed=a.seed, device=a.device, batch_size=a.batch_size,
                     limit=a.limit, export_tsv=a.export_tsv, shard_items=a.shard_items, slice_rule=a.slices,
                     modality=a.modality, severities_file=a.severities, engine=a.engine, workers=a.workers,
                     phase_encode=a.phase_encode, mpp=a.mpp, progress=not a.no_progress)
    except GenerateError as e:
        print(f"medq-synth generate: error: {e}", file=sys.stderr)
        return 2
    rate = s.n_items / s.elapsed_s if s.elapsed_s else 0.0
    print(f"\n{s.n_outputs} outputs from {s.n_items} items in {s.elapsed_s:.1f} s ({rate:.2f} items/s)"
          + (f", {s.resumed_shards} shards resumed" if s.resumed_shards else ""))
    print(s.table())
    _print_stages(s.stages)
    if s.noise_hu:
        print("\nCT: std of the change in water-equivalent pixels (-100..100 HU), mean over items")
        print(s.noise_table())
    _print_errors(s.errors, s.out / "errors.jsonl")
    print(f"\nmanifest: {s.out / 'manifest.jsonl'}\ncontact sheet: {s.out / 'contact_sheet.png'}")
    return INTERNAL_ERROR if s.internal_errors else 0


INTERNAL_ERROR = 3      # exit status of a run that finished but met bugs of ours (bad input alone exits 0)


def _print_errors(errors: list[dict], path) -> None:
    """Bad input (a clear reason; the run goes on) apart from internal errors (bugs: reported, exit 3)."""
    bad = [e for e in errors if e.get("kind") != "internal" and e.get("stage") not in ("model", "judge")]
    internal = [e for e in errors if e.get("kind") == "internal"]
    for title, group in ((f"{len(bad)} bad inputs skipped", bad),
                         (f"{len(internal)} INTERNAL ERRORS (bugs in medq-synth; please report them)", internal)):
        if not group:
            continue
        print(f"\n{title} (see {path}):")
        for e in group[:20]:
            where = f" [{e['where']}]" if e.get("where") else ""
            print(f"  - {e.get('item') or e.get('degradation') or e.get('source')}: {e['reason']}{where}")
        if len(group) > 20:
            print(f"  ... and {len(group) - 20} more")


def _print_eval(metrics: dict, out: str) -> None:
    from .eval.report import level_table

    info = metrics.get("run", {})
    if info.get("wall_s"):
        print(f"\n{info['answered']} answered ({info['skipped_done']} already done, {info['failed']} failed) in "
              f"{info['wall_s']:.1f} s: {info['items_per_s'] or 0:.2f} items/s end to end, "
              f"{info['model_items_per_s'] or 0:.2f} items/s in the model")
    for reason, n in (info.get("skipped") or {}).items():
        print(f"not asked: {n} outputs ({reason})")
    _print_stages(info.get("stages"))
    print(level_table(metrics))
    if metrics.get("n_judge_errors"):
        print(f"{metrics['n_judge_errors']} judge axes failed (recorded in {out}/errors.jsonl; a rerun asks again)")
    print(f"\npredictions: {out}/predictions.jsonl\nreport: {out}/report.md, {out}/report.html")


def _backend_options(a: argparse.Namespace) -> dict:
    """hf-only options, passed only when given (other backends take none)."""
    import json

    opts: dict = {}
    if a.dtype:
        opts["dtype"] = a.dtype
    if a.processor_arg:
        kwargs = {}
        for item in a.processor_arg:
            key, sep, value = item.partition("=")
            if not sep:
                raise SystemExit(f"--processor-arg needs KEY=VALUE, not {item!r}")
            try:
                kwargs[key] = json.loads(value)
            except json.JSONDecodeError:
                kwargs[key] = value
        opts["processor_kwargs"] = kwargs
    return opts


def cmd_eval(a: argparse.Namespace) -> int:
    from .eval.api import EvalError, evaluate_data, report, run
    from .eval.backends import Decoding

    try:
        if a.command == "report":
            metrics = report(a.dirs, a.out, n_boot=a.bootstrap)
            _print_eval(metrics, a.out)
            return 0
        decoding = Decoding(max_new_tokens=a.max_new_tokens, trials=a.trials, temperature=a.temperature,
                            letter_probs=not a.no_letter_probs)
        common = dict(model=a.model, device=a.device, template=a.template, decoding=decoding, parser=a.parser,
                      model_batch_size=a.model_batch_size, label=a.label, progress=not a.no_progress,
                      judge=a.judge, n_boot=a.bootstrap, backend_options=_backend_options(a))
        if a.command == "run":
            from .engine import GenerateError

            try:
                metrics = run(a.out, sources=a.source, degradations=a.degradations, levels=a.levels,
                              severities=tuple(a.severity), seed=a.seed, batch_size=a.batch_size, limit=a.limit,
                              modality=a.modality, severities_file=a.severities, engine=a.engine,
                              workers=a.workers, replicas=a.replicas, phase_encode=a.phase_encode, mpp=a.mpp,
                              **common)
            except GenerateError as e:
                raise EvalError(str(e)) from None
        else:
            metrics = evaluate_data(a.data, a.out, **common)
    except EvalError as e:
        print(f"medq-synth {a.command}: error: {e}", file=sys.stderr)
        return 2
    _print_eval(metrics, a.out)
    internal = [e for e in _errors(a.out) if e.get("kind") == "internal"]
    if internal:
        _print_errors(internal, f"{a.out}/errors.jsonl")
        return INTERNAL_ERROR
    return 0


def _errors(out: str) -> list[dict]:
    from .eval.store import Store

    return Store(out).unresolved()


def cmd_sweep(a: argparse.Namespace) -> int:
    from .eval.api import EvalError
    from .eval.sweep import _s50_text, sweep
    from .eval.sweep_stats import parse_grid

    try:
        grid = parse_grid(a.grid)
        result = sweep(a.out, a.model or ["cho"], grid, sources=a.source, degradations=a.degradations,
                       seed=a.seed, device=a.device, limit=a.limit, batch_size=a.batch_size,
                       model_batch_size=a.model_batch_size, n_boot=a.bootstrap, progress=not a.no_progress,
                       template=a.template, severities_file=a.severities, engine=a.engine, workers=a.workers,
                       replicas=a.replicas)
    except (EvalError, ValueError) as e:
        print(f"medq-synth sweep: error: {e}", file=sys.stderr)
        return 2
    print(f"{'degradation':<22} {'model':<28} {'clean':>6}  s50 [95% CI]")
    for deg, rows in result["comparison"].items():
        for r in rows:
            c = result["curves"][r["model"]][deg]
            clean = "-" if r["clean_accuracy"] is None else f"{100 * r['clean_accuracy']:.1f}"
            print(f"{deg:<22} {r['model'][:28]:<28} {clean:>6}  {_s50_text(c)}")
    print(f"\nsweep: {a.out}/sweep.json, {a.out}/sweep.md, {a.out}/sweep.html")
    return 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    from .calibrate import METRICS, calibrate
    from .engine import GenerateError

    try:
        report = calibrate(a.out, sources=a.source, degradations=a.degradations, target=a.target, seed=a.seed,
                           device=a.device, limit=a.limit, step=a.step, severities_file=a.severities,
                           progress=not a.no_progress)
    except (GenerateError, ValueError) as e:
        print(f"medq-synth calibrate: error: {e}", file=sys.stderr)
        return 2
    for name, r in report.items():
        if r["metric"] == "reference":
            fits = ", ".join(f"L{lv} at s = {f['severity']:.3f} (residual {f['residual_grey']:.2f} grey levels, "
                             f"{f['n']} pairs)" for lv, f in sorted(r["levels"].items()))
            print(f"{name:<22} {fits}")
            continue
        met = "" if all(r["met"]) else "  (target not met within the grid: see the provenance)"
        print(f"{name:<22} L1 at s = {r['L1_severity']:.3f}, L2 at s = {r['L2_severity']:.3f} "
              f"({METRICS[r['metric']]} {r['target'][0]:g} / {r['target'][1]:g}){met}")
    print(f"\ntable: {a.out} (use it with --severities {a.out})")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from .eval.backends import BackendError, load_backend
    from .eval.server import make_server

    try:
        server = make_server(load_backend(a.model, device=a.device), a.host, a.port)
    except BackendError as e:
        print(f"medq-synth serve: error: {e}", file=sys.stderr)
        return 2
    print(f"serving {a.model} at http://{a.host}:{server.server_address[1]}/v1 (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command == "list":
        return cmd_list(a)
    if a.command == "serve":
        return cmd_serve(a)
    if a.command == "sweep":
        return cmd_sweep(a)
    if a.command == "calibrate":
        return cmd_calibrate(a)
    if a.command in ("run", "eval", "report"):
        return cmd_eval(a)
    return cmd_generate(a)


if __name__ == "__main__":
    sys.exit(main())
