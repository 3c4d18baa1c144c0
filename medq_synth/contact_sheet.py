"""The contact sheet: rows = degradations, columns = L0 / L1 / L2 for a few items of different modalities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TILE = 128
LABEL_W = 150
HEAD_H = 34


def pick_items(rows: list[dict[str, Any]], n: int = 4) -> list[str]:
    """The first item of each modality, in manifest order, up to ``n``."""
    seen: dict[str, str] = {}
    for r in rows:
        seen.setdefault(r["modality"], r["source_id"])
    return list(seen.values())[:n]


def contact_sheet(root: Path, rows: list[dict[str, Any]], path: str = "contact_sheet.png", n_items: int = 4) -> Path:
    from PIL import Image, ImageDraw

    items = pick_items(rows, n_items)
    degs = [d for d in dict.fromkeys(r["degradation"] for r in rows) if d != "none"]
    levels = sorted({r["level"] for r in rows if r["level"] is not None})
    cells = {(r["source_id"], r["degradation"], r["level"]): r["image"] for r in rows if r["level"] is not None}
    cols = [(it, lv) for it in items for lv in levels]
    sheet = Image.new("RGB", (LABEL_W + TILE * len(cols), HEAD_H + TILE * max(1, len(degs) or 1)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (it, lv) in enumerate(cols):
        x = LABEL_W + c * TILE
        if lv == levels[0]:
            draw.text((x + 3, 2), it.split("/", 1)[-1][:40], fill="black")
        draw.text((x + 3, 18), f"L{lv}", fill="black")
    for r_i, deg in enumerate(degs or ["none"]):
        y = HEAD_H + r_i * TILE
        draw.text((4, y + TILE // 2 - 6), deg, fill="black")
        for c, (it, lv) in enumerate(cols):
            rel = cells.get((it, "none" if lv == 0 else deg, lv))
            if rel is None:
                continue
            with Image.open(Path(root) / rel) as im:
                tile = im.convert("RGB")
                tile.thumbnail((TILE - 2, TILE - 2))
            sheet.paste(tile, (LABEL_W + c * TILE + 1, y + 1))
    out = Path(root) / path
    sheet.save(out)
    return out
