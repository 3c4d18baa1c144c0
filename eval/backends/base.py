"""The backend interface and the records it exchanges."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


class BackendError(Exception):
    """A backend cannot answer (not installed, unreachable, bad spec): the message says why."""


@dataclass
class Query:
    """One request. ``images``: uint8 ``H x W x 3`` arrays (display domain). ``letters``: the item's option
    letters (``""`` for free text). ``seed``: the item's sampling seed, so that sampled answers do not depend
    on the batch they travel in. ``meta``: what baselines may look at (modality, question, task fields)."""

    key: str
    images: list[np.ndarray]
    prompt: str
    letters: str = ""
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Decoding:
    """How to decode. ``trials``: T samples at ``temperature`` for vote confidence (0: none).
    ``letter_probs``: option-letter probabilities from the first answer position."""

    max_new_tokens: int = 16
    trials: int = 0
    temperature: float = 1.0
    letter_probs: bool = True

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class Reply:
    """One answer: the greedy text, T sampled texts when asked, letter probabilities where the backend gives
    them (renormalised over the item's letters), or an error that keeps the query for a retry. ``abstain``:
    a baseline's reason for giving no answer (recorded, excluded from accuracy, counted in coverage)."""

    text: str | None = None
    samples: list[str] = field(default_factory=list)
    letter_probs: dict[str, float] | None = None
    error: str | None = None
    abstain: str | None = None          # a baseline that cannot read the question: why (no answer given)
    # the first generated position's most likely tokens with their real log-probabilities, most likely first
    # (what ``medq-synth serve`` returns as ``top_logprobs``; None when the backend has none)
    first_logprobs: list[tuple[str, float]] | None = None
    # a model observer's decision statistics (recorded as ``observer``: e.g. the CHO's maximum per quadrant)
    statistics: dict | None = None


class Backend:
    """Subclasses set ``name`` and implement ``answer``; ``fit`` is for baselines that need the gold answers
    of the whole set (majority) and is a no-op otherwise. ``thread_safe``: ``answer`` may be called from
    several threads at once (a Ray worker running units side by side); otherwise its calls are serialised."""

    name = "backend"
    gives_letter_probs = False
    needs_prior = False
    thread_safe = False

    def answer(self, queries: list[Query], decoding: Decoding) -> list[Reply]:
        raise NotImplementedError

    def fit(self, answers: list[tuple[str, str | None]]) -> None:
        """``answers``: (letters, gold letter) of every item to be evaluated."""

    def close(self) -> None:
        """Release the model / connections."""


def renormalise(probs: dict[str, float], letters: str) -> dict[str, float] | None:
    """Restrict to the item's letters and renormalise; None when they carry no mass at all."""
    sub = {c: max(float(probs.get(c, 0.0)), 0.0) for c in letters}
    total = sum(sub.values())
    return {c: v / total for c, v in sub.items()} if total > 0 else None
