"""Listing tar archives without extracting them: member names stay strings, never paths.

Each member is reported as (name, absolute data offset, size), so its bytes can later be
read as a byte range. Truncation and corruption are detected explicitly, because the
standard library's tarfile stops silently at a truncated or corrupt header.
"""
from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from typing import BinaryIO, Iterator

BLOCK = tarfile.BLOCKSIZE


class BoundedView(io.RawIOBase):
    """A read-only, seekable window [start, start+length) of a seekable file.

    Reads past the window's end return short, which tarfile treats as end of archive; the
    caller checks for that with `ended_cleanly`.
    """

    def __init__(self, f: BinaryIO, start: int, length: int):
        self._f, self._start, self._length, self._pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._length if n is None or n < 0 else min(self._length, self._pos + n)
        if end <= self._pos:
            return b""
        self._f.seek(self._start + self._pos)
        data = self._f.read(end - self._pos)
        self._pos += len(data)
        return bytes(data)

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


@dataclass(frozen=True)
class TarMember:
    name: str
    offset: int  # absolute offset of the member's data in the underlying file
    size: int
    complete: bool  # False when the archive ends inside this member's data


@dataclass(frozen=True)
class TarProblem:
    reason: str  # "truncated" or "undecodable"
    detail: str


def scan_tar(f: BinaryIO, start: int, length: int, declared_length: int | None = None) -> Iterator[TarMember | TarProblem]:
    """Yield the regular-file members of the tar occupying [start, start+length) of f.

    declared_length is how long the archive should be (a nested tar's size in its parent);
    when `length` is shorter, the archive was cut. Ends with a TarProblem if the archive
    is truncated (at a member boundary or inside a member) or has a corrupt header.
    """
    declared = length if declared_length is None else declared_length
    view = BoundedView(f, start, length)
    try:
        tar = tarfile.open(fileobj=view, mode="r:")
    except tarfile.ReadError as exc:
        yield TarProblem("undecodable", f"not a readable tar archive ({exc})")
        return
    count = 0
    last_name = None
    while True:
        try:
            info = tar.next()
        except tarfile.ReadError as exc:
            after = f"after member {last_name!r}" if last_name else "before any member"
            if tar.offset > length or length < declared:  # tarfile noticed the data ends early
                where = f"cut at byte {length} of {declared}" if length < declared else f"ends at byte {length} inside a member"
                yield TarProblem("truncated", f"archive {where} {after}: later members are lost")
            else:
                yield TarProblem("undecodable", f"corrupt tar header {after} ({exc}): the rest of the archive is unreadable")
            return
        if info is None:
            break
        tar.members = []  # keep memory flat on archives with a million members
        if not info.isreg():
            continue
        count += 1
        last_name = info.name
        complete = info.offset_data + info.size <= length
        yield TarMember(info.name, start + info.offset_data, info.size, complete)
    end = tar.offset
    view.seek(end)
    block = view.read(BLOCK)
    if len(block) == BLOCK and block == bytes(BLOCK) and length >= declared:
        return
    after = f"after member {last_name!r}" if last_name else "before any member"
    if len(block) == BLOCK and block != bytes(BLOCK):
        yield TarProblem("undecodable", f"corrupt tar header at byte {end} {after}: the rest of the archive is unreadable")
    elif length < declared:
        yield TarProblem("truncated", f"archive cut at byte {length} of {declared} {after}: later members are lost")
    else:
        yield TarProblem("truncated", f"no end-of-archive marker at byte {end} {after}: truncated at a member boundary, later members may be lost")
