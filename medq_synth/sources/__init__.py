"""Sources turn a ``--source`` argument into references (cheap, listed up front) and items (loaded per shard).

- ``phantoms`` or ``phantoms:N`` (N synthetic phantoms per modality, default 6) - the embedded default;
- ``*.tsv`` - a VLMEvalKit TSV in the MedQ-Deg / MedQ-Bench format (its clean rows become items);
- ``*.jsonl`` / ``*.csv`` - a manifest of image paths with optional QA fields;
- a folder of DICOM / NIfTI / PNG / JPEG / TIFF / .npy / fastMRI HDF5 files, or one fastMRI ``.h5`` file.
"""

from __future__ import annotations

import base64
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..items import OPTION_LETTERS, QA, Item, ItemError, normalise_modality
from . import phantoms
from .readers import file_kind, read_file, read_raster, to_items

csv.field_size_limit(sys.maxsize)   # base64 images in TSV cells are large


@dataclass(frozen=True)
class Ref:
    """A reference to one source entry: ``key`` is stable and unique within the run."""
    source: str
    key: str
    payload: Any = None


@dataclass
class Source:
    name: str
    spec: str
    slice_rule: str = "middle"
    default_modality: str | None = None      # --modality: for files that record none
    notes: list[dict[str, Any]] = field(default_factory=list)   # source-level problems, for errors.jsonl

    def refs(self) -> list[Ref]:
        raise NotImplementedError

    def load(self, ref: Ref) -> list[Item]:
        raise NotImplementedError

    def note(self, reason: str, fatal: bool = False) -> None:
        self.notes.append({"stage": "source", "source": self.spec, "reason": reason, "fatal": fatal})


class PhantomSource(Source):
    def __init__(self, spec: str, per_modality: int = 6) -> None:
        super().__init__(name="phantoms", spec=spec)
        self.per_modality = per_modality

    def refs(self) -> list[Ref]:
        out = []
        for kind, payload in phantoms.phantom_refs(self.per_modality):
            key = f"{payload[0]}-{payload[1]:03d}" if kind == "synthetic" else f"{payload[0]}-{payload[1]}"
            out.append(Ref(self.name, key, (kind, payload)))
        return out

    def load(self, ref: Ref) -> list[Item]:
        kind, payload = ref.payload
        if kind == "synthetic":
            return [phantoms.synthetic_item(*payload, source=self.name)]
        return phantoms.real_item(*payload, source=self.name)


def _qa_from_row(row: dict[str, Any], strict_answer: bool = True) -> QA | None:
    """QA from a row with ``question``, options ``A``-``E`` (or an ``options`` dict/list) and ``answer``."""
    question = str(row.get("question") or "").strip()
    if not question:
        return None
    opts = row.get("options")
    if isinstance(opts, list):
        opts = {OPTION_LETTERS[i]: str(o) for i, o in enumerate(opts[:5])}
    elif not isinstance(opts, dict):
        opts = {k: str(row[k]).strip() for k in OPTION_LETTERS
                if row.get(k) is not None and str(row[k]).strip() not in ("", "nan", "None")}
    answer = row.get("answer")
    answer = str(answer).strip().upper() if answer not in (None, "") and str(answer).strip() != "nan" else None
    extra = {k: row[k] for k in ("category", "l2-category", "capability", "task", "subtask")
             if row.get(k) not in (None, "")}
    return QA(question, dict(opts), answer, extra)


def tsv_image(row: dict[str, str], rows: dict[str, dict[str, str]], folder: Path, column: str = "image",
              path_column: str = "image_path") -> bytes | Path:
    """A VLMEvalKit row's image: base64 bytes of ``column`` (a short cell naming another row's index points at
    that row's image), else the file in ``path_column`` (relative to ``folder``)."""
    img = (row.get(column) or "").strip()
    if img and len(img) <= 64 and img in rows:          # VLMEvalKit: a short cell points at another row
        img = (rows[img].get("image") or "").strip()
    if img:
        try:
            return base64.b64decode(img, validate=True)
        except ValueError:
            raise ItemError(f"{column} cell is not valid base64") from None
    path = (row.get(path_column) or "").strip()
    if not path:
        raise ItemError(f"row has neither an {column} nor an {path_column}")
    return (folder / path) if not Path(path).is_absolute() else Path(path)


_CLEAN_SEVERITIES = {"", "0", "l0", "none", "clean", "good", "original", "nan"}


class TSVSource(Source):
    """VLMEvalKit TSV: ``index``, ``image`` (base64) or ``image_path``, ``question``, ``A``-``E``, ``answer``,
    ``modality`` and optional ``source``, ``category``, ``degradation_type``, ``degradation_severity``.
    Rows whose severity is missing/L0 (and whose degradation type is empty or none) are the clean items."""

    def __init__(self, spec: str) -> None:
        super().__init__(name=Path(spec).stem, spec=spec)
        self.path = Path(spec)
        self.rows: dict[str, dict[str, str]] = {}

    def refs(self) -> list[Ref]:
        try:
            with self.path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh, delimiter="\t")
                cols = set(reader.fieldnames or [])
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            self.note(f"cannot read TSV: {e}", fatal=True)
            return []
        if not cols & {"image", "image_path"}:
            self.note("TSV has no 'image' or 'image_path' column: no items", fatal=True)
            return []
        if "answer" not in cols:
            self.note("TSV has no 'answer' column: its questions are kept without answers")
        if "modality" not in cols:
            self.note("TSV has no 'modality' column: every row will fail with 'unknown modality'")
        out = []
        for n, row in enumerate(rows):
            idx = (row.get("index") or str(n)).strip()
            self.rows[idx] = row
            sev = str(row.get("degradation_severity") or "").strip().lower()
            typ = str(row.get("degradation_type") or "").strip().lower()
            if sev in _CLEAN_SEVERITIES and typ in ("", "none", "clean", "original", "nan"):
                out.append(Ref(self.name, idx, idx))
        return out

    def _image_bytes(self, row: dict[str, str]) -> bytes | Path:
        return tsv_image(row, self.rows, self.path.parent)

    def load(self, ref: Ref) -> list[Item]:
        row = self.rows[ref.payload]
        modality = normalise_modality(row.get("modality") or "unknown")
        data = self._image_bytes(row)
        rows = read_raster(data, modality) if isinstance(data, bytes) else read_file(data, modality, self.slice_rule)
        for r in rows:
            r["modality"] = modality
        qa = _qa_from_row(row)
        meta = {k: row[k] for k in ("source", "category", "l2-category") if row.get(k)}
        meta["tsv_index"] = ref.payload
        return to_items(rows, f"{self.name}/{ref.key}", self.name, qa=qa, meta=meta)


class ManifestSource(Source):
    """JSONL or CSV: ``image`` (or ``path`` / ``image_path``, relative to the manifest) and optional ``id``,
    ``modality``, ``question``, ``A``-``E`` or ``options``, ``answer``."""

    def __init__(self, spec: str) -> None:
        super().__init__(name=Path(spec).stem, spec=spec)
        self.path = Path(spec)

    def refs(self) -> list[Ref]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            self.note(f"cannot read manifest: {e}", fatal=True)
            return []
        entries: list[tuple[str, Any]] = []
        if self.path.suffix.lower() == ".csv":
            reader = csv.DictReader(text.splitlines())
            if not {"image", "path", "image_path"} & set(reader.fieldnames or []):
                self.note("manifest CSV has no 'image', 'path' or 'image_path' column: no items", fatal=True)
                return []
            entries = [(str(n + 2), row) for n, row in enumerate(reader)]
        else:
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    entries.append((str(n), _json_row(line, n)))
        out = []
        for line_no, payload in entries:
            key = payload.get("id") if isinstance(payload, dict) and payload.get("id") else f"line{line_no}"
            out.append(Ref(self.name, str(key), (line_no, payload)))
        return out

    def load(self, ref: Ref) -> list[Item]:
        line_no, row = ref.payload
        if isinstance(row, ItemError):
            raise row
        rel = row.get("image") or row.get("path") or row.get("image_path")
        if not rel:
            raise ItemError(f"line {line_no}: no 'image', 'path' or 'image_path' field")
        path = Path(rel) if Path(rel).is_absolute() else self.path.parent / rel
        modality = row.get("modality") or None
        rows = read_file(path, modality, self.slice_rule, self.default_modality)
        base = f"{self.name}/{row['id']}" if row.get("id") else f"{self.name}/{Path(rel).as_posix()}"
        return to_items(rows, base, self.name, qa=_qa_from_row(row), meta={"file": str(rel)})


def _json_row(line: str, line_no: int) -> dict[str, Any] | ItemError:
    """A manifest line as a dict, or the ItemError to raise when its entry is loaded."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        return ItemError(f"line {line_no}: not valid JSON ({e.msg})")
    return row if isinstance(row, dict) else ItemError(f"line {line_no}: expected a JSON object")


class FolderSource(Source):
    """All DICOM / NIfTI / raster / .npy files under a folder, sorted by path. Files without an embedded
    modality take it from the nearest folder named after one (``ct/``, ``MRI/``, ``xray/`` ...), the source folder
    itself included."""

    def __init__(self, spec: str) -> None:
        super().__init__(name=Path(spec).name or "folder", spec=spec)
        self.root = Path(spec)

    def refs(self) -> list[Ref]:
        if self.root.is_file():                  # a single file given as the source (a fastMRI .h5)
            return [Ref(self.name, self.root.name, self.root)]
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and file_kind(p))
        if not files:
            self.note("folder holds no DICOM, NIfTI, PNG/JPEG/TIFF or .npy files", fatal=True)
        return [Ref(self.name, p.relative_to(self.root).as_posix(), p) for p in files]

    def _modality(self, path: Path) -> str | None:
        if self.root.is_file():
            return None
        folders = (self.root.resolve().name, *path.relative_to(self.root).parts[:-1])
        for part in reversed(folders):
            try:
                return normalise_modality(part)
            except ItemError:
                continue
        return None

    def load(self, ref: Ref) -> list[Item]:
        path: Path = ref.payload
        rows = read_file(path, self._modality(path), self.slice_rule, self.default_modality)
        return to_items(rows, f"{self.name}/{ref.key}", self.name, meta={"file": ref.key})


def open_source(spec: str, slice_rule: str = "middle", modality: str | None = None) -> Source:
    """A Source for one ``--source`` argument; raises ValueError when the argument fits no kind of source.
    ``modality``: the default for folder and manifest files that record none (``--modality``)."""
    if spec == "phantoms" or spec.startswith("phantoms:"):
        n = int(spec.split(":", 1)[1]) if ":" in spec else 6
        if n < 0:
            raise ValueError("phantoms:N needs N >= 0")
        src: Source = PhantomSource(spec, n)
    else:
        path = Path(spec)
        if path.is_dir():
            src = FolderSource(spec)
        elif path.suffix.lower() == ".tsv":
            src = TSVSource(spec)
        elif path.suffix.lower() in (".jsonl", ".csv"):
            src = ManifestSource(spec)
        elif path.is_file() and file_kind(path) == "fastmri":
            src = FolderSource(spec)
        elif not path.exists():
            raise ValueError(f"source {spec!r} does not exist")
        else:
            raise ValueError(f"source {spec!r} is not 'phantoms', a .tsv, a .jsonl/.csv manifest or a folder")
    src.slice_rule = slice_rule
    src.default_modality = normalise_modality(modality) if modality else None
    return src
