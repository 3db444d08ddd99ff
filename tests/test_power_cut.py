"""A power cut at every point of the record store's and the model store's writes.

Each store's workload runs under strace (`tests/power_cut_workload.py`); the trace is
replayed cut after every call, under the power-cut model of `tests/crashsim.py` (only what
was fsynced survives, or every name change with unsynced data lost, torn or reordered),
and each rebuilt state is opened as the daemon opens it at start. Nothing acknowledged
may be lost and nothing half-written may be visible. A store broken from the workload
(an fsync skipped) must be caught, so the test is shown to fail when it should.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from leukoscope.appliance.records import TMP_DIR
from leukoscope.appliance.records import Store as RecordStore
from leukoscope.appliance.samples import SampleReader
from leukoscope.core.errors import BundleError, StoreError
from leukoscope.model.bundle import load_bundle
from leukoscope.model.manifest import MANIFEST, read_manifest, sha256_file
from leukoscope.model.store import (
    ACTIVE,
    PREVIOUS,
    VERSIONS,
    ModelStore,
    StoreSettings,
    version_id,
)
from tests.crashsim import (
    STRACE,
    VARIANTS,
    CrashState,
    crash_states,
    parse_trace,
    run_traced,
    tree_digest,
    workload_command,
)
from tests.power_cut_workload import MODEL_MUTANTS, RECORD_MUTANTS, RESERVE_BYTES, SAMPLE
from tests.test_modelstore import make_variant

REPO = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        STRACE is None,
        reason="strace is not installed (tools/install-test-deps.sh installs it)",
    ),
]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """Where crash states are rebuilt: a RAM folder when there is one (hundreds of
    small trees are written and removed)."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    path = Path(tempfile.mkdtemp(prefix="leukoscope-powercut-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def traced(tmp_path: Path, work: Path, *args: str) -> tuple[Iterator[CrashState], list[str]]:
    """Run a workload under strace in `tmp_path/root` (its state folder made first, as
    the installer makes it); return its crash states and every acknowledgement it made."""
    root, before = tmp_path / "root", tmp_path / "before"
    (root / "state").mkdir(parents=True)
    (before / "state").mkdir(parents=True)
    out = run_traced(workload_command(*args), tmp_path / "trace", cwd=REPO)
    calls = parse_trace((tmp_path / "trace").read_text())
    acks = [line for line in out.splitlines() if line.startswith("ACK ")]
    return crash_states(calls, root, REPO, work, before), acks


# --- the disk model itself --------------------------------------------------------------

TOY = """
import os, sys
root = sys.argv[1]
def put(name, data, sync):
    fd = os.open(os.path.join(root, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    if sync:
        os.fsync(fd)
    os.close(fd)
put("a.tmp", b"A" * 100, True)
os.rename(os.path.join(root, "a.tmp"), os.path.join(root, "a"))
fd = os.open(root, os.O_RDONLY)
os.fsync(fd)
os.close(fd)
os.write(1, b"ACK a\\n")
put("b.tmp", b"B" * 100, False)
os.rename(os.path.join(root, "b.tmp"), os.path.join(root, "b"))
os.write(1, b"ACK b\\n")
"""


def test_the_disk_model_keeps_only_what_was_flushed(tmp_path: Path, work: Path) -> None:
    """A file renamed into place after fsync (and its folder fsynced) survives whole; one
    renamed without either may be missing, empty, half written or whole."""
    root, before = tmp_path / "root", tmp_path / "before"
    root.mkdir()
    before.mkdir()
    run_traced([sys.executable, "-c", TOY, str(root)], tmp_path / "trace", cwd=tmp_path)
    calls = parse_trace((tmp_path / "trace").read_text())
    last: dict[tuple[str, str], dict[str, bytes]] = {}
    for state in crash_states(calls, root, tmp_path, work, before):
        files = {p.name: p.read_bytes() for p in state.path.iterdir()}
        if "ACK a" in state.acks:
            assert files["a"] == b"A" * 100, (state.variant, files)
        assert files.get("a", b"A" * 100) == b"A" * 100
        last[state.variant] = files
    assert last[("fsynced", "synced")] == {"a": b"A" * 100}
    assert last[("all", "synced")] == {"a": b"A" * 100, "b": b""}
    assert last[("all", "torn")]["b"] == b"B" * 50
    assert last[("all", "all")]["b"] == b"B" * 100


# --- the record store --------------------------------------------------------------------


def record_problems(state: CrashState, all_acks: list[str]) -> list[str]:
    """What is wrong with a record store after this power cut, as the daemon opens it."""
    acked: dict[int, tuple[str | None, str | None]] = {}
    retained: set[int] | None = None  # retention acknowledged: these lost their images
    may_retain: set[int] = set()
    for line in all_acks:
        if line.startswith("ACK retention"):
            may_retain = {int(i) for i in line.split(" ")[3].split(",") if i}
    for line in state.acks:
        word = line.split(" ")
        if word[1] == "record":
            acked[int(word[2])] = (
                None if word[3] == "-" else word[3],
                None if word[4] == "-" else word[4],
            )
        elif word[1] == "retention":
            retained = may_retain
    folder = state.path / "state"
    images = folder / "images"
    problems: list[str] = []
    try:
        store = RecordStore(folder / "leukoscope.db", images, reserve_bytes=RESERVE_BYTES)
    except StoreError as exc:
        return [f"the record store does not open: {exc}"]
    try:
        if not store.integrity_ok():
            problems.append("SQLite integrity_check fails")

        def visible() -> dict[int, tuple[str | None, bool, Path | None]]:
            return {
                r.id: (r.image_sha256, r.image_deleted, store.reader.image_file(r))
                for r in store.reader.export()
            }

        for rid, (sha, _, path) in visible().items():  # before recovery too
            if path is not None and path.exists() and _sha(path) != sha:
                problems.append(f"record {rid}: its image {path.name} is half-written")
            elif path is not None and not path.exists() and rid not in may_retain:
                # (retention unlinks before it marks; nothing else may lose a photo)
                problems.append(f"record {rid} was committed before its image {path.name}")
        store.recover()
        now = visible()
        for rid, (sha, _, path) in now.items():
            if path is not None and (not path.exists() or _sha(path) != sha):
                problems.append(f"record {rid}: its image is missing or not what was written")
        for rid, (sha, _) in acked.items():
            if rid not in now:
                problems.append(f"acknowledged record {rid} is lost")
                continue
            stored_sha, deleted, _ = now[rid]
            if stored_sha != sha:
                problems.append(f"acknowledged record {rid}: image {stored_sha} != {sha}")
            if sha and deleted and rid not in may_retain:
                problems.append(f"acknowledged record {rid} lost its image")
            if retained is not None and rid in retained and not deleted:
                problems.append(f"record {rid}: its image came back after retention")
        kept = {p for _, d, p in now.values() if p is not None and not d}
        for path in images.rglob("*"):
            inside_tmp = path.relative_to(images).parts[0] == TMP_DIR
            if path.is_file() and path.resolve() not in kept and not inside_tmp:
                problems.append(f"{path.relative_to(images)}: an image no record names")
        if any((images / TMP_DIR).iterdir()):
            problems.append("recovery left partial images in .tmp/")
        sample = SampleReader(store.reader).get(SAMPLE)
        if sample is None and any(line == f"ACK sample {SAMPLE}" for line in state.acks):
            problems.append(f"acknowledged sample {SAMPLE} is lost")
        fields = {f.record_id for f in sample.fields} if sample else set()
        for rid, (_, in_sample) in acked.items():
            if in_sample and rid not in fields:
                problems.append(f"acknowledged field (record {rid}) of {in_sample} is lost")
    finally:
        store.close()
    return problems


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


Check = Callable[[CrashState, list[str]], list[str]]


def check_all(
    states: Iterator[CrashState], check: Check, acks: list[str], *, first_only: bool = False
) -> tuple[int, list[str], set[tuple[str, str]]]:
    """Check every state; return how many, the problems found (with where) and variants."""
    n, found, variants = 0, [], set()
    for state in states:
        n += 1
        variants.add(state.variant)
        for problem in check(state, acks):
            found.append(f"cut {state.cut} {'/'.join(state.variant)}: {problem}")
        if found and first_only:
            break
    return n, found, variants


def test_records_survive_a_power_cut_at_every_point(tmp_path: Path, work: Path) -> None:
    states, acks = traced(tmp_path, work, "records", str(tmp_path / "root"))
    assert acks[-1] == "ACK close" and "ACK retention 7 1,2,3,4,6,7,8" in acks, acks
    n, problems, variants = check_all(states, record_problems, acks)
    assert problems == [], "\n".join(problems[:20])
    assert n > 200 and variants == set(VARIANTS)


#: What each broken record store must be caught at (any of these at the first cut that
#: shows it).
RECORD_CAUGHT = {
    "image-not-fsynced": ("is half-written",),  # its name flushed, its bytes not
    "no-folder-fsync": ("was committed before its image", "image is missing"),  # the reverse
    "sqlite-synchronous-off": ("is lost",),  # the commit never flushed
}


@pytest.mark.parametrize("mutant", RECORD_MUTANTS)
def test_a_record_store_that_skips_a_flush_is_caught(
    mutant: str, tmp_path: Path, work: Path
) -> None:
    states, acks = traced(tmp_path, work, "records", str(tmp_path / "root"), mutant)
    _, problems, _ = check_all(states, record_problems, acks, first_only=True)
    assert problems, f"the power-cut replay did not notice a store with {mutant}"
    assert any(what in p for p in problems for what in RECORD_CAUGHT[mutant]), problems


# --- the model store ---------------------------------------------------------------------


class ModelChecker:
    """Checks a model store after a power cut; each bundle copy is loaded once."""

    def __init__(self, acks: list[str]) -> None:
        self.switches = [line.split(" ")[2] for line in acks if line.startswith("ACK active")]
        self.intact: dict[str, str | None] = {}

    def why_broken(self, path: Path) -> str | None:
        """None if a version folder is whole and hash-valid and named by its manifest."""
        digest = tree_digest(path)
        if digest not in self.intact:
            try:
                load_bundle(path)
                named = version_id(read_manifest(path), sha256_file(path / MANIFEST))
                self.intact[digest] = None if named == path.resolve().name else f"holds {named}"
            except (BundleError, OSError) as exc:
                self.intact[digest] = str(exc)
        return self.intact[digest]

    def __call__(self, state: CrashState, all_acks: list[str]) -> list[str]:
        done = sum(1 for line in state.acks if line.startswith("ACK active"))
        allowed: set[str | None] = set(self.switches[max(done - 1, 0) : done + 1])
        if done == 0:
            allowed = {None, *allowed}
        root = state.path / "state" / "models"
        problems: list[str] = []
        active = os.readlink(root / ACTIVE) if (root / ACTIVE).is_symlink() else None
        name = None if active is None else Path(active).name
        if name not in allowed:
            problems.append(f"active is {name}, acknowledged {self.switches[:done]}")
        if active is not None and (why := self.why_broken(root / ACTIVE)) is not None:
            problems.append(f"the active model {name} does not load: {why}")
        if (root / PREVIOUS).is_symlink() and (why := self.why_broken(root / PREVIOUS)):
            problems.append(f"the previous model does not load: {why}")
        versions = root / VERSIONS
        for path in sorted(versions.iterdir()) if versions.is_dir() else []:
            if not path.name.startswith(".") and (why := self.why_broken(path)):
                problems.append(f"{VERSIONS}/{path.name} is visible but broken: {why}")
        if root.is_dir():
            store = ModelStore(StoreSettings(store_dir=root, reload="none"))
            listed = {v.id for v in store.list()}
            if name is not None and name not in listed:
                problems.append(f"`model list` does not show the active {name}")
        return problems


@pytest.fixture
def three_bundles(session_bundle: Path, tmp_path: Path) -> list[Path]:
    return [
        make_variant(session_bundle, tmp_path / f"b{i}", f"2.0.{i}", pad=16 * i) for i in (1, 2, 3)
    ]


def test_model_store_survives_a_power_cut_at_every_point(
    three_bundles: list[Path], tmp_path: Path, work: Path
) -> None:
    args = ["models", str(tmp_path / "root"), *map(str, three_bundles)]
    states, acks = traced(tmp_path, work, *args)
    assert len(acks) == 4, acks
    checker = ModelChecker(acks)
    n, problems, variants = check_all(states, checker, acks)
    assert problems == [], "\n".join(problems[:20])
    # (a file is whole before its name is flushed, so durable names never show torn data)
    assert n > 100 and variants >= set(VARIANTS) - {("fsynced", "torn")}


#: What each broken model store must be caught at (at the first cut that shows it).
MODEL_CAUGHT = {
    "copy-not-fsynced": ("is visible but broken",),  # renamed into versions/ before flushed
    "link-not-fsynced": ("active is None",),  # the acknowledged switch not flushed
}


@pytest.mark.parametrize("mutant", MODEL_MUTANTS)
def test_a_model_store_that_skips_a_flush_is_caught(
    mutant: str, three_bundles: list[Path], tmp_path: Path, work: Path
) -> None:
    args = ["models", str(tmp_path / "root"), *map(str, three_bundles), mutant]
    states, acks = traced(tmp_path, work, *args)
    _, problems, _ = check_all(states, ModelChecker(acks), acks, first_only=True)
    assert problems, f"the power-cut replay did not notice a store with {mutant}"
    assert any(what in p for p in problems for what in MODEL_CAUGHT[mutant]), problems
