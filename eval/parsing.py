"""Answer parsing: MedQ-Deg's cascade, a strict mode, verbalised confidence and judge scores.

Everything that yields no letter is ``UNPARSED``: it is scored wrong and counted, never replaced by a random
or nearest option (those fallbacks hide refusals, which grow with severity)."""

from __future__ import annotations

import json
import re

UNPARSED = "UNPARSED"
LETTERS = "ABCDE"

_ANSWER_IS = re.compile(r"\b(?:ANSWER\s+IS|OPTION)\s*:?\s*\(?([A-E])\b")
_LEAD_PUNCT = re.compile(r"^\(?([A-E])(?:[.)]|\s)")
_LEAD_DASH = re.compile(r"^([A-E])\s*[-:]")
_STANDALONE = re.compile(r"\b([A-E])\b")
_STRICT_LEAD = re.compile(r"^\(?([A-E])\s*(?:[.):\-]|$)")


def parse_medq_deg(text: str | None) -> str:
    """MedQ-Deg's cascade (VLMEvalKit ``_extract_option_letter``) on the upper-cased, stripped reply; first
    match wins: (1) the reply is one letter A-E, (2) a leading letter then ``.``, ``)`` or whitespace,
    (3) "ANSWER IS X" / "OPTION X", (4) a leading letter then ``-`` or ``:``, (5) the first standalone A-E.
    Upstream keeps the raw text when nothing matches (scored wrong); here that is ``UNPARSED``."""
    if not text:
        return UNPARSED
    t = text.strip().upper()
    if len(t) == 1 and t in LETTERS:
        return t
    m = _LEAD_PUNCT.match(t) or _ANSWER_IS.search(t) or _LEAD_DASH.match(t) or _STANDALONE.search(t)
    return m.group(1) if m else UNPARSED


def parse_strict(text: str | None, letters: str = LETTERS) -> str:
    """Strict mode: only a reply that *is* an option letter of this item - alone, ``(B)``, ``B.``, ``B)``,
    ``B:``, ``B -`` at the start, or "the answer is B". No standalone-letter search (it fires on the article
    "A"), no letters outside the item's options."""
    if not text:
        return UNPARSED
    t = text.strip().upper()
    m = _STRICT_LEAD.match(t) or _ANSWER_IS.search(t)
    return m.group(1) if m and m.group(1) in letters else UNPARSED


_CONFIDENCE = re.compile(r"CONFIDENCE\s*(?:LEVEL|SCORE)?\s*[:=]?\s*(\d{1,3}(?:\.\d+)?)\s*(%?)", re.IGNORECASE)


def parse_verbal_confidence(text: str | None) -> float | None:
    """'Confidence: 85%' (or 0.85) -> 0.85; None when absent or outside [0, 100 %]."""
    if not text:
        return None
    m = _CONFIDENCE.search(text)
    if not m:
        return None
    v = float(m.group(1))
    if m.group(2) or v > 1.0:
        v /= 100.0
    return v if 0.0 <= v <= 1.0 else None


_SCORE = re.compile(r"SCORE\s*[:\uff1a]\s*([0-2](?:\.\d+)?)", re.IGNORECASE)
_BARE = re.compile(r"(?<![\d.])([0-2](?:\.\d+)?)(?![\d.])")


def parse_judge_score(text: str | None) -> float | None:
    """A judge reply's 0-2 score: 'Score: x' (ASCII or full-width colon), else JSON ``x`` or ``{"score": x}``,
    else a bare number 0-2. None (dropped from the mean, not scored 0) when nothing parses."""
    if not text:
        return None
    m = _SCORE.search(text)
    if m:
        return float(m.group(1))
    try:
        obj = json.loads(text.strip())
        val = obj.get("score") if isinstance(obj, dict) else obj
        if isinstance(val, (int, float)) and not isinstance(val, bool) and 0 <= val <= 2:
            return float(val)
    except (json.JSONDecodeError, AttributeError):
        pass
    m = _BARE.search(text)
    return float(m.group(1)) if m else None


_VERDICT = re.compile(r"QUALITY OF (?:THIS|THE) IMAGE IS\s+\W*(GOOD|USABLE|REJECT)", re.IGNORECASE)
_WINNER = re.compile(r"\bIMAGE\s+([AB])\b", re.IGNORECASE)
VERDICTS = ("reject", "usable", "good")


def parse_verdict(text: str | None) -> str | None:
    """The good / usable / reject verdict of a no-reference description (its last occurrence)."""
    found = _VERDICT.findall(text or "")
    return found[-1].lower() if found else None


def parse_winner(text: str | None) -> str | None:
    """'A' or 'B' from the last 'Image A/B' mention of a comparison."""
    found = _WINNER.findall(text or "")
    return found[-1].upper() if found else None
