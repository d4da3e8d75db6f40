"""Sources, ADM preprocessing, WebDataset shard I/O and manifests (no Ray, no MLflow).

What training and evaluation use (imported lazily, so listing sources does not load torch):

    from pipeline.data import ShardedDataset, StreamSpec, make_loader, ShardIntegrityError
"""
_LAZY = {
    "ShardedDataset": "pipeline.data.loader",
    "StreamSpec": "pipeline.data.loader",
    "make_loader": "pipeline.data.loader",
    "ShardIntegrityError": "pipeline.data.loader",
    "read_shard_samples": "pipeline.data.loader",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline.data' has no attribute {name!r}")
