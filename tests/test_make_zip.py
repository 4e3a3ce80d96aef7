"""tools/make_zip.py: exact contents, determinism, and refusals (bad penn keys, stale or missing PDF).

Each test works on a small fake repository in a temporary folder (fake scripts, results and a fake
PDF), so it checks the tool itself; the real report's zip is checked end to end elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "make_zip.py"
SCRIPTS = ("part1_loss_gradient.py", "part2_fc.py", "part3_line.py", "part3_detection.py")
INPUTS = (
    "report/report.typ",
    "figures/part1_loss_gradient.json",
    "figures/part2_fc.json",
    "figures/part3_line.json",
    "figures/part3_detection.json",
)
PDF_BYTES = b"%PDF-1.7\n% a stand-in PDF for these tests\n%%EOF\n"
T0 = 1_700_000_000  # seconds; sources get this mtime, the PDF a later one


def make_repo(root: Path) -> Path:
    """Fake repository: scripts and results at time T0, the PDF built 10 s later."""
    for rel in (*SCRIPTS, *INPUTS):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# contents of {rel}\n")
        os.utime(path, (T0, T0))
    pdf = root / "report" / "report.pdf"
    pdf.write_bytes(PDF_BYTES)
    os.utime(pdf, (T0 + 10, T0 + 10))
    (root / "out").mkdir()
    return root


def run_tool(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root), "--out", str(root / "out"), *args],
                          capture_output=True, text=True, timeout=60)


def assert_refused(result: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit status 2, exactly one line on stderr naming the problem, no traceback, nothing on stdout."""
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("make_zip.py: error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    for word in words:
        assert word in lines[0], (word, lines[0])


def test_zip_holds_exactly_the_pdf_and_the_four_scripts(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    result = run_tool(root, "--penn-key", "abc123")
    assert result.returncode == 0, result.stderr
    target = root / "out" / "1_abc123.zip"
    assert str(target) in result.stdout
    with zipfile.ZipFile(target) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == sorted(["report.pdf", *SCRIPTS])
        assert archive.read("report.pdf") == PDF_BYTES
        for name in SCRIPTS:
            assert archive.read(name) == (root / name).read_bytes()
        for info in archive.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert (info.external_attr >> 16) & 0o777 == 0o644
    assert sorted(p.name for p in (root / "out").iterdir()) == ["1_abc123.zip"]  # no temporary left


def test_zip_is_deterministic(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    target = root / "out" / "1_k1.zip"
    assert run_tool(root, "--penn-key", "k1").returncode == 0
    first = target.read_bytes()
    os.utime(root / "report" / "report.pdf", (T0 + 99, T0 + 99))  # a later rebuild of the same PDF
    assert run_tool(root, "--penn-key", "k1").returncode == 0
    assert target.read_bytes() == first


@pytest.mark.parametrize("key", ["", "ABC", "a b", "a/b", "../x", "abc-1", "ab\u00e9", ".abc", "-abc",
                                 "a" * 65, "a" * 250])
def test_bad_penn_key_is_refused_and_nothing_written(tmp_path: Path, key: str) -> None:
    root = make_repo(tmp_path)
    result = run_tool(root, "--penn-key", key)
    assert_refused(result, "--penn-key")
    assert list((root / "out").iterdir()) == []
    assert not list(root.rglob("*.zip"))


def test_missing_penn_key_flag_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    assert_refused(run_tool(root), "--penn-key")


@pytest.mark.parametrize("touched", [*SCRIPTS, "figures/part2_fc.json", "report/report.typ"])
def test_stale_pdf_is_refused_and_earlier_zip_kept(tmp_path: Path, touched: str) -> None:
    root = make_repo(tmp_path)
    assert run_tool(root, "--penn-key", "abc").returncode == 0
    target = root / "out" / "1_abc.zip"
    before = target.read_bytes()
    path = root / touched
    path.write_text("# changed after the PDF was built\n")
    os.utime(path, (T0 + 20, T0 + 20))
    result = run_tool(root, "--penn-key", "abc")
    assert_refused(result, "older than", touched)
    assert target.read_bytes() == before
    assert sorted(p.name for p in (root / "out").iterdir()) == ["1_abc.zip"]


@pytest.mark.parametrize("removed", ["report/report.pdf", "part3_line.py", "figures/part3_detection.json"])
def test_missing_file_is_refused(tmp_path: Path, removed: str) -> None:
    root = make_repo(tmp_path)
    (root / removed).unlink()
    result = run_tool(root, "--penn-key", "abc")
    assert_refused(result, "missing", removed)
    assert list((root / "out").iterdir()) == []


def test_file_that_is_not_a_pdf_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    pdf = root / "report" / "report.pdf"
    pdf.write_text("not a pdf")
    os.utime(pdf, (T0 + 10, T0 + 10))
    assert_refused(run_tool(root, "--penn-key", "abc"), "report.pdf", "not a PDF")


def test_missing_out_folder_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    result = subprocess.run([sys.executable, str(TOOL), "--root", str(root), "--out", str(root / "nope"),
                             "--penn-key", "abc"], capture_output=True, text=True, timeout=60)
    assert_refused(result, "--out")
    assert not list(root.rglob("*.zip"))
