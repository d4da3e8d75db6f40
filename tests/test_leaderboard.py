"""The leaderboard on synthetic trial rows: ranking within matching protocols only, writers, plots."""
from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pandas as pd
import pytest

from pipeline import leaderboard as lb
from pipeline.diffusion.guidance import guidance_kind
from pipeline.generation.grid import class_grid_png
from pipeline.leaderboard.plots import leaderboard_plots, pareto_front

PNG = b"\x89PNG\r\n\x1a\n"


def synthetic_rows() -> list[dict]:
    proto_a = json.dumps({"evalnet": {"extractor": "evalnet", "num_samples": 500, "reference_stats_id": "abc"}})
    proto_b = json.dumps({"evalnet": {"extractor": "evalnet", "num_samples": 2000, "reference_stats_id": "abc"}})
    rows = []
    for p in (0.1, 0.2):
        for w in (0.0, 1.0, 2.0, 4.0):
            # U-shaped FD in w, minimum at w = 1 for p = 0.1 and w = 2 for p = 0.2
            best = 1.0 if p == 0.1 else 2.0
            rows.append(dict(guidance="cfg" if w else "none", w=w, s=1 + w, p_uncond=p, sampler="ddim", steps=25,
                             nfe=50 if w else 25, images_per_s=100.0, num_images=500, dataset="digits-8px",
                             protocol="A", protocol_json=proto_a, source="reproduced", config_id=f"c{p}{w}",
                             fd_evalnet=1.0 + (w - best) ** 2 + p + 0.01 * w, is_evalnet=2.0 + w, precision_evalnet=0.5 + w / 10,
                             recall_evalnet=0.8 - w / 10, class_accuracy=0.5 + w / 10))
    rows.append(dict(guidance="classifier", w=None, s=4.0, p_uncond=0.1, sampler="ddim", steps=25, nfe=50,
                     images_per_s=50.0, num_images=500, dataset="digits-8px", protocol="A", protocol_json=proto_a,
                     source="reproduced", config_id="cls", fd_evalnet=1.15, is_evalnet=3.0, precision_evalnet=0.7,
                     recall_evalnet=0.5, class_accuracy=0.9))
    # a better-looking number under another protocol must not be ranked with protocol A
    rows.append(dict(guidance="cfg", w=1.0, s=2.0, p_uncond=0.1, sampler="ddim", steps=25, nfe=50, images_per_s=90.0,
                     num_images=2000, dataset="digits-8px", protocol="B", protocol_json=proto_b, source="reproduced",
                     config_id="c0.11.0", fd_evalnet=0.01, is_evalnet=3.0, precision_evalnet=0.6, recall_evalnet=0.7,
                     class_accuracy=0.6))
    return rows


def test_rank_orders_within_each_protocol_only():
    ranked = lb.rank(synthetic_rows())
    a = ranked[ranked["protocol"] == "A"]
    b = ranked[ranked["protocol"] == "B"]
    assert list(b["rank"]) == [1]  # alone in its protocol, despite the smallest FD overall
    assert list(a["rank"]) == list(range(1, len(a) + 1))
    assert a.iloc[0]["config_id"] == "c0.11.0" and a.iloc[0]["fd_evalnet"] == pytest.approx(1.11)
    assert a.iloc[1]["config_id"] == "cls"
    assert (np.diff(a["fd_evalnet"].to_numpy()) >= 0).all()
    # the larger N comes first
    assert ranked.iloc[0]["protocol"] == "B" and set(ranked["ranked_by"]) == {"fd_evalnet"}


def test_rank_by_a_higher_is_better_metric_and_missing_values():
    rows = synthetic_rows()
    rows[0]["is_evalnet"] = float("nan")
    ranked = lb.rank(rows, metric="is_evalnet")
    a = ranked[ranked["protocol"] == "A"]
    assert (np.diff(a["is_evalnet"].dropna().to_numpy()) <= 0).all()
    assert a.iloc[-1]["rank"] is pd.NA and pd.isna(a.iloc[-1]["is_evalnet"])


def test_fid_is_preferred_when_present():
    rows = synthetic_rows()
    for i, r in enumerate(rows):
        r["fid"] = float(len(rows) - i)
    ranked = lb.rank(rows)
    assert set(ranked["ranked_by"]) == {"fid"}


def test_guidance_strengths():
    assert guidance_kind("cfg").table(1.5) == (1.5, 2.5)
    assert guidance_kind("none").table(0.0) == (0.0, 1.0)
    assert guidance_kind("classifier").table(4.0) == (None, 4.0)


def test_markdown_has_a_table_per_protocol_with_every_column():
    md = lb.to_markdown(lb.rank(synthetic_rows()))
    tables = re.findall(r"^### .*$", md, flags=re.M)
    assert len(tables) == 2 and "protocol B" in tables[0] and "N=2000" in tables[0]
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    for col in ("guidance", "| w |", "| s |", "p_uncond", "sampler", "steps", "NFE/img", "img/s", "| N |",
                "fd_evalnet", "is_evalnet", "precision_evalnet", "recall_evalnet", "class_accuracy"):
        assert col.strip("| ") in header, col
    assert "| 1 | cfg | 1 | 2 | 0.1 | ddim | 25 | 50 | 100.0 | 500 |" in md
    # classifier guidance: w empty, s is the scale
    assert "| classifier |  | 4 | 0.1 |" in md


def test_csv_and_parquet_round_trip(tmp_path):
    ranked = lb.rank(synthetic_rows())
    csv = lb.to_csv(ranked)
    back = pd.read_csv(io.StringIO(csv))
    assert len(back) == len(ranked) and {"rank", "fd_evalnet", "protocol"} <= set(back.columns)
    lb.write_parquet(ranked, tmp_path / "lb.parquet")
    again = pd.read_parquet(tmp_path / "lb.parquet")
    assert list(again["config_id"]) == list(ranked["config_id"])


def test_html_is_self_contained(tmp_path):
    ranked = lb.rank(synthetic_rows())
    plots = leaderboard_plots(ranked[ranked["protocol"] == "A"])
    grid = class_grid_png(np.full((20, 8, 8, 3), 200, np.uint8), np.arange(20) % 10)
    page = lb.to_html(ranked, plots, {"cfg w=1": grid})
    assert "<style>" in page and "<table" in page
    assert not re.search(r"(src|href)=['\"](?!data:)", page), "an external resource"
    uris = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(uris) == len(plots) + 1
    assert all(base64.b64decode(u).startswith(PNG) for u in uris)


def test_plots_cover_tradeoffs_and_frontiers():
    ranked = lb.rank(synthetic_rows())
    plots = leaderboard_plots(ranked[ranked["protocol"] == "A"], title="digits")
    for name in ("tradeoff_fd_evalnet", "tradeoff_is_evalnet", "tradeoff_precision_evalnet",
                 "tradeoff_class_accuracy", "frontier_precision_recall_evalnet", "frontier_fd_evalnet_is_evalnet"):
        assert name in plots and plots[name].startswith(PNG), name
    assert "frontier_precision_recall_inception" not in plots


def test_pareto_front():
    x = np.array([0.1, 0.5, 0.4, 0.9])  # recall, higher better
    y = np.array([0.9, 0.5, 0.4, 0.1])  # precision, higher better
    assert list(pareto_front(x, y, True, True)) == [0, 1, 3]  # (0.4, 0.4) is dominated by (0.5, 0.5)
    fd = np.array([3.0, 1.0, 2.0])
    is_ = np.array([5.0, 4.0, 3.0])
    assert list(pareto_front(is_, fd, True, False)) == [1, 0]


def test_image_grid_has_one_row_per_class():
    from PIL import Image

    images = np.zeros((30, 4, 4, 3), np.uint8)
    labels = np.arange(30) % 3
    images[labels == 1] = 255
    png = class_grid_png(images, labels, per_class=5)
    img = np.asarray(Image.open(io.BytesIO(png)))
    assert img.shape == (3 * 5 + 1, 5 * 5 + 1, 3)
    assert img[6:10, 1:5].min() == 255 and img[1:5, 1:5].max() == 0


def test_reported_rows_stay_in_their_own_group(tmp_path):
    path = tmp_path / "reported.yaml"
    path.write_text("dataset: digits-8px\nprotocol: paper\ncitation: Someone 2021, Table 1\nrows:\n"
                    "  - {guidance: cfg, w: 1.0, p_uncond: 0.1, fid: 1.5, is: 50.0}\n"
                    "  - {guidance: classifier, s: 4.0, fid: 2.0}\n")
    rep = lb.load_reported(path)
    assert list(rep["source"]) == ["reported", "reported"]
    assert rep.iloc[0]["s"] == 2.0 and rep.iloc[1]["s"] == 4.0 and pd.isna(rep.iloc[1]["w"])
    ranked = lb.rank(pd.concat([pd.DataFrame(synthetic_rows()), rep], ignore_index=True))
    assert list(ranked["source"])[-2:] == ["reported", "reported"]
    assert list(ranked[ranked["source"] == "reported"]["rank"]) == [1, 2]
    md = lb.to_markdown(ranked)
    assert "reported" in md and "Someone 2021, Table 1" in md


def test_cli_reads_trial_runs_from_mlflow(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("exp", artifact_location=(tmp_path / "mlruns").as_uri())
    for row in synthetic_rows()[:3]:
        run = client.create_run(exp, tags={"pipeline.kind": lb.TRIAL_KIND, "leaderboard.dataset": row["dataset"],
                                           "leaderboard.protocol": row["protocol"],
                                           "leaderboard.protocol_json": row["protocol_json"]})
        for k in ("guidance", "w", "s", "p_uncond", "sampler", "steps", "nfe", "num_images", "config_id"):
            client.log_param(run.info.run_id, k, row[k])
        for k in ("fd_evalnet", "is_evalnet", "images_per_s"):
            client.log_metric(run.info.run_id, k, row[k])
        client.set_terminated(run.info.run_id)
    # A trial run whose logging a stop signal cut is FAILED (the re-run logs the trial again): not a row.
    cut = synthetic_rows()[3]
    run = client.create_run(exp, tags={"pipeline.kind": lb.TRIAL_KIND, "leaderboard.dataset": cut["dataset"],
                                       "leaderboard.protocol": cut["protocol"],
                                       "leaderboard.protocol_json": cut["protocol_json"]})
    client.log_param(run.info.run_id, "config_id", cut["config_id"])
    client.set_terminated(run.info.run_id, status="FAILED")
    assert lb.main(["--tracking-uri", uri, "--experiment", "exp", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert len(table) == 3 and list(table["rank"]) == [1, 2, 3]
    assert list(table["fd_evalnet"]) == sorted(table["fd_evalnet"])
    assert lb.main(["--tracking-uri", uri, "--experiment", "exp", "--metric", "nope"]) == 2


def test_the_precision_of_a_configuration_is_its_dtype_column():
    rows = synthetic_rows()
    for i, row in enumerate(rows):
        row["precision"] = "bf16" if i == 0 else "fp32"
    md = lb.to_markdown(lb.rank(rows))
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert "| steps | dtype | NFE/img |" in header
    assert "| bf16 |" in md and "| fp32 |" in md
    assert "precision" not in lb.metric_columns(lb.rank(rows))


# ----------------------------------------------------------------------------------------------
# Intervals: stored, shown, ranked by, drawn

CI_HALF = {"fd_evalnet": 0.15, "is_evalnet": 0.3, "precision_evalnet": 0.03, "recall_evalnet": 0.04,
           "class_accuracy": 0.02}


def rows_with_intervals() -> list[dict]:
    """synthetic_rows with an interval on every metric; FD's is shifted below the value (bias-corrected)."""
    rows = synthetic_rows()
    for row in rows:
        for metric, half in CI_HALF.items():
            shift = -0.05 if metric == "fd_evalnet" else 0.0
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = row[metric] + shift - half, row[metric] + shift + half
    return rows


def reported_rows() -> pd.DataFrame:
    return pd.DataFrame([
        dict(model="ADM", guidance="none", w=0.0, num_images=50000, fd_evalnet=2.0, sfid=4.0, notes="paper w 1.0"),
        dict(model="BigGAN", guidance="none", num_images=50000, fd_evalnet=3.0, sfid=3.0),
        dict(guidance="cfg", w=1.0, p_uncond=0.1, num_images=50000, fd_evalnet=1.5, sfid=5.0),
        dict(guidance="cfg", w=2.0, p_uncond=0.1, num_images=50000, fd_evalnet=1.8, sfid=6.0),
    ]).assign(dataset="digits-8px", protocol="paper", source="reported", citation="Someone 2021, Table 1")


def test_rows_whose_interval_overlaps_the_best_share_rank_1():
    from pipeline.metrics.intervals import shared_ranks

    ranked = lb.rank(rows_with_intervals())
    a = ranked[ranked["protocol"] == "A"]
    # fd_evalnet of protocol A: 1.11 (cfg w=1), 1.15 (classifier), 1.22 (cfg w=2, p=0.2), then >= 2.1; half-width 0.15
    assert list(a["rank"][:4]) == [1, 1, 1, 4]
    expected = shared_ranks(a["fd_evalnet"], a["fd_evalnet_ci_low"], a["fd_evalnet_ci_high"], True)
    assert list(a["rank"]) == list(expected)
    assert (np.diff(a["rank"].to_numpy(int)) >= 0).all()  # rows in rank order
    assert a.iloc[0]["config_id"] == "c0.11.0"  # the best value first among rank 1
    # without intervals a table keeps competition ranks by value
    assert list(lb.rank(synthetic_rows()).query("protocol == 'A'")["rank"]) == list(range(1, len(a) + 1))
    md = lb.to_markdown(ranked)
    assert md.count("rank: by fd_evalnet (lower is better), 95% intervals; rows whose interval overlaps the "
                    "best's share rank 1") == 2
    assert "no intervals, equal values share a rank" in lb.to_markdown(lb.rank(synthetic_rows()))


def test_every_metric_shows_its_interval_in_every_table_format(tmp_path):
    rows = pd.concat([pd.DataFrame(rows_with_intervals()), reported_rows()], ignore_index=True)
    ranked = lb.rank(rows)
    # the intervals are columns of their own, not metrics
    assert "fd_evalnet_ci_low" not in lb.metric_columns(ranked)
    assert "fd_evalnet_ci_low" not in lb.display_columns(ranked)
    # parquet: numbers, the metric column untouched
    lb.write_parquet(ranked, tmp_path / "lb.parquet")
    back = pd.read_parquet(tmp_path / "lb.parquet")
    for metric in CI_HALF:
        low, high = back[f"{metric}_ci_low"], back[f"{metric}_ci_high"]
        assert pd.api.types.is_float_dtype(back[metric]) and pd.api.types.is_float_dtype(low)
        ours = back["source"] == "reproduced"
        assert (low[ours] < high[ours]).all() and low[~ours].isna().all()  # reported rows: none, not faked
    # Markdown: `value [low, high]`, rounded to the interval's precision
    md = lb.to_markdown(ranked)
    assert "| 1.11 [0.91, 1.21] | 3.00 [2.70, 3.30] | 0.600 [0.570, 0.630] | 0.70 [0.66, 0.74] |" in md
    assert "FD/FID intervals are bias-corrected" in md
    reported_part = md[md.index("· reported ·"):]
    assert "[" not in reported_part.split("\n", 1)[1].replace("[low, high]", "")  # no interval on a published number
    assert "the papers give no intervals" in reported_part
    # CSV: each metric followed by its interval columns
    header = lb.to_csv(ranked).splitlines()[0].split(",")
    i = header.index("fd_evalnet")
    assert header[i + 1:i + 3] == ["fd_evalnet_ci_low", "fd_evalnet_ci_high"]
    csv = pd.read_csv(io.StringIO(lb.to_csv(ranked)))
    assert csv["fd_evalnet_ci_high"].notna().sum() == len(rows_with_intervals())
    # HTML: the interval on a small second line of the cell
    page = lb.to_html(ranked)
    assert "<td>1.11<span class='ci'>[0.91, 1.21]</span></td>" in page and "td .ci{display:block" in page


def test_numbers_are_rounded_to_their_intervals_precision():
    from pipeline.leaderboard.writers import metric_text

    def text(value, low, high):
        return metric_text({"fid": value, "fid_ci_low": low, "fid_ci_high": high}, "fid")

    assert text(12.3456, 11.8, 12.9) == ("12.3", "[11.8, 12.9]")       # half-width 0.55: one digit
    assert text(0.73123, 0.7201, 0.7420) == ("0.731", "[0.720, 0.742]")  # 0.011: two digits (starts with 1)
    assert text(250.3, 240.0, 262.0) == ("250", "[240, 262]")
    assert text(1.5, 1.5, 1.5) == ("1.5", "[1.5, 1.5]")                  # no width: the value's own format
    assert text(2.0, None, 3.0) == ("2", "")                              # half an interval is none
    assert text(float("nan"), 1.0, 2.0) == ("", "")


def test_published_rows_show_their_model_and_sfid_is_lower_is_better():
    assert lb.lower_is_better("sfid") and lb.lower_is_better("fid") and not lb.lower_is_better("is")
    ranked = lb.rank(reported_rows(), metric="sfid")
    assert list(ranked["model"].fillna("")) == ["BigGAN", "ADM", "", ""]
    md = lb.to_markdown(lb.rank(reported_rows()))
    header = next(line for line in md.splitlines() if line.startswith("| rank"))
    assert header.startswith("| rank | model | guidance |") and header.endswith("| notes |")
    assert "| ADM | none | 0 |" in md and "paper w 1.0" in md
    assert "NFE/img" not in header and "sampler" not in header  # columns no published row fills


def _lines(fig):
    return {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}


def test_plots_draw_intervals_as_error_bars_and_published_rows_dashed():
    from matplotlib.container import ErrorbarContainer

    from pipeline.leaderboard.plots import frontier_figure, tradeoff_figure

    ours = lb.rank(rows_with_intervals()).query("protocol == 'A'")
    both = pd.concat([ours, reported_rows()], ignore_index=True)
    fig = tradeoff_figure(both, "fd_evalnet")
    cfg = next(ax for ax in fig.axes if ax.get_title() == "cfg")
    bars = [c for c in cfg.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2  # one per reproduced line (p_uncond 0.1, 0.2), none for the published rows
    segments = np.concatenate([b.lines[2][0].get_segments() for b in bars])
    lows = sorted(seg[0][1] for seg in segments)
    expected = ours[(ours["guidance"] != "classifier")]["fd_evalnet_ci_low"].tolist()
    assert lows == pytest.approx(sorted(expected))  # bars from each interval's low to its high
    lines = _lines(fig)
    assert lines["p_uncond=0.1, ddim 25"].get_linestyle() == "-"
    assert lines["p_uncond=0.1 (reported)"].get_linestyle() == "--"
    assert lines["ADM (reported)"].get_linestyle() == "--"  # a baseline at w = 0, labelled by its model
    biggan = lines["BigGAN (reported)"]  # no strength: a dashed level across the panel
    assert biggan.get_linestyle() == "--" and list(biggan.get_ydata()) == [3.0, 3.0]
    # the frontier: bars on both axes, published rows as crosses and never on the frontier
    fig = frontier_figure(both, "is_evalnet", "fd_evalnet")
    ax = fig.axes[0]
    assert sum(isinstance(c, ErrorbarContainer) for c in ax.containers) == 2 * ours["guidance"].nunique()
    front = _lines(fig)["frontier"]
    assert set(front.get_ydata()) <= set(ours["fd_evalnet"])
    # a metric only the published rows have gets no plot of a reproduced table
    assert "tradeoff_sfid" not in leaderboard_plots(both)


def test_cli_shows_the_intervals_the_trial_runs_logged(tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("exp", artifact_location=(tmp_path / "mlruns").as_uri())
    rows = [r for r in rows_with_intervals() if r["protocol"] == "A"][:4]
    for row in rows:
        run = client.create_run(exp, tags={"pipeline.kind": lb.TRIAL_KIND, "leaderboard.dataset": row["dataset"],
                                           "leaderboard.protocol": row["protocol"],
                                           "leaderboard.protocol_json": row["protocol_json"]})
        for k in ("guidance", "w", "s", "p_uncond", "sampler", "steps", "nfe", "num_images", "config_id"):
            client.log_param(run.info.run_id, k, row[k])
        for k in ("fd_evalnet", "fd_evalnet_ci_low", "fd_evalnet_ci_high", "images_per_s"):
            client.log_metric(run.info.run_id, k, row[k])
        client.set_terminated(run.info.run_id)
    assert lb.main(["--tracking-uri", uri, "--experiment", "exp", "--format", "csv"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(table["fd_evalnet_ci_low"]) == pytest.approx(sorted(r["fd_evalnet_ci_low"] for r in rows))
    # fd 1.11, 2.1, 2.12, 10.14 (cfg p_uncond 0.1, w = 1, 0, 2, 4), half-width 0.15: 2.1 and 2.12 overlap
    # each other, not the best: both have one row clearly better
    assert list(table["rank"]) == [1, 2, 2, 4]
    assert lb.main(["--tracking-uri", uri, "--experiment", "exp"]) == 0
    md = capsys.readouterr().out
    assert "| 1.11 [0.91, 1.21] |" in md and "rows whose interval overlaps the best's share rank 1" in md
    assert lb.main(["--tracking-uri", uri, "--experiment", "exp", "--metric", "fd_evalnet_ci_low"]) == 2


def test_every_line_of_a_panel_looks_different_and_a_baseline_is_drawn_once():
    from matplotlib.colors import to_hex

    from pipeline.leaderboard.plots import tradeoff_figure

    ours = pd.DataFrame(synthetic_rows()).query("protocol == 'A'")
    limited = ours[ours["guidance"] == "cfg"].assign(guidance_interval=[[0.2, 0.8]] * 6)  # a second variant
    models = pd.DataFrame([dict(model=f"M{i}", guidance="none", w=0.0, fd_evalnet=2 + i / 10) for i in range(12)])
    published = pd.concat([reported_rows(), models.assign(dataset="digits-8px", protocol="paper", source="reported")])
    fig = tradeoff_figure(pd.concat([ours, limited, published], ignore_index=True), "fd_evalnet")
    cfg = next(ax for ax in fig.axes if ax.get_title() == "cfg")
    drawn = [line for line in cfg.get_lines() if not line.get_label().startswith("_")]
    labels = [line.get_label() for line in drawn]
    assert len(labels) == len(set(labels))  # a baseline once, not once per guidance interval
    assert "M11 (reported)" in labels and "p_uncond=0.1, ddim 25, interval 0.2-0.8" in labels
    looks = {(to_hex(line.get_color()), line.get_marker(), line.get_linestyle()) for line in drawn
             if line.get_marker() not in (None, "None", "")}
    assert len(looks) == sum(line.get_marker() not in (None, "None", "") for line in drawn) == 18
