"""The build tools (issues 19 and 23): the Makefile, tools/build_report.py and tools/check_data.py
(tools/make_zip.py: tests/test_make_zip.py).

- make passes DATA, NAME, PENN_KEY and COLLABORATORS to the scripts as given (spaces, quotes, `$`),
  checked on a fake repository whose "python" records the arguments it gets and plays a part script;
- a signal to make's process group (Ctrl-C, `kill -- -PGID`, a closed terminal, `timeout`), or a
  SIGTERM to make alone, ends every process within seconds, and keeps the results JSON a script had
  written (make never deletes finished work); the interrupted part reruns at the next make;
- temporaries left by a killed run are removed by the next run, a running writer's never, also
  when a cleanup runs in the moment between a writer creating its temporary and locking it; without
  fcntl (Windows) by age, with files closed before they are renamed or removed;
- a named pipe (FIFO), a folder or a device in place of a file a tool reads is one line naming it,
  exit 2, never a hang; SIGTERM / Ctrl-C stop a build with one line, exit 143 / 130, nothing half-written;
- build_report.py refuses a folder as target and an unusable SOURCE_DATE_EPOCH in one line, and
  warns about title-block characters its fonts cannot show; check_data.py turns a MemoryError into
  one line naming the dataset;
- each tool runs under simulated Windows and macOS (../shared/platform-sim; skipped without it).

The reports are compiled from tiny Typst sources and the fake repository's "python" is a shell
script, so the whole file takes a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TOOLS = REPO_ROOT / "tools"
sys.path.insert(0, str(TOOLS))
import build_report  # noqa: E402
import check_data  # noqa: E402

try:  # POSIX only; the tests that need them say so
    import fcntl
except ImportError:
    fcntl = None
try:
    import resource
except ImportError:
    resource = None

SCRIPTS = ("part1_loss_gradient.py", "part2_fc.py", "part3_line.py", "part3_detection.py")
# Dated as report/report.typ is: only when build_report.py says so (SOURCE_DATE_EPOCH set).
TINY_TYP = ('#set document(date: if sys.inputs.dated == "yes" { auto } else { none })\n'
            '#sys.inputs.name #metadata(2) <appendix-page>\n')
# About half a second of Typst work per compile: time to send a signal while it runs.
SLOW_TYP = "#let n = 0\n#for i in range(3000000) { n += 1 }\n#n\n#metadata(2) <appendix-page>\n"
# The stand-in datasets' files, as the handout names them.
DATA_FILES = {"random": ("random/random_imgs.npy", "random/random_labs.npy"),
              "line": ("line/line_imgs.npy", "line/line_labs.npy"),
              "detection": ("detection/detection_imgs.npy", "detection/detection_labs.npy",
                            "detection/detection_width.npy")}
PLATFORM_SIM = REPO_ROOT.parent / "shared" / "platform-sim"  # sitecustomize modules: Windows, macOS
needs_make = pytest.mark.skipif(shutil.which("make") is None or not Path("/proc/self/stat").exists()
                                or not hasattr(os, "killpg"), reason="needs GNU make, /proc and killpg (Linux)")
needs_flock = pytest.mark.skipif(fcntl is None, reason="needs fcntl (POSIX)")


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


def simulated(system: str | None) -> tuple[dict[str, str], Callable[[], None] | None]:
    """Environment and preexec_fn that make a child Python look like `system` ("windows", "macos";
    None: this machine as it is). macOS gets its default limit of 256 open files."""
    env = {k: v for k, v in os.environ.items() if k not in ("SOURCE_DATE_EPOCH", "PYTHONPATH")}
    if system is None:
        return env, None
    if not (PLATFORM_SIM / system / "sitecustomize.py").is_file():
        pytest.skip(f"no platform simulation at {PLATFORM_SIM / system}")
    env["PYTHONPATH"] = str(PLATFORM_SIM / system)
    if system == "macos" and resource is not None:
        return env, lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    return env, None


def run_py(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None,
           system: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python ARGS` (under simulated `system`); a run that blocks fails after `timeout` s."""
    full, limits = simulated(system)
    full.update(env or {})
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limits)


def fifo(path: Path) -> Path:
    """A named pipe at `path` (whatever was there is removed): opening it to read waits for a writer."""
    if not hasattr(os, "mkfifo"):
        pytest.skip("needs os.mkfifo (POSIX)")
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


@contextlib.contextmanager
def released_after(pipes: list[Path], seconds: float = 5.0) -> Iterator[None]:
    """Should the code under test open one of the named `pipes` and wait on it (the bug looked for),
    a writer opens and closes each after `seconds`: the read then ends, empty, and the test fails
    instead of hanging."""
    done = threading.Event()

    def release() -> None:
        if not done.wait(seconds):
            for pipe in pipes:
                with contextlib.suppress(OSError):  # ENXIO: nobody has it open to read
                    os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))

    thread = threading.Thread(target=release, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


# --- make: values reach the scripts intact ---------------------------------------------------------

FAKE_PYTHON = r"""#!/bin/sh
# Records one call: its arguments, one a line, then a separator.
{ for arg in "$@"; do printf '%s\n' "$arg"; done; printf '%s\n' '--end--'; } >> "$FAKE_PYTHON_LOG"
case "$1" in
tools/check_data.py)  # writes a dataset's stamp only when it changed (here: when there is none)
    mkdir -p build
    for name in random line detection; do [ -e "build/data-$name.json" ] || echo '{}' > "build/data-$name.json"; done ;;
tools/build_report.py)  # writes the PDF, its last argument
    for pdf; do :; done
    echo '%PDF-' > "$pdf" ;;
part*.py)  # a part script: its results JSON first; FAKE_SLOW=<script> then "draws figures" for 30 s,
           # which SIGTERM, SIGHUP or SIGINT end at once (exit 143, 129, 130), as the scripts do
    mkdir -p figures && echo '{}' > "figures/${1%.py}.json"
    if [ "$1" = "${FAKE_SLOW-}" ]; then
        sleep 30 & pid=$!
        trap 'kill $pid; wait $pid; exit 143' TERM
        trap 'kill $pid; wait $pid; exit 129' HUP
        trap 'kill $pid; wait $pid; exit 130' INT
        : > figures/.drawing
        wait $pid
    fi ;;
esac
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


def calls(log: Path) -> list[tuple[str, list[str]]]:
    """The fake python's calls in order: (the script it was given, the other arguments)."""
    found: list[tuple[str, list[str]]] = []
    current: list[str] = []
    for line in log.read_text().splitlines():
        if line == "--end--":
            found.append((current[0], current[1:]))
            current = []
        else:
            current.append(line)
    return found


DATA = "/tmp/my data/it's \"here\" $HOME $(shell echo no)"
NAME = "Jo$hn \"Q\" O'Neil $(shell echo no) $$"
PENN_KEY = "ab$c'd"
COLLABORATORS = "A$b \"B\", C'd"


@needs_make
def test_make_passes_values_with_spaces_quotes_and_dollars_intact(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    log = tmp_path / "calls.txt"
    env = {**os.environ, "FAKE_PYTHON_LOG": str(log)}
    env.pop("NAME", None)
    command = ["make", "-C", str(root), "--no-print-directory",
               "VENV=venv", f"DATA={DATA}", f"NAME={NAME}", f"PENN_KEY={PENN_KEY}",
               f"COLLABORATORS={COLLABORATORS}", "SEEDS2=3", "all"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "syntax error" not in result.stderr
    assert re.search(r"^make all: wall time \d+\.\d s$", result.stdout, re.M), result.stdout

    seen = dict(calls(log))
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


@needs_make
def test_make_takes_name_from_the_command_line_only(tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    env = {**os.environ, "FAKE_PYTHON_LOG": str(tmp_path / "calls.txt"), "NAME": "machine-name"}
    result = subprocess.run(["make", "-C", str(root), "VENV=venv",
                             "build/args-report.txt"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (root / "build" / "args-report.txt").read_text().splitlines()[0] == ""


# --- make: a signal ends everything within seconds; finished work stays ---------------------------


def group_members(pgid: int) -> list[str]:
    """The live processes (zombies aside) of process group `pgid`, as 'pid command' (from /proc)."""
    members = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except OSError:
            continue
        command, fields = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{stat_file.parent.name} {command}")
    return members


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@needs_make
@pytest.mark.parametrize(("sig", "group"), [(signal.SIGTERM, True), (signal.SIGINT, True),
                                            (getattr(signal, "SIGHUP", signal.SIGTERM), True),
                                            (signal.SIGTERM, False)],
                         ids=["SIGTERM-group", "SIGINT-group", "SIGHUP-group", "SIGTERM-make-alone"])
def test_a_signal_to_make_all_ends_every_process_and_keeps_finished_results(tmp_path: Path, sig: int,
                                                                            group: bool) -> None:
    """`make all` stopped while part 2 draws its figures (its JSON written): to the whole group as
    Ctrl-C, `kill -- -PGID`, `timeout` or a closed terminal send it, or SIGTERM to make alone (which
    make passes on to the recipe it runs). Every process of the group ends within seconds, the JSON
    stays, and the next make reruns part 2 (its run did not finish) but not part 1 (it did)."""
    root = fake_repo(tmp_path)
    log = tmp_path / "calls.txt"
    env = {**os.environ, "FAKE_PYTHON_LOG": str(log), "FAKE_SLOW": "part2_fc.py"}
    make = subprocess.Popen(["make", "-C", str(root), "--no-print-directory", "VENV=venv", "all"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: (root / "figures" / ".drawing").exists() or make.poll() is not None, "part 2's figures")
        assert make.poll() is None, make.communicate()
        if group:
            os.killpg(make.pid, sig)
        else:
            os.kill(make.pid, sig)
        make.communicate(timeout=5)
        assert make.returncode != 0
        wait_for(lambda: not group_members(make.pid), "the processes of make's group to end", limit=5)
    finally:
        if group_members(make.pid):
            os.killpg(make.pid, signal.SIGKILL)
    assert (root / "figures" / "part2_fc.json").read_text() == "{}\n"  # finished work is kept
    assert (root / "figures" / "part1_loss_gradient.json").exists()

    env.pop("FAKE_SLOW")
    again = subprocess.run(["make", "-C", str(root), "VENV=venv", "all"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    scripts = [script for script, _ in calls(log)]
    assert scripts.count("part2_fc.py") == 2 and scripts.count("part1_loss_gradient.py") == 1, scripts


@needs_make
def test_make_reruns_a_part_whose_results_are_gone_and_rebuilds_the_pdf_from_results_run_by_hand(
        tmp_path: Path) -> None:
    root = fake_repo(tmp_path)
    log = tmp_path / "calls.txt"
    env = {**os.environ, "FAKE_PYTHON_LOG": str(log)}

    def make_all() -> list[str]:
        done = len(calls(log)) if log.exists() else 0
        assert subprocess.run(["make", "-C", str(root), "VENV=venv", "all"], env=env, capture_output=True,
                              timeout=60).returncode == 0
        return [script for script, _ in calls(log)[done:]]

    assert "part3_line.py" in make_all()
    (root / "figures" / "part3_line.json").unlink()
    assert make_all() == ["tools/check_data.py", "part3_line.py", "tools/build_report.py"]
    (root / "figures" / "part2_fc.json").touch()  # part 2 run by hand, with other flags: the PDF shows it
    assert make_all() == ["tools/check_data.py", "tools/build_report.py"]
    assert make_all() == ["tools/check_data.py"]


# --- temporaries: a killed run's are removed, a running writer's kept; signals clean up ---------------


def leftovers(folder: Path, stem: str, suffix: str) -> tuple[Path, Path, list[Path]]:
    """In `folder`: a killed run's temporary, a running writer's (to lock) and look-alikes to keep
    (among them a named pipe with a temporary's name, which must not be opened: that would block)."""
    stale = folder / f".{stem}.k1ll3d_x{suffix}"
    stale.write_bytes(b"half a file")
    held = folder / f".{stem}.runn1ng0{suffix}"
    held.write_bytes(b"being written")
    others = [folder / f".{stem}x.abcdefgh{suffix}", folder / f".{stem}.short{suffix}",
              folder / f"{stem}.abcdefgh{suffix}", folder / f".{stem}.abcdefgh{suffix}.keep"]
    for path in others:
        path.write_bytes(b"not ours")
    others.append(fifo(folder / f".{stem}.p1p3p1p3{suffix}"))
    return stale, held, others


@needs_flock
def test_report_build_removes_a_killed_runs_temporary_but_not_a_running_writers(tmp_path: Path) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    out = tmp_path / "out"
    out.mkdir()
    stale, held, others = leftovers(out, "report", ".pdf")
    with held.open("rb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as write_whole holds its temporary
        result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "r.typ", "out/report.pdf"],
                        cwd=tmp_path, timeout=20)
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    assert held.exists() and all(path.exists() for path in others)
    assert (out / "report.pdf").read_bytes().startswith(b"%PDF-")


@needs_flock
def test_a_cleanup_in_the_moment_before_a_writer_locks_its_temporary_costs_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs writing into one folder: the other run's cleanup (remove_stale) comes between our
    creating a temporary and locking it, and again while we write. The first may remove the
    unlocked new file; the writer must notice and write through a locked one, so the second
    cleanup finds nothing to remove and the rename succeeds."""
    target = tmp_path / "r.pdf"
    removed_before_lock: list[list[Path]] = []
    mkstemp = tempfile.mkstemp

    def mkstemp_then_cleanup(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = mkstemp(*args, **kwargs)
        if not removed_before_lock:
            removed_before_lock.append(build_report.remove_stale(target))
        return fd, name

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"%PDF-new")
        assert build_report.remove_stale(target) == [], "a cleanup removed the temporary being written"

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_cleanup)
    build_report.write_whole(target, write)
    assert len(removed_before_lock[0]) == 1  # the race did happen
    assert target.read_bytes() == b"%PDF-new"
    assert [p.name for p in tmp_path.iterdir()] == ["r.pdf"]


def windows_file_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Windows does that Linux does not: no fcntl, and a file that is open (here: in this
    process, as /proc/self/fd shows) can be neither renamed nor removed."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd (Linux)")
    monkeypatch.setattr(build_report, "fcntl", None)

    def refuse_if_open(real: Callable[..., None]) -> Callable[..., None]:
        def call(src: str | Path, *args: object) -> None:
            target = os.path.realpath(src)
            for link in Path("/proc/self/fd").iterdir():
                with_target = os.path.realpath(link) if link.is_symlink() else ""
                if with_target == target:
                    raise PermissionError(13, "the file is open (Windows)", str(src))
            real(src, *args)
        return call

    monkeypatch.setattr(os, "replace", refuse_if_open(os.replace))
    monkeypatch.setattr(os, "unlink", refuse_if_open(os.unlink))


def test_without_fcntl_temporaries_are_closed_before_rename_and_removed_by_age(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    windows_file_rules(monkeypatch)
    target = tmp_path / "r.pdf"
    fresh, old = tmp_path / ".r.fr3shfr3.pdf", tmp_path / ".r.0ld0ld0l.pdf"
    fresh.write_bytes(b"a running writer's")
    old.write_bytes(b"a killed run's")
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    build_report.write_whole(target, lambda tmp: tmp.write_bytes(b"%PDF-1"))
    assert target.read_bytes() == b"%PDF-1"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.fr3shfr3.pdf", "r.pdf"]

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        build_report.write_whole(target, fail)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.fr3shfr3.pdf", "r.pdf"]
    assert target.read_bytes() == b"%PDF-1"


def test_without_sighup_and_sigmask_the_staging_folder_is_made_and_removed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows has neither SIGHUP nor pthread_sigmask (the simulation leaves the latter)."""
    for name in ("SIGHUP", "pthread_sigmask"):
        monkeypatch.delattr(signal, name, raising=False)
    assert build_report.stop_signals() == [signal.SIGINT, signal.SIGTERM]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with build_report.scratch_folder(True) as folder:
        assert folder is not None and folder.parent == tmp_path and folder.is_dir()
    assert list(tmp_path.iterdir()) == []


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


# --- build_report.py: one line for what is wrong (a FIFO among its inputs too); the glyph warning ------


def build_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """build_report.main(args) in this process, as a finished run (no signal handlers installed)."""
    status = build_report.main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, status, out, err)


@pytest.mark.parametrize("where", ["source", "results", "staged results", "beside the source"])
def test_report_refuses_a_named_pipe_among_what_it_reads(tmp_path: Path, where: str) -> None:
    """Typst reads the source, the .typ files beside it and the results folder's files: a FIFO there
    would hang the build beyond Ctrl-C's reach (Typst reads in native code)."""
    (tmp_path / "report").mkdir()
    (tmp_path / "figures").mkdir()
    (tmp_path / "report" / "r.typ").write_text('#json("/figures/a.json")\n' + TINY_TYP)
    (tmp_path / "figures" / "a.json").write_text("{}")
    pipe = {"source": tmp_path / "report" / "r.typ", "results": tmp_path / "figures" / "a.json",
            "staged results": tmp_path / "staged" / "a.json", "beside the source": tmp_path / "report" / "x.typ",
            }[where]
    pipe.parent.mkdir(exist_ok=True)
    fifo(pipe)
    staged = ["--figures", str(pipe.parent)] if where == "staged results" else []
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), *staged, "report/r.typ",
                     "report/r.pdf"], cwd=tmp_path, timeout=20)
    one_line_error(result, "build_report.py", 2, str(pipe.relative_to(tmp_path)), "named pipe")
    assert not (tmp_path / "report" / "r.pdf").exists()


def test_report_refuses_a_folder_as_target(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    (tmp_path / "out").mkdir()
    result = build_in_process(capsys, "--root", str(tmp_path), str(tmp_path / "r.typ"), str(tmp_path / "out"))
    one_line_error(result, "build_report.py", 2, "out", "is a folder")
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "file").write_text("x")
    result = build_in_process(capsys, "--root", str(tmp_path), str(tmp_path / "r.typ"),
                              str(tmp_path / "file" / "r.pdf"))
    one_line_error(result, "build_report.py", 2, "file/r.pdf")
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("epoch", ["99999999999999999999", "253402300800", "-5", "abc", "1e9", "12 34",
                                   "9" * 5000])
def test_report_refuses_an_unusable_source_date_epoch(tmp_path: Path, epoch: str, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    result = build_in_process(capsys, "--root", str(tmp_path), str(tmp_path / "r.typ"), str(tmp_path / "out/r.pdf"))
    line = one_line_error(result, "build_report.py", 2, "SOURCE_DATE_EPOCH")
    assert len(line) < 300
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("epoch", ["0", "1575849600", "253402300799", ""])
def test_report_accepts_every_usable_source_date_epoch(tmp_path: Path, epoch: str, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    result = build_in_process(capsys, "--root", str(tmp_path), str(tmp_path / "r.typ"), str(tmp_path / "r.pdf"))
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


def test_report_warns_about_characters_its_fonts_lack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.typ").write_text(TINY_TYP)
    args = ["--root", str(tmp_path), str(tmp_path / "r.typ"), str(tmp_path / "r.pdf")]
    result = build_in_process(capsys, *args, "--name", "王小明 (Zoë)", "--collaborators", "Ωψ Жанна, 😀")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("build_report.py: warning: --name:")
    assert all(f"{c} (U+{ord(c):04X})" in lines[0] for c in "王小明") and "Zoë" not in lines[0]
    assert lines[1].startswith("build_report.py: warning: --collaborators:")
    assert "😀 (U+1F600)" in lines[1] and "Ж" not in lines[1]
    quiet = build_in_process(capsys, *args, "--name", "Zoë Łódź", "--collaborators", "Ωψ, Жанна")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


# --- check_data.py: reads that never block; data too large to load ------------------------------------


def stamp_for(data_dir: Path, name: str) -> dict[str, object]:
    """The record check_data.py keeps for dataset `name`, its sha256 computed here with hashlib."""
    return {"data_dir": str(data_dir), "provenance": "stand-in",
            "sha256": {rel: hashlib.sha256((data_dir / rel).read_bytes()).hexdigest() for rel in DATA_FILES[name]}}


@pytest.mark.parametrize("kind", ["named pipe", "folder", "device"])
def test_check_data_refuses_what_is_not_a_file_in_place_of_a_npy(bad_data_dir: Callable[[], Path],
                                                                 tmp_path: Path, kind: str) -> None:
    """Refused before the loader runs: a FIFO would block it forever, a device feed it without end."""
    data = bad_data_dir()
    path = data / "line" / "line_imgs.npy"
    path.unlink()
    if kind == "named pipe":
        fifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to(os.devnull)
    with released_after([path]), pytest.raises(check_data.InputError) as err:
        check_data.main(["--data-dir", str(data), "--stamps", str(tmp_path / "st")])
    assert str(path) in str(err.value) and kind in str(err.value), err.value
    assert not (tmp_path / "st").exists()


def test_check_data_never_blocks_on_a_named_pipe_as_stamp_or_as_a_stamped_file(
        bad_data_dir: Callable[[], Path], tmp_path: Path) -> None:
    """The quick path (stamps whose files still have their sha256) reads the stamps and hashes the
    files they list: random's stamp lists a file now a FIFO, line's stamp is itself a FIFO."""
    data = bad_data_dir()
    stamps = tmp_path / "st"
    stamps.mkdir()
    for name in DATA_FILES:
        (stamps / f"data-{name}.json").write_text(json.dumps(stamp_for(data, name)))
    pipes = [fifo(data / "random" / "random_imgs.npy"), fifo(stamps / "data-line.json")]
    with released_after(pipes), pytest.raises(check_data.InputError) as err:
        check_data.main(["--data-dir", str(data), "--stamps", str(stamps)])
    assert "random_imgs.npy" in str(err.value) and "named pipe" in str(err.value), err.value


def test_check_data_checks_the_stand_ins_and_keeps_a_stamp_for_each(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """With the scripts' own loader (part2_fc.load_dataset); then the quick path, stamps untouched."""
    data = REPO_ROOT / "data"
    assert check_data.main(["--data-dir", str(data), "--stamps", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("stand-in") == 3
    for name in DATA_FILES:
        stamp = tmp_path / f"data-{name}.json"
        assert json.loads(stamp.read_text()) == stamp_for(data, name)
        os.utime(stamp, (1_000_000_000, 1_000_000_000))
    assert check_data.main(["--data-dir", str(data), "--stamps", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("unchanged since its last check") == 3
    assert {p.stat().st_mtime for p in tmp_path.iterdir()} == {1_000_000_000}


@pytest.mark.parametrize("system", ["windows", "macos"])
def test_check_data_quick_path_runs_under_simulated_windows_and_macos(tmp_path: Path, system: str) -> None:
    """Stamps whose files still have the recorded sha256: reported unchanged, without the loader."""
    data = REPO_ROOT / "data"
    for name in DATA_FILES:
        build_report.write_whole(tmp_path / f"data-{name}.json",
                                 lambda tmp, name=name: tmp.write_text(json.dumps(stamp_for(data, name))))
    result = run_py([str(TOOLS / "check_data.py"), "--data-dir", str(data), "--stamps", str(tmp_path)],
                    system=system, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("unchanged since its last check") == 3, result.stdout


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


# --- build_report.py under simulated Windows and macOS ----------------------------------------------


@pytest.mark.parametrize("system", ["windows", "macos"])
def test_report_builds_under_simulated_windows_and_macos(tmp_path: Path, system: str) -> None:
    """Without fcntl and SIGHUP (Windows) and under 256 open files (macOS): a build with --figures
    (the staging folder) that removes a killed run's temporary, an hour old (on Windows by its age,
    on macOS by its missing lock)."""
    (tmp_path / "r.typ").write_text(TINY_TYP)
    (tmp_path / "figures").mkdir()
    stale = tmp_path / ".r.k1ll3d_x.pdf"
    stale.write_bytes(b"half")
    hour_ago = time.time() - 3600
    os.utime(stale, (hour_ago, hour_ago))
    result = run_py([str(TOOLS / "build_report.py"), "--root", str(tmp_path), "--figures", str(tmp_path / "figures"),
                     "r.typ", "r.pdf"], cwd=tmp_path, system=system, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF-")
    assert not stale.exists()
