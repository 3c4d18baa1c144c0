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
    g.add_argument("--no-progress", action="store_true")

    sub.add_parser("list", help="list the registered degradations and their severity tables")
    return p


def cmd_list() -> int:
    from .degradations import REGISTRY
    from .registry import CATEGORIES

    for d in REGISTRY:
        mods = "all" if len(d.modalities) == 8 else ",".join(sorted(d.modalities))
        alias = d.table.medq_deg_id or "-"
        print(f"{d.name}  [{CATEGORIES[d.category]}]  modalities: {mods}  MedQ-Deg id: {alias}")
        for p in d.table.params.values():
            print(f"    {p.name}: L0 {p.identity:g}  L1 {p.L1:g}  L2 {p.L2:g}  ({p.unit}; {p.scale})")
            print(f"        provenance: {p.provenance}")
    return 0


def cmd_generate(a: argparse.Namespace) -> int:
    from .engine import GenerateError, generate

    try:
        s = generate(a.source or ["phantoms"], a.out, degradations=a.degradations, levels=a.levels,
                     severities=tuple(a.severity), seed=a.seed, device=a.device, batch_size=a.batch_size,
                     limit=a.limit, export_tsv=a.export_tsv, shard_items=a.shard_items, slice_rule=a.slices,
                     progress=not a.no_progress)
    except GenerateError as e:
        print(f"medq-synth generate: error: {e}", file=sys.stderr)
        return 2
    rate = s.n_items / s.elapsed_s if s.elapsed_s else 0.0
    print(f"\n{s.n_outputs} outputs from {s.n_items} items in {s.elapsed_s:.1f} s ({rate:.2f} items/s)"
          + (f", {s.resumed_shards} shards resumed" if s.resumed_shards else ""))
    print(s.table())
    if s.errors:
        print(f"\n{len(s.errors)} errors (see {s.out / 'errors.jsonl'}):")
        for e in s.errors[:20]:
            print(f"  - {e.get('item') or e.get('degradation') or e.get('source')}: {e['reason']}")
        if len(s.errors) > 20:
            print(f"  ... and {len(s.errors) - 20} more")
    print(f"\nmanifest: {s.out / 'manifest.jsonl'}\ncontact sheet: {s.out / 'contact_sheet.png'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.command == "list":
        return cmd_list()
    return cmd_generate(a)


if __name__ == "__main__":
    sys.exit(main())
