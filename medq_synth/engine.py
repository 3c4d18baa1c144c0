"""``generate``: sources -> items -> batches (same degradation, level and shape) -> degrade -> writer.

Outputs depend only on (seed, item id, degradation, level or severity): batches are formed inside fixed
shards of source entries, every random draw comes from the output's own seed, and each physics function is
batch-size invariant, so ``--batch-size``, interruption and resume do not change a single byte.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .degradations import registry_for
from .display import png_bytes, to_uint8
from .items import PHASE_ENCODE, Item, ItemError, normalise_modality, validate
from .metrics import psnr, ssim
from .registry import Degradation, Selection, level_key
from .seeding import output_seed, pattern_seed
from .severity import LEVEL_SEVERITY
from .sources import Ref, Source, open_source
from .writer import OutputDir, output_stem, safe_name


class GenerateError(Exception):
    """Nothing valid remains to generate; the message says why."""


@dataclass
class Job:
    item: Item
    deg: Degradation | None       # None: the clean L0 output
    level: int | None
    severity: float
    order: int

    @property
    def deg_name(self) -> str:
        return self.deg.name if self.deg else "none"

    @property
    def level_key(self) -> str:
        return level_key(self.level, self.severity)

    @property
    def output_id(self) -> str:
        return f"{self.item.id}|{self.deg_name}|{self.level_key}"


@dataclass
class Summary:
    out: Path
    n_items: int = 0
    n_outputs: int = 0
    counts: dict[str, Counter] = field(default_factory=dict)
    errors: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0
    resumed_shards: int = 0
    noise_hu: dict[str, dict[str, float]] = field(default_factory=dict)   # CT physics: mean water-region noise
    stages: dict[str, Any] | None = None        # --engine ray: workers, busy time and items/s per stage

    def noise_table(self) -> str:
        return "\n".join(f"{deg}: " + ", ".join(f"{k} {v:.1f} HU" for k, v in sorted(by.items()))
                         for deg, by in self.noise_hu.items())

    def table(self) -> str:
        keys = sorted({k for c in self.counts.values() for k in c}, key=lambda k: (k[0] != "L", k))
        width = max([len(d) for d in self.counts] + [11])
        lines = [f"{'degradation':<{width}}  " + "  ".join(f"{k:>7}" for k in keys)]
        for deg, c in self.counts.items():
            lines.append(f"{deg:<{width}}  " + "  ".join(f"{c.get(k, 0):>7}" for k in keys))
        return "\n".join(lines)

    @property
    def internal_errors(self) -> list[dict[str, Any]]:
        """Errors that are bugs of ours, not bad input (``generate`` exits non-zero when there are any)."""
        return [e for e in self.errors if e.get("kind") == "internal"]

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), "n_items": self.n_items, "n_outputs": self.n_outputs,
                "counts": {d: dict(c) for d, c in self.counts.items()}, "n_errors": len(self.errors),
                "n_internal_errors": len(self.internal_errors),
                "elapsed_s": round(self.elapsed_s, 3), "resumed_shards": self.resumed_shards,
                "items_per_s": round(self.n_items / self.elapsed_s, 3) if self.elapsed_s else None,
                "noise_hu_water_equivalent": self.noise_hu, **({"stages": self.stages} if self.stages else {})}


def _where(e: BaseException) -> str:
    """file:line of the innermost frame of an unexpected exception (for the bug report)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    return f"{Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GenerateError("--device cuda was asked for but CUDA is not available")
    return dev


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def _param_row(params: dict[str, torch.Tensor], i: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Item ``i``'s recorded parameters: scalars as numbers; arrays (a mask, a motion path) as a digest here
    and in full in the returned arrays (written to the HDF5 shard); ``_`` keys are inputs, not parameters."""
    row: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    for k, v in params.items():
        if k.startswith("_"):
            continue
        if v.dim() > 1:
            arr = np.ascontiguousarray(v[i].detach().cpu().numpy())
            arrays[k] = arr
            row[k] = f"sha1:{hashlib.sha1(arr.tobytes()).hexdigest()[:16]}"
            continue
        val = v[i].item()
        row[k] = int(val) if not v.is_floating_point() else _round(float(val))
    return row, arrays


# Pixel size assumed for items that carry none (CT: a 512 px, 358 mm abdominal field; MRI: 1 mm, a 256 mm
# head field at 256 px; ultrasound: 0.2 mm, a 51 mm deep field at 256 px), recorded per output.
DEFAULT_PIXEL_MM = {"ct": 0.7, "mri": 1.0, "ultrasound": 0.2}
# Microns per pixel assumed for slides that record none: a 20x whole-slide scan (0.5 um/px, the common 20x
# resolution of Aperio / Hamamatsu scanners), recorded per output.
DEFAULT_MPP = 0.5


def _physical_context(jobs: list[Job], win: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
    """Window (physical units) and pixel size (mm; the mean of row and column spacing) of each item, and the
    raw data (``_kspace``, ``_echogenicity``, on the device) when the batch's items carry it."""
    pixel = []
    for j in jobs:
        sp = j.item.spacing_mm
        if sp:
            pixel.append(float(sum(sp[-2:]) / 2))
        elif j.item.modality in DEFAULT_PIXEL_MM:
            pixel.append(DEFAULT_PIXEL_MM[j.item.modality])
        else:
            raise ValueError(f"{j.item.id}: no pixel spacing for a physical model")
    ctx = {"window_lo": torch.from_numpy(win[:, 0].copy()), "window_hi": torch.from_numpy(win[:, 1].copy()),
           "pixel_mm": torch.tensor(pixel, dtype=torch.float64),
           # the reconstruction field the file records (CT), NaN where none: a prior for a truncated body
           "_recon_diameter_mm": torch.tensor([float(j.item.meta.get("reconstruction_diameter_mm", math.nan))
                                               for j in jobs], dtype=torch.float64)}
    # a digest per item (its id and image), for models that reuse work across an item's levels and models
    ctx["_item_key"] = torch.tensor([j.item.content_key for j in jobs], dtype=torch.int64)
    # the image region a file records ([x0, y0, x1, y1] px, -1 where none): DICOM ultrasound regions
    ctx["_image_region"] = torch.tensor([j.item.meta.get("image_region", [-1, -1, -1, -1]) for j in jobs],
                                        dtype=torch.int64)
    first = jobs[0].item                        # batches never mix raw-data and image items (see _batches)
    if first.kspace is not None:
        ctx["_kspace"] = torch.from_numpy(np.stack([j.item.kspace for j in jobs])).to(device)
    if first.echogenicity is not None:
        ctx["_echogenicity"] = torch.from_numpy(np.stack([j.item.echogenicity for j in jobs])).to(device)
        # the seed of the speckle the item was rendered with (-1: none recorded; the pattern seed is used)
        ctx["_speckle_seed"] = torch.tensor([int(j.item.meta.get("speckle_seed", -1)) for j in jobs],
                                            dtype=torch.int64)
    return ctx


WATER_EQUIVALENT_HU = (-100.0, 100.0)


def _water_noise(clean: np.ndarray, degraded: np.ndarray) -> list[float | None]:
    """Std (HU) of degraded - clean over each item's water-equivalent pixels (-100..100 HU in the clean image):
    for a difference-inserted CT degradation this is the added noise or streak level. None below 100 pixels."""
    out: list[float | None] = []
    for c, d in zip(clean, degraded, strict=True):
        sel = (c >= WATER_EQUIVALENT_HU[0]) & (c <= WATER_EQUIVALENT_HU[1])
        out.append(round(float(np.std((d - c)[sel])), 3) if sel.sum() >= 100 else None)
    return out


def _qa_fields(item: Item) -> dict[str, Any]:
    return item.qa.to_fields() if item.qa else {"question": None, "options": None, "answer": None}


class Generator:
    """One generate run (the Python API ``generate`` wraps it)."""

    def __init__(self, sources: list[str], out: str | Path, degradations: list[str] | None = None,
                 levels: tuple[int, ...] = (0, 1, 2), severities: tuple[float, ...] = (), seed: int = 0,
                 device: str = "auto", batch_size: int = 16, limit: int | None = None,
                 export_tsv: bool = False, shard_items: int = 16, slice_rule: str = "middle",
                 progress: bool = True, modality: str | None = None, severities_file: str | None = None,
                 engine: str = "local", workers: int | None = None, phase_encode: str | None = None,
                 mpp: float | None = None) -> None:
        if batch_size < 1 or shard_items < 1:
            raise GenerateError("--batch-size and --shard-items must be >= 1")
        bad_levels = [lv for lv in levels if lv not in LEVEL_SEVERITY]
        if bad_levels:
            raise GenerateError(f"unknown levels {bad_levels}: use 0, 1, 2")
        bad_sev = [s for s in severities if not 0.0 <= s <= 1.0]
        if bad_sev:
            raise GenerateError(f"severities {bad_sev} are outside [0, 1]")
        if engine not in ("local", "ray"):
            raise GenerateError(f"unknown engine {engine!r}: use local or ray")
        # what a Ray worker needs to rebuild this generator (everything but the engine itself)
        self.options = dict(sources=list(sources), out=str(out), degradations=degradations, levels=tuple(levels),
                            severities=tuple(severities), seed=seed, device=device, batch_size=batch_size,
                            limit=limit, export_tsv=export_tsv, shard_items=shard_items, slice_rule=slice_rule,
                            progress=False, modality=modality, severities_file=severities_file,
                            phase_encode=phase_encode, mpp=mpp)
        self.engine, self.workers = engine, workers
        self.out = OutputDir(Path(out))
        self.source_specs = list(sources)
        self.levels = tuple(sorted(set(levels)))
        self.severities = tuple(sorted(set(float(s) for s in severities)))
        self.seed, self.batch_size, self.limit = int(seed), int(batch_size), limit
        self.export_tsv, self.shard_items, self.slice_rule = export_tsv, int(shard_items), slice_rule
        self.device = resolve_device(device)
        self.progress = progress
        try:        # the default modality of files that record none (``--modality``)
            self.modality = normalise_modality(modality) if modality else None
        except ItemError as e:
            raise GenerateError(f"--modality: {e}") from None
        # the in-plane phase-encode direction of MRI files that record none (``--phase-encode``)
        self.phase_encode = phase_encode.upper() if phase_encode else None
        if self.phase_encode is not None and self.phase_encode not in PHASE_ENCODE:
            raise GenerateError(f"--phase-encode is row or col, not {phase_encode!r}")
        # microns per pixel of slides that record none (``--mpp``)
        if mpp is not None and not (math.isfinite(mpp) and mpp > 0):
            raise GenerateError(f"--mpp must be a positive number of microns per pixel, not {mpp}")
        self.mpp = None if mpp is None else float(mpp)
        self.run_errors: list[dict[str, Any]] = []
        try:
            self.registry = registry_for(severities_file)
        except ValueError as e:
            raise GenerateError(str(e)) from None
        self.severities_digest = (hashlib.sha256(Path(severities_file).read_bytes()).hexdigest()[:16]
                                  if severities_file else None)
        self.selections = self._resolve_degradations(degradations)

    def _resolve_degradations(self, names: list[str] | None) -> list[Selection]:
        """What each asked name stands for per modality (MedQ-Deg ids may mean a different model per modality)."""
        if names is None:
            return self.registry.default_selections()
        selections: list[Selection] = []
        for name in names:
            try:
                sel = self.registry.select(name)
            except KeyError as e:
                self.run_errors.append({"stage": "arguments", "degradation": name, "reason": e.args[0]})
                continue
            if sel not in selections:
                selections.append(sel)
        if names and not selections:
            raise GenerateError("no valid degradation left: " + "; ".join(e["reason"] for e in self.run_errors))
        return selections

    def fingerprint(self, refs: list[Ref]) -> dict[str, Any]:
        return {"medq_synth": __version__, "sources": self.source_specs,
                "degradations": [s.name for s in self.selections],
                "levels": list(self.levels), "severities": list(self.severities), "seed": self.seed,
                "limit": self.limit, "shard_items": self.shard_items, "slice_rule": self.slice_rule,
                **({"modality": self.modality} if self.modality else {}),
                **({"phase_encode": self.phase_encode} if self.phase_encode else {}),
                **({"mpp": self.mpp} if self.mpp else {}),
                **({"severities_sha256": self.severities_digest} if self.severities_digest else {}),
                "device_type": self.device.type,
                "n_refs": len(refs)}

    # -- sources ----------------------------------------------------------------------------------------
    def _open_sources(self) -> tuple[list[Source], list[Ref]]:
        sources, refs = [], []
        for spec in self.source_specs:
            try:
                src = open_source(spec, self.slice_rule, self.modality)
            except ValueError as e:
                self.run_errors.append({"stage": "source", "source": spec, "reason": str(e), "fatal": True})
                continue
            src_refs = src.refs()
            self.run_errors.extend(src.notes)
            sources.append(src)
            refs.extend(src_refs)
        if self.limit is not None:
            refs = refs[: self.limit]
        return sources, refs

    # -- one shard ---------------------------------------------------------------------------------------
    def _load(self, by_name: dict[str, Source], ref: Ref, shard: int) -> tuple[list[Item], list[dict]]:
        try:
            items = by_name[ref.source].load(ref)
        except ItemError as e:
            return [], [{"stage": "load", "kind": "input", "source": ref.source, "item": f"{ref.source}/{ref.key}",
                         "reason": str(e), "shard": shard}]
        except Exception as e:  # a reader bug must not stop the run: recorded as internal, the run exits non-zero
            return [], [{"stage": "load", "kind": "internal", "source": ref.source, "item": f"{ref.source}/{ref.key}",
                         "reason": f"unexpected {type(e).__name__}: {e}", "where": _where(e), "shard": shard}]
        good, errs = [], []
        for it in items:
            self._acquisition_defaults(it)
            try:
                good.append(validate(it))
            except ItemError as e:
                errs.append({"stage": "validate", "kind": "input", "source": ref.source, "item": it.id,
                             "reason": str(e), "shard": shard})
        return good, errs

    def _acquisition_defaults(self, it: Item) -> None:
        """What the file does not record, from the command line or the documented default, recorded in the
        item's meta (and so in every output's manifest row) with where it came from."""
        if it.modality == "mri" and "phase_encode" not in it.meta:
            it.meta.update(phase_encode=self.phase_encode or "ROW", phase_encode_from="--phase-encode"
                           if self.phase_encode else "default: none recorded (phase left-right, as fastMRI)")
        if it.modality == "histopathology":
            if "mpp" not in it.meta and it.spacing_mm:
                it.meta.update(mpp=1000.0 * float(sum(it.spacing_mm[-2:]) / 2), mpp_from="the file's pixel spacing")
            elif "mpp" not in it.meta:
                it.meta.update(mpp=self.mpp or DEFAULT_MPP, mpp_from="--mpp" if self.mpp else
                               f"default: none recorded ({DEFAULT_MPP} um/px, a 20x scan)")
            if not it.spacing_mm:
                it.spacing_mm = (it.meta["mpp"] / 1000.0, it.meta["mpp"] / 1000.0)

    def _jobs(self, items: list[Item]) -> list[Job]:
        jobs: list[Job] = []
        for it in items:
            if 0 in self.levels:
                jobs.append(Job(it, None, 0, 0.0, len(jobs)))
            models = {}                   # one job per model, in order: two names may mean the same model
            for sel in self.selections:
                d = sel.for_modality(it.modality)
                if d is not None:
                    models.setdefault(d.name, d)
            for d in models.values():
                for lv in self.levels:
                    if lv > 0:
                        jobs.append(Job(it, d, lv, LEVEL_SEVERITY[lv], len(jobs)))
                for s in self.severities:
                    jobs.append(Job(it, d, None, s, len(jobs)))
        return jobs

    def _run_batch(self, jobs: list[Job]) -> list[dict[str, Any]]:
        dev = self.device
        host = np.stack([j.item.image for j in jobs])
        x = torch.from_numpy(host).to(dev)
        win = np.array([j.item.window for j in jobs], dtype=np.float64)                # (B, 2) physical units
        lo = torch.tensor(win[:, 0], dtype=torch.float32, device=dev).view(-1, 1, 1, 1)
        span = torch.tensor(win[:, 1] - win[:, 0], dtype=torch.float32, device=dev).view(-1, 1, 1, 1)
        v0 = (x - lo) / span
        seeds = torch.tensor([output_seed(self.seed, j.item.id, j.deg_name, j.level_key) for j in jobs],
                             dtype=torch.int64)
        deg = jobs[0].deg
        if deg is None:
            v, params = v0, {}
        else:
            background = np.array([j.item.background for j in jobs], dtype=np.float64)
            fill = torch.from_numpy((background - win[:, 0]) / (win[:, 1] - win[:, 0]))
            patterns = torch.tensor([pattern_seed(self.seed, j.item.id, j.deg_name) for j in jobs], dtype=torch.int64)
            ctx = _physical_context(jobs, win, dev) if deg.physical else {}
            # k-space models encode phase along the columns: an up-down (COL) item goes in transposed
            vertical = deg.phase_encoded and jobs[0].item.phase_encode == "COL"
            v_in = v0.transpose(-1, -2) if vertical else v0
            if vertical and "_kspace" in ctx:
                ctx["_kspace"] = ctx["_kspace"].transpose(-1, -2)
            inputs = {"v": v_in, **ctx} if deg.image_dependent else None
            params = deg.sample_params(jobs[0].severity, seeds, tuple(v_in.shape[-2:]), fill, patterns, inputs)
            params.update(ctx)
            v = deg.apply(v_in, params)
            if vertical:
                v = v.transpose(-1, -2).contiguous()
            if deg.phase_encoded:
                params["phase_encode_vertical"] = torch.full((len(jobs),), int(vertical), dtype=torch.int64)
        phys = (lo + v * span).cpu().numpy()
        disp = to_uint8(v).cpu().numpy()
        c0, c = v0.clamp(0, 1), v.clamp(0, 1)
        p, s = torch.stack([psnr(c, c0), ssim(c, c0)]).cpu().tolist()
        # the clean image is the batch's host array: no device copy for the report
        noise = _water_noise(host, phys) if deg is not None and deg.physical \
            and jobs[0].item.units == "HU" else [None] * len(jobs)
        rows = [_param_row(params, i) for i in range(len(jobs))]
        return [{"job": j, "physical": phys[i], "display": disp[i], "params": rows[i][0], "arrays": rows[i][1],
                 "seed": int(seeds[i]), "psnr": None if not np.isfinite(p[i]) else round(p[i], 4),
                 "ssim": round(s[i], 6), "noise_hu": noise[i]} for i, j in enumerate(jobs)]

    def _run_group(self, jobs: list[Job], shard: int, errors: list[dict]) -> list[dict[str, Any]]:
        try:
            return self._run_batch(jobs)
        except Exception as e:
            if len(jobs) > 1:       # isolate the failing item(s): one at a time gives the same numbers
                return [r for j in jobs for r in self._run_group([j], shard, errors)]
            j = jobs[0]
            # ItemError: this input does not suit the model (bad input); anything else is a bug of ours
            kind = "input" if isinstance(e, ItemError) else "internal"
            entry = {"stage": "degrade", "kind": kind, "source": j.item.source, "item": j.item.id,
                     "degradation": j.deg_name, "level": j.level_key, "reason": f"{type(e).__name__}: {e}",
                     "shard": shard}
            if kind == "internal":
                entry["where"] = _where(e)
            errors.append(entry)
            return []

    def _row(self, r: dict[str, Any], shard_rel: str) -> tuple[dict[str, Any], dict[str, Any], str]:
        j: Job = r["job"]
        stem = output_stem(j.item.id, j.output_id)
        folder = "clean" if j.deg is None else f"{j.deg_name}/{j.level_key}"
        image = f"images/{folder}/{stem}.png"
        key = f"{safe_name(j.deg_name)}.{j.level_key}.{stem}"
        row = {"id": j.output_id, "source_id": j.item.id, "source": j.item.source, "modality": j.item.modality,
               "degradation": j.deg_name, "medq_deg_id": j.deg.table.medq_deg_id if j.deg else "none",
               "category": j.deg.category if j.deg else "none", "level": j.level, "severity": j.severity,
               "seed": r["seed"], "params": r["params"], "psnr": r["psnr"], "ssim": r["ssim"],
               "noise_hu": r["noise_hu"], "image": image,
               "shard": shard_rel, "key": key, "units": j.item.units, "window": list(j.item.window),
               "shape": list(j.item.shape), "spacing_mm": list(j.item.spacing_mm) if j.item.spacing_mm else None,
               "meta": j.item.meta}
        for k, v in _qa_fields(j.item).items():      # a source's own "category" column never hides ours
            row.setdefault(k, v)
        attrs = {"id": j.output_id, "modality": j.item.modality, "units": j.item.units,
                 "window": np.asarray(j.item.window, dtype=np.float64), "degradation": j.deg_name,
                 "level_key": j.level_key, "severity": j.severity, "seed": r["seed"],
                 "params": json.dumps(r["params"], sort_keys=True)}
        return row, attrs, image

    def _batches(self, index: int, refs: list[Ref], by_name: dict[str, Source], advance: Callable[[float], None],
                 errors: list[dict], want: Callable[[Job], bool] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Load one shard's entries and yield each degraded batch (unwritten); ``want`` drops jobs up front
        (the eval loop skips outputs it has already answered) and ``advance`` receives progress in entries."""
        yield from self.degrade_items(index, self.load_shard(index, refs, by_name, errors), len(refs), advance,
                                      errors, want)

    def load_shard(self, index: int, refs: list[Ref], by_name: dict[str, Source], errors: list[dict]) -> list[Item]:
        """The valid items of one shard's entries (load and validation errors appended to ``errors``)."""
        items = []
        for ref in refs:
            good, errs = self._load(by_name, ref, index)
            items += good
            errors += errs
        return items

    def degrade_items(self, index: int, items: list[Item], n_refs: int, advance: Callable[[float], None],
                      errors: list[dict], want: Callable[[Job], bool] | None = None
                      ) -> Iterator[list[dict[str, Any]]]:
        """Each degraded batch of the jobs of ``items`` that ``want`` keeps (see ``_batches``)."""
        jobs = [j for j in self._jobs(items) if want is None or want(j)]
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for j in jobs:
            groups[(j.deg_name, j.level_key, j.item.shape, j.item.raw_signature, j.item.phase_encode)].append(j)
        for key in sorted(groups, key=str):
            g = groups[key]
            for k in range(0, len(g), self.batch_size):
                chunk = g[k: k + self.batch_size]
                results = self._run_group(chunk, index, errors)
                advance(n_refs * len(chunk) / len(jobs))
                yield results

    def shards(self) -> tuple[dict[str, Source], list[list[Ref]]]:
        """The sources by name and the shards of source entries (the unit of work and of resume)."""
        sources, refs = self._open_sources()
        if not refs:
            reasons = "; ".join(e["reason"] for e in self.run_errors) or "the sources hold no items"
            raise GenerateError(f"no input items: {reasons}")
        return {s.name: s for s in sources}, self._split(refs)

    def _split(self, refs: list[Ref]) -> list[list[Ref]]:
        """Source entries in shards of ``shard_items``, in order (the layout every engine and resume share)."""
        return [refs[k: k + self.shard_items] for k in range(0, len(refs), self.shard_items)]

    def stream(self, want: Callable[[Job], bool] | None = None,
               advance: Callable[[float], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Degrade every job in memory, batch by batch, writing nothing (the ``run`` command's producer).
        Load and degrade errors accumulate in ``self.stream_errors``."""
        sources, refs = self._open_sources()
        if not refs:
            reasons = "; ".join(e["reason"] for e in self.run_errors) or "the sources hold no items"
            raise GenerateError(f"no input items: {reasons}")
        by_name = {s.name: s for s in sources}
        self.stream_errors: list[dict] = []
        for index, shard in enumerate(self._split(refs)):
            yield from self._batches(index, shard, by_name, advance or (lambda _: None), self.stream_errors, want)

    def _shard(self, index: int, refs: list[Ref], by_name: dict[str, Source],
               advance: Callable[[float], None]) -> tuple[list[dict], list[dict]]:
        """Compute, write and commit one shard; ``advance`` receives progress in source entries."""
        errors: list[dict] = []
        results = [r for batch in self._batches(index, refs, by_name, advance, errors) for r in batch]
        results.sort(key=lambda r: r["job"].order)
        shard_rel = f"shards/{self.out.shard_name(index)}.h5"
        rows, outputs = [], []
        for r in results:
            row, attrs, image = self._row(r, shard_rel)
            self.out.write_png(image, png_bytes(r["display"]))
            rows.append(row)
            outputs.append({"key": row["key"], "physical": r["physical"], "display": r["display"], "attrs": attrs,
                            "arrays": r["arrays"]})
        errors.sort(key=lambda e: json.dumps(e, sort_keys=True))
        self.out.write_shard(index, outputs, rows, errors)
        return rows, errors

    # -- the run ---------------------------------------------------------------------------------------
    def run(self) -> Summary:
        t0 = time.perf_counter()
        sources, refs = self._open_sources()
        summary = Summary(out=self.out.root)
        if not refs:
            reasons = "; ".join(e["reason"] for e in self.run_errors) or "the sources hold no items"
            self._finish_errors_only()
            raise GenerateError(f"no input items: {reasons}")
        try:
            resuming = self.out.prepare(self.fingerprint(refs))
        except ValueError as e:
            raise GenerateError(str(e)) from None
        by_name = {s.name: s for s in sources}
        if len(by_name) != len(sources):
            raise GenerateError("two sources share a name; rename one of the files")
        shards = self._split(refs)
        all_rows: list[dict] = []
        shard_errors: list[dict] = []
        bar = _progress(len(refs), self.progress)
        done_before = {i for i in range(len(shards)) if resuming and self.out.shard_done(i)}
        if self.engine == "ray":        # workers compute and commit the shards; read back below, as on resume
            from .scale import ScaleError, commit_shards

            try:
                summary.stages = commit_shards(self, [i for i in range(len(shards)) if i not in done_before],
                                               [len(s) for s in shards], bar)
            except ScaleError as e:
                raise GenerateError(str(e)) from None
        for index, shard_refs in enumerate(shards):
            target = bar.n + len(shard_refs)
            if index in done_before or self.engine == "ray":
                rows, errs = self.out.shard_rows(index)
                summary.resumed_shards += index in done_before
            else:
                rows, errs = self._shard(index, shard_refs, by_name, bar.update)
            all_rows += rows
            shard_errors += errs
            if self.engine == "local":      # settle on the whole entry count (batches advanced by fractions)
                bar.update(target - bar.n)
            bar.set_postfix(outputs=len(all_rows), errors=len(shard_errors) + len(self.run_errors))
        bar.close()
        errors = self.run_errors + shard_errors
        self.out.finalize(all_rows, errors)
        summary.n_items = len({r["source_id"] for r in all_rows})
        summary.n_outputs = len(all_rows)
        summary.errors = errors
        noise: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in all_rows:
            key = level_key(r["level"], r["severity"])
            summary.counts.setdefault(r["degradation"], Counter())[key] += 1
            if r.get("noise_hu") is not None:
                noise[(r["degradation"], key)].append(r["noise_hu"])
        for (deg, key), vals in sorted(noise.items()):
            summary.noise_hu.setdefault(deg, {})[key] = round(float(np.mean(vals)), 3)
        from .contact_sheet import contact_sheet

        if all_rows:
            contact_sheet(self.out.root, all_rows)
        if self.export_tsv:
            from .tsv_export import export_tsv

            export_tsv(self.out.root, all_rows)
        summary.elapsed_s = time.perf_counter() - t0
        (self.out.root / "summary.json").write_text(json.dumps(summary.to_json(), indent=1) + "\n")
        if not all_rows:
            reasons = "; ".join(e["reason"] for e in errors[:5])
            raise GenerateError(f"no outputs: every item failed ({reasons})")
        return summary

    def _finish_errors_only(self) -> None:
        """Record the run-level errors even when nothing can run."""
        root = self.out.root
        root.mkdir(parents=True, exist_ok=True)
        from .writer import atomic_write, jsonl

        atomic_write(root / "errors.jsonl", jsonl(self.run_errors))


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    # Batches advance the bar by fractions of an entry; show the count rounded.
    fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
    return tqdm(total=total, unit="item", desc="generate", disable=not enabled, dynamic_ncols=True, bar_format=fmt)


def generate(sources: list[str] | str = "phantoms", out: str | Path = "out", **kwargs: Any) -> Summary:
    """Python API of ``medq-synth generate``; keyword arguments mirror the CLI options."""
    if isinstance(sources, str):
        sources = [sources]
    return Generator(sources, out, **kwargs).run()

