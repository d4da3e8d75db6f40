"""Writing one shard: read its records, preprocess, encode, tar; or keep it if a previous
run already finished it (verified against its sidecar). Pure library code: a Ray task
or a plain loop can call it."""
from __future__ import annotations

import json
import posixpath
from dataclasses import asdict, dataclass, field

import pyarrow.fs as pafs

from pipeline.data.fetch import RecordReader
from pipeline.data.plan import ShardPlan
from pipeline.data.preprocess import DEFAULT_MAX_PIXELS, decode_image, encode_png
from pipeline.data.records import BadInput, InputError
from pipeline.data.tarwrite import sha256_of, write_atomically, write_tar

PARTS_DIR = ".parts"  # per-shard results, so a resumed run can keep finished shards


@dataclass(frozen=True)
class EncodeOptions:
    resolution: int
    num_classes: int
    png_compress_level: int = 1
    jpeg_draft: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    write_json: bool = True  # <key>.json with the class id and origin beside each image


@dataclass
class ShardResult:
    split: str
    index: int
    name: str
    num_samples: int
    class_counts: list[int]
    size_bytes: int
    sha256: str
    errors: list[InputError] = field(default_factory=list)
    reused: bool = False

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("reused")
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ShardResult":
        d = json.loads(text)
        d["errors"] = [InputError(**e) for e in d["errors"]]
        return cls(**d)


def sidecar_path(out_dir: str, name: str) -> str:
    return posixpath.join(out_dir, PARTS_DIR, name + ".json")


def finished_result(fs: pafs.FileSystem, out_dir: str, plan: ShardPlan) -> ShardResult | None:
    """The result of a shard a previous run finished, if its file is whole and matches."""
    tar_path = posixpath.join(out_dir, plan.name)
    side = sidecar_path(out_dir, plan.name)
    infos = fs.get_file_info([tar_path, side])
    if any(i.type != pafs.FileType.File for i in infos):
        return None
    with fs.open_input_stream(side) as f:
        try:
            result = ShardResult.from_json(f.read().decode())
        except (ValueError, TypeError, KeyError):
            return None
    if infos[0].size != result.size_bytes or sha256_of(fs, tar_path) != (result.size_bytes, result.sha256):
        return None
    result.reused = True
    return result


def write_shard(
    out_fs: pafs.FileSystem,
    out_dir: str,
    plan: ShardPlan,
    source_fs: pafs.FileSystem | None,
    options: EncodeOptions,
    *,
    resume: bool = True,
) -> ShardResult:
    if resume:
        kept = finished_result(out_fs, out_dir, plan)
        if kept is not None:
            return kept
    counts = [0] * options.num_classes
    errors: list[InputError] = []

    def members():
        with RecordReader(source_fs) as reader:
            for record, data in reader.read_all(list(plan.records)):
                try:
                    if isinstance(data, BadInput):
                        raise data
                    array = decode_image(data, options.resolution, jpeg_draft=options.jpeg_draft, max_pixels=options.max_pixels)
                except BadInput as exc:
                    errors.append(InputError(record.split, record.origin, exc.reason, exc.detail, record.key))
                    continue
                counts[record.label] += 1
                yield f"{record.key}.cls", str(record.label).encode()
                if options.write_json:
                    meta = {"wnid": record.wnid, "label": record.label, "origin": record.origin}
                    yield f"{record.key}.json", json.dumps(meta, sort_keys=True).encode()
                yield f"{record.key}.png", encode_png(array, options.png_compress_level)

    result_holder: dict[str, ShardResult] = {}

    def record_sidecar(written) -> None:
        result = ShardResult(plan.split, plan.index, plan.name, sum(counts), counts, written.size, written.sha256, errors)
        out_fs.create_dir(posixpath.join(out_dir, PARTS_DIR), recursive=True)
        write_atomically(out_fs, sidecar_path(out_dir, plan.name), result.to_json().encode())
        result_holder["result"] = result

    write_tar(out_fs, posixpath.join(out_dir, plan.name), members(), before_publish=record_sidecar)
    return result_holder["result"]
