"""Shared pytest fixtures: where the repository, the stand-in data and the course data are."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COURSE_DIR = REPO_ROOT.parent / "shared" / "reference-data"  # the course's files, never committed

sys.path.insert(0, str(REPO_ROOT))  # the part scripts are top-level modules


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's top folder (holds the four part scripts)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def standin_dir() -> Path:
    """data/: the committed stand-in datasets."""
    return REPO_ROOT / "data"


@pytest.fixture(scope="session")
def course_dir() -> Path:
    """The course's own data files; the test is skipped when they are not on this machine."""
    if not COURSE_DIR.is_dir():
        pytest.skip(f"course data not found at {COURSE_DIR}")
    return COURSE_DIR


@pytest.fixture
def bad_data_dir(tmp_path: Path, standin_dir: Path) -> Callable[[], Path]:
    """Factory: each call copies the stand-in .npy files into a new folder under tmp_path.

    The test then corrupts one file there. Returns the folder (a valid --data-dir).
    """
    copies = 0

    def make() -> Path:
        nonlocal copies
        copies += 1
        target = tmp_path / f"data{copies}"
        shutil.copytree(standin_dir, target, ignore=_all_but_npy)
        return target

    return make


def _all_but_npy(folder: str, names: list[str]) -> list[str]:
    """shutil.copytree filter: skip the generator, its README and caches; keep dataset folders."""
    return [name for name in names
            if name == "__pycache__" or (Path(folder, name).is_file() and not name.endswith(".npy"))]


# pytest-xdist (`-n auto --dist loadgroup`, pyproject.toml): each test file stays on one worker, so a
# module's expensive fixtures (the simulated-platform runs started in the background, the CLI runs)
# run once; test_report.py and test_submission.py share one worker and so the one end-to-end build.
SHARED_BUILD = {"test_report", "test_submission"}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__ if item.module else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group("e2e" if module in SHARED_BUILD else module))
