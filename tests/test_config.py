"""Config loading: strict validation with messages naming key, value and origin; overrides; hashes."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.config import DEFAULT_CONFIG, ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent

# (overrides, expected key in the message, expected text in the message)
BAD_CONFIGS = [
    (["no.such.key=1"], "no.such.key", "unknown key 'no'"),
    (["train.lrr=1"], "train.lrr", "unknown key 'lrr' in section 'train'"),
    (["train.p_uncond=[0.1,1.5]"], "train.p_uncond[1] = 1.5", "must be in [0, 1]"),
    (["train.p_uncond=[-0.1]"], "train.p_uncond[0] = -0.1", "must be in [0, 1]"),
    (["train.p_uncond=[]"], "train.p_uncond", "needs at least one value"),
    (["train.p_uncond=[0.1,0.1]"], "train.p_uncond", "distinct"),
    (["sample.steps=0"], "sample.steps = 0", "at least 1"),
    (["sweep.steps=[25,0]"], "sweep.steps[1] = 0", "must be in [1, diffusion.timesteps = 1000]"),
    (["sample.steps=5000"], "sample.steps = 5000", "more than diffusion.timesteps"),
    (["data.resolution=9"], "data.resolution = 9", "the network cannot take it"),
    (["data.resolution=4"], "data.resolution = 4", "at least 8"),
    (["data.resolution=12"], "model.attention_resolutions[0] = 4", "not a resolution the network reaches"),
    (["train.lr=abc"], "train.lr = 'abc'", "expected a number"),
    (["train.batch_size=1.5"], "train.batch_size = 1.5", "expected an integer"),
    (["train.use_gpu=maybe"], "train.use_gpu = 'maybe'", "expected true or false"),
    (["diffusion.schedule=quadratic"], "diffusion.schedule = 'quadratic'", "must be one of 'linear', 'cosine', 'lambda'"),
    (["diffusion.loss=hybrid"], "diffusion.loss = 'hybrid'", "set model.learn_sigma: true"),
    (["train.batch_size=127"], "train.batch_size = 127", "split evenly over train.num_workers = 2"),
    (["evalnet.feature_dim=96"], "evalnet.feature_dim = 96", "evalnet.width = 32 times a power of 2"),
    (["sample.p_uncond=0.3"], "sample.p_uncond = 0.3", "no model is trained with it"),
    (["sweep.guidance.cfg=[0,-1]"], "sweep.guidance.cfg[1] = -1.0", "non-negative"),
    (["data.source=imagefolder"], "data.path = None", "needs a dataset path"),
    (["data.source=parquet", "data.path=/no/such/dir"], "data.path = '/no/such/dir'", "no such file"),
    (["tracking.uri=./mlruns"], "tracking.uri = './mlruns'", "refuses the file store"),
    (["train.ema_decays=[1.0]"], "train.ema_decays[0] = 1.0", "must be in (0, 1)"),
    (["train.guide.kind=early", "train.guide.kimg=5000"], "train.guide.kimg = 5000.0", "before the end of training"),
    (["train.guide.kind=smaller", "train.guide.base_channels=40"], "train.guide.base_channels = 40",
     "the guide (the model's UNet at this width) cannot be built: num_head_channels=32"),
    (["sample.guidance_interval=[0.8,0.2]"], "sample.guidance_interval", "0 <= lo < hi <= 1"),
    (["train=3"], "train = 3", "expected a mapping"),
    (["train.lr"], "train.lr", "must look like section.key=value"),
    (["diffusion.lambda_min=30"], "diffusion.lambda_min = 30.0", "below diffusion.lambda_max"),
    # the sampler configuration (pipeline.generation.sampler_config)
    (["sample.guidance=cgf"], "sample.guidance = 'cgf'", "must be one of 'none', 'cfg'"),
    (["sweep.guidance={cgf: [1.0]}"], "sweep.guidance.cgf = [1.0]", "not a guidance kind"),
    (["sweep.guidance=[none, cfg]"], "sweep.guidance", "expected a mapping of str to lists of float"),
    (["sweep.guidance.none=[1.0]"], "sweep.guidance.none[0] = 1.0", "the unguided model has no strength"),
    (["sweep.guidance_interval=[null, [0.5, 0.5]]"], "sweep.guidance_interval[1]", "0 <= lo < hi <= 1"),
    (["sample.guidance=pag", "sample.pag_layers=output_blocks.9.1"], "sample.pag_layers = 'output_blocks.9.1'",
     "not a self-attention layer of this UNet (it has input_blocks.3.1, middle_block.1"),
    (["sweep.pag_layers=[paper, 'middle_block.1,']"], "sweep.pag_layers[1]", "layer names separated by commas"),
    (["sample.net_batch=0"], "sample.net_batch = 0", "at least 1"),
    (["train.p_uncond=[0.0]", "sample.p_uncond=0.0"], "sample.guidance = 'cfg'", "p_uncond > 0"),
]

# Keys the typed sampler configuration replaced: refused at load, naming the new key.
RENAMED = [
    ("sample.w=2.0", "sample.strength"),
    ("sweep.w=[0,1]", "sweep.guidance.cfg"),
    ("sweep.classifier_scale=[1,4]", "sweep.guidance.classifier"),
    ("sweep.autoguidance_w=[1]", "sweep.guidance.autoguidance"),
    ("sweep.pag_w=[1]", "sweep.guidance.pag"),
    ("sweep.gpus_per_trial=1", "sweep.use_gpu"),  # the sweep's sampler pool takes the GPUs, not its trials
]


@pytest.mark.parametrize("override,new_key", RENAMED)
def test_renamed_sampler_keys_fail_naming_the_new_key(override, new_key, tmp_path):
    with pytest.raises(ConfigError, match=rf"no longer a key: use {new_key}"):
        load_config(DEFAULT_CONFIG, [override])
    section, rest = override.split(".", 1)
    key, value = rest.split("=")
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and f"{section}.{key}" in str(info.value) and new_key in str(info.value)


@pytest.mark.parametrize("overrides,key,text", BAD_CONFIGS, ids=[" ".join(c[0]) for c in BAD_CONFIGS])
def test_bad_overrides_are_rejected_naming_key_value_and_origin(overrides, key, text):
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT_CONFIG, overrides)
    message = str(info.value)
    assert key in message
    assert text in message
    assert ("--set" in message) or (str(DEFAULT_CONFIG) in message)


def test_bad_value_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  p_uncond: [0.2, 2.0]\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "train.p_uncond[1] = 2.0" in str(info.value)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  channels: 64\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: model.channels = 64: unknown key 'channels'"):
        load_config(path)


def test_a_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    path = tmp_path / "broken.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_overrides_parse_yaml_values():
    config = load_config(DEFAULT_CONFIG, ["train.lr=1e-4", "sweep.guidance.cfg=[0,0.5,1]",
                                          "sample.guidance_interval=null", "train.guide.kind=early", "sample.eta=0.5"])
    assert config.train.lr == 1e-4
    assert config.sweep.guidance["cfg"] == [0.0, 0.5, 1.0]
    assert config.train.guide.kind == "early"
    assert config.sample.eta == 0.5


def test_ints_are_accepted_for_floats_but_not_the_reverse():
    assert load_config(DEFAULT_CONFIG, ["train.lr=1"]).train.lr == 1.0
    assert isinstance(load_config(DEFAULT_CONFIG, ["train.kimg=30"]).train.kimg, float)


def test_the_default_file_lists_every_key():
    """configs/default.yaml is the config reference: it spells out every key of every section."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    resolved = load_config(DEFAULT_CONFIG).to_dict()

    def keys(tree, prefix=""):
        out = set()
        for k, v in tree.items():
            out.add(prefix + k)
            if isinstance(v, dict):
                out |= keys(v, prefix + k + ".")
        return out

    assert keys(raw) == keys(resolved)


def test_hash_is_stable_and_order_independent(tmp_path):
    a = load_config(DEFAULT_CONFIG)
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(dict(reversed(list(raw.items()))), sort_keys=True))
    b = load_config(reordered)
    assert a.hash() == b.hash()
    c = load_config(DEFAULT_CONFIG, ["train.lr=1e-4"])
    assert c.hash() != a.hash()
    assert c.section_hash("data", "model") == a.section_hash("data", "model")
    assert c.section_hash("train") != a.section_hash("train")


def test_cli_rejects_unknown_key_at_once_without_starting_anything(tmp_path):
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "--set", "no.such.key=1"], cwd=tmp_path,
                          capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "no.such.key" in proc.stderr and "unknown key" in proc.stderr
    assert time.time() - started < 20
    assert list(tmp_path.iterdir()) == []  # no store, no mlflow.db, no Ray session


def test_cli_print_config_prints_the_resolved_config(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline.run", "--print-config", "--set", "train.lr=0.001"],
                          cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    printed = yaml.safe_load(proc.stdout)
    assert printed["train"]["lr"] == 0.001
    assert set(printed) == {"data", "model", "diffusion", "train", "classifier", "evalnet", "sample", "eval",
                            "sweep", "tracking", "store", "cluster"}


@pytest.mark.parametrize("overrides,message", [
    # the UNet puts attention in its middle block too: a head size that does not divide it fails
    # at load, not when training builds the network
    (["model.attention_resolutions=[]", "model.num_head_channels=48"], "model.num_head_channels = 48: must divide"),
    (["classifier.num_head_channels=48"], "classifier.num_head_channels = 48: must divide"),
    (["classifier.attention_resolutions=[3]"], "classifier.attention_resolutions[0] = 3: attention resolution 3 px"),
    (["classifier.channel_mult=[1,2,2,2,2]"], "data.resolution = 8: the network cannot take it: not divisible by 2**(len(classifier.channel_mult) - 1) = 16"),
    (["classifier.batch_size=63"], "split evenly over classifier.num_workers = 2"),
])
def test_the_networks_own_checks_run_at_load_naming_the_config_key(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(DEFAULT_CONFIG, overrides)


def test_train_classifier_and_evalnet_share_the_training_keys():
    from pipeline.config import ClassifierConfig, EvalnetConfig, TrainConfig, TrainingFields

    shared = {f.name for f in dataclasses.fields(TrainingFields)}
    assert {"warmup_kimg", "grad_clip", "checkpoint_kimg", "keep_checkpoints"} <= shared
    for section in (TrainConfig, ClassifierConfig, EvalnetConfig):
        assert shared <= {f.name for f in dataclasses.fields(section)}
    with pytest.raises(ConfigError, match=r"classifier.grad_clip = 0.0: must be greater than 0"):
        load_config(DEFAULT_CONFIG, ["classifier.grad_clip=0"])


def test_the_classifier_trains_as_before_and_reads_its_training_keys():
    from pipeline.training.spec import train_spec

    for path, extra in ((DEFAULT_CONFIG, []), (REPO / "configs/imagenet64.yaml", ["data.path=/"])):
        cl = load_config(path, extra).classifier
        spec = train_spec(cl)  # what train_spec hard-coded before the classifier had these keys
        assert (spec.warmup_kimg, spec.grad_clip, spec.keep_checkpoints) == (min(cl.kimg / 10, 1.0), 1.0, 2)
        assert spec.checkpoint_kimg == max(cl.kimg / 4, cl.batch_size / 1000)
    cl = load_config(DEFAULT_CONFIG, ["classifier.grad_clip=3", "classifier.warmup_kimg=0.5",
                                      "classifier.checkpoint_kimg=6", "classifier.keep_checkpoints=4"]).classifier
    spec = train_spec(cl)
    assert (spec.grad_clip, spec.warmup_kimg, spec.checkpoint_kimg, spec.keep_checkpoints) == (3.0, 0.5, 6.0, 4)
