"""Listing image files under a directory of a pyarrow filesystem."""
from __future__ import annotations

import posixpath

import pyarrow.fs as pafs

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


def is_image_name(name: str) -> bool:
    base = posixpath.basename(name)
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


def list_dir(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return sorted(fs.get_file_info(pafs.FileSelector(path, allow_not_found=False)), key=lambda i: i.path)


def subdirs(fs: pafs.FileSystem, path: str) -> list[str]:
    return [i.base_name for i in list_dir(fs, path) if i.type == pafs.FileType.Directory and not i.base_name.startswith(".")]


def image_files(fs: pafs.FileSystem, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=recursive))
    return sorted((i for i in infos if i.type == pafs.FileType.File and is_image_name(i.path)), key=lambda i: i.path)


def exists(fs: pafs.FileSystem, path: str, kind: pafs.FileType | None = None) -> bool:
    info = fs.get_file_info(path)
    return info.type != pafs.FileType.NotFound and (kind is None or info.type == kind)


def stem(name: str) -> str:
    base = posixpath.basename(name)
    return base.split(".", 1)[0] if not base.startswith(".") else base
