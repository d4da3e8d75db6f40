"""`python -m pipeline.generation.score_files`: score samples from any codebase with the
pipeline's protocol.

    python -m pipeline.generation.score_files samples.npz \\
        --reference runs/reference_stats/<key> --evalnet runs/train_evalnet/<key>
    python -m pipeline.generation.score_files path/to/pngs --labels labels.npy --reference ... --evalnet ...

The input is an ADM-style .npz (arr_0: N x H x W x 3 uint8, optional arr_1: labels) or a folder
of images (read in sorted file order; labels, which image files do not hold, come from an
optional .npy in that order). Reference statistics are a reference_stats output; the metrics
are computed by the same code as the evaluate stage (pipeline.generation.scoring), so the
numbers and their protocol are comparable with the pipeline's own. Prints one JSON object:
{"metrics": {...}, "protocol": {...}, "notes": [...]}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from pipeline.generation.scoring import (
    load_references,
    make_extractors,
    protocol_id,
    score_batches,
)
from pipeline.metrics import batches_from_npz, batches_from_png_folder


@dataclass(frozen=True)
class FileEvalConfig:
    """The `eval` config fields scoring reads (pipeline.config.EvalConfig)."""
    extractors: tuple[str, ...] = ("evalnet",)
    inception_weights: Optional[str] = None
    require_inception: bool = False
    pr_neighbours: int = 3
    batch_size: int = 500


def batches_from_path(path: str, batch_size: int, labels: Optional[np.ndarray] = None):
    """(uint8 images, labels) batches of an ADM .npz or of an image folder."""
    if os.path.isdir(path):
        return batches_from_png_folder(path, batch_size, labels)
    if path.endswith(".npz"):
        if labels is not None:
            raise ValueError("an .npz carries its own labels (arr_1); --labels is for image folders")
        return batches_from_npz(path, batch_size)
    raise ValueError(f"{path}: expected an image folder or an ADM-style .npz")


def score_path(path: str, eval_cfg, reference: str, evalnet: Optional[str], labels: Optional[np.ndarray] = None,
               seed_range: Any = None) -> dict:
    references = load_references(reference)
    extractors, notes = make_extractors(eval_cfg, evalnet)
    missing = [e.name for e in extractors if e.name not in references]
    if missing:
        raise ValueError(f"{reference} has no reference statistics for {missing}")
    metrics, protocol = score_batches(batches_from_path(path, eval_cfg.batch_size, labels), extractors, references,
                                      eval_cfg, seed_range)
    return {"metrics": metrics, "protocol": protocol, "protocol_ids": {k: protocol_id(v) for k, v in protocol.items()},
            "notes": notes, "source": os.path.abspath(path)}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.generation.score_files",
                                     description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", help="an ADM-style .npz (arr_0 images, arr_1 labels) or a folder of images")
    parser.add_argument("--reference", required=True, help="a reference_stats output directory (or URI)")
    parser.add_argument("--evalnet", help="a train_evalnet output directory (for the evalnet extractor)")
    parser.add_argument("--extractors", default=None,
                        help="comma-separated, e.g. evalnet,inception (default: evalnet when --evalnet is given)")
    parser.add_argument("--inception-weights", default=None, help="path to clean-fid's inception-2015-12-05.pt")
    parser.add_argument("--require-inception", action="store_true", help="fail when the Inception weights are missing")
    parser.add_argument("--labels", default=None, help=".npy of int labels for an image folder, in sorted file order")
    parser.add_argument("--pr-k", type=int, default=3, help="k of improved precision/recall (default 3)")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--seed-range", default=None, help="recorded in the protocol as given, e.g. 0,0,50000")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.extractors:
        extractors = tuple(e.strip() for e in args.extractors.split(",") if e.strip())
    else:
        extractors = ("evalnet",) if args.evalnet else ("inception",)
    cfg = FileEvalConfig(extractors=extractors, inception_weights=args.inception_weights,
                         require_inception=args.require_inception, pr_neighbours=args.pr_k,
                         batch_size=args.batch_size)
    labels = np.load(args.labels, allow_pickle=False) if args.labels else None
    seed_range = [int(v) for v in args.seed_range.split(",")] if args.seed_range else None
    try:
        result = score_path(args.path, cfg, args.reference, args.evalnet, labels, seed_range)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
