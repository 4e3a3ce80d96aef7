"""The submission zip stands alone: unpacked into an empty folder with only the data beside it,
each of the four scripts runs from there (they import each other, never a fifth module).

The zip is built by tools/make_zip.py from a copy of this repository's scripts and a freshly
built report, so this is the student's path end to end: scripts -> results -> PDF -> zip -> run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPTS = ("part1_loss_gradient.py", "part2_fc.py", "part3_line.py", "part3_detection.py")
# Tiny runs: this checks that the files stand alone, not what they compute.
QUICK = {
    "part1_loss_gradient.py": ["--grid", "21"],
    "part2_fc.py": ["--seeds", "2", "--max-iters", "40"],
    "part3_line.py": ["--seeds", "2", "--max-iters", "5"],
    "part3_detection.py": ["--seeds", "2", "--max-iters", "5"],
}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["MPLBACKEND"] = "Agg"
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def submission_zip(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """Build 1_<key>.zip the way `make zip` does, in a scratch copy of the repository."""
    work = tmp_path_factory.mktemp("repo")
    for name in SCRIPTS:
        shutil.copy2(repo_root / name, work / name)
    for folder in ("data", "report", "tools"):
        shutil.copytree(repo_root / folder, work / folder,
                        ignore=shutil.ignore_patterns("*.pdf", "__pycache__", ".*"))
    for name in SCRIPTS:
        run([sys.executable, name, *QUICK[name]], work)
    run([sys.executable, "tools/build_report.py"], work)
    run([sys.executable, "tools/make_zip.py", "--penn-key", "abc123", "--root", str(work),
         "--out", str(work)], work)
    return work / "1_abc123.zip"


def test_zip_holds_exactly_one_pdf_and_the_four_scripts(submission_zip: Path) -> None:
    with zipfile.ZipFile(submission_zip) as archive:
        names = sorted(archive.namelist())
        assert names == sorted(["report.pdf", *SCRIPTS])
        assert archive.read("report.pdf").startswith(b"%PDF-")


def test_scripts_run_from_the_unpacked_zip_alone(submission_zip: Path, tmp_path: Path,
                                                  standin_dir: Path) -> None:
    target = tmp_path / "unpacked"
    with zipfile.ZipFile(submission_zip) as archive:
        archive.extractall(target)
    course = standin_dir.parent.parent / "shared" / "reference-data"
    shutil.copytree(course if course.is_dir() else standin_dir, target / "data",
                    ignore=shutil.ignore_patterns("*.py", "*.md", "__pycache__"))
    for name in SCRIPTS:
        run([sys.executable, "-E", "-s", name, *QUICK[name]], target)  # no PYTHONPATH, no user site
    results = {p.name for p in (target / "figures").glob("*.json")}
    assert results == {"part1_loss_gradient.json", "part2_fc.json", "part3_line.json", "part3_detection.json"}
    provenance = json.loads((target / "figures" / "part2_fc.json").read_text())["data"]["provenance"]
    assert provenance == ("course data" if course.is_dir() else "stand-in")
