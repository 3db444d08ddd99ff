"""Image loading: every format and mode becomes 8-bit RGB; bad files get a clear error."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from leukoscope.core import imageio
from leukoscope.core.errors import ImageError
from leukoscope.core.imageio import as_rgb8, iter_image_paths, load_image
from leukoscope.core.synthetic import make_smear
from tests.helpers import refusal_of_a_pipe


@pytest.fixture(scope="module")
def smear() -> np.ndarray:
    return make_smear(96, 64, n_wbc=1, seed=3).image


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_lossless_formats_round_trip_exactly(smear: np.ndarray, fmt: str, tmp_path: Path) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    path.write_bytes(_save(Image.fromarray(smear), fmt))
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == smear.shape
    assert np.array_equal(out, smear)


def test_jpeg_decodes_close_to_original(smear: np.ndarray) -> None:
    out = load_image(_save(Image.fromarray(smear), "JPEG", quality=95))
    assert out.shape == smear.shape
    assert np.abs(out.astype(int) - smear).mean() < 3


@pytest.mark.parametrize("rgb_output", [True, False])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_plain_jpeg_gives_pillows_pixels_with_or_without_opencvs_rgb_output(
    smear: np.ndarray, mode: str, rgb_output: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenCV before 4.10 has no IMREAD_COLOR_RGB: the decode then swaps BGR itself.
    if not rgb_output:
        monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB", raising=False)
    data = _save(Image.fromarray(smear).convert(mode), "JPEG", quality=90)
    expected = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    got = load_image(data)
    assert got.shape == smear.shape and got.flags.c_contiguous and got.flags.writeable
    assert np.array_equal(got, expected)
    assert np.abs(got[..., 0].astype(int) - got[..., 2]).max() > 20 or mode == "L"


def test_jpeg_draft_decodes_reduced_but_not_below_min_size() -> None:
    big = make_smear(1296, 972, seed=1).image
    data = _save(Image.fromarray(big), "JPEG", quality=90)
    out = load_image(data, min_size=(256, 256))
    # 1296x972 / 2 = 648x486 >= 256, / 4 = 324x243 < 256 in height: decoded at 1/2.
    assert out.shape == (486, 648, 3)
    assert load_image(data).shape == (972, 1296, 3)


def test_exif_orientation_is_applied(smear: np.ndarray) -> None:
    img = Image.fromarray(smear)  # 96 wide, 64 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    out = load_image(_save(img, "JPEG", quality=95, exif=exif.tobytes()))
    assert out.shape == (96, 64, 3)
    rotated = np.asarray(img.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(out.astype(int) - rotated).mean() < 3


def test_grey_becomes_rgb() -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    out = load_image(_save(Image.fromarray(grey), "PNG"))
    assert out.shape == (6, 8, 3)
    assert np.array_equal(out[:, :, 0], grey) and np.array_equal(out[:, :, 2], grey)


def test_alpha_is_composited_on_white() -> None:
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red
    rgba[:2, :, 3] = 255  # top half opaque, bottom half transparent
    out = load_image(_save(Image.fromarray(rgba), "PNG"))
    assert out[0, 0].tolist() == [200, 0, 0]
    assert out[3, 0].tolist() == [255, 255, 255]


def test_palette_image_becomes_rgb(smear: np.ndarray) -> None:
    pal = Image.fromarray(smear).quantize(16)
    assert pal.mode == "P"
    out = load_image(_save(pal, "PNG"))
    assert out.shape == smear.shape
    assert np.abs(out.astype(int) - smear).mean() < 12


def test_16bit_grey_is_scaled_not_clipped(tmp_path: Path) -> None:
    grey16 = np.array([[0, 256, 32768, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    cv2.imwrite(str(path), grey16)
    out = load_image(path)
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_colour_becomes_8bit(tmp_path: Path, suffix: str) -> None:
    rgb16 = np.zeros((2, 3, 3), np.uint16)
    rgb16[..., 0] = 65535  # red channel full
    rgb16[..., 2] = 32768  # blue half
    path = tmp_path / f"c16{suffix}"
    cv2.imwrite(str(path), rgb16[..., ::-1])  # OpenCV writes BGR
    out = load_image(path)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [255, 0, 128]


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        load_image(path)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_pipe_is_refused_not_read_forever(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.png"
    errors = refusal_of_a_pipe(load_image, fifo)
    assert errors == [f"{fifo}: not a regular file (a pipe, socket or device)"]


def test_non_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n")
    with pytest.raises(ImageError, match="not an image"):
        load_image(path)


def test_unsupported_format_is_refused() -> None:
    data = _save(Image.new("RGB", (4, 4)), "GIF")
    with pytest.raises(ImageError, match="unsupported format GIF"):
        load_image(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_refused(smear: np.ndarray, fmt: str) -> None:
    data = _save(Image.fromarray(smear), fmt)
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real bomb: a small PNG that claims 20000x20000 pixels.
    bomb = _save(Image.new("L", (20000, 20000)), "PNG", optimize=True)
    assert len(bomb) < 2_000_000
    monkeypatch.setattr(imageio, "MAX_PIXELS", 100_000_000)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(bomb)


def test_oversized_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"\0" * 2048)
    monkeypatch.setattr(imageio, "MAX_FILE_BYTES", 1024)
    with pytest.raises(ImageError, match="file too large"):
        load_image(path)


def test_as_rgb8_checks_frames() -> None:
    ok = np.zeros((4, 4, 3), np.uint8)
    assert as_rgb8(ok) is not None
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        as_rgb8(np.zeros((4, 4), np.uint8))
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        as_rgb8(np.zeros((4, 4, 3), np.float32))


def test_iter_image_paths_expands_folders_sorted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    for name in ["b.PNG", "a.jpg", "sub/c.tiff", "notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    extra = tmp_path / "given.txt"
    got = iter_image_paths([tmp_path, extra])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == [
        "a.jpg",
        "b.PNG",
        "sub/c.tiff",
        "given.txt",
    ]
