"""MedQ-Bench reasoning: the four-axis judge with a scripted judge backend, and the rule-based verdict."""

from __future__ import annotations

import pytest

from medq_synth.eval.backends import Backend, Reply
from medq_synth.eval.judge import AXES, judge_records, judge_summary, rule_quality


class ScriptedJudge(Backend):
    """Grades by axis; garbage for preciseness on the first call, then a score (exercises the retry)."""

    name = "judge"

    def __init__(self) -> None:
        self.calls = 0

    def answer(self, queries, decoding):
        self.calls += 1
        out = []
        for q in queries:
            assert q.images == [] and "[GOLDEN DESC]" in q.prompt          # text only
            axis = q.key.rsplit(":", 1)[1]
            text = {"completeness": "Score: 2", "consistency": "Score\uff1a1", "quality_accuracy": '{"score": 0}',
                    "preciseness": "no idea" if self.calls == 1 else "Score: 1.5"}[axis]
            out.append(Reply(text=text))
        return out


def test_judge_axes_overall_and_retry():
    recs = [{"key": f"k{i}", "kind": "description", "response": "Noisy. Overall, the quality of this image is usable.",
             "reference": "Strong noise. Overall, the quality of this image is reject."} for i in range(3)]
    judge = ScriptedJudge()
    judge_records(judge, recs, batch_size=5)
    assert judge.calls == 4                   # 12 axis queries in 3 calls, then one retry for preciseness
    s = judge_summary([r["judge"] for r in recs])
    assert (s["completeness"], s["preciseness"], s["consistency"], s["quality_accuracy"]) == (2.0, 1.5, 1.0, 0.0)
    assert s["overall"] == pytest.approx(4.5) and s["quality_rule"] == 1.0        # usable vs reject: adjacent
    assert set(AXES) <= set(recs[0]["judge"])


def test_unparsable_judge_is_dropped_not_zero():
    class Mute(Backend):
        def answer(self, queries, decoding):
            return [Reply(text="...") for _ in queries]

    recs = [{"key": "a", "kind": "comparison", "response": "Image A is sharper.", "reference": "Image B is better."}]
    judge_records(Mute(), recs)
    s = judge_summary([recs[0]["judge"]])
    assert s["completeness"] is None and s["completeness_n"] == 0 and s["overall"] is None
    assert s["quality_rule"] == 0.0                     # A vs B: different winner


@pytest.mark.parametrize("out,ref,expected", [
    ("the quality of this image is good", "The quality of the image is good.", 2.0),
    ("the quality of this image is good", "the quality of this image is reject", 0.0),
    ("no verdict", "the quality of this image is good", None),
])
def test_rule_quality(out, ref, expected):
    assert rule_quality(out, ref, "description") == expected


def test_eval_reasoning_tsv_with_judge(tmp_path):
    """MedQ-Bench no-reference and paired TSVs (no question column: the default instruction is used)."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    from medq_synth.eval.api import evaluate_data

    buf = io.BytesIO()
    Image.fromarray(np.full((28, 28), 90, np.uint8)).save(buf, format="PNG")
    img = base64.b64encode(buf.getvalue()).decode()
    gold = "Strong noise. Overall, the quality of this image is reject."
    desc = tmp_path / "medqbench_description_dev.tsv"
    desc.write_text("index\timage\tdescription\tmodality\n" + "".join(f"{i}\t{img}\t{gold}\tCT\n" for i in range(3)))

    class Describer(Backend):
        name = "describer"

        def answer(self, queries, decoding):
            assert all("3 to 5 concise sentences" in q.prompt and len(q.images) == 1 for q in queries)
            return [Reply(text="Grainy. Overall, the quality of this image is usable.") for _ in queries]

    m = evaluate_data(desc, tmp_path / "out", model=Describer(), judge=ScriptedJudge(), progress=False)
    j = m["labels"]["describer"]["judge"]
    assert j["n"] == 3 and j["completeness"] == 2.0 and j["quality_rule"] == 1.0 and j["overall"] == 4.5


class FlakyJudge(Backend):
    """Raises on the first ``outages`` calls, then returns one reply too few, then grades everything."""

    name = "flaky"

    def __init__(self, outages: int) -> None:
        self.calls, self.outages = 0, outages

    def answer(self, queries, decoding):
        self.calls += 1
        if self.calls <= self.outages:
            raise ConnectionError("judge unreachable")
        if self.calls == self.outages + 1:
            return [Reply(text="Score: 2") for _ in queries[:-1]]
        return [Reply(text="Score: 1") for _ in queries]


def test_judge_failures_are_recorded_and_asked_again_next_run():
    recs = [{"key": "k", "output_id": "o", "kind": "description", "response": "Overall, the quality of this image "
             "is good.", "reference": "Overall, the quality of this image is good."}]
    failures = judge_records(FlakyJudge(outages=3), recs)          # every attempt of this run fails
    assert {f["axis"] for f in failures} == set(AXES) and all(f["stage"] == "judge" for f in failures)
    assert all("judge unreachable" in f["reason"] for f in failures)
    assert not set(AXES) & set(recs[0]["judge"])                    # open, not scored None
    judge = FlakyJudge(outages=0)                                   # next run: one reply missing, then all
    assert judge_records(judge, recs, batch_size=8) == []
    assert [recs[0]["judge"][a] for a in AXES] == [2.0, 2.0, 2.0, 1.0]
    assert judge_records(FlakyJudge(outages=9), recs) == [] and recs[0]["judge"]["completeness"] == 2.0


def test_judge_errors_reach_errors_jsonl_and_resolve(tmp_path):
    from medq_synth.eval.store import Store

    store = Store(tmp_path)
    store.add([{"key": "k", "output_id": "o", "kind": "description", "response": "x", "reference": "y"}])
    store.error(judge_records(FlakyJudge(outages=3), list(store.records.values())))
    store.rewrite()
    assert len(Store(tmp_path).unresolved()) == len(AXES)
    again = Store(tmp_path)
    judge_records(FlakyJudge(outages=0), list(again.records.values()))
    again.rewrite()
    assert Store(tmp_path).unresolved() == []
