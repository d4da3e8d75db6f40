import math

from pipeline.benches.sample import run


def test_quick_sample_bench_reports_its_figures():
    result = run(quick=True)
    for key in ("images_per_s_ours", "images_per_s_naive", "ratio", "gflops_per_image", "achieved_gflops_per_s",
                "machine_matmul_gflops_per_s"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["ratio"] == result["images_per_s_ours"] / result["images_per_s_naive"]
    assert result["gflops_per_image"] == result["forward_gflops_per_image"] * 2 * result["steps"]
    assert result["max_abs_diff_vs_naive"] < 1e-2  # both paths sample the same images (float rounding aside)
