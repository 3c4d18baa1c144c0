"""The default MedQ-Deg parser reproduces VLMEvalKit's released evaluator (``MedQDEGBenchDataset``), quirks
included, row for row. Expected letters were derived by hand from the released rules (and checked against
that code, outside this repository): its "answer is" stage never fires (lower-case pattern, upper-cased
reply); only A-Z block a standalone letter (digits, "_" and non-ASCII letters do not); letters run A-E; a
reply it cannot read is kept as the prediction and scored wrong. The corrected cascade is the named option."""

from __future__ import annotations

import numpy as np
import pytest

from medq_synth.eval.backends import Decoding, Reply
from medq_synth.eval.parsing import UNPARSED, parse_cascade, parse_vlmevalkit, released_prediction
from medq_synth.eval.records import Sample, Setting, make_record
from medq_synth.eval.summary import summarise

U = UNPARSED
# (reply, gold, released letter, corrected-cascade letter)
CASES = [
    ("B", "B", "B", "B"), ("b", "B", "B", "B"), (" c ", "C", "C", "C"), ("B. Right side", "B", "B", "B"),
    ("b) three", "A", "B", "B"), ("(D) three", "D", "D", "D"), ("The answer is C.", "C", "C", "C"),
    ("Between A and D, the answer is D", "D", "A", "D"),                 # "answer is" never fires upstream
    ("<think>Could be A.</think> The answer is C", "C", "A", "C"),
    ("The image shows a lesion; the answer is B", "B", "A", "B"),
    ("At the C1 level; answer B", "B", "C", "B"), ("A1", "A", "A", U),    # a digit does not block upstream
    ("answer_is_C", "C", "C", U), ("Option_B", "B", "B", U),             # nor does "_"
    ("\u00c7a d\u00e9pend: B", "B", "A", "B"),                            # nor a non-ASCII letter
    ("A lesion is visible, so B", "B", "A", "A"), ("I think it is D", "D", "D", "D"),
    ("E: none", "A", "E", "E"), ("C - two", "C", "C", "C"), ("Answer: B", "B", "B", "B"),
    ("**B**", "B", "B", "B"), ("The correct option is (B) because it is round", "B", "B", "B"),
    ("Option C", "C", "C", "C"), ("a.", "A", "A", "A"), ("D\n\nExplanation: a dark spot", "D", "D", "D"),
    ("B)", "B", "B", "B"), ("  E  ", "E", "E", "E"), ("B\u00a0(sure)", "B", "B", "B"),
    ("I cannot tell from this image.", "A", U, U), ("none of the above", "C", U, U), ("CD", "C", U, U),
    ("2", "C", U, U), ("", "A", U, U), (None, "A", U, U), ("I'd say C, maybe D", "C", "D", "D"),
]


@pytest.mark.parametrize("reply,gold,released,cascade", CASES)
def test_released_and_corrected_parsers(reply, gold, released, cascade):
    assert parse_vlmevalkit(reply) == released
    assert parse_cascade(reply) == cascade


def test_unreadable_reply_is_kept_as_the_prediction():
    assert released_prediction("  I cannot tell.  ") == "I cannot tell."
    assert released_prediction(None) is None


def _sample(i: int, gold: str) -> Sample:
    return Sample(output_id=f"x{i}", base_id=f"b{i}", images=[], question="Which?",
                  options={c: f"option {c}" for c in "ABCDE"}, answer=gold,
                  meta={"level": i % 3, "level_key": f"L{i % 3}", "degradation": "gaussian_noise"})


def test_default_accuracy_equals_the_released_evaluator_row_for_row():
    setting = Setting(model="m", label="m", template="medq-deg", decoding=Decoding())
    recs = [make_record(_sample(i, gold), setting, Reply(text=reply)) for i, (reply, gold, _, _) in enumerate(CASES)]
    released_hits = [rel == gold for _, gold, rel, _ in CASES]
    assert [r["correct"] for r in recs] == released_hits
    assert [r["parser"] for r in recs] == ["vlmevalkit"] * len(CASES)
    m = summarise(recs, n_boot=10)
    assert m["accuracy"] == pytest.approx(np.mean(released_hits))
    assert m["by_parser"]["cascade"]["accuracy"] == pytest.approx(np.mean([c == g for _, g, _, c in CASES]))
    assert m["by_parser"]["vlmevalkit"]["parse_rate"] == pytest.approx(np.mean([r != U for _, _, r, _ in CASES]))
    assert m["by_parser"]["cascade"]["parse_rate"] == pytest.approx(np.mean([c != U for _, _, _, c in CASES]))
    # the cascade is a named option: the same replies scored with it
    cas = Setting(model="m", label="m", template="medq-deg", decoding=Decoding(), parser="cascade")
    assert [make_record(_sample(i, g), cas, Reply(text=r))["correct"] for i, (r, g, _, _) in enumerate(CASES)] \
        == [c == g for _, g, _, c in CASES]
