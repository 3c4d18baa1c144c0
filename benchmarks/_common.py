"""What every benchmark records and how it writes its results (JSON + markdown under benchmarks/results/)."""

from __future__ import annotations

import datetime as dt
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def base_meta(device: torch.device | str) -> dict[str, Any]:
    """Date, device, card (GPU name or CPU model), threads, torch and Python versions."""
    device = torch.device(device)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {"date": dt.date.today().isoformat(), "device": str(device), "card": card,
            "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}


def write_results(out: str | Path, stem: str, meta: dict[str, Any], rows: list[dict[str, Any]], title: str,
                  header: list[str], cells: list[list[str]], notes: list[str] = ()) -> Path:
    """``stem``.json (meta + rows) and ``stem``.md (title, meta line, table, notes); returns the .md path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    lines = [f"# {title}", "", "| " + " | ".join(f"{k}: {v}" for k, v in meta.items()) + " |", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    if notes:
        lines += [""] + list(notes)
    md = out / f"{stem}.md"
    md.write_text("\n".join(lines) + "\n")
    print(f"wrote {md}")
    return md


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_of(fn, repeats: int, device: torch.device) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after one warm-up call (plans, caches, JIT)."""
    fn()
    sync(device)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best
