import pyarrow.fs as pafs
import pytest
import torch

from pipeline.data.build import build_serially
from pipeline.data.loader import ShardedDataset, ShardIntegrityError, StreamSpec, make_loader, read_shard_samples
from pipeline.data.shardwrite import EncodeOptions
from pipeline.data.sources import list_source


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory, kaggle_tree):
    listing = list_source("imagenet_kaggle", kaggle_tree)
    out = str(tmp_path_factory.mktemp("shards") / "ds")
    options = EncodeOptions(resolution=8, num_classes=len(listing.classes))
    build_serially(listing, pafs.LocalFileSystem(), out, options, samples_per_shard=6, seed=0)
    return out  # 48 train images in 8 shards, 12 val in 2


def _keys(loader, n_batches=None):
    keys = []
    for i, (_, _, batch_keys) in enumerate(loader):
        keys.extend(batch_keys)
        if n_batches is not None and i + 1 == n_batches:
            break
    return keys


def test_dataset_description(dataset_dir):
    ds = ShardedDataset(dataset_dir)
    assert ds.num_classes == 6 and ds.resolution == 8
    assert ds.num_images("train") == 48 and ds.num_images("val") == 12 and len(ds.shards("train")) == 8
    assert ds.verify() == 60


def test_batches_are_tensors_in_range(dataset_dir):
    images, labels = next(iter(make_loader(dataset_dir, StreamSpec("train", batch_size=5))))
    assert images.shape == (5, 3, 8, 8) and images.dtype == torch.float32
    assert -1.0 <= images.min() and images.max() <= 1.0 and labels.dtype == torch.int64
    raw, _ = next(iter(make_loader(dataset_dir, StreamSpec("train", batch_size=5, dtype="uint8"))))
    assert raw.dtype == torch.uint8
    torch.testing.assert_close(raw.float() / 127.5 - 1, images)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_rank_and_worker_split_is_disjoint_and_complete(dataset_dir, num_workers):
    ds = ShardedDataset(dataset_dir)
    everything = {s["__key__"] for e in ds.shards("train") for s in read_shard_samples(ds, e)}
    seen = []
    for rank in range(2):
        spec = StreamSpec("train", batch_size=4, rank=rank, world_size=2, num_workers=num_workers, infinite=False, with_keys=True)
        seen.append(_keys(make_loader(ds, spec)))
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(everything)


def test_seeded_shuffle_is_deterministic(dataset_dir):
    def first(seed):
        return _keys(make_loader(dataset_dir, StreamSpec("train", batch_size=8, seed=seed, shuffle_buffer=20, with_keys=True)), 12)

    a, b, c = first(0), first(0), first(1)
    assert a == b and a != c
    assert sorted(a[:48]) != a[:48]  # shuffled
    assert len(set(a[:48])) >= 30  # a buffer of 20 mixes neighbouring epochs a little


@pytest.mark.parametrize("num_workers,start", [(0, 13), (2, 10), (2, 16)])
def test_start_image_skips_exactly_the_first_n_images(dataset_dir, num_workers, start):
    def spec(start_image):
        return StreamSpec("train", batch_size=4, num_workers=num_workers, seed=3, shuffle_buffer=10, start_image=start_image, with_keys=True)

    full = _keys(make_loader(dataset_dir, spec(0)), 15)
    resumed = _keys(make_loader(dataset_dir, spec(start)), 6)
    assert resumed == full[start : start + len(resumed)]


def test_too_few_shards_for_the_readers_is_a_clear_error(dataset_dir):
    with pytest.raises(ValueError, match="has 2 shards but 2 ranks x 2 workers"):
        make_loader(dataset_dir, StreamSpec("val", batch_size=2, world_size=2, num_workers=2))


def _corrupt_copy(dataset_dir, tmp_path, how):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset_dir, copy)
    victim = copy / "train-000003.tar"
    data = victim.read_bytes()
    if how == "truncate":
        victim.write_bytes(data[: len(data) // 2])
    else:
        middle = len(data) // 2
        victim.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    return str(copy)


@pytest.mark.parametrize("how", ["truncate", "alter"])
def test_damaged_shard_is_an_error_naming_it(dataset_dir, tmp_path, how):
    copy = _corrupt_copy(dataset_dir, tmp_path, how)
    with pytest.raises(ShardIntegrityError, match="train-000003.tar"):
        for _ in make_loader(copy, StreamSpec("train", batch_size=4, infinite=False)):
            pass
    with pytest.raises(ShardIntegrityError, match="train-000003.tar"):
        ShardedDataset(copy).verify()


def test_damaged_shard_fails_in_a_worker_too(dataset_dir, tmp_path):
    copy = _corrupt_copy(dataset_dir, tmp_path, "truncate")
    with pytest.raises(ShardIntegrityError, match="train-000003.tar"):
        for _ in make_loader(copy, StreamSpec("train", batch_size=4, num_workers=2, infinite=False)):
            pass


def test_sample_count_is_checked_against_the_manifest(dataset_dir, tmp_path):
    import shutil

    from pipeline.data import manifest

    copy = str(tmp_path / "copy")
    shutil.copytree(dataset_dir, copy)
    fs = pafs.LocalFileSystem()
    entries = manifest.read_shards_table(fs, copy)
    entries[0] = manifest.ShardEntry(**{**entries[0].__dict__, "num_samples": entries[0].num_samples + 1})
    manifest.write_shards_table(fs, copy, entries)
    with pytest.raises(ShardIntegrityError, match=f"{entries[0].name}: read .* manifest says"):
        ShardedDataset(copy).verify()
