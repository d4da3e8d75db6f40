"""The capacity plan of `--dry-run` (pipeline.capacity): work counted from the configured networks,
checked against the scale issue 11 gives for configs/imagenet64.yaml, costed on the units each
stage declares, with throughput from the config or from a `python -m pipeline.bench gpu` record."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from pipeline.capacity import ClusterSize, Networks, Part, Throughput, passes_per_image
from pipeline.capacity.cost import at_once, compute_units
from pipeline.capacity.work import FEATURES, SAMPLE, TRAIN
from pipeline.config import load_config
from pipeline.graph import build_instances, load_stages, make_plan, plan_capacity
from pipeline.resources import Units
from pipeline.store import Store
from tests.conftest import REPO, isolated_overrides

IMAGENET64 = REPO / "configs" / "imagenet64.yaml"
TINY = REPO / "tests" / "sweep_stages" / "tiny.yaml"


def imagenet64(*overrides: str):
    return load_config(IMAGENET64, ["data.path=/tmp", *overrides])  # data.path is a placeholder there


def capacity_of(cfg, tmp_path, nets=None):
    return plan_capacity(make_plan(build_instances(load_stages(), cfg), Store(str(tmp_path / "runs"))), cfg, nets)


# ----------------------------------------------------------------------------------------------
# Counting


def test_input_gradient_counts_the_forward_and_the_backward_to_the_input_only():
    from pipeline.nets.flops import count_flops, input_gradient_gflops_per_image

    layer = torch.nn.Linear(64, 32)
    forward = count_flops(lambda: layer(torch.randn(5, 64)))
    assert input_gradient_gflops_per_image(layer, torch.randn(5, 64)) * 1e9 * 5 == 2 * forward  # no weight gradient
    assert all(p.requires_grad for p in layer.parameters())  # the weights are left as they were


# the issue's protocol: bf16 sampling, 400k steps x batch 2048 (neither changes a network)
ISSUE_SCALE = ("sample.precision=bf16", "train.kimg=819200")


@pytest.fixture(scope="module")
def adm64_networks():
    """Every network of configs/imagenet64.yaml, counted once for this module."""
    nets = Networks(imagenet64(*ISSUE_SCALE))
    for name in Networks.ORDER:
        getattr(nets, name.replace(" ", "_"))
    return nets


def test_adm64_counted_on_the_meta_device_is_the_issues_network(adm64_networks):
    """296M parameters; 207 GFLOPs per forward are its convolutions and linear layers (what the
    issue's count, torch's counter on a CPU pass, saw: it does not count the CPU attention
    kernel); the meta device's count adds the attention products (QK^T, AV), about 6% more."""
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.nets.flops import on_meta
    from pipeline.nets.unet import UNet, adm_imagenet64_config

    unet = adm64_networks.unet
    assert unet.parameters == pytest.approx(296e6, rel=0.01)
    net = on_meta(lambda: UNet(**adm_imagenet64_config()))
    with torch.device("meta"), torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, 64, 64), torch.full((1,), 500), torch.zeros(1, dtype=torch.long))
    by_op = {str(op): n / 1e9 for op, n in counter.get_flop_counts()["Global"].items()}
    assert sum(by_op.values()) == pytest.approx(unet.gflops, rel=1e-9)
    attention = by_op.pop("aten.bmm")
    assert sum(by_op.values()) == pytest.approx(207, rel=0.01)
    assert attention / unet.gflops == pytest.approx(0.057, abs=0.01)
    # ADM-G's classifier: the gradient is its forward and a backward to the image (~2 forwards)
    assert 1.8 < adm64_networks.classifier_gradient.gflops / adm64_networks.classifier.gflops < 2.4
    assert adm64_networks.inception.gflops == pytest.approx(11.4, rel=0.02)  # Inception-v3 at 299 px
    assert adm64_networks.guide.gflops < adm64_networks.unet.gflops / 2  # base 128 vs 192


def test_imagenet64_plan_lands_on_the_issues_scale(tmp_path, adm64_networks, monkeypatch):
    """One CFG configuration at the paper's protocol (50,000 images x 256 steps x 2 passes) is
    ~5.3 EFLOP, ~3 GPU-hours at 50% of an H100's bf16 peak; 400k steps at batch 2048 ~500 EFLOP.
    The plan's figures come from the counted network, within 10% of the issue's."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = adm64_networks.cfg
    capacity = capacity_of(cfg, tmp_path, adm64_networks)
    forward = adm64_networks.unet.gflops * 1e9

    sample = capacity.costs["sample"][0]
    assert sample.flops == pytest.approx(50_000 * 256 * 2 * forward, rel=1e-9)
    assert sample.flops == pytest.approx(5.3e18, rel=0.1)
    h100_half_peak = Throughput.of(cfg.cluster.capacity, adm64_networks).per_gpu(SAMPLE, "bf16")
    assert h100_half_peak == pytest.approx(0.5 * 989, rel=0.01)  # the config's rate: half an H100 SXM's dense bf16
    assert sample.flops / (h100_half_peak * 1e12) / 3600 == pytest.approx(3.0, rel=0.1)  # GPU-hours

    unet_training = capacity.costs["train_diffusion[p_uncond=0.1]"][0]
    assert unet_training.flops == pytest.approx(400_000 * 2048 * 3 * forward, rel=1e-9)
    assert unet_training.flops == pytest.approx(500e18, rel=0.1)
    assert unet_training.wall_seconds == pytest.approx(unet_training.device_seconds / 8)  # 8 training workers

    text = "\n".join(capacity.lines)
    assert "cluster: 16 GPUs, 136 CPU cores (cluster.capacity)" in text
    assert "stated in the config (cluster.capacity): one GPU 495 TFLOP/s in bf16" in text
    assert "50,000 images x (256 steps x unet 219.4 + 256 guided x unet 219.4 GFLOPs)" in text
    assert "UNet: 400,000 steps x batch 2048 x 3 x 219.4 GFLOPs" in text
    assert capacity.gpu_hours > 3 * unet_training.device_seconds / 3600  # three trainings, the sweep, ...


# ----------------------------------------------------------------------------------------------
# Work per stage (the tiny test config: small networks, counted quickly)


@pytest.fixture(scope="module")
def tiny():
    cfg = load_config(TINY)
    return cfg, Networks(cfg)


@pytest.mark.parametrize("guidance, interval, guiding", [
    ("none", None, None), ("cfg", None, "unet"), ("pag", None, "unet"), ("autoguidance", None, "guide"),
    ("classifier", None, "classifier gradient"), ("cfg", (0.2, 0.8), "unet")])
def test_passes_per_image_add_up_to_the_samplers_nfe(tiny, guidance, interval, guiding):
    from pipeline.generation.sampler_config import SamplerConfig, nfe_per_image

    cfg, nets = tiny
    config = SamplerConfig(guidance=guidance, strength=1.0, guidance_interval=interval, sampler="ddim", steps=20,
                           p_uncond=0.2)
    passes = passes_per_image(config, nets, cfg.diffusion.timesteps)
    assert sum(count for _, count in passes) == nfe_per_image(config, cfg.diffusion.timesteps)
    assert passes[0] == (nets.unet, 20)
    assert [net.name for net, _ in passes[1:]] == ([guiding] if guiding else [])
    if interval:
        assert 0 < passes[1][1] < 20


def test_the_sweep_counts_both_rounds(tiny, tmp_path):
    from pipeline.sweep_space import configurations

    cfg, _ = tiny
    sw = cfg.sweep
    capacity = capacity_of(cfg, tmp_path)
    configs = configurations(sw, cfg.train.p_uncond)
    screen, screen_scoring, full, full_scoring = capacity.costs["sweep"]
    kinds = {c.guidance for c in configs}
    assert screen_scoring.flops == pytest.approx(len(configs) * sw.screen_images * Networks(cfg).evalnet.gflops * 1e9)
    # the full round generates only the images beyond the screened ones, and scores all of them
    assert full_scoring.flops / screen_scoring.flops == pytest.approx(
        len(kinds) * sw.top_k * sw.full_images / (len(configs) * sw.screen_images))
    assert full.flops > 0 and screen.flops > 0


# ----------------------------------------------------------------------------------------------
# Units, the cluster, throughput


def test_units_at_once_follow_the_declaration_and_the_cluster():
    size = ClusterSize(gpus=4, cpus=64, driver_cpus=8, source="")
    part = Part("x", 10, 10, 1e12, pieces=6)
    trainers, trials = Units("training worker", 8, cpus=8, gpus=1), Units("sweep trial", None, cpus=1, gpus=1)
    assert at_once(trainers, part, size) == 4  # the cluster holds 4 of the 8 asked
    assert at_once(trials, part, size) == 4 and at_once(trials, part, ClusterSize(None, None, 8, "")) == 6
    pool = (Units("sweep trial", None, cpus=1), Units("sampler actor", 16, cpus=6, gpus=1))
    assert compute_units(pool, size) == (pool[1],)  # GPU units compute; the CPU trials beside them coordinate
    assert compute_units(Units("shard task", None), size) == (Units("shard task", None),)
    assert compute_units(None, size)[0].kind == "driver process"


def test_throughput_from_a_bench_gpu_record(tmp_path, tiny):
    """The record `python -m pipeline.bench gpu --out FILE` writes (pipeline.benches.gpu.measure,
    run here on the CPU with a tiny network) is what cluster.capacity.bench reads."""
    from pipeline.benches.gpu import measure

    _, nets = tiny
    unet = dict(image_size=8, in_channels=3, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(4,), num_head_channels=16, num_classes=1000, learn_sigma=True)
    networks = dict(unet=unet, classifier=dict(image_size=8, num_classes=1000, base_channels=16, channel_mult=(1, 2),
                                               num_res_blocks=1, attention_resolutions=(4,), num_head_channels=16),
                    diffusion=dict(timesteps=100, schedule="cosine", lambda_min=-20.0, lambda_max=20.0, loss="hybrid"),
                    inception_weights=str(tmp_path / "absent.pt"))
    setup = dict(steps=1, reps=1, train_batch=2, train_steps=1, classifier_batch=2, inception_images=2,
                 inception_batch=2, matmul_size=32, compile=False, net_batch=4)
    record = measure(torch.device("cpu"), setup, networks)
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(record))

    throughput = Throughput.measured(str(path), 0.03, nets)
    assert throughput.per_gpu(TRAIN, "bf16") == pytest.approx(
        record["train_images_per_s_bf16"] * 3 * record["unet_forward_gflops_per_image"] / 1e3)
    assert throughput.per_gpu(TRAIN, "fp16") == throughput.per_gpu(TRAIN, "bf16")
    assert throughput.per_gpu(SAMPLE, "fp32") == record["sample_tflops_fp32"]
    assert throughput.per_gpu(FEATURES, "fp32") == record["sample_tflops_fp32"]  # no Inception weights here
    assert throughput.source.startswith("measured on cpu by `python -m pipeline.bench gpu`")
    assert throughput.cpu == 0.03


def _dry_run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """`python -m pipeline.run --dry-run` in a process of its own, in tmp_path/work; it prints which
    of Ray and MLflow were imported at the end."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir(exist_ok=True)
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(REPO), HOME=str(home))
    code = ("import sys; from pipeline.run import main; code = main(sys.argv[1:]); "
            "print('imported:', sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'mlflow'})); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, "--dry-run", *isolated_overrides(work), *args],
                          capture_output=True, text=True, cwd=work, env=env, timeout=600)


def test_dry_run_of_the_tiny_config_prints_the_plan_and_starts_no_ray(tmp_path):
    done = _dry_run(tmp_path, "--config", str(TINY))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    plan, capacity = out.index("plan (9 to run"), out.index("capacity plan (")
    assert plan < out.index("resources (per stage") < capacity
    lines = out[capacity:].splitlines()
    for label in ("shard", "train_diffusion[p_uncond=0.2]", "train_classifier", "train_evalnet", "reference_stats",
                  "sample", "evaluate", "sweep", "leaderboard"):
        assert any(line.startswith(f"  {label} ") for line in lines), label
    assert "cfg-w1-ddim2-p0.2: 20 images x (2 steps x unet" in out
    assert "on 1 x training worker (1 CPU each)" in out and "throughput: stated in the config" in out
    assert "total to run: " in out
    assert out.rstrip().endswith("imported: []")  # neither Ray nor MLflow was even imported
    assert list((tmp_path / "work").iterdir()) == []  # nothing written: no store, no MLflow


def test_dry_run_reads_a_bench_record_or_names_what_is_wrong_with_it(tmp_path, monkeypatch, capsys):
    from pipeline.run import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    record = tmp_path / "gpu.json"

    def dry_run() -> int:
        return main(["--dry-run", "--config", str(TINY), *isolated_overrides(tmp_path),
                     "--set", f"cluster.capacity.bench={record}"])

    record.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "unet_forward_gflops_per_image": 219.4,
                                  "train_images_per_s_fp32": 300.0, "train_images_per_s_bf16": 700.0,
                                  "sample_tflops_fp32": 120.0, "sample_tflops_bf16": 400.0,
                                  "inception_images_per_s": 5000.0}))
    assert dry_run() == 0
    out = capsys.readouterr().out
    assert f"measured on NVIDIA H100 80GB HBM3 by `python -m pipeline.bench gpu` ({record})" in out
    assert f"trains at {700 * 3 * 219.4 / 1e3:.4g} TFLOP/s in bf16" in out

    record.write_text(json.dumps({"device": "x", "sample_tflops_bf16": 400.0}))
    assert dry_run() == 2
    err = capsys.readouterr().err
    assert f"config error: cluster.capacity.bench = '{record}': no positive 'unet_forward_gflops_per_image'" in err
    record.write_text(json.dumps({"skipped": "no CUDA device visible to torch"}))
    assert dry_run() == 2
    assert "measured nothing (no CUDA device visible to torch)" in capsys.readouterr().err


def test_bench_writes_its_record_with_out(tmp_path, monkeypatch, capsys):
    import types

    from pipeline import bench

    module = types.ModuleType("pipeline.benches.fake")
    module.run = lambda quick=False: {"sample_tflops_bf16": 400.0, "ratio": 2.0}
    monkeypatch.setitem(sys.modules, "pipeline.benches.fake", module)
    monkeypatch.setattr(bench, "available", lambda: ["fake"])
    assert bench.main(["fake", "--out", str(tmp_path / "fake.json")]) == 0
    assert json.loads((tmp_path / "fake.json").read_text())["sample_tflops_bf16"] == 400.0
    assert "sample_tflops_bf16" in capsys.readouterr().out


def test_dataset_sizes_known_before_listing():
    from pipeline.data.sources.listing import expected_size

    digits = expected_size(load_config(None).data)
    assert digits.train + digits.val == 1797 and digits.classes == 10
    imagenet = expected_size(imagenet64().data)
    assert (imagenet.train, imagenet.val, imagenet.classes, imagenet.exact) == (1_281_167, 50_000, 1000, True)
    assert expected_size(imagenet64("data.max_images_per_class=100").data).train == 100_000
    assert expected_size(load_config(None, ["data.source=imagefolder", "data.path=/tmp"]).data) is None
