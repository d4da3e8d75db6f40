"""Listing image files under a directory of a pyarrow filesystem."""
from __future__ import annotations

import os
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


def outside_root(fs: pafs.FileSystem, root: str, paths) -> set[str]:
    """The `paths` under `root` whose real location, after following symlinks (of the file or of
    any folder above it), is outside `root`. Only a local filesystem has symlinks; one lstat per
    file and one realpath per folder."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return set()
    real_root = os.path.realpath(root)
    real_dirs: dict[str, str] = {}
    escaped = set()
    for path in paths:
        folder = os.path.dirname(path)
        if folder not in real_dirs:
            real_dirs[folder] = os.path.realpath(folder)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_dirs[folder], os.path.basename(path))
        if os.path.commonpath([real_root, real]) != real_root:
            escaped.add(path)
    return escaped
