"""Decoding one encoded image into the uint8 RGB array ADM trains on.

ADM's center crop (guided_diffusion/image_datasets.py): halve with a BOX filter while the
short side is at least twice the target, BICUBIC-resize so the short side equals the
target, then crop the center. Every way an input can fail raises BadInput with a reason.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from pipeline.data.records import BadInput

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit (about 0.25 GB as RGB)


def adm_halved_size(size: tuple[int, int], resolution: int) -> tuple[int, int]:
    """The size ADM's BOX-halving loop ends at, before the BICUBIC step."""
    w, h = size
    while min(w, h) >= 2 * resolution:
        w, h = w // 2, h // 2
    return w, h


def adm_center_crop(image: Image.Image, resolution: int) -> np.ndarray:
    """ADM's center_crop_arr on an RGB image: returns a (resolution, resolution, 3) uint8 array."""
    while min(*image.size) >= 2 * resolution:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = resolution / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    array = np.asarray(image)
    top = (array.shape[0] - resolution) // 2
    left = (array.shape[1] - resolution) // 2
    return np.ascontiguousarray(array[top : top + resolution, left : left + resolution])


def _over_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to RGB: CMYK and YCbCr converted, 16-bit and 32-bit gray rescaled (not
    clipped), transparency (RGBA, LA, PA, P with a transparent index) composited over white."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        return _over_white(image)
    if mode.startswith("I;16") or mode in ("I", "F"):
        array = np.asarray(image, dtype=np.float64)
        full_scale = 65535.0 if mode.startswith("I;16") or (mode == "I" and array.max(initial=0) > 255) else 255.0
        if mode == "F" and array.max(initial=0) <= 1.0:
            full_scale = 1.0
        gray = np.clip(np.rint(array * (255.0 / full_scale)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    return image.convert("RGB")


def _halving_chain(size: tuple[int, int], resolution: int) -> list[tuple[int, int]]:
    """Every size ADM's BOX-halving loop passes through, starting with `size`."""
    chain = [size]
    while min(chain[-1]) >= 2 * resolution:
        chain.append((chain[-1][0] // 2, chain[-1][1] // 2))
    return chain


def _draft_like_adm(image: Image.Image, resolution: int) -> Image.Image:
    """Decode a JPEG scaled by 1/2^j in the DCT domain (j <= 3) and land exactly on the
    size of ADM's j-th halving (libjpeg rounds up, ADM down: at most one pixel of BOX
    resampling), so ADM's remaining halvings, BICUBIC step and crop see the same geometry."""
    chain = _halving_chain(image.size, resolution)
    if len(chain) > 1:
        image.draft(image.mode if image.mode in ("RGB", "L") else None, chain[-1])
    image.load()
    for size in reversed(chain):
        if 0 <= image.size[0] - size[0] <= 1 and 0 <= image.size[1] - size[1] <= 1:
            return image if image.size == size else image.resize(size, resample=Image.BOX)
    return image  # libjpeg did not scale as expected: ADM's loop handles whatever it got


def decode_image(data: bytes, resolution: int, *, jpeg_draft: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded bytes (any format PIL reads, whatever the file name says) -> (res, res, 3) uint8.

    jpeg_draft lets libjpeg do ADM's first halvings in the DCT domain (JPEG scaling by 1/2,
    1/4, 1/8) instead of decoding at full size and BOX-halving: about 2x faster for 256 px
    -> 64 px, not bit-exact. On the generated (deliberately noisy) 256 px JPEGs the mean
    absolute difference from exact ADM is about 2/255, p99 13-20/255, largest at sharp
    edges. The geometry (every intermediate size, the BICUBIC step, the crop) is ADM's.
    Set it False for bit-exact ADM.
    """
    if not data:
        raise BadInput("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise BadInput("bomb", f"{width}x{height} pixels exceeds the limit of {max_pixels}")
        if width < 1 or height < 1:
            raise BadInput("undecodable", f"degenerate size {width}x{height}")
        if jpeg_draft and image.format == "JPEG":
            image = _draft_like_adm(image, resolution)
        else:
            image.load()
        rgb = to_rgb(image)
    except BadInput:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadInput("bomb", str(exc)) from None
    except Image.UnidentifiedImageError as exc:
        raise BadInput("undecodable", f"not an image PIL can identify ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        reason = "truncated" if "truncated" in str(exc).lower() or isinstance(exc, EOFError) else "undecodable"
        raise BadInput(reason, f"{type(exc).__name__}: {exc}") from None
    return adm_center_crop(rgb, resolution)


def encode_png(array: np.ndarray, compress_level: int = 1) -> bytes:
    """Lossless PNG of a uint8 RGB array. Level 1 is ~3x faster than PIL's default 6 and
    only ~10-20% larger on natural images."""
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG", compress_level=compress_level)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """A shard's PNG back to a uint8 RGB array (no pickle, only PIL's PNG decoder)."""
    with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
        image.load()
        return np.asarray(image.convert("RGB"))
