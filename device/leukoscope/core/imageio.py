"""Image loading: any JPEG, PNG, TIFF or BMP a user has becomes 8-bit RGB, or a clear error."""

from __future__ import annotations

import io
import logging
import stat
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from leukoscope.core.errors import ImageError

logger = logging.getLogger(__name__)

#: Formats we accept. MPO is what some cameras call a JPEG with a preview frame.
ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "TIFF", "BMP"})
#: Refuse files above this size before reading them.
MAX_FILE_BYTES = 200 * 1024 * 1024
#: Refuse images above this many pixels before decoding them (a decompression bomb).
#: The largest Pi camera (HQ, IMX477) takes 12.3 MP; ALL-IDB1 photos are 5 MP.
MAX_PIXELS = 64_000_000
#: The EXIF tag of the camera's orientation (1: upright).
ORIENTATION_TAG = 0x0112

Source = str | Path | bytes


def _read_bytes(source: Source) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, "<bytes>"
    path = Path(source)
    name = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except OSError as exc:
        raise ImageError(f"{name}: cannot read: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{name}: is a directory, not an image")
    if not stat.S_ISREG(st.st_mode):  # reading a pipe or /dev/zero would never end
        raise ImageError(f"{name}: not a regular file (a pipe, socket or device)")
    size = st.st_size
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: file too large ({size} bytes, limit {MAX_FILE_BYTES})")
    try:
        return path.read_bytes(), name
    except OSError as exc:
        raise ImageError(f"{name}: cannot read: {exc.strerror}") from None


#: The whole factors `load_image(reduce=...)` decodes at (a JPEG's own DCT scaling).
REDUCTIONS = (1, 2, 4, 8)
#: OpenCV's reduced-decode bits for each factor, without its colour bit (added apart).
_CV_REDUCED = {
    1: 0,
    2: cv2.IMREAD_REDUCED_COLOR_2 ^ cv2.IMREAD_COLOR,
    4: cv2.IMREAD_REDUCED_COLOR_4 ^ cv2.IMREAD_COLOR,
    8: cv2.IMREAD_REDUCED_COLOR_8 ^ cv2.IMREAD_COLOR,
}


def load_image(
    source: Source, *, min_size: tuple[int, int] | None = None, reduce: int = 1
) -> np.ndarray:
    """Decode an image file (or its bytes) into an HxWx3 uint8 RGB array.

    EXIF orientation is applied; grey, alpha (composited on white), palette and
    16-bit images become 8-bit RGB.

    Args:
        source: a path, or the file's bytes.
        min_size: (width, height) the caller will shrink to anyway. A JPEG may
            then be decoded at a reduced scale (1/2, 1/4 or 1/8) no smaller than
            this, which is several times faster for 5-megapixel stills.
        reduce: decode at 1/`reduce` of the full size in each direction (1, 2, 4 or 8;
            the sides rounded up, as libjpeg does): a JPEG through its own reduced
            decode, any other image by an area resize to the same size. For a caller
            that knows the scale it needs before decoding (a calibrated rig).

    Raises:
        ImageError: the file is missing, empty, not an image, of an unsupported
            format, truncated or corrupt, or absurdly large; the message says which.
    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, not {reduce}")
    if reduce > 1 and min_size is not None:
        raise ValueError("give min_size or reduce, not both")
    data, name = _read_bytes(source)
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check warns, then errors; ours below is stricter.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (format not recognised)") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: decompression bomb refused ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{name}: corrupt image header ({exc})") from None
    if img.format not in ACCEPTED_FORMATS:
        raise ImageError(
            f"{name}: unsupported format {img.format} (accepted: JPEG, PNG, TIFF, BMP)"
        )
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: decompression bomb refused: {width}x{height} = {width * height} pixels "
            f"(limit {MAX_PIXELS})"
        )
    if min_size is None and img.format == "JPEG":
        fast = _decode_plain_jpeg(img, data, reduce)
        if fast is not None:
            return fast
    reduced = (-(-width // reduce), -(-height // reduce))
    if reduce > 1 and img.format in {"JPEG", "MPO"}:
        min_size = reduced  # draft's 1/reduce scale: the same pixels as OpenCV's
    if min_size is not None and img.format in {"JPEG", "MPO"}:
        img.draft("RGB", min_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            upright = ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: decompression bomb refused ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"{name}: truncated or corrupt image data ({exc})") from None
    rgb = _to_rgb8(upright)
    if reduce > 1 and img.size != reduced:  # not a JPEG: the same size by area means
        if upright.size != img.size:  # rotated by its EXIF tag
            reduced = reduced[::-1]
        rgb = cv2.resize(rgb, reduced, interpolation=cv2.INTER_AREA)
    return rgb


def _decode_plain_jpeg(img: Image.Image, data: bytes, reduce: int = 1) -> np.ndarray | None:
    """A complete colour or grey JPEG with no rotation, decoded by OpenCV; else None.

    The same libjpeg-turbo decode as Pillow's (the same pixels), written straight into
    one array: Pillow's path holds the photo three or four times over on the way (its
    own 4-byte pixels, the bytes, the array), which for a 12 MP still is 150 MB and a
    third of the time. Anything else (a cut-off file, CMYK, EXIF rotation) is left to
    Pillow, which applies the rotation and names the fault. `reduce` > 1: libjpeg-turbo's
    reduced decode, the same pixels as Pillow's draft mode at that scale.
    """
    if img.mode not in {"RGB", "L"} or not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        return None
    if img.getexif().get(ORIENTATION_TAG, 1) != 1:
        return None
    # Decoded straight to RGB where OpenCV can (4.10+: libjpeg-turbo's own RGB output, the
    # same pixels as BGR then a channel swap, without that pass: 3-5 ms of a 5 MP still).
    as_rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)
    flags = (cv2.IMREAD_COLOR if as_rgb is None else as_rgb) | cv2.IMREAD_IGNORE_ORIENTATION
    out = cv2.imdecode(np.frombuffer(data, np.uint8), flags | _CV_REDUCED[reduce])
    size = (-(-img.height // reduce), -(-img.width // reduce))
    if out is None or out.shape[:2] != size:
        return None
    rgb: np.ndarray = out if as_rgb is not None else cv2.cvtColor(out, cv2.COLOR_BGR2RGB, dst=out)
    return rgb


def _to_rgb8(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in {"I;16", "I;16L", "I;16B", "I;16N", "I"}:
        arr = np.asarray(img)
        grey = (arr.astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max()) if arr.size else 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        grey = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb)


def as_rgb8(frame: np.ndarray) -> np.ndarray:
    """Check an in-memory frame (from a camera) is HxWx3 uint8 and return it contiguous."""
    if not isinstance(frame, np.ndarray):
        raise ImageError(f"frame is a {type(frame).__name__}, not a numpy array")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ImageError(f"frame must be HxWx3 uint8, got {frame.shape} {frame.dtype}")
    if frame.shape[0] * frame.shape[1] > MAX_PIXELS or frame.size == 0:
        raise ImageError(f"frame size {frame.shape[1]}x{frame.shape[0]} out of range")
    return np.ascontiguousarray(frame)


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})


def iter_image_paths(paths: list[Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths; files are kept as given."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            out.append(path)
    return out
