"""Producers of samples: the degradation engine in memory (``run``), a released VLMEvalKit TSV or a folder
written by ``generate`` (``eval``). Each yields lists of ``Sample``; bad rows go to ``errors`` with the
reason and the rest goes on."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from medq_synth.display import hwc
from medq_synth.items import OPTION_LETTERS, ItemError, normalise_modality
from medq_synth.registry import canonical_id, level_key
from medq_synth.sources import tsv_image

from .records import Sample

csv.field_size_limit(sys.maxsize)

# MedQ-Deg degradation ids (paper Table 5) -> category key, for TSVs whose types are not registered here.
MEDQ_DEG_CATEGORY = {
    "limited_angle": "artifacts", "sparse_view": "artifacts", "bias_field_artifact": "artifacts",
    "undersampling_artifact": "artifacts", "ghosting_artifact": "artifacts", "blood_cell_artifact": "artifacts",
    "dark_spots_artifact": "artifacts", "rotation_artifact": "motion", "random_motion_artifact": "motion",
    "adjust_brightness": "intensity", "exposure_artifact": "intensity", "reduce_contrast": "intensity",
    "gaussian_noise": "noise", "low_dose": "noise", "downsample_artifact": "resolution_blur",
    "motion_blur": "resolution_blur", "xray_motion_blur_artifact": "resolution_blur",
    "gaussian_blur": "resolution_blur", "bubble_artifact": "resolution_blur",
}
_LEVELS = {"": 0, "0": 0, "l0": 0, "none": 0, "clean": 0, "good": 0, "original": 0, "nan": 0,
           "1": 1, "l1": 1, "mild": 1, "moderate": 1, "2": 2, "l2": 2, "severe": 2}


def rgb(display: np.ndarray) -> np.ndarray:
    """uint8 ``(C, H, W)`` (C = 1 or 3) -> ``H x W x 3`` (grey repeated)."""
    img = hwc(display)
    return np.ascontiguousarray(np.stack([img] * 3, axis=-1) if img.ndim == 2 else img)


# -- run: the engine in memory ----------------------------------------------------------------------------
def engine_sample(result: dict[str, Any]) -> Sample:
    """A Sample from one of the engine's batch results (display uint8 already on the host)."""
    j = result["job"]
    return job_sample(j, [rgb(result["display"])], result["params"])


def job_sample(job, images: list[np.ndarray], params: dict[str, Any] | None = None) -> Sample:
    qa = job.item.qa
    extra = qa.extra
    meta = {"source": job.item.source, "modality": job.item.modality, "degradation": job.deg_name,
            "medq_deg_id": job.deg.table.medq_deg_id if job.deg else "none",
            "category": job.deg.category if job.deg else "none", "level": job.level, "level_key": job.level_key,
            "severity": job.severity, "capability": extra.get("capability"), "task": extra.get("task"),
            "region": extra.get("region"), "params": params, "lesion_quadrants": _lesion_quadrants(job)}
    return Sample(output_id=job.output_id, base_id=job.item.id, images=images, question=qa.question,
                  options=dict(qa.options), answer=qa.answer, meta=meta)


def _lesion_quadrants(job) -> list[str] | None:
    """The quadrants holding a phantom lesion centre (the truth a model observer's detectability is scored
    against, never shown to a model), or None where unknown or moved by a geometric degradation."""
    lesions = job.item.qa.extra.get("lesions")
    if lesions is None or (job.deg is not None and job.deg.name in GEOMETRIC):
        return None
    from medq_synth.sources.phantoms import quadrant_of

    h, w = job.item.image.shape[-2:]
    return sorted({quadrant_of(x, y, h, w) for x, y, *_ in lesions})


# Phantom questions about where a lesion is are not invariant under these transforms (a 153 degree rotation
# moves the upper-left lesion to the lower right), so their gold answer would be wrong: such pairs are skipped
# and counted. Lesion counts and diagnosis questions are kept.
GEOMETRIC = frozenset({"rotation", "movement"})
SPATIAL_TASKS = frozenset({"lesion_presence", "lesion_side"})


def skip_reason(job) -> str | None:
    """Why a job cannot be asked, or None."""
    qa = job.item.qa
    if not qa or len(qa.options) < 2:
        return "no multiple-choice question"
    if job.deg is not None and job.deg.name in GEOMETRIC and qa.extra.get("task") in SPATIAL_TASKS:
        return "spatial question under a geometric degradation"
    return None


def engine_batches(gen, want: Callable[[Sample], bool], advance: Callable[[float], None],
                   skipped: Counter | None = None) -> Iterator[list[Sample]]:
    """Degrade on the generator's device and yield samples batch by batch (only jobs ``want`` keeps);
    ``skipped`` counts the jobs that cannot be asked, by reason."""
    def keep(job) -> bool:
        reason = skip_reason(job)
        if reason:
            if skipped is not None:
                skipped[reason] += 1
            return False
        return want(job_sample(job, []))

    for results in gen.stream(want=keep, advance=advance):
        yield [engine_sample(r) for r in results]


# -- eval: released TSVs and generated folders ------------------------------------------------------------
def _decode_image(row: dict[str, str], rows: dict[str, dict[str, str]], base: Path,
                  column: str = "image") -> np.ndarray:
    """The row's image (``sources.tsv_image``) as uint8 H x W x 3."""
    from PIL import Image

    data = tsv_image(row, rows, base, column)
    try:
        return np.asarray(Image.open(io.BytesIO(data) if isinstance(data, bytes) else data).convert("RGB"))
    except (OSError, ValueError) as e:
        raise ItemError(f"cannot decode the {column} image: {e}") from None


def _base_id(row: dict[str, str], options: dict[str, str]) -> str:
    """The clean item a TSV row derives from: an explicit column when present, else the question, options,
    answer and modality (MedQ-Deg keeps them identical across L0/L1/L2)."""
    for col in ("base_index", "clean_index", "origin_index", "source_index"):
        if row.get(col):
            return f"tsv:{row[col]}"
    text = json.dumps([row.get("question"), options, row.get("answer"), row.get("modality"), row.get("source")])
    return "q:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def tsv_rows(path: Path, errors: list[dict[str, Any]]) -> list[dict[str, str]]:
    """All rows, or [] with a recorded error when the file or its columns cannot serve."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t")
            cols = set(reader.fieldnames or [])
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        errors.append({"stage": "data", "source": str(path), "reason": f"cannot read TSV: {e}"})
        return []
    missing = [c for c in ("index", "question") if c not in cols and not (c == "question" and "description" in cols)]
    if not cols & {"image", "image_path", "image_a"}:
        missing.append("image")
    if missing:
        errors.append({"stage": "data", "source": str(path),
                       "reason": f"TSV lacks required column(s) {', '.join(missing)}: no rows evaluated"})
        return []
    for c in ("answer", "modality"):
        if c not in cols and "description" not in cols:
            errors.append({"stage": "data", "source": str(path), "reason": f"TSV has no '{c}' column"})
    return rows


def tsv_sample(row: dict[str, str], rows: dict[str, dict[str, str]], base: Path, name: str) -> Sample:
    idx = str(row.get("index", "")).strip()
    typ = canonical_id((row.get("degradation_type") or "").strip().lower() or "none")
    sev = (row.get("degradation_severity") or "").strip().lower()
    if sev not in _LEVELS:
        raise ItemError(f"unknown degradation_severity {sev!r}")
    level = _LEVELS[sev] if typ not in ("none", "clean", "original") else 0
    try:
        modality = normalise_modality(row.get("modality") or "unknown")
    except ItemError:
        modality = (row.get("modality") or "unknown").strip().lower()
    meta = {"source": row.get("source") or name, "modality": modality, "degradation": typ if level else "none",
            "medq_deg_id": typ if level else "none",
            "category": MEDQ_DEG_CATEGORY.get(typ, "other") if level else "none", "level": level,
            "level_key": f"L{level}", "severity": {0: 0.0, 1: 0.5, 2: 1.0}[level],
            # ``category`` is not a capability: in MedQ-Deg-style TSVs (ours included) it is the degradation category
            "capability": row.get("capability") or row.get("l2-category") or None,
            "task": row.get("task") or None}
    if "description" in row and not any(row.get(c) for c in OPTION_LETTERS):
        kind = "comparison" if row.get("image_a") else "description"
        columns = ["image_a", "image_b"] if kind == "comparison" else ["image"]
        images = [_decode_image(row, rows, base, c) for c in columns]
        return Sample(output_id=f"{name}/{idx}", base_id=f"{name}/{idx}", images=images,
                      question=row.get("question") or "", options={}, answer=None, meta=meta, kind=kind,
                      reference=row.get("description"))
    options = {c: str(row[c]).strip() for c in OPTION_LETTERS
               if row.get(c) is not None and str(row[c]).strip() not in ("", "nan", "None")}
    if len(options) < 2:
        raise ItemError(f"row has {len(options)} option(s); a multiple-choice item needs 2-5")
    question = (row.get("question") or "").strip()
    if not question:
        raise ItemError("row has an empty question")
    answer = (row.get("answer") or "").strip().upper()
    if answer.isdigit() and int(answer) < len(options):       # MedQ-Bench stores some answers as 0-3
        answer = "ABCDE"[int(answer)]
    if answer not in options:
        raise ItemError(f"answer {answer!r} is not one of the options {''.join(sorted(options))}")
    image = _decode_image(row, rows, base)
    return Sample(output_id=f"{name}/{idx}|{typ}|L{level}", base_id=_base_id(row, options), images=[image],
                  question=question, options=options, answer=answer, meta=meta)


def tsv_batches(path: Path, errors: list[dict[str, Any]], batch: int = 16) -> Iterator[list[Sample]]:
    rows = tsv_rows(path, errors)
    by_index = {str(r.get("index", "")).strip(): r for r in rows}
    out: list[Sample] = []
    for n, row in enumerate(rows):
        try:
            out.append(tsv_sample(row, by_index, path.parent, path.stem))
        except ItemError as e:
            errors.append({"stage": "data", "source": str(path), "item": row.get("index", str(n)), "reason": str(e)})
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out


def generated_batches(root: Path, errors: list[dict[str, Any]], batch: int = 16) -> Iterator[list[Sample]]:
    """The display PNGs and manifest of a ``generate`` folder."""
    from PIL import Image

    manifest = root / "manifest.jsonl"
    if not manifest.exists():
        errors.append({"stage": "data", "source": str(root), "reason": "no manifest.jsonl: not a generate folder"})
        return
    out: list[Sample] = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if not row.get("question") or not row.get("options") or len(row["options"]) < 2:
            continue
        try:
            img = np.asarray(Image.open(root / row["image"]).convert("RGB"))
        except (OSError, ValueError) as e:
            errors.append({"stage": "data", "source": str(root), "item": row["id"], "reason": f"image: {e}"})
            continue
        meta = {k: row.get(k) for k in ("source", "modality", "degradation", "medq_deg_id", "category", "level",
                                        "severity", "capability", "task", "region", "params")}
        meta["level_key"] = level_key(row["level"], row["severity"])
        out.append(Sample(output_id=row["id"], base_id=row["source_id"], images=[img], question=row["question"],
                          options=row["options"], answer=row["answer"], meta=meta))
        if len(out) >= batch:
            yield out
            out = []
    if out:
        yield out
