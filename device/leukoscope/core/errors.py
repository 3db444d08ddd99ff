"""The exception tree: each member also inherits the matching built-in."""


class LeukoscopeError(Exception):
    """Base of every error this package raises on purpose."""


class ImageError(LeukoscopeError, ValueError):
    """An image file or array that cannot be used (unreadable, truncated, too large...)."""


class BundleError(LeukoscopeError, ValueError):
    """A model bundle that is malformed, tampered with or gives the wrong answers."""


class RuntimeMissingError(LeukoscopeError, ImportError):
    """Neither ai-edge-litert nor tflite_runtime can be imported."""


class ConfigError(LeukoscopeError, ValueError):
    """A configuration file with an unknown key or a bad value."""


class CameraError(LeukoscopeError, OSError):
    """The camera is missing, busy, or did not deliver a frame in time."""


class StoreError(LeukoscopeError, OSError):
    """The record store cannot write (disk full, read-only, corrupt)."""


class GpioError(LeukoscopeError, OSError):
    """A GPIO pin factory or pin cannot be used (no lgpio, pin busy, bad pin)."""
