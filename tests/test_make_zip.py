"""tools/make_zip.py: exact contents, determinism, refusals (bad PennKeys, a stale, missing or
irregular PDF, a folder in the zip's place), a named pipe among its inputs (refused, never read),
temporaries (a killed run's removed, a running writer's kept), SIGTERM mid-zip, and the zip built
under simulated Windows and macOS.

Each test works on a small fake repository in a temporary folder (fake scripts, results and a fake
PDF), so it checks the tool itself; the real report's zip is checked end to end elsewhere. Most run
make_zip.main in this process; a few run the tool as a student does, to see its one-line errors,
its signals and the simulated systems.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOL = REPO_ROOT / "tools" / "make_zip.py"
sys.path.insert(0, str(TOOL.parent))
import make_zip  # noqa: E402

try:  # POSIX only; the tests that need them say so
    import fcntl
except ImportError:
    fcntl = None
try:
    import resource
except ImportError:
    resource = None

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
PLATFORM_SIM = REPO_ROOT.parent / "shared" / "platform-sim"  # sitecustomize modules: Windows, macOS


def make_repo(root: Path, pdf_bytes: bytes = PDF_BYTES) -> Path:
    """Fake repository: scripts and results at time T0, the PDF built 10 s later."""
    for rel in (*SCRIPTS, *INPUTS):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# contents of {rel}\n")
        os.utime(path, (T0, T0))
    pdf = root / "report" / "report.pdf"
    pdf.write_bytes(pdf_bytes)
    os.utime(pdf, (T0 + 10, T0 + 10))
    (root / "out").mkdir()
    return root


def zip_main(root: Path, *args: str) -> None:
    """make_zip.main in this process, writing into root/out."""
    assert make_zip.main(["--root", str(root), "--out", str(root / "out"), *args]) == 0


def refusal(root: Path, *args: str) -> str:
    """The InputError message make_zip.main raises (run_main prints it as one line, exit 2)."""
    with pytest.raises(make_zip.InputError) as err:
        zip_main(root, *args)
    return str(err.value)


def run_tool(root: Path, *args: str, system: str | None = None, timeout: float = 20,
             ) -> subprocess.CompletedProcess[str]:
    """The tool as a student runs it (under simulated `system`: "windows" or "macos", the latter
    with macOS's default limit of 256 open files); a run that blocks fails after `timeout` s."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    limits = None
    if system is not None:
        if not (PLATFORM_SIM / system / "sitecustomize.py").is_file():
            pytest.skip(f"no platform simulation at {PLATFORM_SIM / system}")
        env["PYTHONPATH"] = str(PLATFORM_SIM / system)
        if system == "macos" and resource is not None:
            def limits() -> None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    return subprocess.run([sys.executable, str(TOOL), "--root", str(root), "--out", str(root / "out"), *args],
                          env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=limits)


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


def test_zip_holds_exactly_the_pdf_and_the_four_scripts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_repo(tmp_path)
    zip_main(root, "--penn-key", "abc123")
    target = root / "out" / "1_abc123.zip"
    assert str(target) in capsys.readouterr().out
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
    zip_main(root, "--penn-key", "k1")
    first = target.read_bytes()
    os.utime(root / "report" / "report.pdf", (T0 + 99, T0 + 99))  # a later rebuild of the same PDF
    zip_main(root, "--penn-key", "k1")
    assert target.read_bytes() == first


# --- PennKeys: only what the zip's file name can hold ------------------------------------------------


@pytest.mark.parametrize("key", ["", "ABC", "a b", "a/b", "../x", "abc-1", "ab\u00e9", ".abc", "-abc", "a\tb",
                                 "abc\n", "ab\x00c", "a" * 65, "a" * 250])
def test_bad_penn_key_is_refused_and_nothing_written(tmp_path: Path, key: str) -> None:
    root = make_repo(tmp_path)
    assert "--penn-key" in refusal(root, "--penn-key", key)
    with pytest.raises(make_zip.InputError, match="--penn-key"):
        make_zip.main(["--check-key", "--penn-key", key])
    assert list((root / "out").iterdir()) == []
    assert not list(root.rglob("*.zip"))


def test_refusals_are_one_line_and_exit_2_and_the_key_check_needs_no_pdf(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    assert_refused(run_tool(root, "--penn-key", "a/b"), "--penn-key")
    assert "--penn-key" in refusal(root)  # the flag missing
    (root / "report" / "report.pdf").unlink()
    assert make_zip.main(["--check-key", "--penn-key", "abc"]) == 0  # make checks the key first


def test_the_longest_key_makes_a_zip(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    key = "k" * make_zip.PENN_KEY_MAX
    zip_main(root, "--penn-key", key)  # ... and its temporary, 10 characters longer, fits as well
    with zipfile.ZipFile(root / "out" / f"1_{key}.zip") as archive:
        assert "report.pdf" in archive.namelist()


# --- a stale, missing or irregular input is refused, and the earlier zip kept ------------------------


@pytest.mark.parametrize("touched", [*SCRIPTS, "figures/part2_fc.json", "report/report.typ"])
def test_stale_pdf_is_refused_and_earlier_zip_kept(tmp_path: Path, touched: str) -> None:
    root = make_repo(tmp_path)
    zip_main(root, "--penn-key", "abc")
    target = root / "out" / "1_abc.zip"
    before = target.read_bytes()
    path = root / touched
    path.write_text("# changed after the PDF was built\n")
    os.utime(path, (T0 + 20, T0 + 20))
    message = refusal(root, "--penn-key", "abc")
    assert "older than" in message and touched in message
    assert target.read_bytes() == before
    assert sorted(p.name for p in (root / "out").iterdir()) == ["1_abc.zip"]


@pytest.mark.parametrize("removed", ["report/report.pdf", "part3_line.py", "figures/part3_detection.json"])
def test_missing_file_is_refused(tmp_path: Path, removed: str) -> None:
    root = make_repo(tmp_path)
    (root / removed).unlink()
    message = refusal(root, "--penn-key", "abc")
    assert "missing" in message and removed in message
    assert list((root / "out").iterdir()) == []


def test_file_that_is_not_a_pdf_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    pdf = root / "report" / "report.pdf"
    pdf.write_text("not a pdf")
    os.utime(pdf, (T0 + 10, T0 + 10))
    message = refusal(root, "--penn-key", "abc")
    assert "report.pdf" in message and "not a PDF" in message


@contextlib.contextmanager
def released_after(pipe: Path, seconds: float = 5.0) -> Iterator[None]:
    """Should the code under test open the named pipe `pipe` and wait on it (the bug looked for), a
    writer opens and closes it after `seconds`: the read then ends, empty, and the test fails
    instead of hanging."""
    done = threading.Event()

    def release() -> None:
        if not done.wait(seconds):
            with contextlib.suppress(OSError):  # ENXIO: nobody has it open to read
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


@pytest.mark.parametrize("replaced", ["report/report.pdf", "part2_fc.py", "figures/part3_line.json"])
def test_a_named_pipe_among_the_inputs_is_refused_not_read(tmp_path: Path, replaced: str) -> None:
    """Reading a FIFO waits for a writer forever; the tool names it instead (and never opens it)."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs os.mkfifo (POSIX)")
    root = make_repo(tmp_path)
    (root / replaced).unlink()
    os.mkfifo(root / replaced)
    os.utime(root / replaced, (T0, T0))
    with released_after(root / replaced):
        message = refusal(root, "--penn-key", "abc")
    assert replaced in message and "named pipe" in message
    assert list((root / "out").iterdir()) == []


def test_a_folder_as_the_pdf_or_in_the_zips_place_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    (root / "out" / "1_abc.zip").mkdir()
    message = refusal(root, "--penn-key", "abc")
    assert "1_abc.zip" in message and "folder" in message
    assert sorted(p.name for p in (root / "out").iterdir()) == ["1_abc.zip"]
    (root / "report" / "report.pdf").unlink()
    (root / "report" / "report.pdf").mkdir()
    message = refusal(root, "--penn-key", "xyz")
    assert "report.pdf" in message and "folder" in message


def test_missing_out_folder_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    with pytest.raises(make_zip.InputError, match="--out"):
        make_zip.main(["--root", str(root), "--out", str(root / "nope"), "--penn-key", "abc"])
    assert not list(root.rglob("*.zip"))


# --- temporaries and signals -----------------------------------------------------------------------


def leftovers(folder: Path) -> tuple[Path, Path, list[Path]]:
    """In `folder`: a killed run's temporary (an hour old), a running writer's (fresh; to lock where
    fcntl exists) and look-alikes to keep (a named pipe with a temporary's name among them)."""
    stale = folder / ".1_abc.k1ll3d_x.zip"
    stale.write_bytes(b"half a zip")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    held = folder / ".1_abc.runn1ng0.zip"
    held.write_bytes(b"being written")
    others = [folder / ".1_abcx.abcdefgh.zip", folder / ".1_abc.short.zip", folder / "1_abc.abcdefgh.zip"]
    for path in others:
        path.write_bytes(b"not ours")
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / ".1_abc.p1p3p1p3.zip")
        others.append(folder / ".1_abc.p1p3p1p3.zip")
    return stale, held, others


@pytest.mark.skipif(fcntl is None, reason="needs fcntl (POSIX)")
def test_zip_removes_a_killed_runs_temporary_but_not_a_running_writers(tmp_path: Path) -> None:
    root = make_repo(tmp_path)
    stale, held, others = leftovers(root / "out")
    with held.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as build_report.write_whole holds its temporary
        result = run_tool(root, "--penn-key", "abc")
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert held.exists() and all(path.exists() for path in others)
    assert (root / "out" / "1_abc.zip").is_file()


@pytest.mark.parametrize("system", ["windows", "macos"])
def test_zip_under_simulated_windows_and_macos(tmp_path: Path, system: str) -> None:
    """The tool runs without fcntl, SIGHUP and fork (Windows) and under 256 open files (macOS). A
    killed run's temporary goes; a fresh unlocked one stays on Windows (it may be a running writer's:
    there is no lock to tell) and goes on macOS (its missing lock says nobody writes it)."""
    root = make_repo(tmp_path)
    stale, fresh, others = leftovers(root / "out")
    result = run_tool(root, "--penn-key", "abc", system=system)
    assert result.returncode == 0, result.stderr
    with zipfile.ZipFile(root / "out" / "1_abc.zip") as archive:
        assert archive.namelist() == sorted(["report.pdf", *SCRIPTS])
    assert not stale.exists()
    assert fresh.exists() == (system == "windows")
    assert all(path.exists() for path in others)


def test_sigterm_while_zipping_leaves_no_temporary_and_no_zip(tmp_path: Path) -> None:
    pdf = b"%PDF-1.7\n" + os.urandom(24 << 20)  # incompressible: seconds to deflate
    root = make_repo(tmp_path, pdf)
    out = root / "out"
    proc = subprocess.Popen([sys.executable, str(TOOL), "--root", str(root), "--out", str(out), "--penn-key", "abc"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(out.glob(".1_abc.*.zip")) or proc.poll() is not None, "the zip to be under way")
        assert proc.poll() is None, "make_zip.py finished before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 143, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("make_zip.py: ") and "interrupted" in lines[0], stderr
    assert list(out.iterdir()) == []


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)
