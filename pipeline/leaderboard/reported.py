"""Published results shown beside the reproduced ones: YAML files of rows, marked `reported`
and ranked only among themselves (their protocol is the paper's, not this pipeline's)."""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd
import yaml

from pipeline.diffusion.guidance import guidance_kind

REPO = Path(__file__).resolve().parents[2]


def load_reported(paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """Rows of one or several YAML files of published results, marked `reported`.

    Format of a file: {dataset, protocol, citation, rows: [{guidance, w | s, p_uncond, steps, num_images,
    fid, is, ..., citation}]} (see configs/reported/); a row's own citation wins over the file's. Each
    row gives its kind's strength by the kind's symbol (``w``, or ``s`` for classifier guidance;
    pipeline.diffusion.guidance.GUIDANCE), and gets both table columns from it.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    frames = [_reported_rows(Path(path)) for path in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _reported_rows(path: Path) -> pd.DataFrame:
    spec = yaml.safe_load(path.read_text()) or {}
    items = spec.get("rows") if isinstance(spec, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ValueError(f"{path}: expected a mapping with `rows`: a list of mappings")
    rows = []
    for item in items:
        row = dict(item)
        kind = guidance_kind(row.setdefault("guidance", "cfg"))
        stated = row.pop(kind.symbol, None)
        if stated is not None:
            row["w"], row["s"] = kind.table(stated)
        row.update(dataset=spec.get("dataset", "unknown"), protocol=spec.get("protocol", "reported"),
                   source="reported", citation=row.get("citation", spec.get("citation", "")))
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_reported(spec: Optional[str | Iterable[str]]) -> list[Path]:
    """The reported-rows files of `sweep.reported`: a path or a glob pattern (or a list of them), each
    relative to the cwd or else to the repository root, in sorted order; [] for None."""
    if not spec:
        return []
    found: list[Path] = []
    for pattern in [spec] if isinstance(spec, str) else list(spec):
        for base in (Path.cwd(), REPO):
            matches = sorted(glob.glob(str(base / pattern))) if glob.has_magic(pattern) else (
                [str(base / pattern)] if (base / pattern).exists() else [])
            if matches:
                found += [Path(m) for m in matches]
                break
        else:
            raise FileNotFoundError(f"reported results file {pattern} not found (relative to the cwd or the repository)")
    return found
