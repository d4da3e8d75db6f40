"""Real encoded images, good and bad, for the data tests."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def gradient(width: int = 48, height: int = 32) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 256], -1).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def jpeg(width: int = 48, height: int = 32) -> bytes:
    return encode(Image.fromarray(gradient(width, height)), "JPEG", quality=92)


def truncated_jpeg() -> bytes:
    data = jpeg(64, 64)
    return data[: len(data) // 2]


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(gradient()).convert("CMYK"), "JPEG", quality=92)


def gray_jpeg() -> bytes:
    return encode(Image.fromarray(gradient()[..., 0], mode="L"), "JPEG", quality=92)


def png_bytes(mode_image: Image.Image) -> bytes:
    return encode(mode_image, "PNG")


def gray16_png() -> bytes:
    values = (np.linspace(0, 65535, 48 * 32).reshape(32, 48)).astype(np.uint16)
    return encode(Image.fromarray(values), "PNG")  # uint16 -> mode I;16


def palette_png_with_transparency() -> bytes:
    image = Image.fromarray(gradient()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    return encode(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    rgba = np.concatenate([gradient(), np.full((32, 48, 1), 128, np.uint8)], -1)
    return encode(Image.fromarray(rgba, mode="RGBA"), "PNG")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG header declaring a huge image (a decompression bomb), with a tiny body."""
    header = _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = _chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + header + body + _chunk(b"IEND", b"")


def random_bytes(n: int = 2048, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
