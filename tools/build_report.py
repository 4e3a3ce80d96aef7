"""Compile the Typst report to PDF, atomically: `python tools/build_report.py [SRC] [PDF]`.

Defaults: report/report.typ -> report/report.pdf, with the repository root as Typst's root (so the
source can read figures/*.png and figures/*.json). The PDF is compiled to a temporary file in the
target's folder and renamed into place, so an error or Ctrl-C never leaves a half-written PDF and
the previous one stays whole. Only Typst's bundled fonts are used, so the PDF looks the same on
every machine. SOURCE_DATE_EPOCH (seconds), when set, fixes the PDF's date: same inputs, same bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import typst

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from part1_loss_gradient import atomic_write  # noqa: E402


def page_count(pdf: bytes) -> int | None:
    """Number of pages from the PDF's page tree (None when it cannot be read)."""
    match = re.search(rb"/Type\s*/Pages\s*/Count\s+(\d+)", pdf)
    return int(match.group(1)) if match else None


def compile_atomically(source: Path, target: Path, root: Path) -> bytes:
    """Compile `source` into `target` through a temporary file; return the PDF bytes."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    timestamp = int(epoch) if epoch else None
    # The report leaves out a part whose results file is not there yet (Typst cannot test for a file).
    present = ",".join(sorted(p.name for p in (root / "figures").glob("*.json")))
    compiler = typst.Compiler(str(source), root=str(root), ignore_system_fonts=True,
                              sys_inputs={"results": present})
    pdf, warnings = compiler.compile_with_warnings(format="pdf", timestamp=timestamp)
    for warning in warnings:
        print(getattr(warning, "diagnostic", None) or f"warning: {warning.message}", file=sys.stderr)
    atomic_write(target, lambda tmp: tmp.write_bytes(pdf))
    return pdf


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=Path("report/report.typ"),
                        help="Typst source (default report/report.typ)")
    parser.add_argument("target", nargs="?", type=Path, default=Path("report/report.pdf"),
                        help="PDF to write (default report/report.pdf)")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="folder the source may read files from (default: the repository root)")
    args = parser.parse_args(argv)
    if not args.source.is_file():
        print(f"build_report.py: error: {args.source}: no such file", file=sys.stderr)
        return 2
    args.target.parent.mkdir(parents=True, exist_ok=True)
    try:
        pdf = compile_atomically(args.source, args.target, args.root)
    except typst.TypstError as err:
        print(getattr(err, "diagnostic", None) or f"error: {err}", file=sys.stderr)
        print(f"build_report.py: error: {args.source} did not compile; {args.target} left as it was",
              file=sys.stderr)
        return 1
    pages = page_count(pdf)
    shown = "? pages" if pages is None else f"{pages} page{'s' * (pages != 1)}"
    print(f"wrote {args.target} ({shown}, {len(pdf):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
