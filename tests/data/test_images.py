"""ganlib.data.images: decoding failures, mode conversions, resizing, PNG round trips."""

import io
import os
import struct
import tempfile
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from ganlib.data import images
from ganlib.data.images import UnusableImage, decode_png, encode_png, load_image, to_array

BIG = 1_000_000  # a max_pixels no test image reaches


def png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no pixels: enough for Image.open's size check."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def reason(source, max_pixels: int = BIG) -> str:
    with pytest.raises(UnusableImage) as info:
        load_image(source, max_pixels=max_pixels)
    return info.value.reason


def convert(img: Image.Image, channels: int = 3, resolution: int | None = None) -> np.ndarray:
    """to_array without resampling (resolution = the image side) unless asked."""
    return to_array(img, channels=channels, resolution=resolution or img.size[0])


# -- load_image: what is unusable, and why ----------------------------------------------------


def test_loads_path_and_bytes(tmp_path):
    arr = noise(6, 6)
    path = tmp_path / "ok.png"
    path.write_bytes(png_bytes(Image.fromarray(arr)))
    for source in (path, str(path), path.read_bytes()):
        img = load_image(source, max_pixels=BIG)
        assert np.array_equal(np.asarray(img), arr)


def test_empty_file(tmp_path):
    (tmp_path / "empty.png").touch()
    assert reason(tmp_path / "empty.png") == "empty file"
    assert reason(b"") == "empty file"


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("not pixels at all")
    assert reason(tmp_path / "notes.png") == "not an image: cannot identify image file"


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt):
    buf = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buf, format=fmt)
    data = buf.getvalue()
    assert reason(data[: len(data) // 2]).startswith("truncated or corrupt image: ")


def test_directory_named_like_an_image(tmp_path):
    (tmp_path / "x.png").mkdir()
    assert reason(tmp_path / "x.png") == "is a directory"


def test_dangling_symlink(tmp_path):
    (tmp_path / "link.png").symlink_to(tmp_path / "gone.png")
    assert reason(tmp_path / "link.png") == "dangling symbolic link"


def test_fifo_is_not_read(tmp_path):
    # Opening a FIFO for reading blocks until a writer comes: it must be refused, not opened.
    os.mkfifo(tmp_path / "pipe.png")
    assert reason(tmp_path / "pipe.png") == "not a regular file"


def test_unreadable_file():
    # A world-traversable folder, so that only the file's own mode bits refuse the read.
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = os.path.join(folder, "locked.png")
        with open(path, "wb") as f:
            f.write(png_bytes(Image.new("L", (4, 4))))
        os.chmod(path, 0)
        if os.geteuid() != 0:
            assert reason(path) == "unreadable: Permission denied"
            return
        # Root reads anything: try it as user "nobody" in a forked child instead.
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the pipe, never return into pytest
            try:
                os.setuid(65534)
                load_image(path, max_pixels=BIG)
                message = "loaded"
            except UnusableImage as exc:
                message = exc.reason
            except BaseException as exc:
                message = f"child failed: {exc!r}"
            os.write(write_end, message.encode())
            os._exit(0)
        os.close(write_end)
        os.waitpid(pid, 0)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode()
        if message.startswith("child failed: PermissionError"):
            pytest.skip("cannot switch to user nobody here")
        assert message == "unreadable: Permission denied"


def test_decompression_bomb_by_our_limit():
    data = png_bytes(Image.new("L", (200, 200)))
    assert reason(data, max_pixels=10_000) == "decompression bomb: 200×200 pixels > limit 10000"
    assert load_image(data, max_pixels=40_000).size == (200, 200)


def test_decompression_bomb_by_pillow():
    # Only headers: Pillow rejects them in Image.open, before any pixel exists.
    over_twice = png_header_only(20_000, 20_000)  # > 2 * MAX_IMAGE_PIXELS: Pillow's error
    over_once = png_header_only(10_000, 10_000)  # > MAX_IMAGE_PIXELS: Pillow's warning
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    filters_before = list(warnings.filters)
    for data in (over_twice, over_once):
        assert reason(data, max_pixels=10**10).startswith("decompression bomb: ")
    assert warnings.filters == filters_before  # the warnings-as-errors filter did not leak


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high, left half red, right half blue; orientation 6 means "rotate
    # 90 degrees clockwise to display": upright it is 20 x 40 with red on top.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)
    arr[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    img = load_image(path, max_pixels=BIG)
    assert img.size == (20, 40)
    top, bottom = np.asarray(img)[5, 10], np.asarray(img)[35, 10]
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


# -- to_array: modes ---------------------------------------------------------------------------


def test_palette():
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    assert (convert(img) == (10, 200, 30)).all()


def test_palette_with_transparency_goes_over_white():
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.putpixel((0, 0), 0)
    img = load_image(png_bytes(img, transparency=0), max_pixels=BIG)  # index 0 is see-through
    assert img.mode == "P"
    out = convert(img)
    assert (out[0, 0] == 255).all()
    assert (out[3, 3] == (10, 200, 30)).all()


def test_rgba_over_white():
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[0, 0] = (0, 0, 0, 0)  # fully transparent black -> white
    arr[1, 1] = (255, 0, 0, 255)  # opaque red stays red
    arr[2, 2] = (0, 0, 0, 128)  # half transparent black -> mid gray
    out = convert(Image.fromarray(arr))
    assert (out[0, 0] == 255).all()
    assert (out[1, 1] == (255, 0, 0)).all()
    assert (abs(out[2, 2].astype(int) - 127) <= 1).all()


def test_la_over_white_stays_gray():
    img = Image.new("LA", (2, 2), (77, 255))
    img.putpixel((0, 0), (0, 0))  # fully transparent black -> white
    assert convert(img, channels=1)[:, :, 0].tolist() == [[255, 77], [77, 77]]
    assert (convert(img, channels=3)[1, 1] == 77).all()


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    for value, expected in [(65535, 255), (32768, 128), (257, 1), (0, 0)]:
        img = Image.fromarray(np.full((8, 8), value, np.uint16))
        path = tmp_path / f"g{value}.png"
        img.save(path)
        loaded = load_image(path, max_pixels=BIG)
        assert loaded.mode.startswith("I")
        assert (convert(loaded, channels=1) == expected).all(), value


def test_16_bit_big_endian_and_32_bit():
    big_endian = Image.frombytes("I;16B", (2, 2), np.full((2, 2), 65535, ">u2").tobytes())
    assert (convert(big_endian, channels=1) == 255).all()
    int32 = Image.fromarray(np.full((2, 2), 32768, np.int32))
    assert int32.mode == "I"
    assert (convert(int32, channels=1) == 128).all()


def test_float():
    unit = Image.fromarray(np.full((2, 2), 0.5, np.float32))
    assert unit.mode == "F"
    assert (convert(unit, channels=1) == 128).all()  # 0..1 floats are scaled
    wide = Image.fromarray(np.array([[3.0, 300.0], [-5.0, 100.4]], np.float32))
    assert convert(wide, channels=1)[:, :, 0].tolist() == [[3, 255], [0, 100]]


def test_bilevel():
    img = Image.new("1", (2, 2), 1)
    img.putpixel((0, 0), 0)
    assert convert(img, channels=1)[:, :, 0].tolist() == [[0, 255], [255, 255]]


def test_cmyk_file(tmp_path):
    path = tmp_path / "cmyk.tif"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(path)  # no cyan, full magenta and yellow
    img = load_image(path, max_pixels=BIG)
    assert img.mode == "CMYK"
    assert (convert(img) == (255, 0, 0)).all()


def test_ycbcr():
    img = Image.new("RGB", (4, 4), (0, 128, 255)).convert("YCbCr")
    assert (abs(convert(img).astype(int) - (0, 128, 255)) <= 2).all()


def test_gray_to_three_channels_replicates():
    out = convert(Image.new("L", (4, 4), 77), channels=3)
    assert out.shape == (4, 4, 3) and (out == 77).all()


def test_rgb_to_one_channel_is_luma():
    out = convert(Image.new("RGB", (4, 4), (255, 0, 0)), channels=1)
    assert out.shape == (4, 4, 1) and (out == 76).all()  # 0.299 * 255


# -- to_array: crop and resize -----------------------------------------------------------------


def test_centre_crop_of_a_wide_image():
    arr = np.zeros((10, 30, 3), np.uint8)
    arr[:, 10:20] = 255  # only the middle third is white
    out = convert(Image.fromarray(arr), resolution=10)
    assert out.shape == (10, 10, 3) and (out == 255).all()


@pytest.mark.parametrize(("side", "resolution"), [(3, 16), (100, 8), (64, 64)])
def test_resize_shapes(side, resolution):
    img = Image.fromarray(noise(side, side + 5))
    for channels in (1, 3):
        out = to_array(img, channels=channels, resolution=resolution)
        assert out.shape == (resolution, resolution, channels) and out.dtype == np.uint8


def test_shrinking_is_anti_aliased():
    # A one-pixel checkerboard shrunk 8x must become flat gray, not a moire of 0 and 255.
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = to_array(Image.fromarray(board), channels=1, resolution=8)
    assert abs(out.astype(int) - 128).max() <= 8


# -- PNG round trip ----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_png_round_trip_is_exact_and_deterministic(channels):
    arr = noise(5, 7, channels)
    data = encode_png(arr)
    assert data == encode_png(arr.copy())
    back = decode_png(data)
    assert back.shape == (5, 7, channels) and back.dtype == np.uint8
    assert np.array_equal(back, arr)
    back[0, 0, 0] = 1  # writable, e.g. for torch.from_numpy


@pytest.mark.parametrize("channels", [1, 3])
def test_both_png_decoders_give_the_same_pixels(channels):
    """libspng (pyspng, installed here) and Pillow, which decodes where pyspng is missing:
    the same arrays for noise and for smooth images (other PNG filters), and a refusal of
    PNGs ganlib does not write."""
    import pyspng  # a dependency on this platform: the test must not skip

    assert images.pyspng is pyspng
    smooth = np.repeat(np.arange(40, dtype=np.uint8)[None, :, None] * 6, 30, axis=0)
    for arr in (noise(31, 17, channels), np.repeat(smooth, channels, axis=2)):
        data = encode_png(arr)
        fast, slow = decode_png(data), images.decode_png_pillow(data)
        assert fast.shape == slow.shape == arr.shape and fast.dtype == slow.dtype == np.uint8
        assert np.array_equal(fast, arr) and np.array_equal(slow, arr)
    buf = io.BytesIO()
    Image.fromarray(noise(4, 4, 3)).convert("RGBA").save(buf, format="PNG")
    for decode in (decode_png, images.decode_png_pillow):
        with pytest.raises(ValueError, match="not an 8-bit L or RGB PNG"):
            decode(buf.getvalue())
    # libspng as pyspng runs it ignores CRCs: damaged bytes must still be an error
    data = bytearray(encode_png(noise(8, 8, channels)))
    data[-20] ^= 1  # inside IDAT's data: still a valid deflate stream for libspng
    with pytest.raises(ValueError, match="CRC mismatch in the b'IDAT' chunk"):
        decode_png(bytes(data))
    with pytest.raises(ValueError, match="truncated PNG"):
        decode_png(encode_png(noise(8, 8, channels))[:-5])


def test_png_has_no_metadata_chunks():
    data = encode_png(noise(4, 4))
    kinds, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        kinds.append(data[at + 4 : at + 8])
        at += 12 + length
    assert set(kinds) == {b"IHDR", b"IDAT", b"IEND"}
