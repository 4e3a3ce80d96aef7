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


# pytest-xdist (`-n auto`, pyproject.toml) schedules whole test files: each file stays on one worker,
# so a module's expensive fixtures (the simulated-platform runs, the CLI runs) run once; and
# test_submission.py goes with test_report.py, so the two share the one end-to-end build.
SHARED_BUILD = {"tests/test_submission.py": "tests/test_report.py"}
# The order in which workers take files (xdist's default is the most tests first, which left the
# end-to-end build, few tests but the longest file, for last): the build first on one worker, then
# the longest files first, so that the two workers finish at about the same time. Files not listed
# go last. (The order does not change what a test sees: save_figure styles each figure in an
# rc_context, so no file's in-process runs leave matplotlib changed for the next.)
FIRST = ("tests/test_report.py", "tests/test_part1_loss_gradient.py", "tests/test_part3_line.py",
         "tests/test_part2_fc.py", "tests/test_part3_detection.py", "tests/test_tools.py", "tests/test_data.py",
         "tests/test_make_zip.py")


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return SHARED_BUILD.get(scope, scope)

        def _assign_work_unit(self, node: object) -> None:
            first = next((scope for scope in FIRST if scope in self.workqueue), None)
            if first is not None:
                self.workqueue.move_to_end(first, last=False)
            super()._assign_work_unit(node)

    return FileScheduling(config, log)
