"""`leukoscope calibrate ...`: a rig's scale and blank field, measured once, kept in the config.

    leukoscope calibrate micrometer PHOTO [--spacing-um 10] [--config FILE]
    leukoscope calibrate smear PHOTO PHOTO PHOTO ... [--config FILE]
    leukoscope calibrate blank PHOTO --config FILE

`micrometer` measures pixels per micrometre from a photo of a stage micrometer (lines
`--spacing-um` apart), `smear` from the red cells of several fields of a normal smear
(median, with its spread); both print the scale, and with `--config` write it into the
config's [camera] table (`px_per_um`, `px_per_um_spread`). `blank` copies a photo of an
empty part of the slide into the state folder and names it as `blank_field`. The config
is rewritten only if it still validates, in one rename; its comments and other keys stay.
Restart the daemon (or send it SIGHUP) to use the new calibration.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

import cv2

from leukoscope.analysis.calibration import ScaleCalibration, micrometer_scale, smear_scale
from leukoscope.cli.args import add_config_argument
from leukoscope.config import config_path, load_config
from leukoscope.core.errors import LeukoscopeError
from leukoscope.core.imageio import load_image

#: Where `calibrate blank` puts the blank-field photo, under the config's state folder.
BLANK_FIELD_NAME = "blank-field.png"


def _toml_value(value: float | str) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{value:.6g}"


def set_table_keys(text: str, table: str, values: dict[str, float | str]) -> str:
    """The TOML text with `values` set in `[table]` (replaced in place, or added under its
    header; the table is appended when missing). Comments and other keys are kept."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*" + re.escape(table) + r"\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        lines += ["", f"[{table}]"]
        start = len(lines) - 1
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    for key, value in values.items():
        line = f"{key} = {_toml_value(value)}"
        pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        at = next((i for i in range(start + 1, end) if pattern.match(lines[i])), None)
        if at is None:
            lines.insert(start + 1, line)
            end += 1
        else:
            lines[at] = line
    return "\n".join(lines) + "\n"


def write_camera_keys(config: Path, values: dict[str, float | str]) -> None:
    """Set keys of the config's [camera] table; the file is replaced only if it validates."""
    new = set_table_keys(config.read_text(encoding="utf-8"), "camera", values)
    fd, tmp = tempfile.mkstemp(prefix=".calibrate-", suffix=".toml", dir=config.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        load_config(Path(tmp))  # a config that would not load is never written
        os.chmod(tmp, config.stat().st_mode & 0o777)
        os.replace(tmp, config)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _report(cal: ScaleCalibration) -> str:
    what = "lines" if cal.method == "micrometer" else "fields"
    return f"{cal.px_per_um:.4f} px/um ({cal.method}, {cal.n} {what}, spread {cal.spread:.1%})"


def _keep(cal: ScaleCalibration, config: Path | None) -> int:
    print(_report(cal))
    if config is not None:
        write_camera_keys(
            config, {"px_per_um": round(cal.px_per_um, 5), "px_per_um_spread": round(cal.spread, 4)}
        )
        print(f"written to {config} [camera]: px_per_um, px_per_um_spread")
    return 0


def cmd_micrometer(args: argparse.Namespace) -> int:
    """Scale from a stage micrometer photo."""
    return _keep(micrometer_scale(load_image(args.photo), args.spacing_um), args.config)


def cmd_smear(args: argparse.Namespace) -> int:
    """Scale from the red cells of several smear fields."""
    return _keep(smear_scale(load_image(p) for p in args.photos), args.config)


def cmd_blank(args: argparse.Namespace) -> int:
    """Keep a blank-field photo as the rig's flat-field reference."""
    rgb = load_image(args.photo)
    args.config = config_path(args.config)
    cfg = load_config(args.config)
    cfg.paths.state_dir.mkdir(parents=True, exist_ok=True)
    dest = cfg.paths.state_dir / BLANK_FIELD_NAME
    if not cv2.imwrite(str(dest), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        print(f"error: cannot write {dest}", file=sys.stderr)
        return 1
    write_camera_keys(args.config, {"blank_field": str(dest)})
    print(f"blank field {rgb.shape[1]}x{rgb.shape[0]} kept as {dest}; written to {args.config}")
    return 0


def _run(func: argparse.Namespace) -> int:
    try:
        code: int = func.calibrate(func)
    except LeukoscopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


def add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `calibrate` and its three ways."""
    p = sub.add_parser("calibrate", help="measure this rig's scale or blank field, once")
    add_config_argument(p, "the config whose [camera] table keeps the result")
    ways = p.add_subparsers(dest="way", required=True)
    cfg_help = "the config whose [camera] table keeps the result (without it: print only)"
    m = ways.add_parser("micrometer", help="scale from a stage micrometer photo")
    m.add_argument("photo", type=Path)
    m.add_argument("--spacing-um", type=float, default=10.0, help="line spacing (default 10)")
    add_config_argument(m, cfg_help)
    m.set_defaults(func=_run, calibrate=cmd_micrometer)
    s = ways.add_parser("smear", help="scale from the red cells of several normal fields")
    s.add_argument("photos", type=Path, nargs="+")
    add_config_argument(s, cfg_help)
    s.set_defaults(func=_run, calibrate=cmd_smear)
    b = ways.add_parser("blank", help="keep a photo of an empty field as the flat-field reference")
    b.add_argument("photo", type=Path)
    add_config_argument(b, "the config to write (default: as `run`)")
    b.set_defaults(func=_run, calibrate=cmd_blank)
