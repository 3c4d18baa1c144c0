"""End-to-end ``run`` throughput against model-only throughput, and the cost of confidence, in one process.

For each model:
- end to end: ``medq_synth.eval.api.run`` on the phantoms: items/s of its streaming loop (load phantoms,
  degrade on --device, bounded queue, answer, score, append predictions); the whole call, report and plots
  included, is recorded as ``run_call_s``;
- model only: the same samples, degraded beforehand and held in memory, through the same evaluation loop
  into a fresh store: items/s with synthesis out of the way. The ratio shows what synthesis and
  bookkeeping cost once they overlap with inference;
- confidence: the greedy text alone, the text with option-letter probabilities (one prefill, the T -> infinity
  limit of vote confidence; what ``run`` asks for) and T = 10 sampled answers at temperature 1 (MedQ-Deg's
  protocol), each measured on the same pre-made samples.
Writes a markdown table and a JSON record (card, versions, date) under benchmarks/results/.

    python benchmarks/eval_throughput.py --device cpu              # tiny random Qwen2-VL + the observer
    python benchmarks/eval_throughput.py --device cuda --model hf:Qwen/Qwen2-VL-2B-Instruct --limit 200
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import base_meta, write_results

ROOT = Path(__file__).resolve().parents[1]
DEGRADATIONS = ["gaussian_noise", "motion_blur", "rotation"]


def premade(limit: int, device: str) -> list:
    from medq_synth.engine import Generator
    from medq_synth.eval.datasets import engine_batches

    gen = Generator(["phantoms"], tempfile.mkdtemp(), degradations=DEGRADATIONS, limit=limit, device=device,
                    progress=False)
    return [s for b in engine_batches(gen, lambda s: True, lambda _: None) for s in b]


def model_only(samples: list, backend, decoding, batch: int) -> float:
    from medq_synth.eval.records import Setting
    from medq_synth.eval.runner import evaluate
    from medq_synth.eval.store import Store

    setting = Setting(model=backend.name, label=backend.name, template="medq-deg", decoding=decoding)
    chunks = [samples[k: k + 16] for k in range(0, len(samples), 16)]
    stats = evaluate(chunks, backend, setting, Store(Path(tempfile.mkdtemp())), batch, progress=False)
    return stats.answered / stats.wall_s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", action="append", default=None,
                    help="specs to measure (default: a tiny random Qwen2-VL built here, and the observer)")
    ap.add_argument("--limit", type=int, default=12, help="phantom entries (x 7 outputs each)")
    ap.add_argument("--model-batch-size", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()

    from medq_synth.eval.api import run
    from medq_synth.eval.backends import Decoding, load_backend

    specs = a.model
    if specs is None:
        sys.path.insert(0, str(ROOT))
        from tests.tiny_vlm import build

        specs = [f"hf:{build('qwen2_vl', Path(tempfile.mkdtemp()) / 'tiny-qwen2-vl')}", "observer"]
    t0 = time.perf_counter()
    samples = premade(a.limit, a.device)
    synth = len(samples) / (time.perf_counter() - t0)      # load + degrade alone, for the e2e ceiling
    print(f"synthesis alone: {synth:.2f} items/s", flush=True)
    rows = []
    for spec in specs:
        backend = load_backend(spec, device=a.device)
        name = "tiny-qwen2-vl (random)" if "tiny-qwen2-vl" in spec else spec
        letter, sampled = Decoding(max_new_tokens=4), Decoding(max_new_tokens=4, trials=10, letter_probs=False)
        plain = Decoding(max_new_tokens=4, letter_probs=False)
        model_only(samples[: a.model_batch_size], backend, letter, a.model_batch_size)      # warm-up
        t0 = time.perf_counter()
        m = run(tempfile.mkdtemp(), model=backend, degradations=DEGRADATIONS, limit=a.limit, device=a.device,
                decoding=letter, model_batch_size=a.model_batch_size, progress=False, n_boot=100)
        total_s = time.perf_counter() - t0
        e2e = m["run"]["items_per_s"]         # the streaming loop: load + degrade + answer + score + store
        only = model_only(samples, backend, letter, a.model_batch_size)       # what `run` asks: text + letters
        text = model_only(samples, backend, plain, a.model_batch_size)       # greedy text alone, measured
        t10 = model_only(samples, backend, sampled, a.model_batch_size)
        row = {"model": name, "items": len(samples), "synthesis_only_items_s": synth, "end_to_end_items_s": e2e,
               "run_call_s": total_s, "report_s": total_s - m["run"]["wall_s"], "model_only_items_s": only,
               "e2e_over_model_only": e2e / only, "greedy_text_items_s": text, "letter_probs_overhead_x": text / only,
               "t10_sampled_items_s": t10, "t10_cost_x": only / t10}
        rows.append(row)
        print(f"{name:<26} e2e {e2e:7.2f}/s  model-only {only:7.2f}/s  ratio {e2e / only:4.2f}   "
              f"text alone {text:7.2f}/s  T=10 {t10:7.2f}/s  ({only / t10:5.1f}x the letter-probability cost)",
              flush=True)
    import transformers

    meta = {**base_meta(a.device), "transformers": transformers.__version__, "degradations": DEGRADATIONS,
            "limit": a.limit, "model_batch_size": a.model_batch_size, "max_new_tokens": 4}
    write_results(a.out, f"eval_throughput_{a.device.split(':')[0]}", meta, rows,
                  "Evaluation loop: end to end against model only; letter probabilities against T = 10",
                  ["model", "items", "synthesis only (items/s)", "run, end to end (items/s)",
                   "model only, text + letter probs (items/s)", "ratio", "greedy text alone (items/s)",
                   "letter-prob cost", "T = 10 sampled (items/s)", "T = 10 cost", "report + plots (s)"],
                  [[r["model"], str(r["items"]), f"{r['synthesis_only_items_s']:.2f}", f"{r['end_to_end_items_s']:.2f}",
                    f"{r['model_only_items_s']:.2f}", f"{r['e2e_over_model_only']:.2f}",
                    f"{r['greedy_text_items_s']:.2f}", f"{r['letter_probs_overhead_x']:.2f}x",
                    f"{r['t10_sampled_items_s']:.2f}", f"{r['t10_cost_x']:.1f}x", f"{r['report_s']:.1f}"]
                   for r in rows],
                  ["With synthesis and inference overlapped, end to end approaches min(synthesis only, model only); "
                   "the ratio column is end to end over model only. Letter-prob cost = greedy-text items/s over "
                   "text + letter-probability items/s, each measured. T = 10 cost = text + letter-probability items/s "
                   "over T = 10 items/s (a baseline's votes are drawn from its own probabilities, so it costs "
                   "nothing)."])

if __name__ == "__main__":
    main()
