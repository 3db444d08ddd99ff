"""Is this field one already counted? The overlap of two photos of the same smear.

Moving the stage shifts the picture; it neither turns nor scales it. So two photos of
overlapping fields differ by a translation, which phase correlation finds. Its peak alone
is not proof: every photo from one camera shares the same dust and lamp pattern, and on
ALL-IDB1 unrelated fields reached peaks of 0.38. So the shift it finds is checked: the
normalised correlation of the two pictures over the area they would share is 0.55-1.0 for
the overlapping ALL-IDB1 pairs and under 0.06 for every other pair of its 72 photos. Both
run on a small grey fingerprint (long side `FINGERPRINT_SIDE` px, illumination removed)
that each field keeps, so no full photo is read again.
"""

from __future__ import annotations

import cv2
import numpy as np

#: The fingerprint's long side in pixels: a 5 MP still shrunk 10 times keeps red cells
#: (about 45 px across at full size) as 4-5 px blobs, enough to register.
FINGERPRINT_SIDE = 256
#: Illumination (vignetting, lamp) is removed by subtracting a blur this wide (px).
_FLAT_SIGMA = 3.0
#: Correlation over the shared area above which two fields are the same smear region.
MIN_CORRELATION = 0.3


def fingerprint(rgb: np.ndarray) -> np.ndarray:
    """A small uint8 grey image of the photo, its long side `FINGERPRINT_SIDE` px."""
    h, w = rgb.shape[:2]
    scale = FINGERPRINT_SIDE / max(h, w)
    size = (max(16, round(w * scale)), max(16, round(h * scale)))
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _detail(fp: np.ndarray) -> np.ndarray:
    f = fp.astype(np.float32)
    f -= cv2.GaussianBlur(f, (0, 0), _FLAT_SIGMA)
    return f - f.mean()


def _correlation(a: np.ndarray, b: np.ndarray, dx: int, dy: int) -> float:
    """Normalised correlation of a[y, x] with b[y - dy, x - dx] where both exist."""
    h, w = a.shape
    if abs(dx) > w - 16 or abs(dy) > h - 16:
        return 0.0
    pa = a[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
    pb = b[max(0, -dy) : h + min(0, -dy), max(0, -dx) : w + min(0, -dx)]
    pa = pa - pa.mean()
    pb = pb - pb.mean()
    denom = float(np.sqrt((pa * pa).sum() * (pb * pb).sum()))
    return float((pa * pb).sum()) / denom if denom > 0 else 0.0


def shared_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """The share of field `a`'s area that field `b` also shows (0 when they do not match).

    Both are fingerprints; of different sizes (another camera mode) they do not match.
    """
    if a.shape != b.shape:
        return 0.0
    da, db = _detail(a), _detail(b)
    if float(da.std()) < 0.5 or float(db.std()) < 0.5:
        return 0.0  # a blank frame matches everything and nothing: say nothing
    window = cv2.createHanningWindow((a.shape[1], a.shape[0]), cv2.CV_32F)
    (sx, sy), _peak = cv2.phaseCorrelate(da, db, window)
    dx, dy = round(sx), round(sy)
    # The sign convention of the shift is checked rather than assumed.
    best = max(_correlation(da, db, dx, dy), _correlation(da, db, -dx, -dy))
    if best < MIN_CORRELATION:
        return 0.0
    h, w = a.shape
    return ((w - abs(dx)) / w) * ((h - abs(dy)) / h)
