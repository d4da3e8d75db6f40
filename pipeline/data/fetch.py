"""Reading the encoded bytes of records, with one open file per container, not per image."""
from __future__ import annotations

from typing import Iterator

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.data.records import BadInput, ByteRange, InlineBytes, ParquetCell, Record, WholeFile


class RecordReader:
    """Reads records' bytes from one filesystem, caching the last container opened.

    Use as a context manager; records of the same tar or parquet row group in a row share
    one open file / one decoded row group.
    """

    def __init__(self, fs: pafs.FileSystem | None):
        self._fs = fs
        self._open_path: str | None = None
        self._open_file = None
        self._row_group_key: tuple[str, int] | None = None
        self._row_group_images = None

    def __enter__(self) -> "RecordReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._open_file is not None:
            self._open_file.close()
        self._open_path = self._open_file = None
        self._row_group_key = self._row_group_images = None

    def _file(self, path: str):
        if self._open_path != path:
            if self._open_file is not None:
                self._open_file.close()
            self._open_file = self._fs.open_input_file(path)
            self._open_path = path
        return self._open_file

    def read(self, record: Record) -> bytes:
        loc = record.locator
        try:
            if isinstance(loc, InlineBytes):
                return loc.data
            if isinstance(loc, WholeFile):
                with self._fs.open_input_stream(loc.path) as f:
                    return f.read()
            if isinstance(loc, ByteRange):
                f = self._file(loc.path)
                data = f.read_at(loc.length, loc.offset)
                if len(data) != loc.length:
                    raise BadInput("truncated", f"expected {loc.length} bytes at offset {loc.offset}, got {len(data)}")
                return data
            if isinstance(loc, ParquetCell):
                key = (loc.path, loc.row_group)
                if self._row_group_key != key:
                    table = pq.ParquetFile(self._file(loc.path)).read_row_group(loc.row_group, columns=["image"])
                    self._row_group_images = table.column("image").combine_chunks().field("bytes")
                    self._row_group_key = key
                value = self._row_group_images[loc.row].as_py()
                if value is None:
                    raise BadInput("empty", "image.bytes is null")
                return value
        except FileNotFoundError as exc:
            raise BadInput("missing_file", str(exc)) from None
        except OSError as exc:
            raise BadInput("unreadable", str(exc)) from None
        raise TypeError(f"unknown locator {loc!r}")

    def read_all(self, records: list[Record]) -> Iterator[tuple[Record, bytes | BadInput]]:
        for record in records:
            try:
                yield record, self.read(record)
            except BadInput as exc:
                yield record, exc
