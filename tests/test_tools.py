"""The build tools when a run goes somewhere odd (issue 19): the Makefile, tools/make_zip.py,
tools/build_report.py and tools/check_data.py.

- make passes DATA, NAME, PENN_KEY and COLLABORATORS to the scripts as given (spaces, quotes, `$`),
  checked on a fake repository whose "python" only records the arguments it gets;
- the PennKey check refuses what the zip's file name cannot hold;
- temporaries left by a killed run are removed by the next run (but not a running writer's), and
  SIGTERM / Ctrl-C stop a tool with one line, exit 143 / 130 and nothing half-written;
- build_report.py refuses a folder as target and an unusable SOURCE_DATE_EPOCH in one line, and
  warns about title-block characters its fonts cannot show;
- check_data.py turns a MemoryError into one line naming the dataset.

The reports are compiled from tiny Typst sources, so the whole file takes seconds.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
import types
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = REPO_ROOT / "tools"
sys.path.insert(0, str(TOOLS))
import build_report  # noqa: E402
import check_data  # noqa: E402
import make_zip  # noqa: E402

SCRIPTS = ("part1_loss_gradient.py", "part2_fc.py", "part3_line.py", "part3_detection.py")
# Dated as report/report.typ is: only when build_report.py says so (SOURCE_DATE_EPOCH set).
TINY_TYP = ('#set document(date: if sys.inputs.dated == "yes" { auto } else { none })\n'
            '#sys.inputs.name #metadata(2) <appendix-page>\n')
# About half a second of Typst work per compile: time to send a signal while it runs.
SLOW_TYP = "#let n = 0\n#for i in range(3000000) { n += 1 }\n#n\n#metadata(2) <appendix-page>\n"


def one_line_error(result: subprocess.CompletedProcess[str], prog: str, status: int, *words: str) -> str:
    """Assert exit `status`, exactly one line on stderr from `prog`, no traceback; return the line."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{prog}: "), lines[0]
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def run_py(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    full.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=60)


# --- make: values reach the scripts intact --------------------------------------------------------

FAKE_PYTHON = """#!/bin/sh
# Records one call: its arguments, one a line, then a separator.
{ for arg in "$@"; do printf '%s\\n' "$arg"; done; printf '%s\\n' '--end--'; } >> "$FAKE_PYTHON_LOG"
"""


def fake_repo(root: Path) -> Path:
    """A repository whose scripts are empty and whose venv's python records its arguments."""
    old = time.time() - 1000
    for rel in (*SCRIPTS, "report/report.typ", "tools/build_report.py",
                "requirements.txt", "requirements-dev.txt"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        os.utime(path, (old, old))
    python = root / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    (root / "venv" / ".installed").write_text("")
    shutil.copy(REPO_ROOT / "Makefile", root / "Makefile")
    return root


def calls(log: Path) -> dict[str, list[str]]:
    """The fake python's calls, keyed by the script it was given."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in log.read_text().splitlines():
        if line == "--end--":
            found[current[0]] = current[1:]
            current = []
        else:
            current.append(line)
    return found


DATA = "/tmp/my data/it's \"here\" $HOME $(shell echo no)"
NAME = "Jo$hn \"Q\" O'Neil $(shell echo no) $$"
PENN_KEY = "ab$c'd"
COLLABORATORS = "A$b \"B\", C'd"


def test_make_passes_values_with_spaces_quotes_and_dollars_intact(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    log = tmp_path / "calls.txt"
    env = {**os.environ, "FAKE_PYTHON_LOG": str(log)}
    env.pop("NAME", None)
    command = ["make", "-C", str(root), "--no-print-directory",
               "VENV=venv", f"DATA={DATA}", f"NAME={NAME}", f"PENN_KEY={PENN_KEY}",
               f"COLLABORATORS={COLLABORATORS}", "SEEDS2=3", "all"]  # all: through a sub-make
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "syntax error" not in result.stderr

    seen = calls(log)
    assert seen["tools/make_zip.py"] == [f"--penn-key={PENN_KEY}"]
    assert seen["tools/check_data.py"] == ["--data-dir", DATA, "--stamps", "build"]
    assert seen["part2_fc.py"][:6] == ["--data-dir", DATA, "--out", "figures", "--seeds", "3"]
    assert seen["part3_line.py"][:2] == seen["part3_detection.py"][:2] == ["--data-dir", DATA]
    assert seen["tools/build_report.py"] == [f"--name={NAME}", f"--penn-key={PENN_KEY}",
                                             f"--collaborators={COLLABORATORS}", "report/report.typ",
                                             "report/report.pdf"]
    # What make keeps to rerun a part when its arguments change: the arguments as the script got them.
    assert (root / "build" / "args-report.txt").read_text() == f"{NAME}\n{PENN_KEY}\n{COLLABORATORS}\n"
    assert (root / "build" / "args-part2.txt").read_text().splitlines() == seen["part2_fc.py"]
    assert (root / "build" / "args-part3_line.txt").read_text().splitlines() == seen["part3_line.py"]

    # The same values again: the argument files are left alone (no rerun); a new DATA rewrites them.
    args2 = root / "build" / "args-part2.txt"
    os.utime(args2, (1_000_000_000, 1_000_000_000))
    targets = ["build/args-part2.txt", "build/args-report.txt"]
    again = subprocess.run([*command[:-1], *targets], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert args2.stat().st_mtime_ns == 1_000_000_000 * 10**9
    other = subprocess.run([*command[:-1], "DATA=/tmp/other data", *targets], env=env,
                           capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr
    assert args2.read_text().splitlines()[:2] == ["--data-dir", "/tmp/other data"]


def test_make_takes_name_from_the_command_line_only(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    env = {**os.environ, "FAKE_PYTHON_LOG": str(tmp_path / "calls.txt"), "NAME": "machine-name"}
    result = subprocess.run(["make", "-C", str(root), "VENV=venv",
                             "build/args-report.txt"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (root / "build" / "args-report.txt").read_text().splitlines()[0] == ""


# --- PennKeys the zip's file name can hold -------------------------------------------------------------


@pytest.mark.parametrize("key", ["a" * 250, "a" * 65, ".abc", "-abc", "a/b", "a\tb", "abc\n", "ABC",
                                 "ab\u00e9"])
def test_check_key_refuses_what_the_file_name_cannot_hold(key: str) -> None:
    result = run_py([str(TOOLS / "make_zip.py"), "--check-key", f"--penn-key={key}"])
    one_line_error(result, "make_zip.py", 2, "--penn-key")
    assert result.stdout == ""


def test_check_key_refuses_nul_and_accepts_the_longest_key(tmp_path: Path) -> None:
    with pytest.raises(make_zip.InputError, match="--penn-key"):
        make_zip.check_penn_key("ab\x00c")
    key = "k" * make_zip.PENN_KEY_MAX
    assert run_py([str(TOOLS / "make_zip.py"), "--check-key", f"--penn-key={key}"]).returncode == 0
    # ... and a zip of that name (and its temporary) can be written.
    members = {"report.pdf": b"%PDF-1.7\n"}
    make_zip.write_zip(tmp_path / f"1_{key}.zip", members)
    with zipfile.ZipFile(tmp_path / f"1_{key}.zip") as archive:
        assert archive.namelist() == ["report.pdf"]


def test_zip_refuses_a_folder_in_its_place(tmp_path: Path) -> None:
    root = fake_zip_repo(tmp_path / "repo")
    (root / "out" / "1_abc.zip").mkdir()
    result = run_py([str(TOOLS / "make_zip.py"), "--root", str(root), "--out", str(root / "out"),
                     "--penn-key", "abc"])
    one_line_error(result, "make_zip.py", 2, "1_abc.zip", "folder")
    assert sorted(p.name for p in (root / "out").iterdir()) == ["1_abc.zip"]


# --- temporaries: a killed run's are removed, a running writer's kept; signals clean up ---------------


def fake_zip_repo(root: Path, pdf_bytes: bytes = b"%PDF-1.7\n%%EOF\n") -> Path:
    """Scripts and results at a past time, a newer PDF: what make_zip.py needs."""
    past = time.time() - 1000
    for rel in (*SCRIPTS, *make_zip.REPORT_INPUTS):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {rel}\n")
        os.utime(path, (past, past))
    (root / "report" / "report.pdf").write_bytes(pdf_bytes)
    (root / "out").mkdir()
    return root


def leftovers(folder: Path, stem: str, suffix: str) -> tuple[Path, Path, list[Path]]:
    """In `folder`: a killed run's temporary, a running writer's (locked) and look-alikes to keep."""
    stale = folder / f".{stem}.k1ll3d_x{suffix}"
    stale.write_bytes(b"half a file")
    held = folder / f".{stem}.runn1ng0{suffix}"
    held.write_bytes(b"being written")
    others = [folder / f".{stem}x.abcdefgh{suffix}", folder / f".{stem}.short{suffix}",
              folder / f"{stem}.abcdefgh{suffix}", folder / f".{stem}.abcdefgh{suffix}.keep"]
    for path in others:
        path.write_bytes(b"not ours")
    return stale, held, others


def test_zip_removes_a_killed_runs_temporary_but_not_a_running_writers(tmp_path: Path) -> None:
    root = fake_zip_repo(tmp_path / "repo")
    out = root / "out"
    stale, held, others = leftovers(out, "1_abc", ".zip")
    with held.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as build_report.write_whole holds its temporary
        result = run_py([str(TOOLS / "make_zip.py"), "--root", str(root), "--out", str(out),
                         "--penn-key", "abc"])
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert held.exists() and all(path.exists() for path in others)
    assert (out / "1_abc.zip").is_file()


def test_report_build_removes_a_killed_runs_temporary(tmp_path: Path) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    out = tmp_path / "out"
    out.mkdir()
    stale, held, others = leftovers(out, "report", ".pdf")
    with held.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "out/report.pdf"],
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert held.exists() and all(path.exists() for path in others)
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-")


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def stop_midway(args: list[str], begun: Callable[[], bool], sig: int, cwd: Path | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a tool, send it `sig` once `begun()` says it is under way, and return how it ended."""
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: begun() or proc.poll() is not None, "the run to be under way")
        assert proc.poll() is None, f"{args[0]} finished before it could be stopped"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_sigterm_while_zipping_leaves_no_temporary_and_no_zip(tmp_path: Path) -> None:
    pdf = b"%PDF-1.7\n" + np.random.default_rng(0).bytes(24 << 20)  # incompressible: seconds to deflate
    root = fake_zip_repo(tmp_path / "repo", pdf)
    out = root / "out"
    result = stop_midway([str(TOOLS / "make_zip.py"), "--root", str(root), "--out", str(out),
                          "--penn-key", "abc"], lambda: any(out.glob(".1_abc.*.zip")), signal.SIGTERM)
    one_line_error(result, "make_zip.py", 143, "interrupted")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(("sig", "status", "staged"),
                         [(signal.SIGTERM, 143, False), (signal.SIGINT, 130, True)])
def test_signal_during_compile_leaves_the_previous_pdf(tmp_path: Path, sig: int, status: int,
                                                       staged: bool) -> None:
    """Stopped mid-compile: the previous PDF stays, and neither a temporary PDF nor --figures's
    staging folder is left. The signal is sent once the build has begun (a killed run's temporary,
    removed first thing, is gone; with --figures, the staging folder exists)."""
    (tmp_path / "slow.typ").write_text(SLOW_TYP)
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.pdf").write_bytes(b"%PDF- the previous one")
    stale = out / ".report.k1ll3d_x.pdf"
    stale.write_bytes(b"half")
    scratch = tmp_path / "scratch"  # TMPDIR
    scratch.mkdir()
    (tmp_path / "figures").mkdir()
    figures = ["--figures", str(tmp_path / "figures")] if staged else []
    begun = (lambda: any(scratch.iterdir())) if staged else (lambda: not stale.exists())
    result = stop_midway([str(TOOLS / "build_report.py"), "--root", str(tmp_path), *figures, "slow.typ",
                          "out/report.pdf"], begun, sig, cwd=tmp_path, env={"TMPDIR": str(scratch)})
    one_line_error(result, "build_report.py", status, "interrupted", "out/report.pdf")
    assert (out / "report.pdf").read_bytes() == b"%PDF- the previous one"
    assert [p.name for p in out.iterdir()] == ["report.pdf"]
    assert list(scratch.iterdir()) == []


def test_figures_staging_folder_is_removed_after_a_build(tmp_path: Path) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    (tmp_path / "figures").mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "--figures",
                     str(tmp_path / "figures"), "r.typ", "r.pdf"], cwd=tmp_path, env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")
    assert list(scratch.iterdir()) == []


# --- build_report.py: one line for what is wrong; the glyph warning -------------------------------------


def test_report_refuses_a_folder_as_target(tmp_path: Path) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    (tmp_path / "out").mkdir()
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "out"], cwd=tmp_path)
    one_line_error(result, "build_report.py", 2, "out", "is a folder")
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "file").write_text("x")
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "file/r.pdf"],
                    cwd=tmp_path)
    one_line_error(result, "build_report.py", 2, "file/r.pdf")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("epoch", ["99999999999999999999", "253402300800", "-5", "abc", "1e9", "12 34",
                                   "9" * 5000])
def test_report_refuses_an_unusable_source_date_epoch(tmp_path: Path, epoch: str) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "out/r.pdf"],
                    cwd=tmp_path, env={"SOURCE_DATE_EPOCH": epoch})
    line = one_line_error(result, "build_report.py", 2, "SOURCE_DATE_EPOCH")
    assert len(line) < 300
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("epoch", ["0", "1575849600", "253402300799", ""])
def test_report_accepts_every_usable_source_date_epoch(tmp_path: Path, epoch: str) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "r.pdf"],
                    cwd=tmp_path, env={"SOURCE_DATE_EPOCH": epoch})
    assert result.returncode == 0, result.stderr
    pdf = (tmp_path / "r.pdf").read_bytes()
    assert (b"/CreationDate" in pdf) == (epoch != "")
    if epoch == "253402300799":
        assert b"D:99991231235959" in pdf


def test_glyph_coverage_is_read_from_typsts_own_fonts() -> None:
    coverage = build_report.bundled_font_coverage()
    assert coverage is not None, "the bundled fonts were not found in the typst extension"
    assert all(code in coverage for code in range(0x20, 0x7F))
    # Latin with accents, Greek, Cyrillic: shown; CJK and emoji: none of the fonts has them.
    assert build_report.missing_glyphs("Zoë Łódź Nguyễn Ωψ Жанна O'Neil") == []
    assert build_report.missing_glyphs("王小明 😀 Zoë\u200d\ufe0f") == ["小", "明", "王", "😀"]


def test_report_warns_about_characters_its_fonts_lack(tmp_path: Path) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "r.pdf",
                     "--name", "王小明 (Zoë)", "--collaborators", "Ωψ Жанна, 😀"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("build_report.py: warning: --name:")
    assert all(f"{c} (U+{ord(c):04X})" in lines[0] for c in "王小明") and "Zoë" not in lines[0]
    assert lines[1].startswith("build_report.py: warning: --collaborators:")
    assert "😀 (U+1F600)" in lines[1] and "Ж" not in lines[1]
    quiet = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "r.pdf",
                    "--name", "Zoë Łódź", "--collaborators", "Ωψ, Жанна"], cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


# --- check_data.py: data too large to load -------------------------------------------------------------


def test_check_data_turns_memory_error_into_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def too_large(data_dir: Path, name: str) -> None:
        raise MemoryError  # as numpy does for an array that does not fit

    # The scripts' loader (part2_fc.load_dataset), replaced without importing torch.
    monkeypatch.setitem(sys.modules, "part2_fc", types.SimpleNamespace(load_dataset=too_large))
    stamps = tmp_path / "stamps"
    status = check_data.run_main(check_data.main, ["--data-dir", str(tmp_path), "--stamps", str(stamps)])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "random dataset" in err[0] and "too large" in err[0], err
    assert not stamps.exists()
