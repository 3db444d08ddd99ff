"""Who may act: one salted password hash, login sessions, CSRF tokens and a login rate limit.

The hash file holds one line, `scrypt$<n>$<r>$<p>$<salt>$<hash>` (base64), written by
`leukoscope set-password` with mode 0600. It is read again when it changes, so a new
password works (and old sessions end) without restarting the daemon.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from leukoscope.core.errors import LeukoscopeError
from leukoscope.core.fsutil import fsync_dir

logger = logging.getLogger(__name__)

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


class PasswordFileError(LeukoscopeError, ValueError):
    """The password hash file is unreadable or not in the expected format."""


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """The salted scrypt hash of a password, as one line for the hash file."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=HASH_BYTES
    )
    b64 = base64.b64encode
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """True if `password` matches a line made by `hash_password` (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.strip().split("$")
        if scheme != "scrypt":
            raise ValueError(scheme)
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        raise PasswordFileError("the password hash file is not in the expected format") from None
    return hmac.compare_digest(got, want)


def check_new_password(password: str) -> None:
    """Refuse passwords that are too short or too long (ValueError)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"the password needs at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        raise ValueError(f"the password may have at most {MAX_PASSWORD_CHARS} characters")
    try:
        password.encode()
    except UnicodeEncodeError:  # stdin bytes that are not UTF-8 arrive as surrogates
        raise ValueError("the password is not valid UTF-8 text") from None


def write_password_file(path: Path, password: str) -> None:
    """Hash `password` and write it to `path` atomically with mode 0600.

    Run as root (`sudo leukoscope set-password`), the file is given to the owner of its
    folder, the appliance's state folder, so the daemon's own user can read it.
    """
    check_new_password(password)
    line = hash_password(password) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        if os.geteuid() == 0:
            folder = path.parent.stat()
            os.fchown(fd, folder.st_uid, folder.st_gid)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class PasswordFile:
    """The configured hash file, re-read when its size or mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._line: str | None = None

    def current(self) -> str | None:
        """The stored hash line, or None when no password has been set."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PasswordFileError(f"cannot read {self.path}: {exc}") from None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._line = self.path.read_text(encoding="ascii").strip() or None
                except (OSError, UnicodeDecodeError) as exc:
                    raise PasswordFileError(f"cannot read {self.path}: {exc}") from None
                self._stamp = stamp
            return self._line

    def is_set(self) -> bool:
        """True once `leukoscope set-password` has written a hash."""
        return self.current() is not None

    def check(self, password: str) -> bool:
        """True if `password` is the current one (False when none is set)."""
        line = self.current()
        return line is not None and verify_password(password, line)

    def fingerprint(self) -> str | None:
        """A short tag of the current hash: sessions made under another one are void."""
        line = self.current()
        return None if line is None else hashlib.sha256(line.encode()).hexdigest()[:16]


class LoginLimiter:
    """Failed logins per client address, with an exponential wait and no shared limit.

    The first `free` failures of an address cost nothing; each one after makes it wait
    `base_s`, then twice that, and so on up to `max_s`. A quiet `forget_s` since its last
    failure forgets the address. Nothing is counted across addresses, so guesses from
    one machine on the clinic LAN never lock the right password out from another.
    Holding the capture button (`clear`) forgets every address.

    A library (Flask-Limiter) counts requests in fixed windows; this is a per-address
    backoff with a physical override, thirty lines, so it stays ours (see the README).
    """

    def __init__(
        self,
        free: int = 5,
        base_s: float = 15.0,
        max_s: float = 900.0,
        forget_s: float = 3600.0,
        max_clients: int = 4096,
    ) -> None:
        self.free = free
        self.base_s = base_s
        self.max_s = max_s
        self.forget_s = forget_s
        self.max_clients = max_clients
        self._lock = threading.Lock()
        #: address -> (failures, time of the last one, locked until)
        self._clients: dict[str, tuple[int, float, float]] = {}
        #: address -> the lockout whose refused attempts are already in the log
        self._noted: dict[str, float] = {}

    def _entry(self, client: str, now: float) -> tuple[int, float, float] | None:
        entry = self._clients.get(client)
        if entry is not None and now - entry[1] > self.forget_s and now >= entry[2]:
            del self._clients[client]
            self._noted.pop(client, None)
            return None
        return entry

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until `client` may try again; 0 if it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entry(client, now)
            if entry is None or entry[2] <= now:
                return 0
            wait = max(1, math.ceil(entry[2] - now))
            first = self._noted.get(client) != entry[2]
            if first:  # once per lockout: an attacker must not fill the log
                self._noted[client] = entry[2]
        if first:
            logger.warning(
                "login from %s refused unchecked: locked out until %s (%d s more)",
                client,
                _wall_clock(wait),
                wait,
            )
        return wait

    def failed(self, client: str, now: float | None = None) -> None:
        """Count one failed attempt by `client`."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._entry(client, now)
            if entry is None and len(self._clients) >= self.max_clients:
                # Forget the least recently failing address rather than grow without bound.
                oldest = min(self._clients, key=lambda k: self._clients[k][1])
                del self._clients[oldest]
                self._noted.pop(oldest, None)
            failures = (entry[0] if entry else 0) + 1
            wait = 0.0
            if failures >= self.free:
                wait = min(self.max_s, self.base_s * 2.0 ** min(failures - self.free, 30))
            self._clients[client] = (failures, now, now + wait)
        # The address and the count, never what was typed.
        if wait:
            logger.warning(
                "failed login from %s (%d in a row): locked out for %d s, until %s",
                client,
                failures,
                math.ceil(wait),
                _wall_clock(wait),
            )
        else:
            logger.warning("failed login from %s (%d in a row)", client, failures)

    def succeeded(self, client: str) -> None:
        """Forget a client's failures after it logged in."""
        with self._lock:
            entry = self._clients.pop(client, None)
            self._noted.pop(client, None)
        if entry is not None:
            logger.info("login from %s after %d failed attempt(s)", client, entry[0])

    def clear(self) -> int:
        """Forget every address's failures (the physical override); how many were locked."""
        with self._lock:
            now = time.monotonic()
            locked = sum(1 for _n, _t, until in self._clients.values() if until > now)
            self._clients.clear()
            self._noted.clear()
        return locked


def _wall_clock(seconds_from_now: float) -> str:
    """The local time `seconds_from_now` ahead, to the second, with its zone."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(time.time() + seconds_from_now))


def new_csrf_token() -> str:
    """A random token for one session's forms and API calls."""
    return secrets.token_urlsafe(32)


def tokens_equal(a: str | None, b: str | None) -> bool:
    """Constant-time comparison that is False if either is missing.

    Compared as UTF-8 bytes: `hmac.compare_digest` refuses a str with non-ASCII
    characters (a TypeError, which was a 500 for anyone sending one).
    """
    if not a or not b:
        return False
    return hmac.compare_digest(
        str(a).encode("utf-8", "surrogatepass"), str(b).encode("utf-8", "surrogatepass")
    )
