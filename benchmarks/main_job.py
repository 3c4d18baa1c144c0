"""The README's main job (`medq-synth run --out DIR`: phantoms, every default degradation, the default
model: the channelized Hotelling observer ``cho``) timed
end to end in a subprocess, with its answer counts, coverage and per-level accuracy from metrics.json: the
figures the README quotes. Writes benchmarks/results/main_job_<device>.md/json.

    python benchmarks/main_job.py                 # CPU (the committed result)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _common import base_meta, write_results

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    a = ap.parse_args()
    walls = []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):      # a fresh machine (the observer trains), then a rerun (it loads from the cache)
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "medq_synth", "run", "--out", tmp, "--device", a.device,
                                "--no-progress"], check=True, cwd=ROOT, capture_output=True,
                               env={**os.environ, "MEDQ_SYNTH_CACHE": cache})
                walls.append(time.perf_counter() - t0)
                m = json.loads((Path(tmp) / "metrics.json").read_text())
    wall = walls[0]
    lab = m["labels"]["cho"]
    acc = lab["accuracy_by"]["level"]
    info = lab["information_removing"]
    mean = info["mean_accuracy_by_level"]
    row = {"wall_s": round(wall, 1), "wall_cached_s": round(walls[1], 1), "answered": lab["n"],
           "abstained": lab["n_abstained"],
           "coverage": lab["coverage"], "accuracy_L0": acc.get("L0"), "accuracy_L1": acc.get("L1"),
           "accuracy_L2": acc.get("L2"), "parse_rate": lab["parse_rate"],
           "info_removing": sorted(info["degradations"]), "info_removing_L0": mean["L0"],
           "info_removing_L1": mean["L1"], "info_removing_L2": mean["L2"]}
    pct = lambda v: f"{100 * v:.1f} %" if v is not None else "-"      # noqa: E731
    write_results(a.out, f"main_job_{torch.device(a.device).type}", base_meta(a.device), [row],
                  "The README's main job: `medq-synth run --out DIR` (phantoms, default degradations, the cho "
                  "observer); "
                  f"'info-removing' is the mean over the {len(info['degradations'])} information-removing "
                  "degradations (medq_synth/information.py)",
                  ["wall time (s, install excluded)", "rerun (observer cached)", "answers", "abstentions",
                   "coverage", "accuracy L0",
                   "accuracy L1", "accuracy L2", "info-removing L0", "info-removing L1", "info-removing L2"],
                  [[f"{row['wall_s']}", f"{row['wall_cached_s']}", str(row["answered"]), str(row["abstained"]),
                    pct(row["coverage"]),
                    pct(row["accuracy_L0"]), pct(row["accuracy_L1"]), pct(row["accuracy_L2"]),
                    pct(row["info_removing_L0"]), pct(row["info_removing_L1"]), pct(row["info_removing_L2"])]])


if __name__ == "__main__":
    main()
