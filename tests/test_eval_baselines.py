"""Baselines: the majority prior, seeded random guesses, and the observer reading clean phantoms."""

from __future__ import annotations

import numpy as np

from medq_synth.eval.backends import Decoding, Query, load_backend
from medq_synth.eval.datasets import rgb
from medq_synth.sources.phantoms import synthetic_item


def test_majority_and_random():
    maj = load_backend("majority")
    maj.fit([("AB", "B"), ("AB", "B"), ("AB", "A"), ("ABCD", "C"), ("ABCD", None)])
    r = maj.answer([Query("k1", [], "q", "AB"), Query("k2", [], "q", "ABCD"), Query("k3", [], "q", "ABC")],
                   Decoding(trials=4))
    assert [x.text for x in r] == ["B", "C", "A"]
    assert r[0].letter_probs == {"A": 1 / 3, "B": 2 / 3} and len(r[0].samples) == 4
    rnd = load_backend("random")
    picks = [rnd.answer([Query(f"k{i}", [], "q", "ABCD")], Decoding())[0].text for i in range(400)]
    assert picks == [rnd.answer([Query(f"k{i}", [], "q", "ABCD")], Decoding())[0].text for i in range(400)]
    assert all(60 < picks.count(c) < 140 for c in "ABCD")


def test_observer_reads_clean_mri_and_ultrasound_phantoms():
    obs = load_backend("observer")
    hits = []
    for modality in ("mri", "ultrasound"):
        for i in range(12):
            it = synthetic_item(modality, i)
            lo, hi = it.window
            disp = np.round(np.clip((it.image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
            q = Query(f"{modality}{i}", [rgb(disp)], it.qa.question, "".join(sorted(it.qa.options)),
                      meta={"modality": modality, "task": it.qa.extra["task"], "region": it.qa.extra.get("region")})
            reply = obs.answer([q], Decoding())[0]
            if reply.abstain:                # a side question where it found no lesion
                assert "no lesion found" in reply.abstain
                continue
            assert abs(sum(reply.letter_probs.values()) - 1) < 1e-9
            hits.append(reply.text == it.qa.answer)
    # chance is 0.25-0.5 per question (about 0.4 on this mix); the classical detector misses many of the
    # fainter MRI lesions (white-matter contrast 0.14-0.2) that the default cho observer reads
    assert len(hits) >= 20 and np.mean(hits) >= 0.55
