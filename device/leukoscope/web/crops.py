"""White-cell crops cut from the stored photos: the sample gallery and the review export.

A cell's box comes from the database, so it is checked like the overlay's: four finite
numbers, scaled from the analysed photo's size to the stored one's if they differ, then
clipped to the photo. The crop adds a margin of `MARGIN` times the box's longer side all
round, so a reviewer sees the red cells beside the white one (they give its size).
"""

from __future__ import annotations

import functools
import io
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

#: The margin around a cell's box, as a share of its longer side.
MARGIN = 0.25
#: A crop is never wider or taller than this (pixels): a wild box is not a white cell.
MAX_CROP_SIDE = 2048

_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _decoded(path: str, mtime_ns: int, size: int) -> Image.Image:
    """The photo decoded (a gallery cuts dozens of crops from one photo in a row)."""
    del mtime_ns, size  # only part of the cache key: a replaced file is decoded again
    with Image.open(path) as im:
        return im.convert("RGB")


def _photo(path: Path) -> Image.Image | None:
    try:
        st = path.stat()
        with _lock:  # one decode at a time: photos are big and the Pi's memory is not
            return _decoded(str(path), st.st_mtime_ns, st.st_size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def crop_box(
    box: Sequence[Any], photo_size: tuple[int, int], image_size: Sequence[Any] | None = None
) -> tuple[int, int, int, int] | None:
    """The pixel rectangle (left, top, right, bottom) to cut for a cell's box, or None
    when the box is not four finite numbers or lies outside the photo."""
    if not isinstance(box, Sequence) or isinstance(box, str) or len(box) != 4:
        return None
    nums: list[float] = []
    for v in box:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        nums.append(float(v))
    width, height = photo_size
    sx = sy = 1.0
    if image_size is not None and len(image_size) == 2:
        iw, ih = image_size
        if isinstance(iw, int | float) and isinstance(ih, int | float) and iw > 0 and ih > 0:
            sx, sy = width / float(iw), height / float(ih)
    x0, x1 = sorted((nums[0] * sx, nums[2] * sx))
    y0, y1 = sorted((nums[1] * sy, nums[3] * sy))
    pad = MARGIN * max(x1 - x0, y1 - y0)
    left, top = max(0, math.floor(x0 - pad)), max(0, math.floor(y0 - pad))
    right, bottom = min(width, math.ceil(x1 + pad)), min(height, math.ceil(y1 + pad))
    if right - left < 2 or bottom - top < 2:
        return None
    if right - left > MAX_CROP_SIDE or bottom - top > MAX_CROP_SIDE:
        return None
    return left, top, right, bottom


def crop_png(
    photo: Path, box: Sequence[Any], image_size: Sequence[Any] | None = None
) -> bytes | None:
    """A cell cut from its photo with its margin, as PNG; None when the photo cannot be
    read (deleted, damaged) or the box is unusable."""
    image = _photo(photo)
    if image is None:
        return None
    rect = crop_box(box, image.size, image_size)
    if rect is None:
        return None
    buf = io.BytesIO()
    image.crop(rect).save(buf, "PNG")
    return buf.getvalue()
