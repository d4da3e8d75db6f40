"""The published rows in configs/reported/: every file loads, states its protocol, every row cites its
table, and the numbers are the shared record's (../shared/published/results.yaml, read when present)."""
import math
import os
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import leaderboard as lb
from pipeline.diffusion.guidance import GUIDANCE

REPO = Path(__file__).resolve().parent.parent
FILES = sorted((REPO / "configs" / "reported").glob("*.yaml"))


def _published() -> dict:
    """The shared record of published numbers: $PUBLISHED_RESULTS, or shared/published/results.yaml
    beside the repository or one of its parents (the lead's checkout sits next to `shared/`)."""
    candidates = [Path(os.environ["PUBLISHED_RESULTS"])] if os.environ.get("PUBLISHED_RESULTS") else []
    candidates += [parent / "shared" / "published" / "results.yaml" for parent in REPO.parents]
    for path in candidates:
        if path.is_file():
            return yaml.safe_load(path.read_text())
    pytest.skip("shared/published/results.yaml is not on this machine (set PUBLISHED_RESULTS to check against it)")


def _rows(name: str) -> pd.DataFrame:
    return lb.load_reported(REPO / "configs" / "reported" / name)


def test_there_are_reported_files_for_imagenet64():
    names = {path.name for path in FILES}
    assert {"imagenet64_cfg.yaml", "imagenet64_adm.yaml", "imagenet64_autoguidance.yaml"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_file_loads_states_its_protocol_and_every_row_cites_a_table(path):
    spec = yaml.safe_load(path.read_text())
    resolution = re.match(r"imagenet(\d+)_", path.name).group(1)
    assert spec["dataset"] == f"imagenet-{resolution}px"  # the sweep's name for the dataset
    assert spec["protocol"] and spec["citation"]
    assert spec["evaluation"]["num_images"] == 50000 and "not clean-fid" in spec["evaluation"]["fid"]
    rows = lb.load_reported(path)
    assert len(rows) == len(spec["rows"]) > 0
    assert (rows["source"] == "reported").all() and (rows["protocol"] == spec["protocol"]).all()
    for _, row in rows.iterrows():
        assert re.search(r"Table \d", row["citation"]), row["citation"]
        assert row["guidance"] in GUIDANCE
        assert row["num_images"] == 50000
        metrics = [m for m in ("fid", "is", "fd_dinov2", "sfid") if m in row and pd.notna(row[m])]
        assert metrics, f"{path.name}: a row without a number: {dict(row)}"
        if row["guidance"] == "classifier":
            assert pd.isna(row.get("w"))  # ADM's scale is s, never a w
        elif pd.notna(row.get("w")):
            assert row["s"] == pytest.approx(1 + row["w"])


def test_autoguidance_rows_use_our_w_which_is_the_papers_minus_one():
    for name in ("imagenet64_autoguidance.yaml", "imagenet512_autoguidance.yaml"):
        guided = _rows(name)
        guided = guided[guided["guidance"].isin(["cfg", "autoguidance"])]
        assert len(guided) >= 4
        for _, row in guided.iterrows():
            paper_w = float(re.search(r"paper w ([\d.]+)", row["notes"]).group(1))
            assert row["w"] + 1 == pytest.approx(paper_w)


def test_a_handful_of_cells():
    cfg = _rows("imagenet64_cfg.yaml")
    assert len(cfg[cfg["p_uncond"].notna()]) == 42
    cell = cfg[(cfg["p_uncond"] == 0.1) & (cfg["w"] == 0.3)].iloc[0]
    assert (cell["guidance"], cell["fid"], cell["is"]) == ("cfg", 3.03, 92.8)
    cell = cfg[(cfg["p_uncond"] == 0.5) & (cfg["w"] == 4.0)].iloc[0]
    assert (cell["fid"], cell["is"]) == (21.48, 225.1)
    unguided = cfg[(cfg["p_uncond"] == 0.2) & (cfg["w"] == 0.0)].iloc[0]
    assert (unguided["guidance"], unguided["fid"], unguided["is"]) == ("none", 1.8, 52.9)
    adm = _rows("imagenet64_adm.yaml").set_index("model")
    assert tuple(adm.loc["ADM (dropout)", ["fid", "sfid", "precision_inception", "recall_inception"]]) == (
        2.07, 4.29, 0.74, 0.63)
    ag = _rows("imagenet64_autoguidance.yaml")
    best = ag[(ag["guidance"] == "autoguidance") & ag["fid"].notna()].iloc[0]
    assert (best["fid"], best["w"]) == (1.01, pytest.approx(0.7))
    scale = _rows("imagenet256_adm.yaml")
    adm_g = scale[(scale["guidance"] == "classifier") & (scale["p_uncond"] == 0.0) & (scale["s"] == 1.0)].iloc[0]
    assert (adm_g["fid"], adm_g["is"]) == (4.59, 186.7)


def test_every_cell_matches_the_shared_record():
    published = _published()
    cfg = published["ho_salimans_2022_cfg"]
    for name, table, key, column in (("imagenet64_cfg.yaml", "table1_imagenet64", "p_uncond", "p_uncond"),
                                     ("imagenet128_cfg.yaml", "table2_imagenet128_and_sampling_steps", "T", "steps")):
        ours = _rows(name)
        for cell in cfg[table]["rows"]:
            match = ours[(ours[column] == cell[key]) & (ours["w"] == cell["w"])]
            assert len(match) == 1, (name, cell)
            assert (match.iloc[0]["fid"], match.iloc[0]["is"]) == (cell["fid"], cell["is"]), (name, cell)
        baselines = ours[ours["model"].notna()].set_index("model")
        for cell in cfg[table]["baselines"]:
            assert baselines.loc[cell["model"], "fid"] == cell["fid"]

    dn = published["dhariwal_nichol_2021_adm"]
    adm = _rows("imagenet64_adm.yaml").set_index("model")
    for cell in dn["main_results_imagenet64"]["rows"]:
        got = adm.loc[cell["model"], ["fid", "sfid", "precision_inception", "recall_inception"]]
        assert tuple(got) == (cell["fid"], cell["sfid"], cell["precision"], cell["recall"])
    ablation = _rows("imagenet256_adm.yaml")
    for cell in dn["classifier_scale_ablation_imagenet256"]["rows"]:
        p_uncond = 0.0 if cell["model"] == "conditional" else 1.0
        same = ablation[(ablation["p_uncond"] == p_uncond) & (ablation["fid"] == cell["fid"])]
        assert len(same) == 1, cell
        row = same.iloc[0]
        assert (row["guidance"] == "classifier") == cell["classifier_guidance"]
        assert (row["sfid"], row["is"], row["precision_inception"], row["recall_inception"]) == (
            cell["sfid"], cell["is"], cell["precision"], cell["recall"])
        if cell["classifier_guidance"]:
            assert row["s"] == cell["scale"]  # ADM's classifier scale, as published

    ag = published["karras_2024_autoguidance"]
    for resolution in (64, 512):
        ours = _rows(f"imagenet{resolution}_autoguidance.yaml")
        cells = [c for c in ag["rows"] if c["resolution"] == resolution]
        assert len(ours) == len(cells)
        for cell in cells:
            metric = "fid" if cell["metric"] == "FID" else "fd_dinov2"
            same = ours[(ours[metric] == cell["value"]) & ours["model"].str.startswith(cell["model"])]
            assert len(same) == 1, cell
            if cell["w"] is not None:
                assert same.iloc[0]["w"] + 1 == pytest.approx(cell["w"])  # Karras's w = 1 + ours
            single = cell.get("note", "").startswith("single source")
            assert ("single source" in same.iloc[0]["notes"]) == single, cell


def test_the_loader_takes_a_glob_or_a_list_and_names_what_is_missing(tmp_path):
    files = lb.resolve_reported("configs/reported/imagenet64_*.yaml")
    assert [p.name for p in files] == ["imagenet64_adm.yaml", "imagenet64_autoguidance.yaml", "imagenet64_cfg.yaml"]
    rows = lb.load_reported(files)
    assert set(rows["protocol"]) == {"dhariwal-nichol-2021", "karras-2024-autoguidance", "ho-salimans-2022"}
    assert lb.resolve_reported(["configs/reported/imagenet64_cfg.yaml", "configs/reported/imagenet64_adm.yaml"])
    assert lb.resolve_reported(None) == [] and lb.load_reported([]).empty
    with pytest.raises(FileNotFoundError, match="imagenet99"):
        lb.resolve_reported("configs/reported/imagenet99_*.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: x\nrows: {fid: 1.0}\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        lb.load_reported(bad)


def test_reported_groups_rank_apart_from_each_other():
    ranked = lb.rank(lb.load_reported(lb.resolve_reported("configs/reported/imagenet64_*.yaml")))
    tables = {key[1]: g for key, g in lb.groups(ranked)}
    assert set(tables) == {"dhariwal-nichol-2021", "karras-2024-autoguidance", "ho-salimans-2022"}
    cfg = tables["ho-salimans-2022"]
    assert cfg.iloc[0]["fid"] == min(cfg["fid"]) and cfg.iloc[0]["rank"] == 1
    assert not math.isnan(cfg["rank"].dropna().max())
