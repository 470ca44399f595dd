"""The wheel builds, holds the whole package, and installs the bgws command and plugin."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_builds_and_installs(tmp_path: Path) -> None:
    """A wheel built from the tree installs into a fresh folder and imports from there."""
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = dist.glob("bgws-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    sources = {p.relative_to(ROOT / "src").as_posix() for p in (ROOT / "src").rglob("*.py")}
    assert sources <= set(names)
    assert "bgws/py.typed" in names
    meta = next(n for n in names if n.endswith("entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(meta).decode()
    assert "bgws = bgws.cli:main" in entry_points
    assert "bgws = bgws.testing.pytest_plugin" in entry_points

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    probe = (
        "import bgws, sys; assert bgws.__file__.startswith(sys.argv[1]), bgws.__file__; "
        "print(bgws.__version__)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(target)!r}); "
            + "import site; site.addsitedir("
            + repr(_site_packages())
            + "); "
            + probe,
            str(target),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.strip() == "0.1.0"


def _site_packages() -> str:
    import msgspec

    return str(Path(msgspec.__file__).resolve().parent.parent)


def test_make_demo_installs_bgws_alone(tmp_path: Path) -> None:
    """`make demo` in a fresh venv installs bgws without the dev extra (fast first run)."""
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    venv = tmp_path / "venv"  # does not exist: make plans the whole set-up
    done = subprocess.run(
        [make, "-n", "demo", f"VENV={venv}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    installs = [line for line in done.stdout.splitlines() if "pip install" in line]
    assert installs, done.stdout
    assert all("-e ." in line and "[" not in line for line in installs), installs
    assert f"{venv}/bin/bgws demo" in done.stdout
