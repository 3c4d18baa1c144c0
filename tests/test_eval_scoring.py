"""Parsing, confidence and metrics against hand-computed values and torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from medq_synth.eval import metrics as M
from medq_synth.eval.confidence import expected_vote_confidence, letter_confidence, vote_confidence
from medq_synth.eval.parsing import (
    UNPARSED,
    parse_cascade,
    parse_judge_score,
    parse_strict,
    parse_verbal_confidence,
    parse_verdict,
)


@pytest.mark.parametrize("text,cascade,strict", [
    ("B", "B", "B"), (" c ", "C", "C"), ("B. Right side", "B", "B"), ("(D) three", "D", "D"),
    ("The answer is C.", "C", "C"), ("Option A", "A", "A"), ("E: none", "E", UNPARSED),   # E is not an option here
    ("A lesion is visible, so B", "A", UNPARSED), ("I think it is D", "D", UNPARSED), ("C - two", "C", "C"),
    ("I cannot tell from this image.", UNPARSED, UNPARSED), ("", UNPARSED, UNPARSED), (None, UNPARSED, UNPARSED),
])
def test_parsers(text, cascade, strict):
    assert parse_cascade(text) == cascade
    assert parse_strict(text, "ABCD") == strict


def test_verbal_and_judge_parsing():
    assert parse_verbal_confidence("B\nConfidence: 85%") == pytest.approx(0.85)
    assert parse_verbal_confidence("A (confidence 0.4)") == pytest.approx(0.4)
    assert parse_verbal_confidence("A") is None and parse_verbal_confidence("Confidence: 250%") is None
    assert parse_judge_score("Reasoning... Score: 2") == 2.0
    assert parse_judge_score("Score\uff1a1.5") == 1.5
    assert parse_judge_score('{"score": 1}') == 1.0
    assert parse_judge_score("no number here") is None
    assert parse_verdict("Noisy. Overall, the quality of this image is usable.") == "usable"


@pytest.mark.parametrize("votes,k,expected", [
    ("AAA", 4, 1.000), ("AAB", 4, 0.541), ("ABC", 4, 0.208), ("AAB", 2, 0.082), ("AAB", 5, 0.605), ("ABC", 5, 0.317),
    ("AAAAAAAAAB", 4, 0.766), ("AAAAAAABBB", 4, 0.559), ("AAAAABBBBB", 2, 0.0), ("AAAAAABBCC", 5, 0.410),
    ("AAABBBCCDD", 4, 0.015),
])
def test_vote_confidence_matches_medq_deg_table(votes, k, expected):
    assert vote_confidence(list(votes), "ABCDE"[:k]) == pytest.approx(expected, abs=5e-4)


def test_unparsed_votes_keep_denominator_t():
    # p_A = 1/3 over K = 4 options, the other two votes parsed to nothing: H = (1/3) log 3
    assert vote_confidence(["A", UNPARSED, UNPARSED], "ABCD") == pytest.approx(1 - math.log(3) / 3 / math.log(4))


@given(st.lists(st.floats(0.01, 1.0), min_size=2, max_size=5), st.sampled_from([3, 10]))
def test_expected_vote_confidence_is_exact(weights, t):
    """E[C] over T votes, enumerated, against a Monte-Carlo estimate (tolerance 5 sigma)."""
    p = np.array(weights) / np.sum(weights)
    exact = expected_vote_confidence(p, t)
    rng = np.random.default_rng(0)
    letters = "ABCDE"[: p.size]
    draws = rng.choice(p.size, size=(4000, t), p=p)
    mc = np.array([vote_confidence([letters[i] for i in row], letters) for row in draws])
    assert abs(exact - mc.mean()) < 5 * mc.std() / math.sqrt(len(mc)) + 1e-9


def test_letter_confidence_is_the_large_t_limit():
    p = np.array([0.6, 0.25, 0.1, 0.05])
    assert abs(expected_vote_confidence(p, 10) - letter_confidence(p)) < abs(
        expected_vote_confidence(p, 3) - letter_confidence(p))
    assert letter_confidence(np.array([1.0, 0, 0, 0])) == pytest.approx(1.0)
    assert letter_confidence(np.full(4, 0.25)) == pytest.approx(0.0, abs=1e-12)


def test_ece_matches_torchmetrics():
    from torchmetrics.classification import MulticlassCalibrationError

    rng = np.random.default_rng(1)
    logits = rng.normal(size=(2000, 4)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    target = rng.integers(0, 4, size=2000)
    conf, hit = probs.max(1), probs.argmax(1) == target
    for bins in (10, 15):
        metric = MulticlassCalibrationError(num_classes=4, n_bins=bins, norm="l1")
        ref = metric(torch.tensor(probs), torch.tensor(target))
        assert M.ece(conf, hit, bins, "width")["ece"] == pytest.approx(float(ref), abs=1e-6)
    # equal mass (ACE, Nixon et al. 2019), by hand: 4 items in 2 bins of the sorted confidences,
    # {0.1, 0.2} (acc 0.5, conf 0.15) and {0.3, 0.9} (acc 0.5, conf 0.6): ECE 0.5 * 0.35 + 0.5 * 0.1, MCE 0.35
    small = M.ece(np.array([0.9, 0.1, 0.3, 0.2]), np.array([1, 0, 0, 1]), 2, "mass")
    assert small["ece"] == pytest.approx(0.225) and small["mce"] == pytest.approx(0.35)
    # and the definition with NumPy's array_split of the sorted items (N divisible by the bin count)
    c = rng.uniform(size=3000)
    hit = rng.uniform(size=3000) < c ** 2
    order = np.argsort(c)
    ref = sum(len(b) / 3000 * abs(hit[b].mean() - c[b].mean()) for b in np.array_split(order, 15))
    assert M.ece(c, hit, 15, "mass")["ece"] == pytest.approx(ref, abs=1e-12)


def test_auroc_brier_shift_match_definitions():
    from torchmetrics.functional.classification import binary_auroc

    rng = np.random.default_rng(2)
    conf = np.round(rng.uniform(size=500), 2)           # ties on purpose
    hit = rng.uniform(size=500) < conf
    assert M.auroc(conf, hit) == pytest.approx(float(binary_auroc(torch.tensor(conf), torch.tensor(hit).long())),
                                               abs=1e-6)
    assert M.brier(np.array([1.0, 0.5]), np.array([1, 0])) == pytest.approx(0.125)
    assert M.calibration_shift(np.array([0.9, 0.9, 0.6]), np.array([1, 0, 1])) == pytest.approx(0.8 - 2 / 3)
    assert M.auroc(conf, np.ones(500, bool)) is None


def test_dunning_kruger_definitions():
    # Gemma-3-4B in the paper: accuracy .535 -> .465 while the shift grows .455 -> .52
    assert M.intra_model_dke({0: 0.535, 2: 0.465}, {0: 0.455, 2: 0.52}) is True
    assert M.intra_model_dke({0: 0.535, 2: 0.465}, {0: 0.455, 2: 0.40}) is False
    assert M.intra_model_dke({0: 0.5}, {0: 0.1}) is None
    pairs = M.inter_model_dke({"gemma": (0.535, 0.455), "gpt5": (0.70, 0.21), "other": (0.8, 0.5)})
    assert [(p["weaker"], p["stronger"]) for p in pairs] == [("gemma", "gpt5")]


def test_paired_bootstrap_and_drop():
    rng = np.random.default_rng(3)
    bases, levels, correct = [], [], []
    for b in range(200):
        for lv, p in ((0, 0.8), (1, 0.75), (2, 0.6)):
            bases.append(f"b{b}")
            levels.append(lv)
            correct.append(bool(rng.uniform() < p))
    boot = M.paired_bootstrap(bases, levels, correct, n_boot=500)
    recs = [{"base_id": b, "level": lv, "correct": c, "degradation": "x"}
            for b, lv, c in zip(bases, levels, correct, strict=True)]
    assert boot["L2-L0"]["value"] == pytest.approx(M.level_drop(recs, 2))
    clean = [c for c, lv in zip(correct, levels, strict=True) if lv == 0]
    assert boot["accuracy_L0"]["value"] == pytest.approx(np.mean(clean))
    lo, hi = boot["L2-L0"]["lo"], boot["L2-L0"]["hi"]
    assert lo < boot["L2-L0"]["value"] < hi < 0          # a real 20-point drop is resolved
    assert M.paired_bootstrap(bases, levels, correct, n_boot=500) == boot        # seeded
