"""Resources in one place: each stage's declared units (what one asks Ray for, how many at once),
the TrainSpec a training config section becomes, the refusal of a local instance, the new
config fields, and the shard stage planning its parallelism from the data."""
import json
import os

import pytest

from pipeline.config import ConfigError, load_config
from pipeline.graph import build_instances, format_units, load_stages, make_plan
from pipeline.resources import NoCudaError, Placement, Units, refusal
from pipeline.store import Store
from pipeline.training.spec import train_spec
from tests.conftest import REPO

IMAGENET = "configs/imagenet64.yaml"


def test_units_describe_their_request():
    workers = Units("training worker", 8, cpus=4, gpus=1, knob="train.num_workers")
    assert workers.bundle() == {"CPU": 4.0, "GPU": 1.0}
    assert workers.describe() == "8 x training worker (4 CPUs, 1 GPU each)"
    shards = Units("shard task", None, per="shard to write")
    assert shards.describe() == "one shard task per shard to write (1 CPU each)"


def test_a_local_instance_refuses_what_it_cannot_hold_with_todays_message():
    four = Units("training worker", 4, knob="num_workers")
    assert refusal(four, {"CPU": 2.0}) == ("4 training workers need 4 CPUs (one each) but the Ray cluster has 2: "
                                           "lower num_workers or add nodes")
    assert refusal(four, {"CPU": 4.0}) is None
    gpus = Units("training worker", 2, cpus=2, gpus=1, knob="train.num_workers")
    assert refusal(gpus, {"CPU": 8.0, "GPU": 1.0}) == ("2 training workers need 2 GPUs (one each) but the Ray cluster "
                                                      "has 1: lower train.num_workers or add nodes")


@pytest.mark.parametrize("section", ["train", "classifier", "evalnet"])
def test_train_spec_reads_the_shared_fields_of_every_training_section(section):
    cfg = load_config(None, [f"{section}.precision=bf16", f"{section}.cpus_per_worker=3", f"{section}.use_gpu=true",
                             f"{section}.loader_workers=2"])
    s = getattr(cfg, section)
    spec = train_spec(s)
    assert (spec.kimg, spec.batch_size, spec.lr, spec.num_workers, spec.seed, spec.weight_decay) == (
        s.kimg, s.batch_size, s.lr, s.num_workers, s.seed, s.weight_decay)
    assert (spec.precision, spec.cpus_per_worker, spec.use_gpu, spec.loader_workers) == ("bf16", 3.0, True, 2)
    assert spec.units == Units("training worker", s.num_workers, cpus=3.0, gpus=1.0, knob="num_workers")
    assert spec.log_kimg == max(s.kimg / 50, s.batch_size / 1000)
    assert (spec.warmup_kimg, spec.grad_clip, spec.checkpoint_kimg, spec.keep_checkpoints) == (
        min(s.warmup_kimg, s.kimg), s.grad_clip, min(s.checkpoint_kimg, s.kimg), s.keep_checkpoints)
    assert spec.ema_decays == tuple(getattr(s, "ema_decays", ()))
    spec.validate()


def test_the_guide_spec_shortens_warm_up_and_checkpoints_to_its_own_run():
    cfg = load_config(None, ["train.warmup_kimg=10", "train.checkpoint_kimg=20"])
    spec = train_spec(cfg.train, kimg=4)
    assert (spec.kimg, spec.warmup_kimg, spec.checkpoint_kimg) == (4.0, 4.0, 4.0)


@pytest.mark.parametrize("override, problem", [
    ("train.precision=fp8", "must be one of 'fp32', 'bf16', 'fp16'"),
    ("evalnet.cpus_per_worker=0", "must be greater than 0"),
    ("classifier.loader_workers=-1", "must be at least 0"),
    ("cluster.wait_timeout_s=0", "must be greater than 0"),
    ("cluster.require_cuda=maybe", "expected true or false"),
])
def test_new_config_fields_are_validated(override, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(None, [override])


def _units_printed(cfg, tmp_path) -> dict[str, str]:
    plan = make_plan(build_instances(load_stages(), cfg), Store(str(tmp_path)))
    lines = format_units(plan, cfg).splitlines()[1:]
    return dict(line.split(None, 1) for line in lines)


def test_dry_run_prints_each_stages_units(tmp_path):
    printed = _units_printed(load_config(None), tmp_path)
    assert printed["shard"] == "one shard task per shard to write (1 CPU each)"
    assert printed["train_diffusion"] == printed["train_evalnet"] == "2 x training worker (1 CPU each)"
    assert printed["sample"] == "2 x sampler actor (1 CPU each)"
    assert printed["reference_stats"] == printed["evaluate"] == "2 x feature extractor (1 CPU each)"
    assert printed["sweep"] == ("one sweep trial per configuration, as many at once as fit (0.125 CPUs each); "
                                "2 x sampler actor (0.875 CPUs each)")
    assert printed["leaderboard"] == "in the driver process"

    gpu = _units_printed(load_config(REPO / IMAGENET, ["data.path=/tmp", "classifier.cpus_per_worker=4"]), tmp_path)
    assert gpu["train_diffusion"] == gpu["train_evalnet"] == "8 x training worker (8 CPUs, 1 GPU each)"
    assert gpu["train_classifier"] == "8 x training worker (4 CPUs, 1 GPU each)"
    assert gpu["sweep"] == ("one sweep trial per configuration, as many at once as fit (1 CPU each); "
                            "16 x sampler actor (6 CPUs, 1 GPU each)")
    assert gpu["sample"] == "16 x sampler actor (8 CPUs, 1 GPU each)"
    assert gpu["reference_stats"] == gpu["evaluate"] == "16 x feature extractor (8 CPUs, 1 GPU each)"


def test_dry_run_output_of_the_cli(run_pipeline, capsys):
    assert run_pipeline("--dry-run", "--set", "evalnet.num_workers=1") == 0
    out = capsys.readouterr().out
    assert "resources (per stage: units at once x what each unit asks Ray for):" in out
    assert "train_evalnet     1 x training worker (1 CPU each)" in out


def test_placement_follows_the_cluster_config(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local = Placement.from_config(load_config(None).cluster, "train_evalnet")
    assert (local.joined, local.require_cuda, local.wait_timeout_s) == (False, True, 3600.0)
    joined = Placement.from_config(load_config(None, ["cluster.address=auto", "cluster.require_cuda=false",
                                                      "cluster.wait_timeout_s=60"]).cluster, "train_evalnet")
    assert (joined.joined, joined.require_cuda, joined.wait_timeout_s) == (True, False, 60.0)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert Placement.from_config(load_config(None).cluster, "x").joined


def test_a_gpu_unit_without_cuda_names_node_and_stage(ray_local):
    import torch

    from pipeline.resources import unit_device

    assert unit_device("train_evalnet", False, True) == torch.device("cpu")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(NoCudaError, match=r"train_evalnet: Ray gave this unit GPU \? on node [0-9a-f]+ .*no CUDA"):
        unit_device("train_evalnet", True, True)
    assert unit_device("train_evalnet", True, False) == torch.device("cpu")


def test_shard_plans_its_parallelism_from_the_data(digits_shards):
    """The session's digits shards were written on a 2-CPU local instance: every shard was in
    flight at once (Ray queued them), not two."""
    with open(os.path.join(digits_shards, "_MANIFEST.json")) as f:
        summary = json.load(f)["summary"]
    shards = summary["num_shards_train"] + summary["num_shards_val"]
    assert shards > 2 and summary["num_tasks"] == shards


def test_a_local_instance_without_enough_gpus_is_refused_before_ray_starts_pools_need_one_unit():
    from dataclasses import replace

    from pipeline.config import ClusterConfig
    from pipeline.resources import gpus_a_local_instance_lacks

    one_gpu = replace(ClusterConfig(), num_gpus=1, address=None)
    workers = Units("training worker", 2, gpus=1.0, knob="train.num_workers", gpu_knob="train.use_gpu")
    pool = Units("sampler actor", 2, gpus=1.0, knob="sample.num_actors", gpu_knob="sample.use_gpu", pool=True)
    trials = Units("sweep trial", None, per="configuration")
    assert "need 2 GPUs but this machine's private Ray instance has 1" in gpus_a_local_instance_lacks(workers, one_gpu)
    assert gpus_a_local_instance_lacks(pool, one_gpu) is None  # the pool starts the one that fits
    assert gpus_a_local_instance_lacks((trials, pool), one_gpu) is None
    no_gpu = replace(one_gpu, num_gpus=0)
    assert "(sample.use_gpu) need 1 GPU" in gpus_a_local_instance_lacks((trials, pool), no_gpu)


def test_sweep_trials_never_take_what_the_pools_workers_hold(ray_local):
    """On a private 2-CPU instance the trials may use only what the started sampler actors leave:
    a killed actor's replacement is placed on the CPU it freed, so a trial started there meanwhile
    would leave the pool without it for ever (the chaos run's hang). Joined: the config's count."""
    from pipeline.resources import at_once_beside_pool

    local, joined = Placement(stage="sweep"), Placement(stage="sweep", joined=True)
    actor = Units("sampler actor", 4, cpus=0.875, pool=True)
    trial = Units("sweep trial", None, cpus=1.0)
    assert at_once_beside_pool(trial, local, actor, 1) == 1  # 2 - 0.875 leaves one 1-CPU trial, not two
    small = Units("sweep trial", None, cpus=0.125)
    assert at_once_beside_pool(small, local, actor, 2) == 2  # the default run: 2 - 1.75 = 0.25
    assert at_once_beside_pool(small, local, actor, 1) == 9
    assert at_once_beside_pool(Units("sweep trial", 3, cpus=0.125), local, actor, 1) == 3
    assert at_once_beside_pool(trial, local, Units("sampler actor", 1, cpus=2.0, pool=True), 1) == 1  # never 0
    assert at_once_beside_pool(trial, joined, actor, 4) is None
    assert at_once_beside_pool(Units("sweep trial", 5, cpus=1.0), joined, actor, 4) == 5
