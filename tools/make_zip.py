"""Build the submission zip `1_<penn_key>.zip`: the report PDF and the four part scripts, at its root.

    python tools/make_zip.py --penn-key abc123 [--out DIR] [--root DIR] [--check-key]

The zip holds exactly report.pdf (from report/report.pdf) and part1_loss_gradient.py, part2_fc.py,
part3_line.py, part3_detection.py. It refuses, with one line and exit status 2, a penn key that is
not 1 to 64 lowercase letters and digits (so `1_<key>.zip` is always a plain file name that fits),
and a PDF that is missing or older than anything it was built from (the four scripts,
report/report.typ, the four figures/*.json results files), so a stale report is never handed in.
The zip is deterministic (sorted members, fixed timestamps and permissions: same files, same bytes)
and written atomically (a temporary `.1_<key>.XXXXXXXX.zip`, then rename), so a failure leaves any
earlier zip whole. Ctrl-C, SIGTERM and SIGHUP remove the temporary on the way out (exit status 130,
143, 129); a temporary left by a run killed outright is removed by the next run (on Windows, by the
first run 10 minutes later; see build_report.remove_stale).

A named pipe (FIFO), a folder or a device in place of a file it reads is refused in one line (exit
status 2), never read. It borrows only part 1's small command-line helpers (run_main handles the
signals) and build_report.py's reading and atomic-write helpers (no training code runs). It runs on
Linux, macOS and Windows.
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from part1_loss_gradient import InputError, Parser, run_main  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_report import (  # noqa: E402  (reads that never block; atomic writes)
    NotRegularFileError,
    check_regular,
    open_regular,
    write_whole,
)

SCRIPTS = ("part1_loss_gradient.py", "part2_fc.py", "part3_line.py", "part3_detection.py")
REPORT_PDF = "report/report.pdf"
# What the PDF is built from, besides the scripts (paths relative to the repository root).
REPORT_INPUTS = (
    "report/report.typ",
    "figures/part1_loss_gradient.json",
    "figures/part2_fc.json",
    "figures/part3_line.json",
    "figures/part3_detection.json",
)
PENN_KEY = re.compile(r"[a-z0-9]+")
# PennKeys are short (a few characters); this is far above any of them and far below the 255 bytes
# a file name (1_<key>.zip, and the temporary .1_<key>.XXXXXXXX.zip) may hold.
PENN_KEY_MAX = 64
WITHOUT_MAKE = " (without make: the steps in README.md, \"Windows and macOS\")"
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can store: no build time leaks in


def check_penn_key(key: str) -> str:
    """Return `key` if it is 1 to PENN_KEY_MAX lowercase letters and digits, else raise InputError.

    That also rules out everything a file name cannot hold or would read otherwise: `/`, NUL, a
    leading `-` or `.`, spaces, non-ASCII letters, and names too long for the file system.
    """
    if not key:
        raise InputError("--penn-key is empty; give your PennKey, e.g. --penn-key abc123")
    if len(key) > PENN_KEY_MAX:
        raise InputError(f"--penn-key is {len(key)} characters long; a PennKey is at most "
                         f"{PENN_KEY_MAX} (lowercase letters and digits, e.g. abc123)")
    if not PENN_KEY.fullmatch(key):
        raise InputError(f"--penn-key {key!r}: use lowercase letters and digits only, e.g. abc123")
    return key


def check_fresh(root: Path) -> None:
    """Raise InputError unless the PDF and everything it is built from are there, as regular files
    (a named pipe in one's place would block the read), and the PDF is the newest."""
    needed = [REPORT_PDF, *SCRIPTS, *REPORT_INPUTS]
    times, missing = {}, []
    for rel in needed:
        try:
            info = (root / rel).stat()
        except FileNotFoundError:
            missing.append(rel)
            continue
        check_input(root / rel, info.st_mode)
        times[rel] = info.st_mtime_ns
    if missing:
        raise InputError(f"missing in {root}: {', '.join(missing)}; run `make all` first{WITHOUT_MAKE}")
    pdf = root / REPORT_PDF
    if not read_input(pdf, 5).startswith(b"%PDF-"):
        raise InputError(f"{pdf}: not a PDF file; rebuild it with `make all`{WITHOUT_MAKE}")
    newer = [rel for rel in (*SCRIPTS, *REPORT_INPUTS) if times[rel] > times[REPORT_PDF]]
    if newer:
        raise InputError(f"{pdf} is older than {', '.join(newer)}; rebuild it with `make all`{WITHOUT_MAKE}, "
                         "so the report shows what the scripts now compute")


def check_input(path: Path, mode: int) -> None:
    """InputError naming `path` unless `mode` (its st_mode) is a regular file's."""
    try:
        check_regular(path, mode)
    except NotRegularFileError as err:
        raise InputError(err.strerror) from None


def read_input(path: Path, size: int = -1) -> bytes:
    """Up to `size` bytes of `path` (all when -1); InputError naming it when it cannot be read, or
    is not a regular file (never blocks on a named pipe)."""
    try:
        with open_regular(path) as file:
            return file.read(size)
    except NotRegularFileError as err:
        raise InputError(err.strerror) from None
    except OSError as err:
        raise InputError(f"{path}: cannot read it ({err.strerror})") from None


def zip_members(root: Path) -> dict[str, bytes]:
    """Name inside the zip -> file contents: the PDF and the four scripts, all at the zip's root."""
    members = {name: read_input(root / name) for name in SCRIPTS}
    members["report.pdf"] = read_input(root / REPORT_PDF)
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    """Write a deterministic zip of `members` to `path`, atomically (stale temporaries removed first)."""

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as archive:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # Unix, so the permission bits below are honoured
                info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
                archive.writestr(info, members[name], compresslevel=9)

    try:
        write_whole(path, write)
    except OSError as err:
        raise InputError(f"{path}: cannot write the zip ({err.strerror or err})") from None


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="make_zip.py", description="Build the submission zip 1_<penn_key>.zip.")
    parser.add_argument("--penn-key", required=True, help="your PennKey: lowercase letters and digits")
    parser.add_argument("--out", type=Path, default=REPO_ROOT, help="folder for the zip (default: repo root)")
    parser.add_argument("--root", type=Path, default=REPO_ROOT,
                        help="repository holding the scripts, figures/ and report/ (default: this one)")
    parser.add_argument("--check-key", action="store_true",
                        help="only validate --penn-key and exit (make runs this before the long build)")
    args = parser.parse_args(argv)

    key = check_penn_key(args.penn_key)
    if args.check_key:
        return 0
    if not args.out.is_dir():
        raise InputError(f"--out {args.out}: no such folder")
    check_fresh(args.root)
    members = zip_members(args.root)
    target = args.out / f"1_{key}.zip"
    if target.is_dir():
        raise InputError(f"{target}: is a folder; remove it or give another --out")
    write_zip(target, members)
    print(f"wrote {target} ({target.stat().st_size:,} bytes): {', '.join(sorted(members))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))  # Ctrl-C, SIGTERM, SIGHUP: one line, exit 130, 143, 129
