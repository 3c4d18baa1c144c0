"""The results store: ``predictions.jsonl`` (one line per answered key) and ``errors.jsonl``.

Lines are appended and flushed as answers arrive. A killed run leaves at most one truncated last line,
which ``load`` drops (that answer is asked again); keys already present are skipped, so a resumed run or a
rerun never answers or counts anything twice."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pred_path = self.root / "predictions.jsonl"
        self.err_path = self.root / "errors.jsonl"
        self.records: dict[str, dict[str, Any]] = {}
        self._load()

    def _load(self) -> None:
        if not self.pred_path.exists():
            return
        data = self.pred_path.read_bytes()
        good_end = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break                       # truncated by a kill: drop it
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            self.records.setdefault(rec["key"], rec)
            good_end += len(line)
        if good_end < len(data):
            with open(self.pred_path, "r+b") as fh:
                fh.truncate(good_end)

    def done(self, key: str) -> bool:
        return key in self.records

    def add(self, records: list[dict[str, Any]]) -> None:
        fresh = [r for r in records if r["key"] not in self.records]
        if not fresh:
            return
        with open(self.pred_path, "a", encoding="utf-8") as fh:
            for r in fresh:
                fh.write(json.dumps(r, sort_keys=True) + "\n")
                self.records[r["key"]] = r
            fh.flush()
            os.fsync(fh.fileno())

    def error(self, entries: list[dict[str, Any]]) -> None:
        if entries:
            with open(self.err_path, "a", encoding="utf-8") as fh:
                fh.write("".join(json.dumps(e, sort_keys=True) + "\n" for e in entries))

    def errors(self) -> list[dict[str, Any]]:
        if not self.err_path.exists():
            return []
        seen: dict[str, dict[str, Any]] = {}       # a rerun records a persistent problem again: count it once
        for line in self.err_path.read_text().splitlines():
            if line.strip():
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue                    # a line cut by a kill
                seen.setdefault(json.dumps(e, sort_keys=True), e)
        return list(seen.values())

    def unresolved(self) -> list[dict[str, Any]]:
        """Errors not superseded by a later successful answer of the same key (for the judge: of the axis)."""
        def resolved(e: dict[str, Any]) -> bool:
            rec = self.records.get(e.get("key") or "")
            if e.get("stage") == "judge":
                return rec is not None and e.get("axis") in (rec.get("judge") or {})
            return rec is not None
        return [e for e in self.errors() if not resolved(e)]

    def rewrite(self) -> None:
        """Write every record again (after judge scores were added), atomically."""
        from medq_synth.writer import atomic_write

        atomic_write(self.pred_path, "".join(json.dumps(r, sort_keys=True) + "\n"
                                             for r in self.records.values()).encode())
