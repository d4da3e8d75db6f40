"""`python -m pipeline.bench eval --quick`: every figure present, same FD on the streaming path
and clean-fid's in-memory and folder paths, same samples for 1 and 2 actors."""
import math

import pytest


@pytest.mark.slow
def test_eval_bench_quick(ray_local):
    from pipeline.bench import run_bench

    figures = run_bench("eval", quick=True)
    for key in ("stream_images_per_s", "cleanfid_in_memory_images_per_s", "pngs_cleanfid_images_per_s",
                "ratio_vs_pngs_cleanfid", "images_per_s_1_actor", "images_per_s_2_actor", "actor_scaling", "ratio"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    assert figures["fd_stream"] == pytest.approx(figures["fd_cleanfid"], rel=1e-4, abs=1e-6)
    assert figures["fd_stream"] == pytest.approx(figures["fd_cleanfid_in_memory"], rel=1e-4, abs=1e-6)
    # the headline is the streaming path against clean-fid's in-memory route, not actor scaling
    assert figures["ratio"] == pytest.approx(figures["cleanfid_in_memory_s"] / figures["stream_s"], rel=0.01)
    assert figures["identical_outputs"] is True and figures["quick"] is True
