"""Image inputs: data URLs, raw base64 and (opt-in) http(s) URLs decoded to RGB PIL images.

Everything here is synchronous and CPU-bound: the app calls it in a worker thread. Sizes are
checked before any pixel is decoded, so a decompression bomb costs a header read.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from io import BytesIO
from urllib.parse import urljoin, urlsplit

from PIL import Image, ImageOps

from edgevlm.server.errors import BadRequest

FORMATS: frozenset[str] = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP"})
MAX_REDIRECTS = 3


class ImageError(BadRequest):
    default_code = "invalid_image"


@dataclass(frozen=True, slots=True)
class ImageLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    allowed_hosts: tuple[str, ...] = ()
    fetch_timeout_s: float = 10.0


def describe_bytes(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def load_image(url: str, limits: ImageLimits) -> Image.Image:
    """Any accepted image reference -> an RGB image with EXIF orientation applied."""
    return decode_image(image_bytes(url, limits), limits)


def image_bytes(url: str, limits: ImageLimits) -> bytes:
    url = url.strip()
    scheme = url.split(":", 1)[0].lower() if ":" in url[:16] else ""
    if scheme == "data":
        return _data_url_bytes(url, limits)
    if scheme in ("http", "https"):
        return fetch_image(url, limits)
    if scheme:
        raise ImageError(f"Unsupported image URL scheme {scheme!r}: use a data: URL or base64")
    return decode_base64(url, limits)


def _data_url_bytes(url: str, limits: ImageLimits) -> bytes:
    header, sep, data = url.partition(",")
    if not sep:
        raise ImageError("Malformed data URL: no comma between header and data")
    if not header.lower().endswith(";base64"):
        raise ImageError("Data URLs must be base64-encoded (data:image/png;base64,...)")
    return decode_base64(data, limits)


def decode_base64(text: str, limits: ImageLimits) -> bytes:
    compact = "".join(text.split())
    if len(compact) > limits.max_bytes * 4 // 3 + 4:
        raise ImageError(f"Image is larger than the {describe_bytes(limits.max_bytes)} limit")
    compact = compact.rstrip("=")
    padded = compact + "=" * (-len(compact) % 4)
    alphabet = b"-_" if ("-" in compact or "_" in compact) else None
    try:
        return base64.b64decode(padded, altchars=alphabet, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError("Image data is not valid base64") from exc


def decode_image(data: bytes, limits: ImageLimits) -> Image.Image:
    if len(data) > limits.max_bytes:
        raise ImageError(f"Image is {describe_bytes(len(data))}, over the {describe_bytes(limits.max_bytes)} limit")
    try:
        image = Image.open(BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fires first above ~89 MP (a warning, or an error under -W error).
        raise _too_many_pixels(limits) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError("Not a supported image (JPEG, PNG, WebP, GIF or BMP)") from exc
    if image.format not in FORMATS:
        raise ImageError(f"Unsupported image format {image.format}: use JPEG, PNG, WebP, GIF or BMP")
    width, height = image.size
    if width < 1 or height < 1 or width * height > limits.max_pixels:
        raise _too_many_pixels(limits, image.size)
    return _to_rgb(image)


def _too_many_pixels(limits: ImageLimits, size: tuple[int, int] | None = None) -> ImageError:
    what = f"Image is {size[0]}x{size[1]} pixels" if size else "Image has too many pixels"
    return ImageError(f"{what}; the limit is {limits.max_pixels / 1e6:.0f} megapixels")


def _to_rgb(image: Image.Image) -> Image.Image:
    try:
        image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            canvas = Image.new("RGB", rgba.size, (255, 255, 255))
            canvas.paste(rgba, mask=rgba.getchannel("A"))
            return canvas
        return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError("Image data is truncated or corrupt") from exc


# --- remote images (off unless hosts are listed) -----------------------------------------------
def fetch_image(url: str, limits: ImageLimits) -> bytes:
    if not limits.allowed_hosts:
        raise ImageError("Image URLs are disabled on this server: send the image as a data: URL")
    for _ in range(MAX_REDIRECTS + 1):
        status, location, body = _get_once(url, limits)
        if status in (301, 302, 303, 307, 308) and location:
            url = urljoin(url, location)
            continue
        if status != 200:
            raise ImageError(f"Fetching the image failed with HTTP {status}")
        return body
    raise ImageError("Too many redirects while fetching the image")


def _get_once(url: str, limits: ImageLimits) -> tuple[int, str | None, bytes]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host not in limits.allowed_hosts:
        raise ImageError(f"Image host {host or url!r} is not allowed on this server")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = public_address(host, port)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection = _pinned_connection(parts.scheme, host, address, port, limits.fetch_timeout_s)
    try:
        connection.request("GET", path, headers={"Host": parts.netloc, "User-Agent": "edgevlm"})
        response = connection.getresponse()
        body = response.read(limits.max_bytes + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise ImageError(f"Fetching the image failed: {exc}") from exc
    finally:
        connection.close()
    if len(body) > limits.max_bytes:
        raise ImageError(f"Image is larger than the {describe_bytes(limits.max_bytes)} limit")
    return response.status, response.getheader("Location"), body


def public_address(host: str, port: int) -> str:
    """The first resolved address of host; refuses hosts that resolve to any non-public address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ImageError(f"Cannot resolve image host {host!r}") from exc
    addresses = [str(info[4][0]) for info in infos]
    if not addresses or not all(is_public(a) for a in addresses):
        raise ImageError(f"Image host {host!r} resolves to a private or loopback address")
    return addresses[0]


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _pinned_connection(scheme: str, host: str, address: str, port: int, timeout: float) -> http.client.HTTPConnection:
    """A connection to the vetted address (no second DNS lookup), TLS verified against host."""
    if scheme == "https":
        return _PinnedHTTPS(host, address, port, timeout)
    return _PinnedHTTP(host, address, port, timeout)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
