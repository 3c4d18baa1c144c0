"""``--export-tsv``: the generated set as a VLMEvalKit TSV in MedQ-Deg's format (L0 / L1 / L2 rows)."""

from __future__ import annotations

import base64
import csv
import hashlib
from pathlib import Path
from typing import Any

from .items import OPTION_LETTERS
from .registry import CATEGORIES

COLUMNS = ["index", "image", "question", *OPTION_LETTERS, "answer", "modality", "source", "category",
           "degradation_type", "degradation_severity", "capability", "source_id", "seed", "output_id"]


def row_index(output_id: str, seed: int) -> int:
    """A row's ``index``: 60 bits of SHA-256 of (output id, seed). VLMEvalKit caches decoded images as
    ``<dataset>/<index>.png`` and reuses them, and every export is called ``benchmark.tsv``: indices numbered
    from 0 would serve one export's images for another's rows. This one is the same when the same export is
    made again and differs between outputs (another item, degradation, level or seed)."""
    return int(hashlib.sha256(f"{output_id}\0{seed}".encode()).hexdigest()[:15], 16)

MODALITY_LABELS = {"ct": "CT", "mri": "MRI", "xray": "X-ray", "ultrasound": "Ultrasound",
                   "histopathology": "Histopathology", "dermoscopy": "Dermoscopy", "endoscopy": "Endoscopy",
                   "fundus": "Fundus"}


def export_tsv(root: Path, rows: list[dict[str, Any]], name: str = "benchmark.tsv") -> tuple[Path, int]:
    """Write the level rows that carry a question (continuous-severity rows are not part of the format).
    Returns the path and the number of rows written."""
    path = Path(root) / name
    tmp = path.with_suffix(".tsv.tmp")
    n = 0
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(COLUMNS)
        for r in rows:
            if r["level"] is None or not r.get("question"):
                continue
            img = base64.b64encode((Path(root) / r["image"]).read_bytes()).decode()
            opts = r.get("options") or {}
            w.writerow([row_index(r["id"], r["seed"]), img, r["question"], *(opts.get(k, "") for k in OPTION_LETTERS),
                        r.get("answer") or "",
                        MODALITY_LABELS.get(r["modality"], r["modality"]), r["source"],
                        CATEGORIES.get(r["category"], r["category"]), r["medq_deg_id"] or r["degradation"],
                        f"L{r['level']}", r.get("capability") or "", r["source_id"], r["seed"], r["id"]])
            n += 1
    tmp.replace(path)
    return path, n
