import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medq_synth.degradations import REGISTRY
from medq_synth.severity import ParamSpec, load_tables

GENERIC = ["gaussian_noise", "gaussian_blur", "motion_blur", "low_resolution", "adjust_brightness", "exposure",
           "reduce_contrast", "rotation", "movement"]


def test_nine_generic_degradations_with_provenance():
    names = REGISTRY.names()
    for g in GENERIC:
        assert g in names
        for p in REGISTRY.resolve(g).table.params.values():
            assert p.provenance.startswith("[")
            assert p.unit


@pytest.mark.parametrize("alias,name", [("downsample_artifact", "low_resolution"), ("gaussian_noise", "gaussian_noise"),
                                        ("exposure_artifact", "exposure"), ("rotation_artifact", "rotation"),
                                        ("random_motion_artifact", "movement"),
                                        ("xray_motion_blur_artifact", "xray_motion_blur")])
def test_medq_deg_aliases(alias, name):
    assert REGISTRY.resolve(alias).name == name


def test_unknown_name_raises_clear_error():
    with pytest.raises(KeyError, match="unknown degradation 'nope'"):
        REGISTRY.resolve("nope")


@pytest.mark.parametrize("name", GENERIC)
def test_anchors(name):
    for p in REGISTRY.resolve(name).table.params.values():
        assert p.value(0.0) == pytest.approx(p.identity)
        assert p.value(0.5) == pytest.approx(p.L1)
        assert p.value(1.0) == pytest.approx(p.L2)


@given(a=st.floats(0, 1), b=st.floats(0, 1))
def test_mapping_is_monotone(a, b):
    lo, hi = min(a, b), max(a, b)
    for deg in REGISTRY:
        for p in deg.table.params.values():
            # monotone in the direction identity -> L1 -> L2 (all tables are ordered that way)
            sign = 1 if (p.L2 - p.identity) >= 0 else -1
            assert sign * (p.value(hi) - p.value(lo)) >= -1e-12


def test_log_scale_and_size_scaling():
    p = ParamSpec("f", "x", 1.0, 2.0, 8.0, "[choice]", scale="log")
    assert p.value(0.25) == pytest.approx(math.sqrt(2.0))
    assert p.value(0.75) == pytest.approx(4.0)
    q = ParamSpec("s", "px", 0.0, 3.0, 7.0, "[est]", size_ref_px=512)
    assert q.value(1.0, 1024) == pytest.approx(14.0)
    with pytest.raises(ValueError):
        q.value(1.5)


def test_bad_table_is_rejected():
    bad = ('[x]\ncategory = "noise"\n[x.params.p]\nunit = "u"\nidentity = 0\nL1 = 1\nL2 = 2\n'
           'scale = "log"\nprovenance = "p"\n')
    with pytest.raises(ValueError, match="positive anchors"):
        load_tables(bad)

