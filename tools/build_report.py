"""Compile the Typst report to PDF, atomically: `python tools/build_report.py [SRC] [PDF]`.

Defaults: report/report.typ -> report/report.pdf, with the repository root as Typst's root (so the
source can read figures/*.png and figures/*.json). The PDF is compiled to a temporary file in the
target's folder and renamed into place, so an error or Ctrl-C never leaves a half-written PDF and
the previous one stays whole. Only Typst's bundled fonts are used, so the PDF looks the same on
every machine.

Front matter: --name, --penn-key and --collaborators (make all NAME=... PENN_KEY=...
COLLABORATORS=...) go to the title block; left empty, the report prints a marked placeholder.

Same results, same bytes: the PDF carries no creation date unless SOURCE_DATE_EPOCH (seconds) is
set, in which case that date is written. Nothing else in the PDF depends on the clock, so a rebuild
from the same results files (and the same front matter) gives the same PDF byte for byte.

--figures DIR builds from the results in another folder (for instance results edited by hand):
the sources and DIR's results and figures are copied into a temporary Typst root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import typst

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from part1_loss_gradient import atomic_write  # noqa: E402


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
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    timestamp = int(epoch) if epoch.isdigit() else None
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    if not args.source.is_file():
        print(f"build_report.py: error: {args.source}: no such file", file=sys.stderr)
        return 2
    if args.figures is not None and not args.figures.is_dir():
        print(f"build_report.py: error: --figures {args.figures}: no such folder", file=sys.stderr)
        return 2
    front = {"name": args.name, "penn_key": args.penn_key, "collaborators": args.collaborators}
    args.target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        source, root = args.source.resolve(), args.root.resolve()
        if args.figures is not None:
            source, root = staged_root(source, args.figures.resolve(), Path(tmp) / "root"), Path(tmp) / "root"
        try:
            pdf = compile_report(source, root, **front)
            html = compile_report(source, root, fmt="html", **front) if args.html else None
            answers = answer_pages(source, root, **front)
        except typst.TypstError as err:
            print(getattr(err, "diagnostic", None) or f"error: {err}", file=sys.stderr)
            print(f"build_report.py: error: {args.source} did not compile; {args.target} left as it was",
                  file=sys.stderr)
            return 1
    atomic_write(args.target, lambda tmp: tmp.write_bytes(pdf))
    if html is not None:
        atomic_write(args.html, lambda tmp: tmp.write_bytes(html))
    pages = page_count(pdf)
    shown = "? pages" if pages is None else f"{pages} page{'s' * (pages != 1)}"
    before = "" if answers is None else f"; {answers} before the appendix"
    print(f"wrote {args.target} ({shown}{before}, {len(pdf):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
