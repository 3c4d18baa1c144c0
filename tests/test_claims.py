"""What the project says about itself holds: the Python floor, the dependencies, the README's figures (each
from a committed result), and the GPU script covering every benchmark."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("medq_synth", "physics", "kernels", "eval")


def _sources() -> str:
    return "\n".join(p.read_text() for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py"))


def test_requires_python_and_dependencies_are_true():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    floor = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", meta["requires-python"]).groups())
    if "import tomllib" in _sources():
        assert floor >= (3, 11), "tomllib is in the standard library from Python 3.11"
    hard = {re.split(r"[<>=\[ ]", d)[0] for d in meta["dependencies"]}
    imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", _sources(), flags=re.M))
    for dep, module in (("torchvision", "torchvision"), ("monai", "monai"), ("torchio", "torchio"),
                        ("astra-toolbox", "astra")):
        if module not in imported:
            assert dep not in hard, f"{dep} is a hard dependency that the package never imports"


def test_readme_figures_come_from_committed_results():
    readme = (ROOT / "README.md").read_text()
    for ref in set(re.findall(r"benchmarks/results/([\w.\-]+\.md)", readme)):
        assert (ROOT / "benchmarks/results" / ref).exists(), ref
    job = json.loads((ROOT / "benchmarks/results/main_job_cpu.json").read_text())["rows"][0]
    m = re.search(r"(\d+) answers\s+and (\d+) abstentions in about (\d+) s", readme)
    assert m and (int(m[1]), int(m[2])) == (job["answered"], job["abstained"])
    assert abs(int(m[3]) - job["wall_s"]) <= 2
    cached = re.search(r"\((\d+) s when it is loaded", " ".join(readme.split()))
    assert cached and abs(int(cached[1]) - job["wall_cached_s"]) <= 2
    acc = re.search(r"\(([\d.]+) % at L0; over the information-removing degradations ([\d.]+) / ([\d.]+) / ([\d.]+) %",
                    " ".join(readme.split()))
    assert acc, "the README quotes the main job's L0 accuracy and its information-removing means"
    want = [job["accuracy_L0"], job["info_removing_L0"], job["info_removing_L1"], job["info_removing_L2"]]
    assert [float(v) for v in acc.groups()] == [round(100 * v, 1) for v in want]
    ev = json.loads((ROOT / "benchmarks/results/eval_throughput_cpu.json").read_text())["rows"]
    # the letter-probability figure is measured, not the model-only figure printed twice
    assert all("greedy_text_items_s" in r and "letter_probs_items_s" not in r for r in ev)


def test_gpu_check_runs_every_benchmark_on_cuda():
    script = (ROOT / "benchmarks/gpu_check.sh").read_text()
    benches = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                     if not p.name.startswith("_") and "--device" in p.read_text() and p.name != "main_job.py")
    assert benches
    for name in benches:
        assert re.search(rf"benchmarks/{re.escape(name)} --device cuda", script), name
    assert "-k cuda tests/" in script and "--dtype bfloat16" in script and "hf:" in script


def test_readme_ray_overheads_come_from_scale_bench():
    readme = " ".join((ROOT / "README.md").read_text().split())
    data = json.loads((ROOT / "benchmarks/results/scale_bench_cpu.json").read_text())
    rows, meta = data["rows"], data["meta"]

    def row(job: str, fused: bool) -> dict:
        return next(r for r in rows if r["job"] == job and r["engine"].startswith("ray, 1 worker")
                    and ("fused" in r["engine"]) == fused)

    def pct(r: dict, key: str = "time_vs_local") -> str:
        return f"{100 * (r[key] - 1):+.1f}"

    m = re.search(r"on the default job \(([\d.]+) s locally, median of (\d) rounds\) one worker takes ([+-][\d.]+) % "
                  r"with the model fused in \(the default without GPUs\) and ([+-][\d.]+) % with the model as a "
                  r"second stage; on a 4x larger job ([+-][\d.]+) % and ([+-][\d.]+) %\. Counting the whole "
                  r"process \(Python's start-up, imports, joining the cluster\), one fused worker takes "
                  r"([+-][\d.]+) %", readme)
    assert m, "the README quotes scale_bench's overheads"
    local = next(r for r in rows if r["job"] == "default" and r["engine"] == "local")
    assert float(m[1]) == round(local["wall_s"], 1) and int(m[2]) == local["rounds"]
    assert list(m.groups()[2:7]) == [pct(row("default", True)), pct(row("default", False)),
                                     pct(row("phantoms:24", True)), pct(row("phantoms:24", False)),
                                     pct(row("default", True), "process_vs_local")]
    assert f"only imports the engine takes {meta['empty_actor_pipeline_s']:.1f} s" in readme
