"""The packages work from a built wheel, as the Pi installs them, not only from this tree.

Issue 17 found a test that failed outside an editable install: a default path built from
the source tree's location (`Path(__file__).parents[...]`). Defaults are now relative to
the working directory (the commands run from a checkout) or read from the package's own
data (`importlib.resources`); these tests keep it so.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = (REPO / "device" / "leukoscope", REPO / "tools" / "leukoscope_tools")


def test_no_module_finds_files_from_its_own_location() -> None:
    """`__file__` points into site-packages once installed: the checkout is not there."""
    offenders = []
    for package in PACKAGES:
        for module in sorted(package.rglob("*.py")):
            tree = ast.parse(module.read_text(), str(module))
            for node in ast.walk(tree):
                if isinstance(node, ast.Name) and node.id == "__file__":
                    offenders.append(f"{module.relative_to(REPO)}:{node.lineno}")
    assert offenders == [], "use importlib.resources or a path from the config: " + ", ".join(
        offenders
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this tree, installed (without dependencies) into a folder."""
    work = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(work), str(REPO)],
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        last = (built.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"cannot build the wheel here (pip wheel --no-build-isolation): {last}")
    (wheel,) = work.glob("leukoscope-*.whl")
    target = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def _run(site: Path, cwd: Path, *code: str) -> subprocess.CompletedProcess[str]:
    """Python with the installed copy first on the path, in `cwd`."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run(
        [sys.executable, *code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_the_installed_device_commands_work_from_anywhere(installed: Path, tmp_path: Path) -> None:
    where = _run(installed, tmp_path, "-c", "import leukoscope; print(leukoscope.__file__)")
    assert where.stdout.strip().startswith(str(installed)), where
    leukoscope = ("-m", "leukoscope.cli.main")
    made = _run(installed, tmp_path, *leukoscope, "demo-images", "fields")
    assert made.returncode == 0, made.stderr
    photo = sorted((tmp_path / "fields").iterdir())[0]
    bundle = REPO / "models" / "default"
    classify = (*leukoscope, "classify", str(photo), "--bundle", str(bundle), "--json")
    out = _run(installed, tmp_path, *classify)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout.splitlines()[0])
    assert line["verdict"] in ("no-leukemia-suspected", "leukemia-suspected", "indeterminate")
    # The shipped configs are package data, found wherever the package is.
    config = _run(
        installed,
        tmp_path,
        "-c",
        "from leukoscope.config import bundled_config; p = bundled_config('pi');"
        "print(p, p.is_file())",
    )
    assert config.stdout.split() == [str(installed / "leukoscope/configs/pi.toml"), "True"]


@pytest.mark.slow
def test_the_installed_host_tools_defaults_name_the_checkout(installed: Path) -> None:
    """Their default paths are the checkout's files when run from it, as documented."""
    code = (
        "import leukoscope_tools, leukoscope_tools.evaluate.detection as d;"
        "print(leukoscope_tools.__file__);"
        "print(d.DEFAULT_SPLIT.resolve(), d.DEFAULT_SPLIT.is_file())"
    )
    out = _run(installed, REPO, "-c", code)
    assert out.returncode == 0, out.stderr
    module, split = out.stdout.splitlines()
    assert module.startswith(str(installed))
    assert split == f"{REPO / 'models/reports/cell-detection-split.csv'} True"
