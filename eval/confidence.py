"""Confidence from votes and from option-letter probabilities (MedQ-Deg's C = 1 - H / log K).

With T samples at temperature 1 the vote shares are a multinomial draw from the model's answer distribution;
for one-token answers that distribution is the softmax over the letter logits. So the letter probabilities
give, in one forward pass, both the T -> infinity limit of C and its exact expectation at finite T
(an enumeration of the multinomial outcomes: at most C(14, 4) = 1001 of them for K = 5, T = 10)."""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np


def entropy_confidence(shares: np.ndarray, k: int) -> float:
    """C = 1 - H(p) / log K for shares p over the K options (natural log; 0 log 0 = 0). Shares may sum to
    less than 1 when some votes did not parse (MedQ-Deg's p_i keeps the denominator T)."""
    if k < 2:
        raise ValueError("confidence needs K >= 2 options")
    p = np.asarray(shares, dtype=np.float64)
    p = p[p > 0]
    h = float(-(p * np.log(p)).sum())
    return 1.0 - h / math.log(k)


def vote_shares(votes: list[str], letters: str) -> np.ndarray:
    """p_i = (1/T) * #{t: vote_t = letter_i}; unparsed votes count in T but in no option."""
    t = len(votes)
    if t == 0:
        raise ValueError("no votes")
    return np.array([sum(v == c for v in votes) / t for c in letters], dtype=np.float64)


def vote_confidence(votes: list[str], letters: str) -> float:
    return entropy_confidence(vote_shares(votes, letters), len(letters))


@lru_cache(maxsize=64)
def _compositions(t: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All vote-count vectors n (sum t over k options), their multinomial log-coefficients and C values."""
    counts = np.array([c for c in itertools.product(range(t + 1), repeat=k) if sum(c) == t], dtype=np.int64)
    logcoef = np.array([math.lgamma(t + 1) - sum(math.lgamma(n + 1) for n in c) for c in counts])
    conf = np.array([entropy_confidence(c / t, k) for c in counts])
    return counts, logcoef, conf


def expected_vote_confidence(probs: np.ndarray, t: int) -> float:
    """E[C] over T votes drawn from ``probs`` (the K letter probabilities), exactly."""
    p = np.asarray(probs, dtype=np.float64)
    k = p.size
    counts, logcoef, conf = _compositions(int(t), k)
    with np.errstate(divide="ignore"):
        logp = np.where(p > 0, np.log(p), 0.0)
    terms = (counts * logp[None, :]).sum(axis=1)
    terms = np.where((counts[:, p <= 0] > 0).any(axis=1), -np.inf, terms)    # a vote for a letter of p = 0
    return float((np.exp(logcoef + terms) * conf).sum())


def letter_confidence(probs: np.ndarray) -> float:
    """The T -> infinity limit of the vote confidence: C of the letter distribution itself."""
    p = np.asarray(probs, dtype=np.float64)
    return entropy_confidence(p / p.sum(), p.size)
