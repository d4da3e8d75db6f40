"""Bad input to a training run, each refused with a clear message: shards missing or cut short
(found before any worker starts), shards altered in place (found by the worker reading them)."""
import dataclasses
import os
import shutil

import pytest

from pipeline.data.loader import ShardedDataset, ShardIntegrityError
from pipeline.training.spec import TrainSpec
from pipeline.training.trainer import fit
from tests.training.test_diffusion_resume import TASK

SPEC = TrainSpec(kimg=0.128, batch_size=64, lr=1e-3, num_workers=2, checkpoint_kimg=0.128, max_failures=0)


@pytest.fixture
def shards_copy(digits_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(digits_shards, copy)
    return copy, ShardedDataset(str(copy)).shards("train")


def test_missing_shard_is_refused_before_starting(shards_copy, tmp_path):
    copy, entries = shards_copy
    os.remove(copy / entries[1].name)
    with pytest.raises(ShardIntegrityError, match=rf"1 of {len(entries)} 'train' shards .* fail verification: "
                                                  rf"{entries[1].name} is missing.*--force shard"):
        fit(TASK, SPEC, str(copy), str(tmp_path / "storage"))
    assert not (tmp_path / "storage").exists()


def test_truncated_shard_is_refused_before_starting(shards_copy, tmp_path):
    copy, entries = shards_copy
    path = copy / entries[0].name
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ShardIntegrityError, match=rf"{entries[0].name} has 1000 bytes, the manifest says "
                                                  rf"{entries[0].size_bytes}"):
        fit(TASK, SPEC, str(copy), str(tmp_path / "storage"))


def test_not_a_shard_directory(tmp_path, ray_local):
    with pytest.raises(ShardIntegrityError, match="not a finished shard directory"):
        fit(TASK, SPEC, str(tmp_path), str(tmp_path / "storage"))


@pytest.mark.slow
def test_altered_shard_fails_in_the_worker_naming_the_shard(shards_copy, tmp_path):
    copy, entries = shards_copy
    for entry in entries:  # same size, other bytes: only the sha256 check can tell
        path = copy / entry.name
        data = bytearray(path.read_bytes())
        data[600] ^= 0xFF
        path.write_bytes(bytes(data))
    # not retried (issue 15): the workers stop and the driver raises the worker's error itself,
    # even with restarts allowed (a WorkerGroupError would mean Ray Train retried the read)
    with pytest.raises(ShardIntegrityError, match=r"shard .* sha256 .* \(altered\).*not retried"):
        fit(TASK, dataclasses.replace(SPEC, max_failures=2), str(copy), str(tmp_path / "storage"))


def test_more_readers_than_shards_is_refused_before_starting(digits_shards, tmp_path):
    shards = len(ShardedDataset(digits_shards).shards("train"))
    spec = TrainSpec(**{**SPEC.__dict__, "loader_workers": shards})  # 2 workers x `shards` loader processes
    with pytest.raises(ShardIntegrityError, match=rf"has {shards} 'train' shards but {2 * shards} readers"):
        fit(TASK, spec, digits_shards, str(tmp_path / "storage"))
    assert not (tmp_path / "storage").exists()
