"""`python -m pipeline.bench`: discovery, the JSON contract, errors."""
from __future__ import annotations

import json
import sys
import types

import pytest

import pipeline.benches
from pipeline import bench


@pytest.fixture
def fake_bench(monkeypatch):
    module = types.ModuleType("pipeline.benches.fake")
    module.run = lambda quick=False: {"ours_per_s": 30.0, "naive_per_s": 10.0, "ratio": 3.0, "quick": quick}
    monkeypatch.setitem(sys.modules, "pipeline.benches.fake", module)
    monkeypatch.setattr(bench, "available", lambda: ["fake"])
    return module


def test_json_output_has_the_headline_ratio(fake_bench, capsys):
    assert bench.main(["fake", "--json", "--quick"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["ratio"] == 3.0 and figures["bench"] == "fake" and figures["quick"] is True
    assert figures["wall_s"] >= 0


def test_text_output_lists_every_figure(fake_bench, capsys):
    assert bench.main(["fake"]) == 0
    out = capsys.readouterr().out
    assert "ratio" in out and "ours_per_s" in out and "30" in out


def test_a_bench_without_a_finite_ratio_is_an_error(fake_bench):
    fake_bench.run = lambda quick=False: {"ratio": float("nan")}
    with pytest.raises(ValueError, match="no finite 'ratio'"):
        bench.run_bench("fake")


def test_unknown_bench_exits_2(capsys):
    assert bench.main(["no-such-bench"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_every_registered_bench_module_has_run():
    import importlib

    for name in bench.available():
        assert callable(importlib.import_module(f"{pipeline.benches.__name__}.{name}").run)


# -- gpu: skips without CUDA, and its measuring code runs (on the CPU, tiny networks)

def test_gpu_bench_skips_with_one_line_and_exit_0_without_cuda(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main(["gpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("gpu: skipped: no CUDA device")
    assert bench.main(["gpu", "--json", "--quick"]) == 0
    assert "no CUDA device" in json.loads(capsys.readouterr().out)["skipped"]


def test_gpu_bench_reads_the_imagenet64_networks():
    from pipeline.benches.gpu import imagenet64_networks
    from pipeline.nets.unet import adm_imagenet64_config

    networks = imagenet64_networks()
    adm = adm_imagenet64_config(1000)
    assert {k: networks["unet"][k] for k in adm} == {**adm, "channel_mult": tuple(adm["channel_mult"]),
                                                     "attention_resolutions": tuple(adm["attention_resolutions"])}
    assert networks["classifier"]["base_channels"] == 128 and networks["classifier"]["num_res_blocks"] == 4
    assert networks["diffusion"]["loss"] == "hybrid"


def test_gpu_bench_measures_every_figure(tmp_path):
    """The GPU code path, run on the CPU with tiny networks: every figure of the record is there."""
    import math

    import torch

    from pipeline.benches.gpu import measure

    unet = dict(image_size=8, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(4,), num_head_channels=16, num_classes=1000, learn_sigma=True,
                resblock_updown=True)
    networks = dict(unet=unet, classifier=dict(image_size=8, num_classes=1000, base_channels=16, channel_mult=(1, 2),
                                               num_res_blocks=1, attention_resolutions=(4,), num_head_channels=16),
                    diffusion=dict(timesteps=100, schedule="cosine", lambda_min=-20.0, lambda_max=20.0, loss="hybrid"),
                    inception_weights=str(tmp_path / "absent.pt"))
    setup = dict(steps=2, reps=1, train_batch=4, train_steps=1, classifier_batch=4, inception_images=8,
                 inception_batch=4, matmul_size=64, compile=False, net_batch=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        figures = measure(torch.device("cpu"), setup, networks)
    finally:
        torch.set_num_threads(threads)
    for key in ("sample_rows_per_s_fp32", "sample_rows_per_s_bf16", "sample_images_per_s_fp32", "sample_tflops_bf16",
                "sample_fraction_of_matmul_fp32", "classifier_grad_rows_per_s", "train_images_per_s_fp32",
                "train_images_per_s_bf16", "train_vs_adm_v100", "matmul_tflops_bf16", "ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["sample_rows_per_s_fp32"] == pytest.approx(2 * setup["steps"] * figures["sample_images_per_s_fp32"])
    assert figures["device"] == "cpu" and figures["sample_fraction_of_peak_fp32"] is None
    assert figures["inception_images_per_s"] is None and "absent.pt" in figures["inception_note"]
    json.dumps(figures)  # the record is plain JSON


def test_shard_bench_peer_encodes_pngs_as_the_stage_does():
    """The single-process peer's PNG bytes are the stage's at the stage's level (not PIL's default)."""
    import numpy as np

    from pipeline.benches.shard import DEFAULT_PNG_LEVEL, _png
    from pipeline.data.preprocess import encode_png
    from pipeline.data.shardwrite import EncodeOptions

    array = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    level = EncodeOptions(resolution=32, num_classes=2).png_compress_level
    assert _png(array, level) == encode_png(array, level)
    assert level != DEFAULT_PNG_LEVEL and _png(array, DEFAULT_PNG_LEVEL) != _png(array, level)
