"""The output folder: shards, PNGs, manifest and errors, written atomically and resumable.

Layout of ``OUT``::

    run.json                 arguments that determine the outputs (a rerun must match them)
    shards/shard-00000.h5    one group per output: float32 'physical' (C, H, W), uint8 'display' and
                             'params/<name>' for array parameters (an MRI mask, a motion path)
    parts/shard-00000.jsonl  manifest rows of the shard; its presence marks the shard complete
    parts/shard-00000.errors.jsonl
    images/<degradation>/<level>/<item>.png
    manifest.jsonl, errors.jsonl, contact_sheet.png, summary.json, benchmark.tsv (with --export-tsv)

A shard is committed by renaming its rows file into place after its PNGs and its HDF5 file; a killed run
leaves at most temporary files and an uncommitted shard, which the rerun computes again, identically.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

TMP_MARK = ".tmp-"


def safe_name(text: str, limit: int = 80) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:limit] or "item"


def output_stem(item_id: str, output_id: str) -> str:
    """File-system-safe, unique stem: readable item id plus a hash of the full output id."""
    return f"{safe_name(item_id)}-{hashlib.sha1(output_id.encode()).hexdigest()[:8]}"


def _tmp(path: Path) -> Path:
    """A temporary name beside ``path``, unique per process and thread (a Ray actor writes shards from
    several threads at once)."""
    return path.with_name(f"{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, allow_nan=False) + "\n" for r in rows).encode()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class OutputDir:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def prepare(self, fingerprint: dict[str, Any]) -> bool:
        """Create the layout; returns True when resuming a run with the same fingerprint. A different
        fingerprint raises ValueError: outputs of two configurations never mix in one folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        for sub in ("shards", "parts", "images"):
            (self.root / sub).mkdir(exist_ok=True)
        for tmp in self.root.rglob(f"*{TMP_MARK}*"):
            tmp.unlink(missing_ok=True)
        run = self.root / "run.json"
        text = json.dumps(fingerprint, sort_keys=True, indent=1) + "\n"
        if run.exists():
            if run.read_text() != text:
                raise ValueError(f"{self.root} holds a run made with other arguments "
                                 f"(see {run}); use a new --out folder")
            return True
        atomic_write(run, text.encode())
        return False

    def shard_name(self, index: int) -> str:
        return f"shard-{index:05d}"

    def shard_done(self, index: int) -> bool:
        return (self.root / "parts" / f"{self.shard_name(index)}.jsonl").exists()

    def shard_rows(self, index: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        name = self.shard_name(index)
        return (read_jsonl(self.root / "parts" / f"{name}.jsonl"),
                read_jsonl(self.root / "parts" / f"{name}.errors.jsonl"))

    def write_png(self, rel: str, data: bytes) -> None:
        atomic_write(self.root / rel, data)

    def write_shard(self, index: int, outputs: list[dict[str, Any]], rows: list[dict[str, Any]],
                    errors: list[dict[str, Any]]) -> None:
        """Write the HDF5 shard (outputs in canonical order), then the errors, then commit with the rows."""
        import h5py

        name = self.shard_name(index)
        final = self.root / "shards" / f"{name}.h5"
        tmp = _tmp(final)
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as h5:
            for out in outputs:
                g = h5.create_group(out["key"], track_order=False)
                g.create_dataset("physical", data=out["physical"], track_times=False)
                g.create_dataset("display", data=out["display"], track_times=False)
                for k, v in out["attrs"].items():
                    g.attrs[k] = v
                for k, arr in sorted(out.get("arrays", {}).items()):     # array parameters (masks, motion paths)
                    g.create_dataset(f"params/{k}", data=arr, track_times=False)
        os.replace(tmp, final)
        atomic_write(self.root / "parts" / f"{name}.errors.jsonl", jsonl(errors))
        atomic_write(self.root / "parts" / f"{name}.jsonl", jsonl(rows))

    def finalize(self, rows: list[dict[str, Any]], errors: list[dict[str, Any]]) -> None:
        atomic_write(self.root / "manifest.jsonl", jsonl(rows))
        atomic_write(self.root / "errors.jsonl", jsonl(errors))


def read_output(root: Path, row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The float32 physical and uint8 display arrays of a manifest row."""
    import h5py

    with h5py.File(Path(root) / row["shard"], "r") as h5:
        g = h5[row["key"]]
        return g["physical"][()], g["display"][()]
