"""``--engine ray`` on a local 2-CPU Ray cluster: the same files as the local engine, byte for byte where
the local run is byte-stable (images, HDF5 shards, manifest) and the same predictions as sets; a worker
killed by pid, and a driver killed with SIGKILL, lose and duplicate nothing; the vLLM path through
``ray.data.llm`` (a fake processor with the documented interface) carries logprobs into the letter
probabilities."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from medq_synth import generate  # noqa: E402
from medq_synth.eval.api import run  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"summary.json", "metrics.json", "report.md", "report.html"}   # timings, engine and stage figures


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in VOLATILE and "plots" not in p.parts}


GEN = dict(sources=["phantoms:2"], degradations=["gaussian_noise", "ct_low_dose", "mri_undersampling", "us_speckle"],
           device="cpu", progress=False, shard_items=2, export_tsv=True)


@pytest.fixture(scope="module")
def local_generate(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen-local")
    generate(out=out, **GEN)
    return out


@pytest.mark.parametrize("workers", [1, 2])
def test_generate_on_ray_writes_the_same_files(local_generate, tmp_path, workers):
    """Two actors one shard at a time, or one actor two shards at once (its two CPUs)."""
    s = generate(out=tmp_path, engine="ray", workers=workers, **GEN)
    assert _files(tmp_path) == _files(local_generate)
    stage = s.stages["stages"][0]
    assert (stage["workers"], stage["units_at_once"], stage["items"]) == (workers, 3 - workers, s.n_items)


def test_units_share_the_cores_of_each_actor():
    """On CPUs an actor runs one unit per core of its share, one torch thread each; Ray Data gets the call
    limit and runs the calls truly side by side."""
    from medq_synth.scale import actor_pool, unit_threads

    assert unit_threads(1, "cpu") == (2, 1) and unit_threads(2, "cpu") == (1, 1) and unit_threads(4, "cpu") == (1, 1)
    assert unit_threads(1, "auto") == (2, 1)              # no GPU in the cluster: CPU actors whatever is asked
    compute, extra = actor_pool(ray, 3, 2)
    assert compute.min_size == compute.max_size == 3
    assert compute.max_concurrent_calls_per_actor == 2 or extra == {"max_concurrency": 2}
    assert getattr(compute, "enable_true_multi_threading", True)
    single, extra = actor_pool(ray, 1, 1)
    assert extra == {} and not getattr(single, "max_concurrent_calls_per_actor", None)


def test_a_backend_that_is_not_thread_safe_answers_one_call_at_a_time():
    from medq_synth.eval.backends import Decoding, Reply
    from medq_synth.eval.ray_run import _OneAtATime

    class Slow:
        name, inside, most = "slow", 0, 0

        def answer(self, queries, decoding):
            self.inside += 1
            self.most = max(self.most, self.inside)
            time.sleep(0.05)
            self.inside -= 1
            return [Reply(text="A") for _ in queries]

    backend = Slow()
    wrapped = _OneAtATime(backend)
    threads = [threading.Thread(target=wrapped.answer, args=([None], Decoding())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.most == 1 and wrapped.name == "slow"


def _alive_pids(name: str) -> list[int]:
    """Ray actor processes whose title (``ray::MapWorker(MapBatches(<class>))...``) names ``name``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and title.startswith("ray::") and name in title:
            pids.append(int(proc.name))
    return sorted(pids)


def _kill_once(name: str, when, fired: list) -> threading.Thread:
    """Kill (SIGKILL) the first live actor whose class name holds ``name`` once ``when()`` is true."""
    def watch() -> None:
        for _ in range(600):
            if when():
                pids = _alive_pids(name)
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    fired.append(pids[0])
                    return
            time.sleep(0.1)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


def test_worker_killed_mid_generate_loses_and_duplicates_nothing(local_generate, tmp_path):
    """One worker with two shards in flight at once: both are lost with it, and redone."""
    fired: list[int] = []
    t = _kill_once("ShardWriter", lambda: len(list((tmp_path / "parts").glob("shard-*[0-9].jsonl"))) >= 1, fired)
    generate(out=tmp_path, engine="ray", workers=1, **GEN)
    t.join(timeout=1)
    assert fired, "the test never found a live shard writer to kill"
    assert _files(tmp_path) == _files(local_generate)
    rows = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == len({r["id"] for r in rows})


def test_driver_killed_with_sigkill_resumes(local_generate, tmp_path, cluster):
    env = {**os.environ, "RAY_ADDRESS": cluster}
    args = [sys.executable, "-m", "medq_synth", "generate", "--out", str(tmp_path), "--source", "phantoms:2",
            "--degradations", ",".join(GEN["degradations"]), "--device", "cpu", "--shard-items", "2",
            "--export-tsv", "--engine", "ray", "--workers", "1", "--no-progress"]
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(900):
        if list((tmp_path / "parts").glob("shard-*[0-9].jsonl")) or p.poll() is not None:
            break
        time.sleep(0.1)
    killed = p.poll() is None
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert killed, "the driver finished before it could be killed"
    assert not (tmp_path / "manifest.jsonl").exists()
    subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
    assert _files(tmp_path) == _files(local_generate)


RUN = dict(sources=["phantoms:2"], degradations=["gaussian_noise", "ct_sparse_view", "mri_noise"], device="cpu",
           progress=False, n_boot=10)


def _predictions(root: Path) -> set[str]:
    return set((root / "predictions.jsonl").read_text().splitlines())


@pytest.mark.parametrize("model, workers, replicas", [("random", 2, 2), ("cho", 2, 1), ("cho", 2, 0), ("cho", 1, None),
                                                      ("observer", 1, 1)])
def test_run_on_ray_gives_the_local_predictions(model, workers, replicas, tmp_path):
    """Two stages (``replicas`` >= 1) or the model fused into the degradation workers (0, and the default
    without GPUs, where one worker runs two units at once)."""
    run(tmp_path / "local", model=model, **RUN)
    m = run(tmp_path / "ray", model=model, engine="ray", workers=workers, replicas=replicas, **RUN)
    assert _predictions(tmp_path / "ray") == _predictions(tmp_path / "local")
    sheets = [sorted(p.name for p in (tmp_path / d / "failures").glob("*.png")) for d in ("ray", "local")]
    assert sheets[0] == sheets[1] and (model == "cho" or sheets[0])       # random is wrong somewhere
    stages = m["run"]["stages"]["stages"]
    assert [s["stage"].split()[0] for s in stages] == ["degrade", "model"]
    assert stages[1]["items"] == m["run"]["answered"] and ("fused" in stages[0]["stage"]) == (not replicas)
    assert stages[0]["units_at_once"] == 2 // stages[0]["workers"]          # the 2 CPUs, shared by the workers


def test_run_on_ray_with_a_tiny_hf_model(tmp_path):
    pytest.importorskip("transformers")
    from . import tiny_vlm

    spec = f"hf:{tiny_vlm.build('qwen2_vl', tmp_path / 'm')}"
    kw = dict(RUN, degradations=["gaussian_noise"], limit=4)
    run(tmp_path / "local", model=spec, **kw)
    run(tmp_path / "ray", model=spec, engine="ray", workers=1, replicas=1, **kw)
    assert _predictions(tmp_path / "ray") == _predictions(tmp_path / "local")


def test_model_replica_killed_mid_run_loses_and_duplicates_nothing(tmp_path):
    run(tmp_path / "local", model="cho", **RUN)
    fired: list[int] = []
    pred = tmp_path / "ray" / "predictions.jsonl"
    t = _kill_once("Answerer", lambda: pred.exists() and pred.stat().st_size > 0, fired)
    run(tmp_path / "ray", model="cho", engine="ray", workers=1, replicas=1, **RUN)
    t.join(timeout=1)
    assert fired, "the test never found a live model replica to kill"
    lines = pred.read_text().splitlines()
    assert len(lines) == len(set(lines)) and set(lines) == _predictions(tmp_path / "local")


def test_vllm_through_ray_data_llm_keeps_logprobs(tmp_path, monkeypatch):
    import ray.data.llm as ray_llm

    from . import fake_ray_llm

    ray.cloudpickle.register_pickle_by_value(fake_ray_llm)      # the workers cannot import the tests package
    calls: list = []
    kw = dict(RUN, degradations=["gaussian_noise"], limit=4)
    # the first run fails one prompt in the engine (recorded, asked again); the rerun answers it
    monkeypatch.setattr(ray_llm, "build_processor", fake_ray_llm.installer("Is there", calls))
    run(tmp_path, model="vllm:fake/model", engine="ray", workers=1, **kw)
    errors = [json.loads(x) for x in (tmp_path / "errors.jsonl").read_text().splitlines()]
    failed = [e for e in errors if e.get("stage") == "model"]
    assert failed and all("fake engine failed" in e["reason"] for e in failed)
    monkeypatch.setattr(ray_llm, "build_processor", fake_ray_llm.installer(None, calls))
    m = run(tmp_path, model="vllm:fake/model", engine="ray", workers=1, **kw)
    assert calls[0].model_source == "fake/model" and calls[0].engine_kwargs["max_logprobs"] == 20
    recs = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert {r["key"] for r in recs} >= {e["key"] for e in failed} and m["labels"]["vllm:fake/model"]["n"] == len(recs)
    for r in recs:
        letters = "".join(sorted(r["options"]))
        dist = fake_ray_llm.BRIGHT if r["response"] == "A" else fake_ray_llm.DARK
        mass = {c: sum(p for tok, p in dist.items() if tok.strip() == c) for c in letters}
        total = sum(mass.values())
        for c in letters:                                    # the engine's first-position logprobs, renormalised
            assert math.isclose(r["letter_probs"][c], mass[c] / total, abs_tol=1e-7)


def test_sweep_on_ray_gives_the_local_curves(tmp_path):
    from medq_synth.eval.sweep import sweep

    kw = dict(sources=["phantoms:2"], degradations=["gaussian_noise"], device="cpu", progress=False, n_boot=50)
    local = sweep(tmp_path / "local", ["cho"], [0.0, 0.5, 1.0], **kw)
    ray_ = sweep(tmp_path / "ray", ["cho"], [0.0, 0.5, 1.0], engine="ray", workers=1, replicas=0, **kw)
    assert ray_["curves"] == local["curves"]
    strips = [sorted(p.name for p in (tmp_path / d / "plots").glob("examples_*.png")) for d in ("local", "ray")]
    assert strips[0] == strips[1] and strips[0]
