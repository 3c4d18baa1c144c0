from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HYPOTHESIS_PROFILE", "ci")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=25, deadline=None)
settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


def read_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="session")
def default_run(tmp_path_factory) -> Path:
    """The default phantom set, all generic degradations, L0-L2 (shared by several tests)."""
    from medq_synth import generate

    out = tmp_path_factory.mktemp("default_run")
    generate("phantoms", out, device="cpu", progress=False, export_tsv=True)
    return out
