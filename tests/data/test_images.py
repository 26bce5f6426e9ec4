import numpy as np
import pytest
from PIL import Image

from lightning_clip.data.images import load_rgb

WIDTH, HEIGHT = 5, 3
EXIF_ORIENTATION = 0x0112


def save_and_load(image: Image.Image, path):
    image.save(path)
    assert Image.open(path).mode == image.mode  # the file really stores this mode
    loaded = load_rgb(path)
    assert loaded.mode == "RGB"
    assert loaded.size == (WIDTH, HEIGHT)
    return loaded


def make_image(mode: str, fill, second) -> Image.Image:
    """An image filled with `fill` whose pixel (1, 0) holds `second`."""
    image = Image.new(mode, (WIDTH, HEIGHT), fill)
    if mode == "P":
        image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), second)
    return image


# (mode, fill, second pixel, file type, expected RGB of the fill, expected RGB of the second)
EIGHT_BIT_CASES = [
    ("1", 0, 1, "png", (0, 0, 0), (255, 255, 255)),
    ("L", 100, 7, "png", (100, 100, 100), (7, 7, 7)),
    ("LA", (100, 0), (7, 255), "png", (255, 255, 255), (7, 7, 7)),
    ("P", 0, 1, "png", (10, 20, 30), (200, 100, 50)),
    ("RGB", (10, 20, 30), (7, 8, 9), "png", (10, 20, 30), (7, 8, 9)),
    ("RGBA", (10, 20, 30, 0), (7, 8, 9, 255), "png", (255, 255, 255), (7, 8, 9)),
    ("CMYK", (0, 0, 0, 0), (0, 0, 0, 255), "tif", (255, 255, 255), (0, 0, 0)),
]


@pytest.mark.parametrize(
    ("mode", "fill", "second", "suffix", "expected_fill", "expected_second"),
    EIGHT_BIT_CASES,
    ids=[case[0] for case in EIGHT_BIT_CASES],
)
def test_eight_bit_modes_load_as_rgb_with_exact_pixels(
    mode, fill, second, suffix, expected_fill, expected_second, tmp_path
):
    image = make_image(mode, fill, second)
    loaded = save_and_load(image, tmp_path / f"image.{suffix}")

    # transparent pixels turn white, opaque ones keep their colour
    assert loaded.getpixel((0, 0)) == expected_fill
    assert loaded.getpixel((1, 0)) == expected_second
    assert loaded.getpixel((WIDTH - 1, HEIGHT - 1)) == expected_fill


def test_palette_transparency_turns_that_index_white(tmp_path):
    image = make_image("P", 0, 1)
    image.info["transparency"] = 0
    loaded = save_and_load(image, tmp_path / "transparent.png")

    assert Image.open(tmp_path / "transparent.png").info["transparency"] == 0
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == (200, 100, 50)


def test_half_transparent_rgba_is_blended_over_white(tmp_path):
    image = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 255, 128))
    red, green, blue = save_and_load(image, tmp_path / "half.png").getpixel((0, 0))
    # 128/255 of the colour plus 127/255 of white
    assert abs(red - 127) <= 1 and abs(green - 127) <= 1 and blue == 255


def test_cmyk_jpeg_loads_as_rgb(tmp_path):
    image = Image.new("CMYK", (WIDTH, HEIGHT), (255, 0, 0, 0))  # pure cyan
    loaded = save_and_load(image, tmp_path / "cyan.jpg")
    red, green, blue = loaded.getpixel((2, 1))
    assert red < 20 and green > 235 and blue > 235


@pytest.mark.parametrize(
    ("values", "suffix", "expected"),
    [
        (np.array([0, 65535, 32768], dtype=np.uint16), "png", (0, 255, 128)),
        (np.array([0, 65535, 32768], dtype=np.int32), "tif", (0, 255, 128)),
        (np.array([0, 200, 100], dtype=np.int32), "tif", (0, 200, 100)),
        (np.array([0.0, 1.0, 0.25], dtype=np.float32), "tif", (0, 255, 64)),
    ],
    ids=["I;16", "I-16-bit", "I-8-bit", "F"],
)
def test_high_bit_depth_greyscale_keeps_its_brightness_in_eight_bits(
    values, suffix, expected, tmp_path
):
    array = np.zeros((HEIGHT, WIDTH), dtype=values.dtype)
    array[0, :3] = values
    image = Image.fromarray(array)

    loaded = save_and_load(image, tmp_path / f"deep.{suffix}")

    assert [loaded.getpixel((x, 0)) for x in range(3)] == [(v, v, v) for v in expected]
    assert loaded.getpixel((0, HEIGHT - 1)) == (0, 0, 0)


def test_greyscale_without_a_known_range_is_stretched(tmp_path):
    array = np.zeros((HEIGHT, WIDTH), dtype=np.int32)
    array[0, :3] = [-1000, 1000, 0]
    loaded = save_and_load(Image.fromarray(array), tmp_path / "signed.tif")
    assert [loaded.getpixel((x, 0))[0] for x in range(3)] == [0, 255, 128]


def test_uniform_white_sixteen_bit_image_stays_white(tmp_path):
    image = Image.fromarray(np.full((HEIGHT, WIDTH), 65535, dtype=np.uint16))
    loaded = save_and_load(image, tmp_path / "white16.png")
    assert loaded.getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied(tmp_path):
    # left half red, right half blue; orientation 6 means "rotate 90 degrees clockwise"
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    loaded = load_rgb(tmp_path / "rotated.jpg")

    assert loaded.mode == "RGB"
    assert loaded.size == (20, 40)
    top, bottom = loaded.getpixel((10, 5)), loaded.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left edge is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_without_exif_orientation_size_is_unchanged(tmp_path):
    Image.new("RGB", (40, 20), (0, 128, 0)).save(tmp_path / "plain.jpg")
    assert load_rgb(tmp_path / "plain.jpg").size == (40, 20)


def test_garbage_file_raises(tmp_path):
    path = tmp_path / "garbage.png"
    path.write_bytes(b"this is not an image at all" * 10)
    with pytest.raises(OSError):
        load_rgb(path)


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(OSError):
        load_rgb(path)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
def test_truncated_file_raises(suffix, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / f"noise.{suffix}"
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(OSError):
        load_rgb(path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_rgb(tmp_path / "nowhere.png")


@pytest.mark.parametrize("side", [12, 20])  # PIL warns at 1x its limit and errors at 2x
def test_decompression_bomb_sized_images_are_refused(side, tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # stands in for 89 million pixels
    with pytest.raises((Image.DecompressionBombError, Image.DecompressionBombWarning)):
        load_rgb(path)


def test_first_frame_of_an_animation_is_read_and_the_file_released(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (6, 4), colour) for colour in ((250, 0, 0), (0, 0, 250))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    image = load_rgb(path)
    assert image.mode == "RGB" and image.getpixel((0, 0))[0] > 200
    path.unlink()  # nothing holds the file any more
    assert image.size == (6, 4)
