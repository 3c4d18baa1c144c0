"""The VLMEvalKit export: indices fit for VLMEvalKit's image cache, columns read back for what they are,
and the MedQ-Deg project page's ids."""

from __future__ import annotations

import csv
import json

from medq_synth import generate
from medq_synth.degradations import REGISTRY
from medq_synth.eval.datasets import tsv_batches
from medq_synth.tsv_export import COLUMNS


def _rows(path):
    with path.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_indices_are_stable_and_unique_across_exports(tmp_path):
    kw = dict(degradations=["gaussian_noise"], device="cpu", progress=False, export_tsv=True)
    generate("phantoms:3", tmp_path / "a", **kw)
    generate("phantoms:3", tmp_path / "a2", **kw)
    a, a2 = _rows(tmp_path / "a/benchmark.tsv"), _rows(tmp_path / "a2/benchmark.tsv")
    assert len(a) >= 9 and [r["index"] for r in a] == [r["index"] for r in a2]
    assert len({r["index"] for r in a}) == len(a)
    generate(str(tmp_path / "a/benchmark.tsv"), tmp_path / "b", **kw)       # another source
    generate("phantoms:3", tmp_path / "c", **{**kw, "seed": 1})              # another seed: other images
    b, c = _rows(tmp_path / "b/benchmark.tsv"), _rows(tmp_path / "c/benchmark.tsv")
    assert len(b) == len(a) and not {r["index"] for r in a} & {r["index"] for r in b}
    assert not {r["index"] for r in a} & {r["index"] for r in c}


def test_category_is_not_read_as_capability(tmp_path):
    generate("phantoms:3", tmp_path, degradations=["gaussian_noise"], device="cpu", progress=False, export_tsv=True)
    manifest = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()}
    errors: list = []
    samples = [s for b in tsv_batches(tmp_path / "benchmark.tsv", errors) for s in b]
    assert not errors and len(samples) == len(_rows(tmp_path / "benchmark.tsv"))
    rows = {r["index"]: r for r in _rows(tmp_path / "benchmark.tsv")}
    for s in samples:
        row = rows[s.output_id.split("/", 1)[1].split("|")[0]]
        assert s.meta["capability"] == manifest[row["output_id"]]["capability"]
        assert s.meta["capability"] != row["category"]
    # without a capability column there is no capability breakdown, whatever the category column says
    with (tmp_path / "benchmark.tsv").open() as fh, (tmp_path / "nocap.tsv").open("w") as out:
        for line in fh:
            cells = line.rstrip("\n").split("\t")
            del cells[COLUMNS.index("capability")]
            out.write("\t".join(cells) + "\n")
    assert _rows(tmp_path / "nocap.tsv")[0].get("capability") is None
    samples = [s for b in tsv_batches(tmp_path / "nocap.tsv", errors) for s in b]
    assert samples and {s.meta["capability"] for s in samples} == {None}


def test_project_page_ids_are_aliases(tmp_path):
    for alias, paper in (("object_rotation", "rotation_artifact"), ("object_movement", "random_motion_artifact")):
        assert REGISTRY.select(alias).models == REGISTRY.select(paper).models
    assert REGISTRY.resolve("object_movement", "mri").name == "mri_motion"
    generate("phantoms:2", tmp_path, degradations=["gaussian_noise"], device="cpu", progress=False, export_tsv=True)
    text = (tmp_path / "benchmark.tsv").read_text().replace("\tgaussian_noise\t", "\tobject_movement\t")
    (tmp_path / "alias.tsv").write_text(text)
    errors: list = []
    deg = [s for b in tsv_batches(tmp_path / "alias.tsv", errors) for s in b if s.meta["level"]]
    assert deg and {(s.meta["medq_deg_id"], s.meta["category"]) for s in deg} == {("random_motion_artifact", "motion")}
