"""`python -m pipeline.bench train --quick`: finite figures, the Ray/plain ratio and start-up apart."""
import math


def test_train_bench_quick_returns_finite_figures(ray_local):
    from pipeline.benches.train import run

    figures = run(quick=True)
    for key in ("steps_per_s_ray", "steps_per_s_plain", "ratio", "startup_s"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    # the ratio of the unrounded rates; the printed rates are rounded, so compare to that precision
    assert math.isclose(figures["ratio"], figures["steps_per_s_ray"] / figures["steps_per_s_plain"], rel_tol=2e-3)
    assert figures["steps_timed_ray"] > 0 and figures["steps_timed_plain"] > 0
