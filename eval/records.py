"""Samples (what a model is asked) and prediction records (what it answered, scored)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends.base import Decoding, Query, Reply
from .confidence import expected_vote_confidence, letter_confidence, vote_confidence, vote_shares
from .parsing import PARSERS, UNPARSED, default_parser, is_hit, parse_verbal_confidence, parse_with
from .prompts import free_prompt, mcq_prompt, template_digest

META_FIELDS = ("source", "modality", "degradation", "medq_deg_id", "category", "level", "level_key", "severity",
               "capability", "task", "lesion_quadrants")


@dataclass
class Sample:
    """One evaluation item: a degraded (or clean) image with its question. ``images``: uint8 H x W x 3.
    ``base_id``: the clean item it came from (pairs L0/L1/L2 for the paired bootstrap).
    ``kind``: ``mcq``, ``description`` or ``comparison``; ``reference``: the gold text of reasoning items."""

    output_id: str
    base_id: str
    images: list[np.ndarray]
    question: str
    options: dict[str, str]
    answer: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "mcq"
    reference: str | None = None

    @property
    def letters(self) -> str:
        return "".join(sorted(self.options))


@dataclass(frozen=True)
class Setting:
    """Everything besides the item that determines an answer."""

    model: str
    label: str
    template: str
    decoding: Decoding
    data_tag: str = ""          # e.g. the generation seed: the same output id with another seed is another image
    parser: str = ""            # "" = the template's default (eval.parsing.default_parser); not part of the key

    @property
    def parser_name(self) -> str:
        return self.parser or default_parser(self.template)

    def prompt(self, s: Sample) -> str:
        return mcq_prompt(s.question, s.options, self.template) if s.kind == "mcq" else free_prompt(s.kind, s.question)

    def key(self, s: Sample) -> str:
        """One result per (item, degradation, level, model, prompt, sampling settings)."""
        prompt = self.prompt(s)
        digest = template_digest(self.template) if s.kind == "mcq" else s.kind
        parts = [s.output_id, self.data_tag, self.model, self.template, digest,
                 hashlib.sha256(prompt.encode()).hexdigest(), self.decoding.fingerprint()]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:24]

    def query(self, s: Sample) -> Query:
        from medq_synth.seeding import derive_seed

        key = self.key(s)
        meta = {k: s.meta.get(k) for k in ("modality", "task", "region")}
        return Query(key=key, images=s.images, prompt=self.prompt(s), letters=s.letters if s.kind == "mcq" else "",
                     seed=derive_seed("sample", key), meta=meta)


def _argmax(probs: dict[str, float], letters: str) -> str:
    return max(letters, key=lambda c: (probs.get(c, 0.0), -letters.index(c)))


def make_record(s: Sample, setting: Setting, reply: Reply) -> dict[str, Any]:
    """Score one reply: every parser's letter and hit (``pred`` / ``correct``: the setting's parser), the three
    confidence sources (where available); an abstention is recorded as such, with its reason."""
    rec: dict[str, Any] = {"key": setting.key(s), "label": setting.label, "model": setting.model,
                           "template": setting.template, "decoding": setting.decoding.fingerprint(),
                           "output_id": s.output_id, "base_id": s.base_id, "kind": s.kind}
    rec.update({k: s.meta.get(k) for k in META_FIELDS})
    rec["level_key"] = rec["level_key"] or (f"L{rec['level']}" if rec["level"] is not None else None)
    rec["params"] = s.meta.get("params")
    rec["response"] = reply.text
    if s.kind != "mcq":
        rec.update(reference=s.reference, question=s.question)
        return rec
    letters = s.letters
    if reply.abstain:           # a baseline that cannot read the question: no answer, excluded from accuracy
        rec.update(question=s.question, options=s.options, answer=s.answer, K=len(letters), abstained=reply.abstain,
                   pred=None, pred_strict=None, preds={}, hits={}, correct=None, parser=setting.parser_name)
        return rec
    parser = setting.parser_name
    preds = {name: parse_with(name, reply.text, letters) for name in PARSERS}
    hits = {name: is_hit(name, reply.text, letters, s.answer) for name in PARSERS}
    rec.update(question=s.question, options=s.options, answer=s.answer, K=len(letters), parser=parser,
               pred=preds[parser], pred_strict=preds["strict"], preds=preds, hits=hits, correct=hits[parser])
    conf: dict[str, float | None] = {}
    top: dict[str, float] = {}
    top_ok: dict[str, bool] = {}
    if reply.letter_probs:
        p = np.array([reply.letter_probs[c] for c in letters])
        rec["letter_probs"] = {c: round(float(v), 8) for c, v in zip(letters, p, strict=True)}
        conf["letter"] = letter_confidence(p)
        conf["letter_T3"] = expected_vote_confidence(p, 3)
        conf["letter_T10"] = expected_vote_confidence(p, 10)
        best = _argmax(reply.letter_probs, letters)
        top["letter"], top_ok["letter"] = float(p.max()), best == s.answer
    if reply.samples:
        votes = [parse_with(parser, t, letters) for t in reply.samples]
        rec["samples"], rec["votes"] = reply.samples, votes
        shares = vote_shares(votes, letters)
        conf["vote"] = vote_confidence(votes, letters)
        majority = _argmax(dict(zip(letters, shares, strict=True)), letters)
        top["vote"], top_ok["vote"] = float(shares.max()), majority == s.answer
    verbal = parse_verbal_confidence(reply.text) if setting.template == "verbal" else None
    if verbal is not None:
        conf["verbal"] = verbal
        top["verbal"], top_ok["verbal"] = verbal, rec["correct"]
    rec["confidence"] = {k: round(v, 8) for k, v in conf.items()}
    rec["top"] = {k: round(v, 8) for k, v in top.items()}
    rec["top_correct"] = top_ok
    rec["unparsed"] = preds[parser] == UNPARSED
    if reply.statistics is not None:
        rec["observer"] = reply.statistics
    return rec
