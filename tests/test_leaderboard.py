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
