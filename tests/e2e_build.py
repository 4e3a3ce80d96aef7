"""One end-to-end build, shared by test_report.py and test_submission.py: the student's path from the
four scripts to the zip, run once per pytest session (the first test that asks builds it).

A scratch folder holds only what a student unpacks: the four scripts and the stand-in data (.npy
files). The scripts run there with `python -E -s` (no PYTHONPATH, no user site, so they can import
nothing but each other and the installed libraries), with tiny settings that still switch on every
control and measurement the report reads. tools/build_report.py then builds the PDF (and Typst's
HTML export of the same source, whose text the tests read) from their results, and
tools/make_zip.py packs the zip from that folder. The zip's scripts are the files that ran.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("part1_loss_gradient.py", "part2_fc.py", "part3_line.py", "part3_detection.py")
BUILD_REPORT = REPO_ROOT / "tools" / "build_report.py"
MAKE_ZIP = REPO_ROOT / "tools" / "make_zip.py"
PENN_KEY = "ada"
FRONT = ("--name", "Ada Lovelace", "--penn-key", PENN_KEY, "--collaborators", "none")
# The fewest iterations that still give every key: several seeds (summaries, paired tests, factor
# table, the median seed), every control, a sweep; 3.1 long enough for its fully connected controls to
# reach 100%. Part 2 at rate 3 (the stand-ins' best rates lie
# near it), so that every setting reaches 100% within 400 updates and every ratio is a number.
TINY = {
    "part1_loss_gradient.py": ["--grid", "21"],
    "part2_fc.py": ["--seeds", "3", "--lr", "3", "--max-iters", "400", "--lrs", "1,3,10", "--sweep-seeds", "3",
                    "--control-half-lr", "--control-slope", "--workers", "1", "--quiet"],
    "part3_line.py": ["--seeds", "2", "--max-iters", "200", "--holdout", "16", "--control-fc", "--control-half-lr",
                      "--workers", "1", "--quiet"],
    "part3_detection.py": ["--seeds", "2", "--max-iters", "120", "--control-no-width-head",
                           "--control-width-lr-x10", "--control-frozen-features", "--control-confusable",
                           "--workers", "1", "--quiet"],
}
# Two lanes side by side (the machine has two cores), about equally long; each script in one process.
LANES = (("part3_detection.py", "part1_loss_gradient.py"), ("part2_fc.py", "part3_line.py"))


@dataclass(frozen=True)
class Build:
    work: Path  # the scratch folder: scripts, data/, figures/, report/, the zip
    figures: Path  # the four results files and the figures
    results: dict[str, Any]  # results file name -> its parsed JSON
    pdf: Path
    text: str  # the report's visible text (from the HTML export)
    answer_pages: int | None  # pages before the appendix, as build_report.py prints them
    build_stdout: str
    zip_path: Path
    seconds: dict[str, float]  # wall time per step


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command with a bare environment; fail with its output if it fails."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MPLBACKEND": "Agg"}
    if "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}"
    return result


def html_text(html: str) -> str:
    """The visible text of Typst's HTML export, whitespace collapsed (style markup out)."""
    html = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", html)
    for entity, char in (("&nbsp;", " "), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'),
                         ("&#39;", "'")):
        text = text.replace(entity, char)
    return re.sub(r"\s+", " ", text.replace("\u00a0", " "))


def build_report(figures: Path, out: Path, *front: str, source: Path | None = None) -> dict[str, Any]:
    """Build the PDF and the HTML from the results in `figures` into `out`: their text and the pages
    before the appendix."""
    pdf, html = out / "report.pdf", out / "report.html"
    source = source or REPO_ROOT / "report" / "report.typ"
    built = run([sys.executable, str(BUILD_REPORT), "--figures", str(figures), *front, "--html", str(html),
                 str(source), str(pdf)], REPO_ROOT)
    pages = re.search(r"(\d+) before the appendix", built.stdout)
    return {"pdf": pdf, "text": html_text(html.read_text()), "answer_pages": int(pages.group(1)) if pages else None,
            "stdout": built.stdout}


def _scratch() -> Path:
    work = Path(tempfile.mkdtemp(prefix="e2e-build-"))
    atexit.register(shutil.rmtree, work, True)
    return work


@functools.cache
def build() -> Build:
    """The shared build (once per process)."""
    seconds: dict[str, float] = {}
    work = _scratch()
    for name in SCRIPTS:
        shutil.copy2(REPO_ROOT / name, work / name)
    shutil.copytree(REPO_ROOT / "data", work / "data", ignore=lambda folder, names: [
        n for n in names if (Path(folder, n).is_file() and not n.endswith(".npy")) or n == "__pycache__"])
    (work / "report").mkdir()
    for typ in (REPO_ROOT / "report").glob("*.typ"):
        shutil.copy2(typ, work / "report" / typ.name)

    def lane(scripts: tuple[str, ...]) -> None:
        for script in scripts:
            start = time.perf_counter()
            run([sys.executable, "-E", "-s", script, "--out", "figures", *TINY[script]], work)
            seconds[script] = time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=len(LANES)) as pool:
        for job in [pool.submit(lane, scripts) for scripts in LANES]:
            job.result()
    figures = work / "figures"
    results = {p.name: json.loads(p.read_text()) for p in figures.glob("*.json")}

    start = time.perf_counter()
    built = build_report(figures, work / "report", *FRONT, source=work / "report" / "report.typ")
    seconds["report"] = time.perf_counter() - start
    start = time.perf_counter()
    run([sys.executable, str(MAKE_ZIP), "--penn-key", PENN_KEY, "--root", str(work), "--out", str(work)], REPO_ROOT)
    seconds["zip"] = time.perf_counter() - start
    return Build(work=work, figures=figures, results=results, pdf=built["pdf"], text=built["text"],
                 answer_pages=built["answer_pages"], build_stdout=built["stdout"],
                 zip_path=work / f"1_{PENN_KEY}.zip", seconds=seconds)
