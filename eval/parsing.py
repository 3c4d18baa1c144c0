"""Answer parsing: the released MedQ-Deg evaluator's parser, the corrected cascade, a strict mode,
verbalised confidence and judge scores.

Everything that yields no letter is ``UNPARSED``: it is scored wrong and counted, never replaced by a random
or nearest option (those fallbacks hide refusals, which grow with severity). Parse rates are reported for
every parser."""

from __future__ import annotations

import json
import re

UNPARSED = "UNPARSED"
LETTERS = "ABCDE"

# -- the released VLMEvalKit evaluator (MedQDEGBenchDataset._extract_option_letter), quirks included -------
# Published MedQ-Deg numbers come from that code, so the default parser of the medq-deg template reproduces
# what it does, not what its cascade seems to say:
#  * its "answer is X" / "option X" stage searches a lower-case pattern in the upper-cased reply and never
#    fires (not reproduced, since it has no effect);
#  * its standalone-letter stage treats only A-Z as neighbours: digits, "_" and non-ASCII letters do not
#    block ("At the C1 level; answer B" gives C);
#  * letters run A-E whatever the item's options (an "E" on a four-option item is a wrong answer);
#  * a reply it cannot read stays the prediction, a hit only if it equals the gold letter.
_REL_LEAD = re.compile(r"([A-E])[.)\s]")
_REL_DASH = re.compile(r"([A-E])\s*[-:]")
_REL_ALONE = re.compile(r"(?:^|[^A-Z])([A-E])(?:[^A-Z]|$)")


def released_prediction(text: str | None) -> str | None:
    """What the released evaluator stores as the prediction: a letter A-E, or the stripped reply itself when
    no rule matches; None for a missing reply (pandas NaN upstream)."""
    if text is None:
        return None
    reply = str(text).strip()
    t = reply.upper()
    if t in ("A", "B", "C", "D", "E"):
        return t
    m = _REL_LEAD.match(t) or _REL_DASH.match(t) or _REL_ALONE.search(t)
    return m.group(1) if m else reply


def released_hit(text: str | None, answer: str | None) -> bool:
    """The released evaluator's hit: the upper-cased prediction equals the upper-cased gold answer."""
    pred = released_prediction(text)
    return pred is not None and answer is not None and str(answer).strip().upper() == str(pred).upper()


def parse_vlmevalkit(text: str | None) -> str:
    """The released evaluator's letter, or ``UNPARSED`` where it keeps the raw reply."""
    pred = released_prediction(text)
    return pred if pred is not None and len(pred) == 1 and pred in LETTERS else UNPARSED


# -- the corrected cascade and the strict parser ----------------------------------------------------------
_ANSWER_IS = re.compile(r"\b(?:ANSWER\s+IS|OPTION)\s*:?\s*\(?([A-E])\b")
_LEAD_PUNCT = re.compile(r"^\(?([A-E])(?:[.)]|\s)")
_LEAD_DASH = re.compile(r"^([A-E])\s*[-:]")
_STANDALONE = re.compile(r"\b([A-E])\b")
_STRICT_LEAD = re.compile(r"^\(?([A-E])\s*(?:[.):\-]|$)")


def parse_cascade(text: str | None) -> str:
    """The cascade MedQ-Deg's evaluator describes, as it reads: on the upper-cased, stripped reply, first
    match wins: (1) the reply is one letter A-E, (2) a leading letter then ``.``, ``)`` or whitespace,
    (3) "ANSWER IS X" / "OPTION X" (which fires here), (4) a leading letter then ``-`` or ``:``, (5) the first
    A-E standing alone as a word (digits, ``_`` and any letter block it). ``UNPARSED`` otherwise."""
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


PARSERS = ("vlmevalkit", "cascade", "strict")


def parse_with(name: str, text: str | None, letters: str = LETTERS) -> str:
    """A reply's letter under parser ``name`` (``PARSERS``)."""
    if name == "vlmevalkit":
        return parse_vlmevalkit(text)
    if name == "cascade":
        return parse_cascade(text)
    if name == "strict":
        return parse_strict(text, letters)
    raise ValueError(f"unknown parser {name!r} (choose from {', '.join(PARSERS)})")


def is_hit(name: str, text: str | None, letters: str, answer: str | None) -> bool:
    """Correctness under parser ``name``; the released rule (upper-cased string equality) for vlmevalkit."""
    if name == "vlmevalkit":
        return released_hit(text, answer)
    return answer is not None and parse_with(name, text, letters) == answer


def default_parser(template: str) -> str:
    """The released evaluator's parser for the MedQ-Deg template, the corrected cascade for the others."""
    return "vlmevalkit" if template == "medq-deg" else "cascade"


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
