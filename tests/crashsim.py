"""Power-cut simulation: trace a workload's file-system calls, then rebuild the disk as a
power cut at any point of that trace could have left it.

SIGKILL keeps the page cache, so a killed process proves nothing about a power cut. Here a
workload runs under `strace` (system-call level, so SQLite's own writes from C are seen
too), and every call that changes a file or a folder under its root is replayed into a
small model of a file system (`FsModel`), together with the workload's acknowledgements
(lines `ACK ...` it writes to its stdout only after a store call returned).

The power-cut model (what may survive at a crash point), chosen to be the weakest that
POSIX and Linux promise, so that a store that passes it relies on nothing more:

- File data is durable only once the file is fsynced (or fdatasynced): writes since the
  last fsync may be lost whole, or partly (the first half applied, its last write torn
  in two), or out of order (every second one applied).
- A name (create, mkdir, symlink, rename, unlink) is durable only once the folder that
  holds it is fsynced; fsyncing a file does not make its name durable.
- Or, the journalled-metadata case: the journal committed every name change up to the
  crash, but file data reached the disk only as far as each file's last fsync (ext4's
  delayed allocation, on by default on the Pi, can leave a renamed file empty this way:
  the classic zero-length-file-after-rename), with the same lost, torn or reordered
  variants of the unsynced data.
- And the page cache intact (what SIGKILL leaves), for completeness.

`crash_states` yields, for every cut point of the trace (after each call, so every
fsync and rename boundary too) and each of these variants, the rebuilt folder and the
acknowledgements made before the cut; identical states are rebuilt once. SQLite's `-shm`
file is left out of every state: it is a cache of the WAL that SQLite rebuilds when the
first connection opens the database after a crash.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STRACE = shutil.which("strace")
#: The calls traced: all that change files or folders, and what keeps track of descriptors.
#: Those marked unsupported fail the replay if they touch the root (nothing is missed).
TRACED = (
    "open,openat,creat,close,lseek,dup,dup2,dup3,fcntl,write,pwrite64,ftruncate,truncate,"
    "fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat,rmdir,mkdir,mkdirat,"
    "symlink,symlinkat,link,linkat,writev,pwritev,pwritev2,fallocate,copy_file_range,"
    "sendfile,splice,sync_file_range"
)
UNSUPPORTED = {
    "link", "linkat", "writev", "pwritev", "pwritev2", "fallocate",
    "copy_file_range", "sendfile", "splice", "sync_file_range", "truncate",
}  # fmt: skip
ACK = b"ACK "

_LINE = re.compile(r"^(\d+) +(\w+)\((.*)\) += (-?\d+)(<[^>]*>)?(.*)$")
_UNFINISHED = re.compile(r"^(\d+) +(.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. \w+ resumed>(.*)$")
_FD = re.compile(r"^(-?\d+|AT_FDCWD)(<[^>]*>)?")


class ReplayError(RuntimeError):
    """The trace holds a call the model cannot replay (the test must not pass blind)."""


def _unhex(text: str) -> bytes:
    """The bytes of a quoted `"\\x41\\x42"` string or a `<\\x2f...>` path."""
    inner = text.strip('"<>')
    if inner and not inner.startswith("\\x"):  # (strace left it as text)
        return inner.encode()
    return bytes.fromhex(inner.replace("\\x", ""))


def _split_args(text: str) -> list[str]:
    """Top-level arguments (strings are all \\x-escaped, so only brackets nest)."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0 and text[i + 1 : i + 2] == " ":
            out.append(text[start:i])
            start = i + 2
    out.append(text[start:])
    return out


@dataclass(frozen=True)
class Call:
    """One traced call that succeeded: its name, raw arguments and result."""

    name: str
    args: list[str]
    ret: int
    ret_path: str | None  # -y: the path of a returned descriptor

    def fd(self, i: int) -> tuple[int | None, str | None]:
        """Argument i as a descriptor: its number (None: AT_FDCWD) and path."""
        m = _FD.match(self.args[i])
        if m is None:
            raise ReplayError(f"{self.name}: argument {i} is not a descriptor: {self.args[i]}")
        num = None if m.group(1) == "AT_FDCWD" else int(m.group(1))
        return num, (_unhex(m.group(2)).decode() if m.group(2) else None)

    def data(self, i: int) -> bytes:
        return _unhex(self.args[i])

    def path(self, i: int) -> str:
        return _unhex(self.args[i]).decode()


def parse_trace(text: str) -> list[Call]:
    """The successful calls of an `strace -f -xx -y` log, in order (split calls joined)."""
    calls: list[Call] = []
    pending: dict[str, str] = {}
    for line in text.splitlines():
        if m := _UNFINISHED.match(line):
            pending[m.group(1)] = m.group(2)
            continue
        if m := _RESUMED.match(line):
            line = f"{m.group(1)} {pending.pop(m.group(1), '')}{m.group(2)}"
        m = _LINE.match(line)
        if m is None or int(m.group(4)) < 0:
            continue  # a signal, an exit, or a call that failed (it changed nothing)
        ret_path = _unhex(m.group(5)).decode() if m.group(5) else None
        calls.append(Call(m.group(2), _split_args(m.group(3)), int(m.group(4)), ret_path))
    return calls


def run_traced(cmd: Sequence[str], trace: Path, *, cwd: Path, timeout: float = 120) -> str:
    """Run `cmd` under strace, writing the trace to `trace`; return its stdout."""
    if STRACE is None:
        raise ReplayError("strace is not installed")
    res = subprocess.run(
        [
            STRACE, "-f", "--seccomp-bpf", "-qq", "-xx", "-y", "-s", "100000000",
            "-e", f"trace={TRACED}", "-e", "signal=none", "-o", str(trace), *cmd,
        ],
        cwd=cwd, capture_output=True, timeout=timeout, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise ReplayError(f"workload failed ({res.returncode}): {res.stderr.decode()[-3000:]}")
    return res.stdout.decode()


# --- the file-system model ---------------------------------------------------------------

_inos = itertools.count(1)


@dataclass(eq=False)
class Node:
    """A file, folder or symbolic link (an inode)."""

    kind: str  # file, dir, link
    ino: int = field(default_factory=lambda: next(_inos))
    data: bytearray = field(default_factory=bytearray)  # file: as the page cache holds it
    synced: bytes = b""  # file: as of its last fsync
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)  # since that fsync
    gen: int = 0  # fsyncs so far
    entries: dict[str, Node] = field(default_factory=dict)  # dir: names now
    durable: dict[str, Node] = field(default_factory=dict)  # dir: as of its last fsync
    target: str = ""  # link


def _apply(buf: bytearray, op: tuple[str, int, bytes]) -> None:
    kind, off, data = op
    if kind == "t":
        del buf[off:]
        buf.extend(b"\0" * (off - len(buf)))
    else:
        if off > len(buf):
            buf.extend(b"\0" * (off - len(buf)))
        buf[off : off + len(data)] = data


@dataclass
class _Open:
    node: Node
    pos: int = 0
    append: bool = False


#: The variants of each crash point: (which names survive, which unsynced data survives).
VARIANTS = (
    ("fsynced", "synced"),  # POSIX minimum: only what was fsynced
    ("fsynced", "torn"),
    ("all", "synced"),  # names journalled, unsynced data lost (rename shows empty file)
    ("all", "torn"),  # ... the first half of it written, the last write torn
    ("all", "reordered"),  # ... every second write of it, out of order
    ("all", "all"),  # the page cache intact (what SIGKILL leaves)
)


class FsModel:
    """A folder tree under `root`, changed call by call as the trace says."""

    def __init__(self, root: Path, cwd: Path, before: Path | None = None) -> None:
        """Args:
        root: the folder the workload changed (the paths in the trace).
        cwd: the workload's working folder (relative paths in the trace).
        before: a copy of `root` as it was before the workload (default: `root`).
        """
        self.root = os.path.normpath(root)
        self.cwd = str(cwd)
        self.top = self._snapshot(Path(before or root))
        self.fds: dict[int, _Open] = {}
        #: Bumped by every change a power cut could show (states between are the same).
        self.changes = 0

    def _snapshot(self, path: Path) -> Node:
        """The tree as it is before the workload, all of it durable."""
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return Node("link", target=os.readlink(path))
        if stat.S_ISDIR(st.st_mode):
            node = Node("dir")
            for child in path.iterdir():
                node.entries[child.name] = self._snapshot(child)
            node.durable = dict(node.entries)
            return node
        data = path.read_bytes()
        return Node("file", data=bytearray(data), synced=data)

    # -- paths --

    def _inside(self, path: str) -> str | None:
        """`path` relative to the root, or None when it lies outside."""
        if path == self.root:
            return ""
        if path.startswith(self.root + "/"):
            return path[len(self.root) + 1 :]
        return None

    def _abs(self, call: Call, dir_i: int | None, path_i: int) -> str:
        path = call.path(path_i)
        base = self.cwd
        if dir_i is not None:
            _, dir_path = call.fd(dir_i)
            base = dir_path or self.cwd
        return os.path.normpath(os.path.join(base, path))

    def _lookup(self, rel: str, *, parent: bool = False) -> tuple[Node, str]:
        """The folder holding `rel` and its last name (following links on the way)."""
        node, parts = self.top, [p for p in rel.split("/") if p]
        for i, part in enumerate(parts[:-1]):
            child = node.entries.get(part)
            if child is not None and child.kind == "link":
                target = os.path.normpath(os.path.join("/".join(parts[:i]), child.target))
                child, _ = self._resolve(target)
            if child is None or child.kind != "dir":
                raise ReplayError(f"{rel}: {part} is not a folder in the model")
            node = child
        return node, parts[-1] if parts else ""

    def _resolve(self, rel: str) -> tuple[Node | None, str]:
        folder, name = self._lookup(rel)
        return folder.entries.get(name) if name else self.top, name

    # -- replay --

    def apply(self, call: Call) -> bytes | None:
        """Replay one call; return the acknowledgement line it writes, if it is one."""
        name, args = call.name, call.args
        if name in ("open", "openat", "creat"):
            path_i = 1 if name == "openat" else 0
            path = call.ret_path or self._abs(call, 0 if name == "openat" else None, path_i)
            rel = self._inside(path)
            self.fds.pop(call.ret, None)
            if rel is None or rel.endswith("-shm"):
                return None
            flags = "O_CREAT|O_TRUNC|O_WRONLY" if name == "creat" else args[path_i + 1]
            folder, last = self._lookup(rel)
            node = folder.entries.get(last) if last else self.top
            if node is None:
                if "O_CREAT" not in flags:
                    raise ReplayError(f"{rel} opened but missing from the model")
                node = folder.entries[last] = Node("file")
                self.changes += 1
            if "O_TRUNC" in flags and node.kind == "file":
                self._data(node, ("t", 0, b""))
            self.fds[call.ret] = _Open(node, append="O_APPEND" in flags)
            return None
        if name == "fcntl" and not call.args[1].startswith("F_DUPFD"):
            return None  # locks and flags
        if name in ("dup", "dup2", "dup3", "fcntl"):
            old, _ = call.fd(0)
            if old in self.fds:
                self.fds[call.ret] = self.fds[old]
            else:
                self.fds.pop(call.ret, None)
            return None
        if name == "close":
            num, _ = call.fd(0)
            self.fds.pop(-1 if num is None else num, None)
            return None
        if name in ("write", "pwrite64", "lseek", "ftruncate", "fsync", "fdatasync"):
            num, fd_path = call.fd(0)
            if name == "write" and num == 1:
                data = call.data(1)
                return data if data.startswith(ACK) else None
            of = self.fds.get(num if num is not None else -1)
            if of is None:
                if fd_path and self._inside(fd_path) is not None and "-shm" not in fd_path:
                    raise ReplayError(f"{name} on {fd_path}, a descriptor the model lost")
                return None
            self._fd_call(call, of)
            return None
        if name in UNSUPPORTED:
            touched = [a for a in args if self._inside(_decode_path(a)) is not None]
            if touched:
                raise ReplayError(f"{name} under the root: not modelled ({touched})")
            return None
        self._name_call(call)
        return None

    def _fd_call(self, call: Call, of: _Open) -> None:
        name, node = call.name, of.node
        if name == "lseek":
            of.pos = call.ret
        elif name == "write":
            data = call.data(1)[: call.ret]
            if of.append:
                of.pos = len(node.data)
            self._data(node, ("w", of.pos, data))
            of.pos += len(data)
        elif name == "pwrite64":
            self._data(node, ("w", int(call.args[3]), call.data(1)[: call.ret]))
        elif name == "ftruncate":
            self._data(node, ("t", int(call.args[1]), b""))
        elif node.kind == "dir":  # fsync of a folder: its names are durable
            node.durable = dict(node.entries)
            self.changes += 1
        elif node.kind == "file":
            self.changes += 1
            node.synced, node.pending = bytes(node.data), []
            node.gen += 1

    def _data(self, node: Node, op: tuple[str, int, bytes]) -> None:
        self.changes += 1
        _apply(node.data, op)
        node.pending.append(op)

    def _name_call(self, call: Call) -> None:
        self.changes += 1  # (or a call outside the root: one state rebuilt for nothing)
        name = call.name
        if name in ("rename", "renameat", "renameat2"):
            at = name != "rename"
            src = self._abs(call, 0 if at else None, 1 if at else 0)
            dst = self._abs(call, 2 if at else None, 3 if at else 1)
            rs, rd = self._inside(src), self._inside(dst)
            if rs is None and rd is None:
                return
            if rs is None or rd is None:
                raise ReplayError(f"rename across the root's edge: {src} -> {dst}")
            sfolder, sname = self._lookup(rs)
            dfolder, dname = self._lookup(rd)
            dfolder.entries[dname] = sfolder.entries.pop(sname)
        elif name in ("unlink", "unlinkat", "rmdir"):
            at = name == "unlinkat"
            rel = self._inside(self._abs(call, 0 if at else None, 1 if at else 0))
            if rel is not None and not rel.endswith("-shm"):
                folder, last = self._lookup(rel)
                folder.entries.pop(last, None)
        elif name in ("mkdir", "mkdirat"):
            at = name == "mkdirat"
            rel = self._inside(self._abs(call, 0 if at else None, 1 if at else 0))
            if rel is not None:
                folder, last = self._lookup(rel)
                folder.entries[last] = Node("dir")
        elif name in ("symlink", "symlinkat"):
            at = name == "symlinkat"
            rel = self._inside(self._abs(call, 1 if at else None, 2 if at else 1))
            if rel is not None:
                folder, last = self._lookup(rel)
                folder.entries[last] = Node("link", target=call.path(0))

    # -- what a power cut leaves --

    def crash_tree(self, names: str, data: str) -> dict[str, tuple[str, object, bytes | str]]:
        """The tree a power cut now leaves: relative path -> (kind, key, contents)."""
        out: dict[str, tuple[str, object, bytes | str]] = {}

        def walk(node: Node, rel: str, seen: frozenset[int]) -> None:
            entries = node.durable if names == "fsynced" else node.entries
            for name, child in sorted(entries.items()):
                path = f"{rel}/{name}" if rel else name
                if name.endswith("-shm"):
                    continue
                if child.kind == "dir":
                    if child.ino not in seen:
                        out[path] = ("dir", child.ino, b"")
                        walk(child, path, seen | {child.ino})
                elif child.kind == "link":
                    out[path] = ("link", child.ino, child.target)
                else:
                    out[path] = ("file", *_contents(child, data))

        walk(self.top, "", frozenset({self.top.ino}))
        return out


def _decode_path(arg: str) -> str:
    return _unhex(arg).decode(errors="replace") if arg.startswith('"') else ""


def _contents(node: Node, how: str) -> tuple[object, bytes]:
    """A file's contents after a power cut, and a key that names them."""
    if not node.pending or how == "synced":
        return (node.ino, node.gen), node.synced
    if how == "all":
        return (node.ino, node.gen, len(node.pending), "all"), bytes(node.data)
    buf = bytearray(node.synced)
    if how == "torn":
        half = len(node.pending) // 2
        for op in node.pending[:half]:
            _apply(buf, op)
        kind, off, data = node.pending[half]
        _apply(buf, (kind, off, data[: len(data) // 2]) if kind == "w" else (kind, off, data))
    else:  # reordered: every second write since the fsync, the others lost
        for op in node.pending[1::2]:
            _apply(buf, op)
    return (node.ino, node.gen, len(node.pending), how), bytes(buf)


@dataclass(frozen=True)
class CrashState:
    """One rebuilt folder: where the cut fell, how, and what had been acknowledged."""

    cut: int  # calls replayed before the power failed
    variant: tuple[str, str]
    acks: tuple[str, ...]
    path: Path


def materialise(tree: dict[str, tuple[str, object, bytes | str]], dest: Path) -> None:
    """Write a crash tree into an empty folder."""
    dest.mkdir(parents=True)
    for rel, (kind, _, contents) in tree.items():
        path = dest / rel
        if kind == "dir":
            path.mkdir()
        elif kind == "link":
            os.symlink(str(contents), path)
        else:
            assert isinstance(contents, bytes)
            path.write_bytes(contents)


def crash_states(
    calls: list[Call], root: Path, cwd: Path, work: Path, before: Path | None = None
) -> Iterator[CrashState]:
    """Every distinct state a power cut at any call (each variant) leaves, one at a time.

    `before` holds what `root` held when the trace began (default: `root` itself). Each
    state is rebuilt under `work` and removed when the consumer asks for the next.
    """
    model = FsModel(root, cwd, before)
    acks: list[str] = []
    seen: set[object] = set()
    count = 0
    for cut in range(len(calls) + 1):
        if cut:
            changes = model.changes
            ack = model.apply(calls[cut - 1])
            if ack is not None:
                acks.extend(ack.decode().split("\n")[:-1])
            elif model.changes == changes:
                continue
        for variant in VARIANTS:
            tree = model.crash_tree(*variant)
            key = (tuple(acks), tuple((p, k, key) for p, (k, key, _) in tree.items()))
            if key in seen:
                continue
            seen.add(key)
            count += 1
            dest = work / f"state-{count}"
            materialise(tree, dest)
            try:
                yield CrashState(cut, variant, tuple(acks), dest)
            finally:
                shutil.rmtree(dest, ignore_errors=True)


def tree_digest(path: Path) -> str:
    """A digest of every file under a folder (to check one bundle copy once)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode() + b"\0")
        if p.is_symlink():
            h.update(b"L" + os.readlink(p).encode())
        elif p.is_file():
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def workload_command(*args: str) -> list[str]:
    """This Python running the power-cut workload module with `args`."""
    return [sys.executable, "-m", "tests.power_cut_workload", *args]
