"""What people look at, in a real headless Chromium: the leaderboard page (synthetic rows, then a
real run's) and the MLflow UI's pages of a real run, served by `mlflow ui` on a loopback port."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.browser import assert_screenshot_not_blank, chromium, layout, require_chromium, wait_for_text

REPO = Path(__file__).resolve().parent.parent


def check_leaderboard_page(page: Path, shots: Path, width: int) -> dict:
    """The page at `width` px: nothing runs off its right edge (wide tables scroll in their own
    box), every image loads, trade-off figures fill the width they are given, grids are zoomed."""
    with chromium(width=width) as driver:
        driver.get(page.as_uri())
        wait_for_text(driver, "Leaderboard", timeout=60)
        found = layout(driver)
        assert_screenshot_not_blank(driver, shots / f"{page.stem}-{width}.png")
    assert found["tables"], "no table"
    assert found["scrollWidth"] <= found["clientWidth"], f"the page scrolls sideways at {width}px: {found}"
    for table in found["tables"]:
        assert table["boxClass"] == "wide" and table["boxRight"] <= found["clientWidth"] + 1, table
    images = found["images"]
    assert images and all(i["complete"] and i["naturalWidth"] > 0 for i in images), "a broken image"
    assert all(i["right"] <= found["clientWidth"] + 1 for i in images), "an image runs off the page"
    tradeoffs = [i for i in images if "tradeoff_" in i["alt"]]
    assert tradeoffs, "no trade-off plot"
    for image in tradeoffs:  # drawn at their own size, or as wide as the page allows
        assert image["width"] >= 0.9 * min(image["naturalWidth"], found["bodyWidth"]), image
    for grid in (i for i in images if i["cls"] == "grid"):
        assert grid["width"] >= 2 * grid["naturalWidth"], grid  # 8 px digits are drawn large enough to see
    return found


def test_the_leaderboard_page_reads_well_in_chromium(tmp_path):
    require_chromium()
    from pipeline import leaderboard as lb
    from pipeline.generation.grid import class_grid_png
    from pipeline.leaderboard.plots import leaderboard_plots
    from tests.test_leaderboard import reported_rows, rows_with_intervals

    # every metric with its interval (a second line in its cell), published rows beside (long legends)
    ranked = lb.rank(pd.concat([pd.DataFrame(rows_with_intervals()), reported_rows()], ignore_index=True))
    published = ranked[ranked["source"] == "reported"]
    sections = [(f"protocol {key[1]}", leaderboard_plots(pd.concat([table, published], ignore_index=True)))
                for key, table in lb.groups(ranked) if len(table) > 1 and (table["source"] == "reproduced").all()]
    grid = class_grid_png(np.full((20, 8, 8, 3), 200, np.uint8), np.arange(20) % 10)
    page = tmp_path / "leaderboard.html"
    page.write_text(lb.to_html(ranked, grids={"cfg w=1": grid}, plot_sections=sections))
    for width in (1280, 700):
        found = check_leaderboard_page(page, tmp_path, width)
    assert any(t["boxScrolls"] for t in found["tables"]), "at 700px the widest table should need its own scrollbar"


# ----------------------------------------------------------------------------------------------
# A real run: the tiny sweep graph (tests/sweep_stages) through the runner, then its pages


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """(root, printed output) of the tiny sweep graph run in a process of its own (~3 min)."""
    root = tmp_path_factory.mktemp("tiny-run")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
           "RAY_DEDUP_LOGS": "0", "TQDM_DISABLE": "1"}
    done = subprocess.run([sys.executable, "-m", "tests.sweep_stages.drive", str(root)], cwd=root, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return root, done.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_mlflow_ui(root: Path, port: int) -> subprocess.Popen:
    """`mlflow ui` as the run's end says, on a free loopback port, in a process group of its own."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers: a lighter server
    log = open(root / f"mlflow-ui-{port}.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri",
                               f"sqlite:///{root / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as reply:
                if reply.status == 200:
                    return server
        except OSError:
            if server.poll() is not None:
                break
            time.sleep(2)
    os.killpg(server.pid, signal.SIGKILL)
    raise AssertionError("mlflow ui did not start:\n" + (root / f"mlflow-ui-{port}.log").read_text()[-3000:])


@pytest.mark.slow
def test_a_real_run_reads_well_in_chromium_and_in_the_mlflow_ui(tiny_run, tmp_path):
    require_chromium()
    from mlflow.tracking import MlflowClient

    root, printed = tiny_run
    # the run's end says where the leaderboard is and how to look at the run
    page = Path(re.search(r"^leaderboard: file://(\S+)$", printed, re.M).group(1))
    assert page.name == "leaderboard.html" and page.exists()
    assert f"mlflow ui --backend-store-uri sqlite:///{root / 'mlflow.db'}" in printed
    link = re.search(r"http://127\.0\.0\.1:5000(/#/experiments/\S+/runs/(\w+)\?workflowType=machine_learning)",
                     printed)
    assert link, printed[-2000:]

    found = check_leaderboard_page(page, tmp_path, 1280)
    plots = [text for tag, text in found["headings"] if tag == "H3"]
    from tests.test_sweep import SCREEN_CONFIGS

    # the screening round's curves (a point per strength) first, then the full round's
    assert "N=12" in plots[0] and f"{SCREEN_CONFIGS} configurations" in plots[0], plots
    assert "N=24" in plots[1], plots

    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    parent = client.get_run(link.group(2))
    train = next(r for r in client.search_runs([parent.info.experiment_id])
                 if r.data.tags.get("pipeline.stage") == "train_diffusion")
    port = _free_port()
    server = _serve_mlflow_ui(root, port)
    base = f"http://127.0.0.1:{port}"
    try:
        with chromium(width=1400, height=1000) as driver:
            driver.get(base + link.group(1).split("/runs/")[0] + "/runs?workflowType=machine_learning")
            text = wait_for_text(driver, parent.info.run_name)
            assert "Token Usage" not in text and "/runs" in driver.current_url  # the runs, not the GenAI overview
            assert_screenshot_not_blank(driver, tmp_path / "mlflow-runs.png")

            driver.get(base + link.group(1))
            text = wait_for_text(driver, "stages to run")  # the description
            assert "leaderboard.best.fd_evalnet" in text  # the headline numbers
            assert_screenshot_not_blank(driver, tmp_path / "mlflow-parent.png")
            hrefs = driver.execute_script("return [...document.querySelectorAll('a')].map(a => a.href)")
            board = next(h for h in hrefs if "/artifacts/leaderboard.html?" in h)

            driver.get(board)  # the link in the description opens the page inside the MLflow UI
            text = wait_for_text(driver, "leaderboard.html")
            assert "Evaluation runs" not in text  # still the model-training view (GenAI's menu is not shown)
            from selenium.webdriver.support.ui import WebDriverWait

            frame = WebDriverWait(driver, 120).until(lambda d: d.find_elements("css selector", "iframe"))[0]
            driver.switch_to.frame(frame)
            wait_for_text(driver, "Leaderboard · guided-diffusion", timeout=120)
            driver.switch_to.default_content()
            assert_screenshot_not_blank(driver, tmp_path / "mlflow-leaderboard.png")

            driver.get(f"{base}/#/experiments/{parent.info.experiment_id}/runs/{train.info.run_id}"
                       "?workflowType=machine_learning")
            wait_for_text(driver, "digits-8px")  # the shards, as the training run's dataset input
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)  # its uvicorn worker too, whether or not it has exited
        server.wait()
