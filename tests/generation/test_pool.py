"""The Ray actor pool: chunks written atomically, identical for 1 and 2 actors and any batch
size, and a re-run generates only the missing chunks."""
from __future__ import annotations

import numpy as np

from pipeline.generation import SamplerConfig, generate, iter_chunks, load_models, plan_chunks
from pipeline.generation.chunks import remove_temporaries
from pipeline.generation.pool import generate_parallel
from tests.generation.conftest import directory

TRIAL = SamplerConfig(guidance="cfg", strength=1.0, sampler="ddpm", steps=3, seed=5)
NUM_IMAGES = 10


def _read_all(out):
    parts = list(iter_chunks(out, plan_chunks(NUM_IMAGES, 4)))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))


def test_pool_output_is_independent_of_actors_and_batch_size_and_resumes(ray_local, tiny_models, tmp_path):
    one = directory(tmp_path / "one")
    result = generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], one, num_actors=1, chunk_size=4, batch_size=4)
    assert result.num_chunks == 3 and result.generated_images == 10 and result.reused_chunks == 0
    assert one.listdir() == ["chunk_000000.npz", "chunk_000001.npz", "chunk_000002.npz"]
    images, labels, indices = _read_all(one)
    assert images.shape == (10, 8, 8, 3) and indices.tolist() == list(range(10))

    two = directory(tmp_path / "two")
    generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], two, num_actors=2, chunk_size=4, batch_size=3)
    for a, b in zip(_read_all(two), (images, labels, indices)):
        assert np.array_equal(a, b)
    direct, direct_labels = generate(TRIAL, load_models(TRIAL, tiny_models["diffusion"]), range(10), 10)
    assert np.array_equal(direct, images) and np.array_equal(direct_labels, labels)

    # an interrupted run: one chunk missing, one temporary file left behind
    two.delete("chunk_000001.npz")
    two.write_bytes("chunk_000002.npz.tmp-deadbeef", b"partial")
    before = {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in ("chunk_000000.npz", "chunk_000002.npz")}
    again = generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], two, num_actors=2, chunk_size=4, batch_size=3)
    assert again.reused_chunks == 2 and again.generated_images == 4
    after = {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in before}
    assert after == before  # finished chunks are not rewritten
    for a, b in zip(_read_all(two), (images, labels, indices)):
        assert np.array_equal(a, b)
    assert remove_temporaries(two) == 1 and len(two.listdir()) == 3
    assert generate_parallel(TRIAL, NUM_IMAGES, tiny_models["diffusion"], two, num_actors=2, chunk_size=4).generated_images == 0
