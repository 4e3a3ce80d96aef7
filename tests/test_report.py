"""report/report.typ: the PDF builds from the results the four scripts write, answers the handout's
questions in order within six pages, and every number it prints is the results files' own.

One module-scoped fixture runs the four scripts with tiny settings (every control and measurement
switched on) into a temporary folder and builds the PDF (and Typst's HTML export of the same source,
whose text is read here: the report lays its grids out as plain sequences there) with
tools/build_report.py --figures. The PDF's own text is checked with pdftotext where poppler is
installed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD = REPO_ROOT / "tools" / "build_report.py"
SOURCE = REPO_ROOT / "report" / "report.typ"
QUESTIONS = ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "2.1", "2.2", "2.3", "2.4", "2.5", "3.1", "3.2")
SHORT = {"sigmoid-l2": "sigmoid + L2", "sigmoid-ce": "sigmoid + CE", "relu-l2": "ReLU + L2", "relu-ce": "ReLU + CE"}
# Tiny runs: seconds each, every control and measurement on.
RUNS = {
    "part1_loss_gradient.py": [],
    "part2_fc.py": ["--seeds", "3", "--max-iters", "300", "--lrs", "0.1,1", "--sweep-seeds", "3",
                    "--control-half-lr"],
    "part3_line.py": ["--seeds", "2", "--max-iters", "60", "--holdout", "16", "--control-fc"],
    "part3_detection.py": ["--seeds", "2", "--max-iters", "120", "--control-no-width-head",
                           "--control-width-lr-x10"],
}


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                            env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def html_text(html: str) -> str:
    """The visible text of Typst's HTML export, whitespace collapsed (style markup out)."""
    html = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", html)
    for entity, char in (("&nbsp;", " "), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"')):
        text = text.replace(entity, char)
    return re.sub(r"\s+", " ", text.replace("\u00a0", " "))


def build(figures: Path, out: Path, *front: str) -> dict[str, Any]:
    """Build the PDF and the HTML from the results in `figures`; their text and the pages before
    the appendix (as build_report.py prints them)."""
    pdf, html = out / "report.pdf", out / "report.html"
    built = run([str(BUILD), "--figures", str(figures), *front, "--html", str(html), str(SOURCE), str(pdf)])
    pages = re.search(r"(\d+) before the appendix", built.stdout)
    return {"pdf": pdf, "text": html_text(html.read_text()), "answer_pages": int(pages.group(1)) if pages else None,
            "stdout": built.stdout}


def num(x: float) -> str:
    """As the report writes an iteration count or a median: at most one decimal, thousands grouped."""
    r = round(x, 1)
    return f"{round(r):,}" if r == round(r) else f"{math.floor(r):,}.{round((r - math.floor(r)) * 10)}"


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Tiny runs of the four scripts into one results folder, and the report built from them."""
    figures = tmp_path_factory.mktemp("figures")
    lanes = [["part2_fc.py"], ["part1_loss_gradient.py", "part3_line.py", "part3_detection.py"]]

    def run_lane(lane: list[str]) -> None:
        for script in lane:
            quiet = ["--quiet"] if script != "part1_loss_gradient.py" else []
            run([script, "--out", str(figures), *RUNS[script], *quiet])

    with ThreadPoolExecutor(max_workers=2) as pool:
        for job in [pool.submit(run_lane, lane) for lane in lanes]:
            job.result()
    results = {p.name: json.loads(p.read_text()) for p in figures.glob("*.json")}
    out = tmp_path_factory.mktemp("built")
    return {"figures": figures, "results": results, "out": out,
            **build(figures, out, "--name", "Ada Lovelace", "--penn-key", "ada", "--collaborators", "none")}


def test_pdf_builds_with_the_answers_within_six_pages(small: dict[str, Any]) -> None:
    assert small["pdf"].read_bytes().startswith(b"%PDF")
    assert small["answer_pages"] is not None and 1 <= small["answer_pages"] <= 6, small["stdout"]


def test_questions_come_in_the_handouts_order(small: dict[str, Any]) -> None:
    text = small["text"]
    positions = [text.find(f"{q} ") for q in QUESTIONS]
    assert all(p >= 0 for p in positions), dict(zip(QUESTIONS, positions, strict=True))
    answers = [re.search(rf"\b{re.escape(q)} [A-Z][^.]*\.", text) for q in QUESTIONS]
    assert all(answers), [q for q, a in zip(QUESTIONS, answers, strict=True) if not a]
    starts = [a.start() for a in answers]
    assert starts == sorted(starts)
    assert text.index("Appendix") > starts[-1]


def test_title_block_shows_the_front_matter(small: dict[str, Any]) -> None:
    assert "Ada Lovelace" in small["text"] and "PennKey: ada" in small["text"]


def test_nothing_the_grader_cannot_check(small: dict[str, Any]) -> None:
    """No absolute path, no build commands, tests, checksums or library versions in the report."""
    texts = [small["text"]]
    if shutil.which("pdftotext"):
        texts.append(subprocess.run(["pdftotext", str(small["pdf"]), "-"], capture_output=True, text=True,
                                    check=True).stdout)
    for text in texts:
        assert str(small["figures"]) not in text and str(REPO_ROOT) not in text
        assert not re.search(r"(?<![\w.])/(tmp|home|work|usr|Users)/", text)
        for word in ("make all", "pytest", "sha256", "README", "torch 2", "numpy 2", "not a measurement"):
            assert word not in text, word


def test_every_figure_is_numbered_and_referenced(small: dict[str, Any]) -> None:
    text = small["text"]
    captions = sorted({int(n) for n in re.findall(r"Figure (\d+):", text)})
    assert captions == list(range(1, len(captions) + 1)) and len(captions) >= 10
    body = text[:text.index("Appendix")]
    for n in captions:
        if f"Figure {n}:" in body:
            assert len(re.findall(rf"Figure {n}\b(?!:)", body)) >= 1, f"Figure {n} is never referred to"


def test_part1_numbers_and_gradient_check(small: dict[str, Any]) -> None:
    p1, text = small["results"]["part1_loss_gradient.json"], small["text"]
    assert f"({p1['config']['grid']} points each)" in text
    assert f"{round(100 * p1['saturated_share'])}% of it" in text
    if "gradient_check" in p1:
        assert "central differences" in text and "(check passed)" in text


def test_part2_numbers_are_the_results(small: dict[str, Any]) -> None:
    p2, text = small["results"]["part2_fc.json"], small["text"]
    cap = p2["config"]["max_iters"]
    for key, s in p2["settings"].items():
        m = s["summary"]
        median = f">{cap:,}" if m["median"] is None else num(m["median"])
        assert f"over {len(p2['seeds'])} seeds the median is {median}" in text, key
        assert f"and {m['reached']} reach 100%" in text, key
    sweep = p2["lr_sweep"]
    for key, row in sweep["settings"].items():
        if row["best"]:
            assert f"{SHORT[key]} {row['best']['lr']:g} (median {num(row['best']['median'])}," in text
    best = sweep["ranking_at_best"]
    if len(best) > 1:
        pair = sweep["paired_at_best"][best[0]][best[1]]
        n = pair["wins"] + pair["losses"] + pair["ties"]
        assert (f"{SHORT[best[0]]} needs fewer iterations than {SHORT[best[1]]} for {pair['wins']} of {n} "
                f"paired seeds, more for {pair['losses']}") in text
        assert ("not decided at the 5% level" in text) == (pair["sign_test_p"] >= 0.05)
    for f in p2["factors"]:
        assert f"{f['predicted']:.3g}×" in text or f"{f['predicted']:.2f}×" in text, f["id"]


def test_part3_numbers_are_the_results(small: dict[str, Any]) -> None:
    line, det, text = small["results"]["part3_line.json"], small["results"]["part3_detection.json"], small["text"]
    its = [i for i in line["iterations"] if i is not None]
    if len(its) == len(line["iterations"]):
        assert f"after a median of {num(statistics.median(its))} iterations over {len(its)} seeds" in text
    h = line["holdout"]
    assert f"Trained on {h['n_train']} images, the net classifies {h['n_test']} held-out images" in text
    assert f"({h['dropped_duplicates']} cop" in text
    fc = line["controls"]["fc"]["summary"]
    assert f"({fc['reached']} of {fc['n_seeds']} seeds reach 100%)" in text
    assert "cannot run on part 2’s 4×4 images" in text
    base = det["mean_width_baseline"]
    assert f"mean squared error of {base['mse']:.3g}" in text
    cls = det["classification_summary"]["median"]
    assert f"classification reaches 100% after a median of {num(cls) if cls is not None else '>'}" in text


def test_a_missing_results_file_leaves_a_note(small: dict[str, Any], tmp_path: Path) -> None:
    partial = tmp_path / "figures"
    partial.mkdir()
    for f in small["figures"].iterdir():
        if f.name.startswith(("part1", "part2")):
            shutil.copy2(f, partial / f.name)
    built = build(partial, tmp_path)
    assert "No results yet: part3_line.json is not there" in built["text"]
    assert "No results yet: part3_detection.json is not there" in built["text"]
    assert "2.5 Ranking" in built["text"]


def test_a_median_beyond_the_cap_gives_an_exact_lower_bound(small: dict[str, Any], tmp_path: Path) -> None:
    """A ratio whose numerator's median is not reached prints cap / denominator rounded down; part 1's
    results without a gradient check (an older part 1) build too, without the sentence."""
    figures = tmp_path / "figures"
    shutil.copytree(small["figures"], figures)
    p1 = json.loads((figures / "part1_loss_gradient.json").read_text())
    p1.pop("gradient_check", None)
    (figures / "part1_loss_gradient.json").write_text(json.dumps(p1))
    p2 = json.loads((figures / "part2_fc.json").read_text())
    cap = p2["config"]["max_iters"]
    for key, median in (("sigmoid-l2", None), ("sigmoid-ce", 137.5)):
        p2["settings"][key]["summary"]["median"] = median
    row = next(f for f in p2["factors"] if f["id"] == "l2_over_ce_sigmoid")
    row["measured"] = None
    (figures / "part2_fc.json").write_text(json.dumps(p2))
    text = build(figures, tmp_path)["text"]
    bound = math.floor(cap / 137.5 * 100) / 100  # 3 significant digits, rounded down
    assert f">{bound:.2f}×" in text
    assert "the median is 137.5" in text
    assert "central differences" not in text


def test_a_setting_without_a_best_rate_is_paired_against_the_fastest(small: dict[str, Any], tmp_path: Path) -> None:
    """The sweep's paired comparison computed in the report: the fastest setting at its best rate
    against a setting that has no best rate, at the rate of its smallest median."""
    figures = tmp_path / "figures"
    shutil.copytree(small["figures"], figures)
    p2 = json.loads((figures / "part2_fc.json").read_text())
    sweep = p2["lr_sweep"]
    lead = sweep["ranking_at_best"][0]
    other = next(k for k in sweep["settings"] if sweep["settings"][k]["best"] is None)
    lead_its = sweep["settings"][lead]["iterations"][sweep["lrs"].index(sweep["settings"][lead]["best"]["lr"])]
    # `other` never gets there from the first seed, one iteration later than `lead` from the middle
    # ones, and first from the last seed
    designed = [None] + [None if i is None else i + 1 for i in lead_its[1:-1]] + [1]
    row = sweep["settings"][other]
    row["iterations"] = [designed, *row["iterations"][1:]]
    row["median"] = [float(statistics.median(i for i in designed if i is not None))] + [None] * (len(sweep["lrs"]) - 1)
    (figures / "part2_fc.json").write_text(json.dumps(p2))
    wins = sum((a if a is not None else math.inf) < (b if b is not None else math.inf)
               for a, b in zip(lead_its, designed, strict=True))
    losses = sum((a if a is not None else math.inf) > (b if b is not None else math.inf)
                 for a, b in zip(lead_its, designed, strict=True))
    n = wins + losses
    p = min(1.0, 2 * sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n)
    text = build(figures, tmp_path)["text"]
    sentence = (f"than {SHORT[other]} at {sweep['lrs'][0]:g} for {wins} of {len(designed)} paired seeds, "
                f"more for {losses}")
    assert sentence in text
    verdict = text[text.index(sentence):][:len(sentence) + 80]
    assert ("not decided at the 5% level" in verdict) == (p >= 0.05), verdict
