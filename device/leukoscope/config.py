"""The appliance's one config file: TOML, typed, validated once at start.

Unknown keys and bad values raise ConfigError naming the key path and the value.
Relative paths are taken from the current directory (for `make run` on a laptop); the
Pi's config uses absolute paths. `leukoscope check-config FILE` runs just this.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from leukoscope.analysis.quality import QualityThresholds
from leukoscope.core.errors import ConfigError
from leukoscope.core.fsutil import NotRegularFileError, read_regular_file

#: Where the daemon looks when neither --config nor $LEUKOSCOPE_CONFIG says.
DEFAULT_CONFIG_PATH = Path("/etc/leukoscope/config.toml")
CONFIG_ENV = "LEUKOSCOPE_CONFIG"
#: A config file is a few kB; anything far larger is not one.
MAX_CONFIG_BYTES = 1 << 20
CAMERA_BACKENDS = ("picamera2", "opencv", "replay")
PIN_FACTORIES = ("lgpio", "rpigpio", "native", "mock")
LOG_LEVELS = ("debug", "info", "warning", "error")
WEB_READ_ACCESS = ("open", "password")
#: A calibrated scale (pixels per micrometre) must lie in this range (as `classify --px-per-um`).
PX_PER_UM_RANGE = (0.1, 100.0)
#: [quality] limits that are not 8-bit levels or fractions.
_UNBOUNDED = ("min_focus", "min_sharpness")


@dataclass(frozen=True)
class PathsConfig:
    """Where state lives: records, images, the control socket, the model bundle."""

    state_dir: Path
    images_dir: Path
    database: Path
    bundle: Path
    control_socket: Path


@dataclass(frozen=True)
class ReplayConfig:
    """The replay camera: cycles through a folder of image files."""

    folder: Path | None = None
    exposure_ms: float = 0.0


@dataclass(frozen=True)
class OpenCVConfig:
    """A USB/UVC camera through OpenCV, by index or device path."""

    device: int | str = 0
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Picamera2Config:
    """A Raspberry Pi camera through picamera2."""

    camera_num: int = 0
    still_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class CameraConfig:
    """Which camera backend, and its settings.

    `px_per_um` is the calibrated scale of this microscope and camera: pixels per
    micrometre in the camera's full-resolution stills (measured once with a stage
    micrometer, `leukoscope calibrate`). A `cells` bundle then uses it for every photo; each
    photo's red cells are still measured, and one whose scale differs from it by more
    than `scale_tolerance` (a share) is a retake (zoom or objective changed); a field
    whose red cells cannot be measured is no longer a retake. None: measure every
    photo. Whole-field bundles ignore it. `px_per_um_spread` is the spread of the
    calibration (shown, not used); `blank_field` a photo of an empty part of the slide
    that flat-fields every photo (vignetting, lamp colour).
    """

    backend: str
    capture_timeout_s: float = 5.0
    retry_interval_s: float = 2.0
    preview_size: tuple[int, int] = (320, 240)
    px_per_um: float | None = None
    px_per_um_spread: float | None = None
    scale_tolerance: float = 0.15
    blank_field: Path | None = None
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    opencv: OpenCVConfig = field(default_factory=OpenCVConfig)
    picamera2: Picamera2Config = field(default_factory=Picamera2Config)


@dataclass(frozen=True)
class GpioConfig:
    """The pin factory and the BCM pin numbers of the button, LEDs and buzzer."""

    pin_factory: str = "lgpio"
    button: int = 17
    bounce_ms: int = 50
    led_green: int = 22
    led_amber: int = 23
    led_red: int = 24
    buzzer: int | None = 27


@dataclass(frozen=True)
class IndicatorConfig:
    """How long a result stays shown before the indicator goes back to ready."""

    result_hold_s: float = 30.0
    beep: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """The interpreter's thread count, and the model store that `leukoscope model` manages.

    `paths.bundle` should be `store_dir/active`, the link the model commands switch.
    """

    threads: int = 2
    #: Where installed versions live (default STATE_DIR/models).
    store_dir: Path | None = None
    #: How many installed versions to keep; the active, previous and newest always stay.
    keep: int = 3
    #: OpenSSH allowed-signers file; when set, installs need a signature by a key in it.
    allowed_signers: Path | None = None
    require_signature: bool = False
    #: How an install asks the daemon to load the new model: SIGHUP to the process that
    #: serves the control socket, `systemctl reload leukoscope`, or not at all.
    reload: str = "signal"
    reload_timeout_s: float = 60.0


@dataclass(frozen=True)
class RetentionConfig:
    """When images are deleted: older than max_age_days, or while free space is short."""

    max_age_days: float = 365.0
    min_free_mb: float = 500.0
    check_interval_s: float = 600.0


@dataclass(frozen=True)
class DaemonConfig:
    """Process-level settings."""

    log_level: str = "info"
    #: How long a fatal start-up fault is shown on the indicator before exiting.
    startup_fault_hold_s: float = 10.0


@dataclass(frozen=True)
class WebConfig:
    """The status page: where it listens, and whether reading it needs the password.

    Actions (capture, export, ...) always need a login; `read_access = "password"`
    protects the pages and the read API as well (`/healthz` stays open).
    """

    password_file: Path
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    read_access: str = "open"
    threads: int = 8
    session_hours: float = 12.0


@dataclass(frozen=True)
class SampleConfig:
    """Samples: one patient's smear counted across fields (see `analysis.differential`).

    The rule's numbers come from the model bundle (chosen on validation data, with the
    classifier's error rates); a value set here overrides the bundle's for this rig.
    None: the bundle's.
    """

    threshold: float | None = None
    min_cells: int | None = None
    max_cells: int | None = None
    max_fields: int | None = None
    #: A field sharing more than this share of its area with one already counted is
    #: the same field again: its cells are not counted twice.
    max_overlap: float = 0.2
    #: Holding the button this long starts a new sample instead of taking a photo.
    long_press_s: float = 2.0


@dataclass(frozen=True)
class Config:
    """The whole config, validated."""

    source: Path
    paths: PathsConfig
    camera: CameraConfig
    gpio: GpioConfig
    indicator: IndicatorConfig
    quality: QualityThresholds
    quality_enabled: bool
    model: ModelConfig
    retention: RetentionConfig
    daemon: DaemonConfig
    web: WebConfig
    sample: SampleConfig = field(default_factory=SampleConfig)


class _Reader:
    """Reads one TOML table, naming the key path in every error."""

    def __init__(self, source: str, table: Any, path: str, keys: set[str]) -> None:
        self.source = source
        self.path = path
        if not isinstance(table, dict):
            raise self.fail(path, f"must be a table, got {table!r}")
        unknown = sorted(set(table) - keys)
        if unknown:
            dotted = ", ".join(self.key(k) for k in unknown)
            raise ConfigError(
                f"{source}: unknown key(s) {dotted} (known: {', '.join(sorted(keys))})"
            )
        self.table: dict[str, Any] = table

    def key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key}: {msg}")

    def has(self, name: str) -> bool:
        return name in self.table

    def sub(self, name: str, keys: set[str]) -> _Reader:
        return _Reader(self.source, self.table.get(name, {}), self.key(name), keys)

    def num(self, name: str, default: float, lo: float, hi: float) -> float:
        v = self.table.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int | float) or not lo <= v <= hi:
            raise self.fail(self.key(name), f"must be a number in {lo}..{hi}, got {v!r}")
        return float(v)

    def int_(self, name: str, default: int, lo: int, hi: int) -> int:
        v = self.table.get(name, default)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self.fail(self.key(name), f"must be an integer in {lo}..{hi}, got {v!r}")
        return v

    def opt_int(self, name: str, lo: int, hi: int) -> int | None:
        if name not in self.table:
            return None
        return self.int_(name, 0, lo, hi)

    def bool_(self, name: str, default: bool) -> bool:
        v = self.table.get(name, default)
        if not isinstance(v, bool):
            raise self.fail(self.key(name), f"must be true or false, got {v!r}")
        return v

    def choice(self, name: str, default: str | None, options: tuple[str, ...]) -> str:
        v = self.table.get(name, default)
        if v is None:
            raise self.fail(self.key(name), f"is required (one of {', '.join(options)})")
        if v not in options:
            raise self.fail(self.key(name), f"must be one of {', '.join(options)}, got {v!r}")
        return str(v)

    def path_(self, name: str, default: Path | None) -> Path:
        v = self.table.get(name)
        if v is None:
            if default is None:
                raise self.fail(self.key(name), "is required (a path)")
            return default
        if not isinstance(v, str) or not v or "\0" in v:
            raise self.fail(self.key(name), f"must be a non-empty path string, got {v!r}")
        return Path(v).expanduser().absolute()

    def size(self, name: str, default: tuple[int, int] | None) -> tuple[int, int] | None:
        v = self.table.get(name)
        if v is None:
            return default
        ok = (
            isinstance(v, list)
            and len(v) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) and 16 <= x <= 16384 for x in v)
        )
        if not ok:
            raise self.fail(self.key(name), f"must be [width, height] in pixels, got {v!r}")
        return (int(v[0]), int(v[1]))


def _pin(r: _Reader, name: str, default: int) -> int:
    return r.int_(name, default, 0, 27)


def parse_config(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document; raise ConfigError naming the bad key."""
    sections = {
        "paths",
        "camera",
        "gpio",
        "indicator",
        "quality",
        "model",
        "retention",
        "daemon",
        "web",
        "sample",
    }
    top = _Reader(source, raw, "", sections)

    p = top.sub("paths", {"state_dir", "images_dir", "database", "bundle", "control_socket"})
    state = p.path_("state_dir", None)
    paths = PathsConfig(
        state_dir=state,
        images_dir=p.path_("images_dir", state / "images"),
        database=p.path_("database", state / "records.sqlite3"),
        bundle=p.path_("bundle", None),
        control_socket=p.path_("control_socket", state / "control.sock"),
    )
    if len(str(paths.control_socket)) > 100:
        raise p.fail("paths.control_socket", f"too long for a Unix socket: {paths.control_socket}")

    c = top.sub(
        "camera",
        {
            "backend",
            "capture_timeout_s",
            "retry_interval_s",
            "preview_size",
            "replay",
            "opencv",
            "picamera2",
            "px_per_um",
            "px_per_um_spread",
            "scale_tolerance",
            "blank_field",
        },
    )
    backend = c.choice("backend", None, CAMERA_BACKENDS)
    rr = c.sub("replay", {"folder", "exposure_ms"})
    replay = ReplayConfig(
        folder=rr.path_("folder", None) if backend == "replay" or rr.has("folder") else None,
        exposure_ms=rr.num("exposure_ms", 0.0, 0.0, 60_000.0),
    )
    oc = c.sub("opencv", {"device", "width", "height"})
    device = oc.table.get("device", 0)
    if isinstance(device, bool) or not isinstance(device, int | str) or device == "":
        raise oc.fail("camera.opencv.device", f"must be an index or a device path, got {device!r}")
    if isinstance(device, int) and not 0 <= device <= 63:
        raise oc.fail("camera.opencv.device", f"index must be in 0..63, got {device!r}")
    opencv = OpenCVConfig(device, oc.opt_int("width", 16, 16384), oc.opt_int("height", 16, 16384))
    pc = c.sub("picamera2", {"camera_num", "still_size"})
    picam = Picamera2Config(pc.int_("camera_num", 0, 0, 7), pc.size("still_size", None))
    camera = CameraConfig(
        backend=backend,
        capture_timeout_s=c.num("capture_timeout_s", 5.0, 0.1, 120.0),
        retry_interval_s=c.num("retry_interval_s", 2.0, 0.05, 3600.0),
        preview_size=c.size("preview_size", (320, 240)) or (320, 240),
        px_per_um=c.num("px_per_um", 0.0, *PX_PER_UM_RANGE) if c.has("px_per_um") else None,
        px_per_um_spread=(
            c.num("px_per_um_spread", 0.0, 0.0, 1.0) if c.has("px_per_um_spread") else None
        ),
        scale_tolerance=c.num("scale_tolerance", 0.15, 0.01, 1.0),
        blank_field=c.path_("blank_field", None) if c.has("blank_field") else None,
        replay=replay,
        opencv=opencv,
        picamera2=picam,
    )

    g = top.sub(
        "gpio",
        {"pin_factory", "button", "bounce_ms", "led_green", "led_amber", "led_red", "buzzer"},
    )
    gpio = GpioConfig(
        pin_factory=g.choice("pin_factory", None, PIN_FACTORIES),
        button=_pin(g, "button", 17),
        bounce_ms=g.int_("bounce_ms", 50, 0, 2000),
        led_green=_pin(g, "led_green", 22),
        led_amber=_pin(g, "led_amber", 23),
        led_red=_pin(g, "led_red", 24),
        buzzer=None if g.table.get("buzzer") is False else _pin(g, "buzzer", 27),
    )
    used = [gpio.button, gpio.led_green, gpio.led_amber, gpio.led_red]
    used += [gpio.buzzer] if gpio.buzzer is not None else []
    if len(set(used)) != len(used):
        raise g.fail("gpio", f"two functions share a pin: {used}")

    i = top.sub("indicator", {"result_hold_s", "beep"})
    indicator = IndicatorConfig(
        result_hold_s=i.num("result_hold_s", 30.0, 0.1, 86_400.0), beep=i.bool_("beep", True)
    )

    defaults = QualityThresholds()
    qkeys = {f.name for f in fields(QualityThresholds)}
    q = top.sub("quality", qkeys | {"enabled"})
    quality = QualityThresholds(
        **{
            name: q.num(name, getattr(defaults, name), 0.0, 1e6 if name in _UNBOUNDED else 255.0)
            for name in sorted(qkeys)
        }
    )
    for frac in ("max_clipped_high", "max_clipped_low", "min_stain", "min_content"):
        if getattr(quality, frac) > 1.0:
            raise q.fail(f"quality.{frac}", f"is a fraction in 0..1, got {getattr(quality, frac)}")
    if quality.min_mean_luma >= quality.max_mean_luma:
        raise q.fail("quality", "min_mean_luma must be below max_mean_luma")

    m = top.sub(
        "model",
        {
            "threads",
            "store_dir",
            "keep",
            "allowed_signers",
            "require_signature",
            "reload",
            "reload_timeout_s",
        },
    )
    signers = m.path_("allowed_signers", None) if m.has("allowed_signers") else None
    model = ModelConfig(
        threads=m.int_("threads", 2, 1, 16),
        store_dir=m.path_("store_dir", state / "models"),
        keep=m.int_("keep", 3, 2, 100),
        allowed_signers=signers,
        require_signature=m.bool_("require_signature", signers is not None),
        reload=m.choice("reload", "signal", ("signal", "systemctl", "none")),
        reload_timeout_s=m.num("reload_timeout_s", 60.0, 1.0, 3600.0),
    )
    if model.require_signature and signers is None:
        raise m.fail("model.require_signature", "is true but model.allowed_signers is not set")

    rt = top.sub("retention", {"max_age_days", "min_free_mb", "check_interval_s"})
    retention = RetentionConfig(
        max_age_days=rt.num("max_age_days", 365.0, 0.0, 36_500.0),
        min_free_mb=rt.num("min_free_mb", 500.0, 0.0, 10_000_000.0),
        check_interval_s=rt.num("check_interval_s", 600.0, 1.0, 86_400.0),
    )

    d = top.sub("daemon", {"log_level", "startup_fault_hold_s"})
    daemon = DaemonConfig(
        log_level=d.choice("log_level", "info", LOG_LEVELS),
        startup_fault_hold_s=d.num("startup_fault_hold_s", 10.0, 0.0, 3600.0),
    )
    w = top.sub(
        "web",
        {"enabled", "host", "port", "read_access", "password_file", "threads", "session_hours"},
    )
    host = w.table.get("host", "127.0.0.1")
    try:
        ipaddress.ip_address(host if isinstance(host, str) else "")
    except ValueError:
        raise w.fail("web.host", f"must be an IP address (e.g. 0.0.0.0), got {host!r}") from None
    web = WebConfig(
        enabled=w.bool_("enabled", True),
        host=host,
        port=w.int_("port", 8080, 0, 65535),
        read_access=w.choice("read_access", "open", WEB_READ_ACCESS),
        password_file=w.path_("password_file", state / "web-password"),
        threads=w.int_("threads", 8, 1, 64),
        session_hours=w.num("session_hours", 12.0, 0.05, 24.0 * 30),
    )
    s = top.sub(
        "sample",
        {"threshold", "min_cells", "max_cells", "max_fields", "max_overlap", "long_press_s"},
    )
    sample = SampleConfig(
        threshold=s.num("threshold", 0.05, 0.001, 0.999) if s.has("threshold") else None,
        min_cells=s.opt_int("min_cells", 1, 100_000),
        max_cells=s.opt_int("max_cells", 1, 100_000),
        max_fields=s.opt_int("max_fields", 1, 10_000),
        max_overlap=s.num("max_overlap", 0.2, 0.0, 1.0),
        long_press_s=s.num("long_press_s", 2.0, 0.5, 30.0),
    )
    if sample.min_cells and sample.max_cells and sample.min_cells > sample.max_cells:
        raise s.fail("sample.min_cells", f"exceeds sample.max_cells ({sample.max_cells})")
    return Config(
        source=Path(source),
        paths=paths,
        camera=camera,
        gpio=gpio,
        indicator=indicator,
        quality=quality,
        quality_enabled=q.bool_("enabled", True),
        model=model,
        retention=retention,
        daemon=daemon,
        web=web,
        sample=sample,
    )


def config_path(flag: Path | None) -> Path:
    """The config file to use: --config, else $LEUKOSCOPE_CONFIG, else /etc/leukoscope/."""
    if flag is not None:
        return flag
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: Path) -> Config:
    """Read and validate a TOML config file."""
    try:
        text = read_regular_file(Path(path), MAX_CONFIG_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except NotRegularFileError:
        raise ConfigError(f"{path}: not a regular file (a pipe, socket or device)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, str(path))


def bundled_config(name: str) -> Path:
    """The path of a config shipped in the package (`laptop` or `pi`)."""
    res = resources.files("leukoscope") / "configs" / f"{name}.toml"
    return Path(str(res))
