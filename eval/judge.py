"""MedQ-Bench's four-axis judge for the reasoning tasks (no-reference description, two-image comparison).

Text only: the judge sees the model's description and the expert's, never the image. One call per axis,
each scored 0, 1 or 2; unparsable judge replies are retried, then dropped from the mean (not scored 0);
judge failures are recorded in errors.jsonl and asked again on the next run.
Overall = the sum of the four axis means (max 8). The quality-accuracy axis is also computed by rule from
the two verdicts (ordinal reject < usable < good: exact 2, adjacent 1, opposite 0; comparison: 2 if the
same image wins, else 0) as a judge-free cross-check."""

from __future__ import annotations

from typing import Any

import numpy as np

from .backends import Backend, Decoding, Query
from .parsing import VERDICTS, parse_judge_score, parse_verdict, parse_winner

AXES = {
    "completeness": "Does the model's description cover the low-level quality facts stated in the expert "
                    "description? 2: all or nearly all; 1: some, or similar ones; 0: none.",
    "preciseness": "Does the model's description contradict the expert description? Only clear contradictions "
                   "count (for example 'blurred' for a sharp image, 'no noise' when noise is present). "
                   "2: consistent; 1: minor conflicts; 0: an obvious contradiction.",
    "consistency": "Does the model's reasoning support its own final verdict (many serious problems: reject; "
                   "minor problems: usable; few or none: good)? 2: coherent; 1: small gaps; 0: inconsistent.",
    "quality_accuracy": "Is the model's final quality verdict the same as the expert's? For a single image the "
                        "verdicts are ordered reject < usable < good: 2 exact, 1 adjacent, 0 opposite. For a "
                        "comparison: 2 if the same image is judged better, else 0.",
}
RETRIES = 3


def judge_prompt(axis: str, output: str, reference: str) -> str:
    return (f"#System: You grade descriptions of medical image quality against an expert's.\n"
            f"#User: {AXES[axis]}\n\n[MLLM DESC]\n{output}\n\n[GOLDEN DESC]\n{reference}\n\n"
            "Reply with 'Score: N' where N is 0, 1 or 2.")


def rule_quality(output: str, reference: str, kind: str) -> float | None:
    if kind == "comparison":
        a, b = parse_winner(output), parse_winner(reference)
        return None if a is None or b is None else (2.0 if a == b else 0.0)
    a, b = parse_verdict(output), parse_verdict(reference)
    if a is None or b is None:
        return None
    return float(2 - abs(VERDICTS.index(a) - VERDICTS.index(b)))


def judge_records(judge: Backend, records: list[dict[str, Any]], batch_size: int = 8) -> list[dict[str, Any]]:
    """Fill ``record['judge']`` (axis -> score or None, plus ``quality_rule``) for reasoning records.

    A judge reply that does not parse is asked again, up to RETRIES times, then scored None (dropped from the
    mean, as MedQ-Bench does). A judge that fails (an exception, an error reply, fewer replies than queries)
    leaves the axis open: the failures are returned, for errors.jsonl, and the next run asks those axes again
    (records already holding every axis are not asked)."""
    todo = [r for r in records if r.get("kind") in ("description", "comparison")
            and any(a not in (r.get("judge") or {}) for a in AXES)]
    decoding = Decoding(max_new_tokens=24, letter_probs=False)
    for r in todo:
        r["judge"] = dict(r.get("judge") or {})
        r["judge"]["quality_rule"] = rule_quality(r.get("response") or "", r.get("reference") or "", r["kind"])
    failures: dict[tuple[str, str], str] = {}
    for attempt in range(RETRIES):
        open_jobs = [(r, a) for r in todo for a in AXES if a not in r["judge"]]
        for k in range(0, len(open_jobs), batch_size):
            chunk = open_jobs[k: k + batch_size]
            queries = [Query(key=f"{r['key']}:{a}", images=[], prompt=judge_prompt(a, r.get("response") or "",
                                                                                    r.get("reference") or ""))
                       for r, a in chunk]
            try:
                replies = list(judge.answer(queries, decoding))
            except Exception as e:          # a judge outage: recorded, and the next attempt (or run) asks again
                failures.update({(r["key"], a): f"{type(e).__name__}: {e}" for r, a in chunk})
                continue
            for i, (r, a) in enumerate(chunk):
                if i >= len(replies):
                    failures[(r["key"], a)] = f"the judge returned {len(replies)} replies for {len(chunk)} queries"
                elif replies[i].error:
                    failures[(r["key"], a)] = str(replies[i].error)
                else:
                    failures.pop((r["key"], a), None)
                    score = parse_judge_score(replies[i].text)
                    if score is not None or attempt == RETRIES - 1:
                        r["judge"][a] = score
    name = getattr(judge, "name", type(judge).__name__)
    return [{"stage": "judge", "key": r["key"], "axis": a, "item": r.get("output_id"), "judge": name,
             "reason": failures.get((r["key"], a), "the judge gave no reply")}
            for r in todo for a in AXES if a not in r["judge"]]


def judge_summary(judged: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n": len(judged)}
    means = []
    for axis in (*AXES, "quality_rule"):
        vals = [j[axis] for j in judged if j.get(axis) is not None]
        out[axis] = float(np.mean(vals)) if vals else None
        out[f"{axis}_n"] = len(vals)
        if axis in AXES and vals:
            means.append(out[axis])
    out["overall"] = float(sum(means)) if len(means) == len(AXES) else None
    return out
