"""Published results shown beside the reproduced ones: a YAML file of rows, marked `reported`
and ranked only among themselves (their protocol is the paper's, not this pipeline's)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import yaml

from pipeline.diffusion.guidance import guidance_kind

REPO = Path(__file__).resolve().parents[2]


def load_reported(path: str | Path) -> pd.DataFrame:
    """Rows of a YAML file of published results, marked `reported`.

    Format: {dataset, protocol, citation, rows: [{guidance, w | s, p_uncond, steps, num_images, fid, is, ...}]}:
    each row gives its kind's strength by the kind's symbol (``w``, or ``s`` for classifier
    guidance; pipeline.diffusion.guidance.GUIDANCE), and gets both table columns from it.
    """
    spec = yaml.safe_load(Path(path).read_text()) or {}
    rows = []
    for item in spec.get("rows") or []:
        row = dict(item)
        kind = guidance_kind(row.setdefault("guidance", "cfg"))
        stated = row.pop(kind.symbol, None)
        if stated is not None:
            row["w"], row["s"] = kind.table(stated)
        row.update(dataset=spec.get("dataset", "unknown"), protocol=spec.get("protocol", "reported"),
                   source="reported", citation=row.get("citation", spec.get("citation", "")))
        rows.append(row)
    return pd.DataFrame(rows)


def resolve_reported(path: Optional[str]) -> Optional[Path]:
    """The reported-rows file: as given, or relative to the repository root."""
    if not path:
        return None
    for candidate in (Path(path), REPO / path):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"reported results file {path} not found (relative to the cwd or the repository)")
