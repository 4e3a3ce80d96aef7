"""Compile the Typst report to PDF, atomically: `python tools/build_report.py [SRC] [PDF]`.

Defaults: report/report.typ -> report/report.pdf, with the repository root as Typst's root (so the
source can read figures/*.png and figures/*.json). The PDF is compiled to a temporary file in the
target's folder and renamed into place, so an error, Ctrl-C, SIGTERM or SIGHUP never leaves a
half-written PDF and the previous one stays whole (one line on stderr; exit status 130, 143, 129);
a temporary left by a run killed outright (.report.XXXXXXXX.pdf) is removed by the next run (on
Windows, by the first run 10 minutes later). A target that cannot be written (a folder, say), and a
named pipe (FIFO), device or socket in place of a file the report reads (the source, the .typ files
beside it, the results folder's files), are one line naming them, exit status 2: Typst would wait
on a FIFO forever. Only Typst's bundled fonts are used, so the PDF looks the same on every machine;
it runs on Linux, macOS and Windows.

Front matter: --name, --penn-key and --collaborators (make all NAME=... PENN_KEY=...
COLLABORATORS=...) go to the title block; left empty, the report prints a marked placeholder. A
character that none of the bundled fonts has (Chinese, Japanese, Korean, emoji, ...) would show as
an empty box: the build says so in one warning naming the characters, and goes on.

Same results, same bytes: the PDF carries no creation date unless SOURCE_DATE_EPOCH (whole seconds
since 1970, up to the end of year 9999) is set, in which case that date is written; any other value
is refused. Nothing else in the PDF depends on the clock, so a rebuild from the same results files
(and the same front matter) gives the same PDF byte for byte.

--figures DIR builds from the results in another folder (for instance results edited by hand):
the sources and DIR's results and figures are copied into a temporary Typst root.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import mmap
import os
import re
import shutil
import signal
import stat
import struct
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import typst

try:  # POSIX (Linux, macOS): locks mark a temporary file that a running writer holds
    import fcntl
except ImportError:  # Windows: see remove_stale
    fcntl = None

ROOT = Path(__file__).resolve().parent.parent
PROG = "build_report.py"
MAX_EPOCH = 253402300799  # 9999-12-31 23:59:59 UTC, the last second a PDF date can hold


# ---------------------------------------------------------------------------------------------
# Plumbing shared with tools/make_zip.py and tools/check_data.py. Portable: fcntl and SIGHUP are
# used where they exist (Linux, macOS), with a fallback where they do not (Windows).
# - open_regular(path) opens a file to read it, refusing (NotRegularFileError, naming it) a named
#   pipe (FIFO), a folder, a device or a socket in its place: reading one would block or never end;
# - write_whole(path, write) writes through a temporary `.<stem>.XXXXXXXX<suffix>` in the target's
#   folder and renames it into place: the target is the old file or the new one, never half of one;
# - remove_stale(path) removes the temporaries of that pattern that a run killed outright (SIGKILL,
#   a power cut) left behind, and never a running writer's: where fcntl exists, the writer holds an
#   exclusive lock (flock) on its temporary from before its first byte to after the rename; on
#   Windows, a file another process holds open cannot be removed, and only a temporary untouched for
#   STALE_AFTER seconds counts as left behind. write_whole calls it first;
# - handle_signals() makes SIGTERM and SIGHUP (where it exists) behave like Ctrl-C
#   (KeyboardInterrupt, so temporaries are removed on the way out); interrupted_status() is then
#   128 + the signal: 130, 143 or 129.
# ---------------------------------------------------------------------------------------------

STALE_AFTER = 600  # s: without locks (Windows), a temporary this long untouched is a killed run's
_received: list[int] = []


def _raise_interrupt(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def stop_signals() -> list[int]:
    """The signals that stop a run: Ctrl-C, SIGTERM, and SIGHUP (a closed terminal) where it exists."""
    return [signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])]


def handle_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread; a signal the caller
    ignores (nohup ignores SIGHUP, a shell's background job SIGINT) stays ignored."""
    for sig in stop_signals():
        if signal.getsignal(sig) is not signal.SIG_IGN:
            signal.signal(sig, _raise_interrupt)


def interrupted_status() -> int:
    """Exit status for a run stopped by KeyboardInterrupt: 128 + the signal's number (Ctrl-C: 130)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


class NotRegularFileError(OSError):
    """A path to read holds something other than a regular file (a FIFO, a folder, a device)."""


def _irregular(mode: int) -> str:
    """What a file of this st_mode is when it is not a regular file ("" when it is one)."""
    kinds = ((stat.S_ISREG, ""), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def check_regular(path: Path, mode: int) -> None:
    """Raise NotRegularFileError naming `path` unless `mode` (its st_mode) is a regular file's."""
    kind = _irregular(mode)
    if kind:
        raise NotRegularFileError(errno.EINVAL, f"{path}: is {kind}, not a regular file", str(path))


def open_regular(path: Path) -> BinaryIO:
    """Open `path` to read in binary; NotRegularFileError if it is not a regular file, without blocking.

    The type is checked before opening (a FIFO is never opened), and again on the open file, which
    is opened non-blocking where that exists: a FIFO put in its place meanwhile would otherwise
    wait for a writer forever. (For a regular file O_NONBLOCK changes nothing.)
    """
    check_regular(path, os.stat(path).st_mode)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        check_regular(path, os.fstat(fd).st_mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _temporary_pattern(path: Path) -> re.Pattern[str]:
    """Names tempfile.mkstemp gives for prefix `.<stem>.` and suffix `<suffix>` (8 random characters)."""
    return re.compile(rf"\.{re.escape(path.stem)}\.[a-z0-9_]{{8}}{re.escape(path.suffix)}")


def _same_file(fd: int, name: Path) -> bool:
    """True when `name` still names the file open as `fd` (not removed, not replaced)."""
    try:
        return os.path.samestat(os.stat(name, follow_symlinks=False), os.fstat(fd))
    except OSError:
        return False


def _remove_if_unlocked(candidate: Path) -> bool:
    """Where fcntl exists: remove `candidate` unless a writer holds its lock. The file checked is the
    one removed: the lock is taken on it, and the name must still be that file once it is ours."""
    try:
        fd = os.open(candidate, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False  # gone meanwhile, or not ours to open: leave it
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _same_file(fd, candidate):
            return False
        candidate.unlink()
        return True
    except OSError:  # a running writer holds it (BlockingIOError), or it went meanwhile
        return False
    finally:
        os.close(fd)


def _remove_if_old(candidate: Path) -> bool:
    """Without fcntl (Windows): remove `candidate` when untouched for STALE_AFTER seconds. A running
    writer keeps it open, and Windows refuses to remove an open file (PermissionError)."""
    try:
        info = os.stat(candidate, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode) or time.time() - info.st_mtime < STALE_AFTER:
            return False
        candidate.unlink()
        return True
    except OSError:
        return False


def remove_stale(path: Path) -> list[Path]:
    """Remove the temporaries of `path` that a killed run left (see above); return those removed.
    Only regular files are looked at: a FIFO or a folder of that name is left alone, never opened."""
    path = Path(path)
    pattern = _temporary_pattern(path)
    try:
        with os.scandir(path.parent) as entries:
            candidates = [Path(e.path) for e in entries
                          if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False)]
    except OSError:
        return []
    remove = _remove_if_old if fcntl is None else _remove_if_unlocked
    return [candidate for candidate in candidates if remove(candidate)]


def _new_temporary(path: Path) -> tuple[int, Path]:
    """A new temporary for `path` in its folder, open, and locked where fcntl exists.

    Another run's remove_stale may lock and remove the new file in the moment between its creation
    and our lock; the name is then gone (or another file's) once the lock is ours, and we make another.
    """
    for _ in range(100):
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
        if fcntl is None:
            return fd, Path(name)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            Path(name).unlink(missing_ok=True)
            raise
        if _same_file(fd, Path(name)):
            return fd, Path(name)
        os.close(fd)
    raise OSError(errno.EAGAIN, "another run keeps removing the temporary files", str(path))


def write_whole(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` through a temporary file in its folder, then rename it into place.

    Stale temporaries of `path` are removed first. On any exception (KeyboardInterrupt included)
    the temporary is removed and the previous `path` stays as it was.
    """
    path = Path(path)
    remove_stale(path)
    fd, tmp = _new_temporary(path)
    renamed = False
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        if fcntl is None:  # Windows renames no file that is open (and there is no lock to keep)
            os.close(fd)
            fd = -1
        os.replace(tmp, path)
        renamed = True
    finally:
        if fd >= 0:
            os.close(fd)
        if not renamed:  # closed first: Windows removes no open file
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------


class BuildError(Exception):
    """Bad input (a flag, the environment, a target): one line naming it, exit status 2."""


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH as whole seconds, None when unset or empty; BuildError when not usable."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return None
    if not re.fullmatch(r"[0-9]{1,12}", text) or int(text) > MAX_EPOCH:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise BuildError(f"SOURCE_DATE_EPOCH={shown!r}: give whole seconds since 1970-01-01 UTC, from 0 to "
                         f"{MAX_EPOCH} (the end of year 9999), or leave it unset for an undated PDF")
    return int(text)


def _cmap_coverage(font: bytes, cmap: int) -> set[int]:
    """Code points that the cmap table at offset `cmap` of an sfnt font maps to a real glyph (not 0).

    Reads the Unicode subtables of formats 12 (full Unicode) and 4 (the Basic Multilingual Plane).
    """
    covered: set[int] = set()
    (count,) = struct.unpack_from(">H", font, cmap + 2)
    for i in range(count):
        platform, encoding, offset = struct.unpack_from(">HHI", font, cmap + 4 + 8 * i)
        if (platform, encoding) not in {(0, 3), (0, 4), (0, 6), (3, 1), (3, 10)}:
            continue
        table = cmap + offset
        (fmt,) = struct.unpack_from(">H", font, table)
        if fmt == 12:
            (groups,) = struct.unpack_from(">I", font, table + 12)
            for g in range(groups):
                first, last, glyph = struct.unpack_from(">III", font, table + 16 + 12 * g)
                covered.update(range(first + (glyph == 0), last + 1))
        elif fmt == 4:
            (segments,) = struct.unpack_from(">H", font, table + 6)
            segments //= 2
            ends = struct.unpack_from(f">{segments}H", font, table + 14)
            starts = struct.unpack_from(f">{segments}H", font, table + 16 + 2 * segments)
            deltas = struct.unpack_from(f">{segments}h", font, table + 16 + 4 * segments)
            range_at = table + 16 + 6 * segments
            offsets = struct.unpack_from(f">{segments}H", font, range_at)
            for k, (first, last, delta, offset) in enumerate(zip(starts, ends, deltas, offsets, strict=True)):
                for code in range(first, min(last, 0xFFFE) + 1):
                    if offset == 0:
                        glyph = (code + delta) & 0xFFFF
                    else:
                        at = range_at + 2 * k + offset + 2 * (code - first)
                        (glyph,) = struct.unpack_from(">H", font, at)
                        glyph = (glyph + delta) & 0xFFFF if glyph else 0
                    if glyph:
                        covered.add(code)
    return covered


@functools.lru_cache(maxsize=1)
def bundled_font_coverage() -> frozenset[int] | None:
    """Code points that at least one of Typst's bundled fonts has a glyph for; None if unknown.

    The typst package embeds its fonts (New Computer Modern, its Math, Libertinus Serif, DejaVu Sans
    Mono) in its compiled extension and exposes no file for them (typst.Fonts gives path None), and
    Typst does not warn about a missing glyph. So the fonts are found in the extension itself, by
    their sfnt headers (a consistent table directory that has a cmap table), and their cmap tables
    read. Typst falls back to any bundled font for a character the chosen font lacks, so the union
    counts. The fonts lie together; the scan stops where their first copy repeats.
    """
    covered: set[int] = set()
    seen: set[bytes] = set()
    try:
        from typst import _typst

        with open(_typst.__file__, "rb") as file, \
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for match in re.finditer(rb"(?:OTTO|\x00\x01\x00\x00)\x00[\x04-\x40]", data):
                start = match.start()
                tables, search_range, selector, shift = struct.unpack_from(">4H", data, start + 4)
                if search_range != 16 << selector or not 1 << selector <= tables < 2 << selector \
                        or shift != tables * 16 - search_range:
                    continue
                directory = data[start + 12:start + 12 + 16 * tables]
                entries = {tag: offset for tag, _, offset, _ in struct.iter_unpack(">4sIII", directory)}
                if b"cmap" not in entries:
                    continue
                if directory in seen:
                    break
                seen.add(directory)
                covered |= _cmap_coverage(data, start + entries[b"cmap"])
    except Exception:  # a typst build laid out otherwise: fall back to a rule
        return None
    return frozenset(covered) if len(seen) >= 4 and len(covered) > 1000 else None


def _plainly_covered(char: str) -> bool:
    """The rule used when the fonts cannot be read: Latin, Greek, Cyrillic and common punctuation."""
    code = ord(char)
    return code < 0x0250 or 0x0370 <= code < 0x0530 or 0x1E00 <= code < 0x2000 or 0x2000 <= code < 0x2070 \
        or 0x20A0 <= code < 0x20C0


def missing_glyphs(text: str) -> list[str]:
    """The characters of `text` that no bundled font can show (they would print as empty boxes).

    Spaces, invisible format characters (joiners, direction marks) and variation selectors are
    not looked up: they print no glyph of their own.
    """
    wanted = sorted({c for c in text if not (" " <= c <= "~") and not c.isspace()
                     and unicodedata.category(c) != "Cf"
                     and not (0xFE00 <= ord(c) <= 0xFE0F or 0xE0100 <= ord(c) <= 0xE01EF)})
    if not wanted:
        return []
    coverage = bundled_font_coverage()
    if coverage is None:
        return [c for c in wanted if not _plainly_covered(c)]
    return [c for c in wanted if ord(c) not in coverage]


def warn_missing_glyphs(front: dict[str, str]) -> None:
    """One line on stderr per title-block field with characters the bundled fonts lack."""
    for key, text in front.items():
        missing = missing_glyphs(text)
        if missing:
            shown = ", ".join(f"{c if c.isprintable() else '?'} (U+{ord(c):04X})" for c in missing)
            flag = "--" + key.replace("_", "-")
            print(f"{PROG}: warning: {flag}: the report's fonts have no glyph for {shown}; "
                  "they show as empty boxes in the PDF", file=sys.stderr)


def page_count(pdf: bytes) -> int | None:
    """Number of pages from the PDF's page tree (None when it cannot be read)."""
    match = re.search(rb"/Type\s*/Pages\s*/Count\s+(\d+)", pdf)
    return int(match.group(1)) if match else None


def report_inputs(root: Path, name: str = "", penn_key: str = "", collaborators: str = "",
                  dated: bool = False) -> dict[str, str]:
    """Typst's sys.inputs: the results files present under root/figures and the front matter.

    The report leaves out a part whose results file is not there (Typst cannot test for a file).
    """
    present = ",".join(sorted(p.name for p in (root / "figures").glob("*.json")))
    return {"results": present, "name": name.strip(), "penn_key": penn_key.strip(),
            "collaborators": collaborators.strip(), "dated": "yes" if dated else "no"}


def compile_report(source: Path, root: Path, fmt: str = "pdf", **front: str) -> bytes:
    """Compile `source` (inside `root`) to `fmt` ("pdf" or "html"); warnings go to stderr."""
    timestamp = source_date_epoch()
    compiler = typst.Compiler(str(source), root=str(root), ignore_system_fonts=True,
                              sys_inputs=report_inputs(root, dated=timestamp is not None, **front))
    kwargs = {"timestamp": timestamp} if timestamp is not None else {}
    output, warnings = compiler.compile_with_warnings(format=fmt, **kwargs)
    for warning in warnings:
        if fmt == "pdf":
            print(getattr(warning, "diagnostic", None) or f"warning: {warning.message}", file=sys.stderr)
    return output


def answer_pages(source: Path, root: Path, **front: str) -> int | None:
    """Pages before the appendix: the report labels the appendix's first page <appendix-page>."""
    found = typst.query(str(source), "<appendix-page>", field="value", one=True, root=str(root),
                        ignore_system_fonts=True, sys_inputs=report_inputs(root, **front))
    return int(found) - 1 if found.strip().isdigit() else None


def staged_root(source: Path, figures: Path, into: Path) -> Path:
    """Copy the report sources and the results folder `figures` into a fresh Typst root `into`."""
    (into / "report").mkdir(parents=True)
    for typ in source.parent.glob("*.typ"):
        shutil.copy2(typ, into / "report" / typ.name)
    shutil.copytree(figures, into / "figures", ignore=shutil.ignore_patterns(".*"))
    return into / "report" / source.name


@contextlib.contextmanager
def scratch_folder(wanted: bool) -> Iterator[Path | None]:
    """A temporary folder (None when not `wanted`), removed on the way out, also on a signal.

    Where signals can be held back (POSIX), they are, from its creation until the `try` that removes
    it has begun, so a signal that arrives meanwhile cannot leave it behind.
    """
    if not wanted:
        yield None
        return
    mask = getattr(signal, "pthread_sigmask", None)  # absent on Windows: the moment stays open there
    held = mask(signal.SIG_BLOCK, stop_signals()) if mask else None
    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="report-"))
        if mask:
            mask(signal.SIG_SETMASK, held)
        yield folder
    finally:
        if mask:
            mask(signal.SIG_SETMASK, held)
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def check_readable_inputs(source: Path, figures: Path) -> None:
    """Raise BuildError naming the first file the report could read that is not a regular file:
    the source, the .typ files beside it, and what the results folder holds (Typst would wait
    forever on a named pipe, beyond the reach of Ctrl-C). Hidden files (temporaries) are not read."""
    try:
        check_regular(source, source.stat().st_mode)
    except NotRegularFileError as err:
        raise BuildError(err.strerror) from None
    except OSError as err:
        raise BuildError(f"{source}: no such file" if isinstance(err, FileNotFoundError)
                         else f"{source}: cannot read it ({err.strerror})") from None
    for folder, wanted in ((source.parent, "*.typ"), (figures, "*")):
        for path in sorted(folder.glob(wanted)):
            try:
                info = path.stat()
            except OSError:
                continue  # a dangling link: Typst names it if the report reads it
            if not (path.name.startswith(".") or stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
                raise BuildError(f"{path}: is {_irregular(info.st_mode)}, not a regular file; "
                                 "remove it or put the file there")


def writable_target(path: Path, flag: str) -> None:
    """Raise BuildError unless a file can be renamed to `path` (its folder made if need be)."""
    if path.is_dir():
        raise BuildError(f"{flag}{path}: is a folder; give the PDF file to write, e.g. report/report.pdf")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BuildError(f"{flag}{path}: cannot make its folder {path.parent} ({err.strerror})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise BuildError(f"{flag}{path}: its folder {path.parent} is not writable")


def build(args: argparse.Namespace) -> int:
    if args.figures is not None and not args.figures.is_dir():
        raise BuildError(f"--figures {args.figures}: no such folder")
    check_readable_inputs(args.source, args.root / "figures" if args.figures is None else args.figures)
    source_date_epoch()  # checked before the compile
    writable_target(args.target, "")
    if args.html is not None:
        writable_target(args.html, "--html ")
    front = {"name": args.name, "penn_key": args.penn_key, "collaborators": args.collaborators}
    warn_missing_glyphs(front)
    for target in (args.target, args.html):
        if target is not None:
            remove_stale(target)  # temporaries of a run killed outright
    with scratch_folder(args.figures is not None) as tmp:
        source, root = args.source.resolve(), args.root.resolve()
        if args.figures is not None:
            try:
                source, root = staged_root(source, args.figures.resolve(), tmp / "root"), tmp / "root"
            except OSError as err:  # shutil.Error too: e.g. a FIFO put there since the check
                raise BuildError(f"--figures {args.figures}: cannot copy it ({err})") from None
        try:
            pdf = compile_report(source, root, **front)
            html = compile_report(source, root, fmt="html", **front) if args.html else None
            answers = answer_pages(source, root, **front)
        except typst.TypstError as err:
            print(getattr(err, "diagnostic", None) or f"error: {err}", file=sys.stderr)
            print(f"{PROG}: error: {args.source} did not compile; {args.target} left as it was",
                  file=sys.stderr)
            return 1
    try:
        write_whole(args.target, lambda tmp: tmp.write_bytes(pdf))
        if html is not None:
            write_whole(args.html, lambda tmp: tmp.write_bytes(html))
    except OSError as err:
        print(f"{PROG}: error: cannot write {err.filename or args.target}: {err.strerror or err}",
              file=sys.stderr)
        return 1
    pages = page_count(pdf)
    shown = "? pages" if pages is None else f"{pages} page{'s' * (pages != 1)}"
    before = "" if answers is None else f"; {answers} before the appendix"
    print(f"wrote {args.target} ({shown}{before}, {len(pdf):,} bytes)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=Path("report/report.typ"),
                        help="Typst source (default report/report.typ)")
    parser.add_argument("target", nargs="?", type=Path, default=Path("report/report.pdf"),
                        help="PDF to write (default report/report.pdf)")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="folder the source may read files from (default: the repository root)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="results folder to build from instead of ROOT/figures")
    parser.add_argument("--name", default="", help="the author's name for the title block")
    parser.add_argument("--penn-key", default="", help="the author's PennKey for the title block")
    parser.add_argument("--collaborators", default="",
                        help='collaborators, at most two, as one string ("none" when there are none)')
    parser.add_argument("--html", type=Path, default=None,
                        help="also write Typst's HTML export of the same source and inputs here")
    args = parser.parse_args(argv)
    try:
        return build(args)
    except BuildError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; {args.target} left as it was", file=sys.stderr)
        return interrupted_status()


if __name__ == "__main__":
    handle_signals()
    sys.exit(main())
