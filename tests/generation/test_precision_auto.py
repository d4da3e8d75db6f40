"""`precision: auto`: bf16 where the sampling device computes it natively, fp32 elsewhere; the
configurations (and so their ids, images and cache keys of trials) carry the resolved value."""
from __future__ import annotations

import pytest

from pipeline.config import load_config
from pipeline.generation import sampler_config
from pipeline.generation.sampler_config import SamplerConfig, resolve_precision
from pipeline.sweep_space import configurations


@pytest.mark.parametrize("native, device, expected", [
    (True, "cpu", "bf16"), (False, "cpu", "fp32"), (False, "cuda", "bf16"), (True, "cuda", "bf16")])
def test_auto_follows_the_device(monkeypatch, native, device, expected):
    monkeypatch.setattr(sampler_config, "native_bf16_cpu", lambda: native)
    assert resolve_precision("auto", device) == expected
    assert resolve_precision("fp32", device) == "fp32" and resolve_precision("bf16", device) == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_sample_and_sweep_configurations_carry_the_resolved_precision(monkeypatch, native):
    monkeypatch.setattr(sampler_config, "native_bf16_cpu", lambda: native)
    cfg = load_config(None, ["sample.precision=auto", "sweep.precision=auto"])
    expected = "bf16" if native else "fp32"
    assert SamplerConfig.from_section(cfg.sample).precision == expected
    configs = configurations(cfg.sweep, cfg.train.p_uncond)
    assert {c.precision for c in configs} == {expected}
    fixed = configurations(load_config(None, ["sweep.precision=fp32"]).sweep, cfg.train.p_uncond)
    assert ({c.id for c in configs} == {c.id for c in fixed}) == (not native)  # bf16 names other images


def test_a_precision_outside_the_choices_is_refused_naming_the_key():
    with pytest.raises(Exception, match="sweep.precision"):
        load_config(None, ["sweep.precision=fp8"])


def test_the_detection_reads_this_cpu():
    assert isinstance(sampler_config.native_bf16_cpu(), bool)
