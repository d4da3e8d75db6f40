import numpy as np
import pytest
from PIL import Image

from pipeline.data.preprocess import adm_center_crop, adm_halved_size, decode_image, decode_png, encode_png, to_rgb
from pipeline.data.records import BadInput

from images import (bomb_png, cmyk_jpeg, encode, gradient, gray16_png, gray_jpeg, jpeg, palette_png_with_transparency,
                    random_bytes, rgba_png, truncated_jpeg)


def test_adm_center_crop_follows_its_definition():
    image = Image.fromarray(gradient(300, 200))
    # by hand: 300x200 -> BOX-halve to 150x100 (100 < 2*64 stops) -> BICUBIC to 96x64 -> center 64x64
    halved = image.resize((150, 100), resample=Image.BOX)
    resized = np.asarray(halved.resize((96, 64), resample=Image.BICUBIC))
    expected = resized[0:64, 16:80]
    result = adm_center_crop(image, 64)
    assert result.shape == (64, 64, 3) and result.dtype == np.uint8
    np.testing.assert_array_equal(result, expected)
    assert adm_halved_size((300, 200), 64) == (150, 100)
    assert adm_halved_size((1024, 768), 64) == (128, 96)


def test_upsampling_small_images_and_portrait_crop():
    tall = Image.fromarray(gradient(10, 30))
    out = adm_center_crop(tall, 20)
    assert out.shape == (20, 20, 3)
    expected = np.asarray(tall.resize((20, 60), resample=Image.BICUBIC))[20:40]
    np.testing.assert_array_equal(out, expected)


def test_jpeg_draft_is_close_to_exact_adm():
    data = jpeg(512, 384)
    exact = decode_image(data, 64, jpeg_draft=False)
    fast = decode_image(data, 64, jpeg_draft=True)
    reference = adm_center_crop(Image.open(__import__("io").BytesIO(data)).convert("RGB"), 64)
    np.testing.assert_array_equal(exact, reference)
    assert np.abs(exact.astype(int) - fast.astype(int)).mean() < 2.0


@pytest.mark.parametrize("make", [cmyk_jpeg, gray_jpeg, gray16_png, palette_png_with_transparency, rgba_png])
def test_modes_become_rgb(make):
    out = decode_image(make(), 16)
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8


def test_sixteen_bit_gray_is_rescaled_not_clipped():
    image = Image.open(__import__("io").BytesIO(gray16_png()))
    rgb = np.asarray(to_rgb(image))
    assert rgb[..., 0].max() == 255 and rgb[..., 0].min() == 0
    assert 100 < rgb[..., 0].mean() < 155  # a linear ramp, not saturated at 255


def test_transparent_pixels_go_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    out = np.asarray(to_rgb(Image.fromarray(rgba, mode="RGBA")))
    assert (out == 255).all()


def test_png_named_jpeg_is_decoded_by_content():
    data = encode(Image.fromarray(gradient()), "PNG")
    assert decode_image(data, 16).shape == (16, 16, 3)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty"),
        (truncated_jpeg(), "truncated"),
        (random_bytes(), "undecodable"),
        (bomb_png(), "bomb"),
        (bomb_png(10_000, 10_000), "bomb"),  # above PIL's warning limit, below its error limit
    ],
)
def test_bad_inputs_raise_bad_input_with_reason(data, reason):
    with pytest.raises(BadInput) as info:
        decode_image(data, 16)
    assert info.value.reason == reason


def test_png_round_trip_is_lossless():
    array = gradient(16, 16)
    np.testing.assert_array_equal(decode_png(encode_png(array, 1)), array)
    assert encode_png(array, 1) == encode_png(array, 1)
