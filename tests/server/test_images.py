import base64
import struct
import zlib
from io import BytesIO

import pytest
from PIL import Image

from edgevlm.server.images import ImageError, ImageLimits, decode_base64, is_public, load_image

LIMITS = ImageLimits()


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming width x height, with a tiny IDAT: a decompression bomb's shape."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_formats_decode_to_rgb(fmt):
    image = load_image(data_url(encode(Image.new("RGB", (40, 30), (200, 10, 10)), fmt)), LIMITS)
    assert image.mode == "RGB" and image.size == (40, 30)


def test_missing_padding_raw_base64_and_urlsafe_are_tolerated():
    data = encode(Image.new("RGB", (7, 5), "blue"), "PNG")
    text = base64.b64encode(data).decode()
    assert load_image(data_url(data).rstrip("="), LIMITS).size == (7, 5)
    assert load_image(text, LIMITS).size == (7, 5)
    assert load_image(base64.urlsafe_b64encode(data).decode().rstrip("="), LIMITS).size == (7, 5)
    assert load_image(f"data:image/png;base64,{text[:20]}\n{text[20:]}", LIMITS).size == (7, 5)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = encode(Image.new("RGB", (60, 20), "red"), "JPEG", exif=exif.tobytes())
    assert load_image(data_url(data, "image/jpeg"), LIMITS).size == (20, 60)


def test_gif_first_frame_and_transparency_on_white():
    frames = [Image.new("P", (8, 8), i) for i in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert load_image(data_url(data, "image/gif"), LIMITS).size == (8, 8)
    clear = load_image(data_url(encode(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "PNG")), LIMITS)
    assert clear.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (data_url(encode(Image.new("RGB", (64, 64), "red"), "PNG")[:60]), "truncated or corrupt"),
        (data_url(b"this is not an image at all"), "Not a supported image"),
        ("data:image/png;base64,@@@not-base64@@@", "not valid base64"),
        ("data:image/png,rawbytes", "base64-encoded"),
        ("data:image/png;base64", "no comma"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("http://example.com/cat.png", "disabled"),
        (data_url(encode(Image.new("RGB", (4, 4)), "TIFF")), "Unsupported image format"),
    ],
)
def test_bad_images_are_refused_clearly(url, message):
    with pytest.raises(ImageError, match=message) as info:
        load_image(url, LIMITS)
    assert info.value.status == 400


@pytest.mark.parametrize("side", [8000, 30000])
def test_decompression_bomb_is_refused_before_decoding(side):
    with pytest.raises(ImageError, match="megapixels"):
        load_image(data_url(png_header_only(side, side)), LIMITS)


def test_byte_limit():
    data = encode(Image.new("RGB", (64, 64), "red"), "BMP")
    with pytest.raises(ImageError, match="limit"):
        load_image(data_url(data), ImageLimits(max_bytes=1000))
    with pytest.raises(ImageError, match="limit"):
        decode_base64("A" * 5000, ImageLimits(max_bytes=1000))


def test_remote_hosts_must_be_listed_and_public():
    limits = ImageLimits(allowed_hosts=("images.example.org",))
    with pytest.raises(ImageError, match="not allowed"):
        load_image("https://evil.example.net/a.png", limits)
    for private in ("127.0.0.1", "10.1.2.3", "192.168.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", "fd00::1"):
        assert not is_public(private)
    assert is_public("8.8.8.8")
    with pytest.raises(ImageError, match="private or loopback"):
        load_image("http://localhost/a.png", ImageLimits(allowed_hosts=("localhost",)))
