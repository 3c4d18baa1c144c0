"""Same bytes on any machine: the thread count does not change any output array (HDF5 shards compared
dataset by dataset between 1 and 2 CPU threads), nor the reductions behind them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import torch

from medq_synth.physics import generic

ROOT = Path(__file__).resolve().parents[1]


def _datasets(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for shard in sorted(root.glob("shards/*.h5")):
        def keep(name: str, obj, prefix: str = shard.name) -> None:
            if isinstance(obj, h5py.Dataset):
                out[f"{prefix}/{name}"] = obj[()].tobytes()

        with h5py.File(shard, "r") as f:
            f.visititems(keep)
    return out


def _generate(out: Path, threads: int, *args: str) -> dict[str, bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "medq_synth", "generate", "--out", str(out), "--device", "cpu",
                    "--no-progress", *args], env=env, cwd=ROOT, check=True, capture_output=True)
    return _datasets(out)


def test_outputs_do_not_depend_on_the_thread_count(tmp_path):
    """Every default degradation, 1 vs 2 threads: on six textured grey MR images (large single-channel
    reductions are the ones ATen splits among threads) and on three phantoms (CT physics included; a run of
    its own, since the CT kernels' thread pool changes how torch's threads are scheduled afterwards)."""
    from PIL import Image

    src = tmp_path / "src" / "mri"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (256, 256), dtype=np.uint8)).save(src / f"tex{k}.png")
    for name, args in (("textured", ["--source", str(src.parent)]),
                       ("phantoms", ["--source", "phantoms:1", "--limit", "3"])):
        one, two = (_generate(tmp_path / f"{name}{t}", t, *args) for t in (1, 2))
        assert len(one) > 50 and one.keys() == two.keys()
        differ = [k for k in one if one[k] != two[k]]
        assert not differ, (name, differ)


def test_reductions_do_not_depend_on_the_thread_count():
    """A one-channel mean is the reduction ATen splits among threads: 1 and 2 threads must agree."""
    g = torch.Generator().manual_seed(0)
    v = torch.rand(6, 1, 512, 512, generator=g) * 3 - 1
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = (generic.reduce_contrast(v, torch.full((6,), 0.4)), generic.channel_mean(v))
        torch.set_num_threads(2)
        two = (generic.reduce_contrast(v, torch.full((6,), 0.4)), generic.channel_mean(v))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
    # and the mean is the float64 mean rounded once
    ref = v.double().mean(dim=(-2, -1), keepdim=True).float()
    assert torch.equal(one[1], ref) or float((one[1] - ref).abs().max()) <= float(ref.abs().max()) * 2 ** -23
    np.testing.assert_allclose(one[1].numpy(), v.numpy().astype(np.float64).mean(axis=(-2, -1), keepdims=True),
                               rtol=1e-6)
