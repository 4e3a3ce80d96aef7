"""report/report.typ: the PDF builds from results the scripts measured, holds the handout's sections,
and its wording follows the results (issue 11), whatever they say.

Two sets of results feed the checks:
- `small`: a copy of the repository in a temporary folder (part scripts, data/, report/, tools/)
  where every part script runs with tiny settings; the PDF is built there with tools/build_report.py.
- `edited`: those results with part 2 (and the numbers part 3 compares with) replaced by values
  designed in this file, consistently (per-seed iterations, summaries, ranking, paired shares,
  learning-rate sweep, factors), so that the ranking differs from the usual one: ReLU +
  cross-entropy comes last. Every expected value is computed here from the designed iterations.

The text is read from Typst's HTML export of the same source with the same inputs (the report lays
its grids out as plain sequences there): a PDF stores text as glyph ids, which would need a PDF text
extractor this project does not otherwise need. Page counts and images are read from the PDF.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typst

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tools"))
import build_report  # noqa: E402

SCRIPTS = ("part1_loss_gradient.py", "part2_fc.py", "part3_line.py", "part3_detection.py")
SECTIONS = ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "2.1", "2.2", "2.3", "2.4", "2.5", "3.1", "3.2")
SETTINGS = ("sigmoid-l2", "sigmoid-ce", "relu-l2", "relu-ce")
NAMES = {"sigmoid-l2": "sigmoid + L2", "sigmoid-ce": "sigmoid + cross-entropy", "relu-l2": "ReLU + L2",
         "relu-ce": "ReLU + cross-entropy"}
# Tiny runs, seconds each. The controls run too where the script has their flags.
RUNS = {
    "part1_loss_gradient.py": ["--out", "figures"],
    "part2_fc.py": ["--out", "figures", "--seeds", "2", "--max-iters", "300", "--quiet"],
    "part3_line.py": ["--out", "figures", "--seeds", "2", "--max-iters", "40", "--quiet"],
    "part3_detection.py": ["--out", "figures", "--seeds", "2", "--max-iters", "40", "--quiet"],
}
OPTIONAL = {
    "part2_fc.py": [["--lrs", "0.1,1"], ["--sweep-seeds", "1"], ["--control-half-lr"]],
    "part3_line.py": [["--holdout", "16"]],
    "part3_detection.py": [["--control-no-width-head"], ["--control-width-lr-x10"]],
}


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # no date in the PDF unless a test asks for one
    full = {k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    full.update({"MPLBACKEND": "Agg", **(env or {})})
    result = subprocess.run([sys.executable, *args], cwd=cwd, env=full, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def html_text(html: str) -> str:
    """The visible text of Typst's HTML export, whitespace collapsed (style and math markup out)."""
    html = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    text = re.sub(r"<[^>]+>", " ", html)
    for entity, char in (("&nbsp;", " "), ("&amp;", "&"), ("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"')):
        text = text.replace(entity, char)
    return re.sub(r"\s+", " ", text.replace("\u00a0", " "))


def report_text(root: Path, **front: str) -> str:
    """The report's text for the results under root/figures."""
    html = build_report.compile_report(root / "report" / "report.typ", root, fmt="html", **front)
    return html_text(html.decode())


def bookmarks(pdf: bytes) -> list[str]:
    """The PDF outline's titles (Typst writes one per heading), literal strings only."""
    return [m.decode("latin-1") for m in re.findall(rb"/Title\s*\(((?:[^()\\]|\\.)*)\)", pdf)]


def embedded_images(pdf: bytes) -> int:
    """Image XObjects in the PDF, not counting the soft masks that carry PNG transparency."""
    images = set(re.findall(rb"(\d+) 0 obj\s*<<(?:(?!endobj).)*?/Subtype\s*/Image", pdf, flags=re.S))
    masks = set(re.findall(rb"/SMask\s+(\d+) 0 R", pdf))
    return len(images - masks)


def group(n: float) -> str:
    """As the report writes whole numbers: 10000 -> "10,000"."""
    return f"{round(n):,}"


def sig2(x: float) -> str:
    """Two significant digits, as the report writes ratios: 2.4, 0.41, 12, 1,234."""
    e = math.floor(math.log10(abs(x)))
    if round(x / 10 ** e, 1) >= 10:
        e += 1
    return group(x) if e >= 1 else f"{x:.{1 - e}f}"


def pct(x: float) -> str:
    return f"{round(100 * x)}%"


def stage(into: Path) -> Path:
    """A repository copy holding what the report build needs (and the part scripts with data)."""
    for script in SCRIPTS:
        if (REPO_ROOT / script).is_file():
            shutil.copy2(REPO_ROOT / script, into / script)
    shutil.copytree(REPO_ROOT / "data", into / "data", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO_ROOT / "report", into / "report", ignore=shutil.ignore_patterns("*.pdf", ".*"))
    (into / "tools").mkdir()
    shutil.copy2(REPO_ROOT / "tools" / "build_report.py", into / "tools" / "build_report.py")
    (into / "figures").mkdir()
    return into


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Results of tiny runs of the four scripts and the PDF built from them."""
    root = stage(tmp_path_factory.mktemp("repo"))

    def args_of(script: str) -> list[str]:
        source = (root / script).read_text()
        extra = [a for option in OPTIONAL.get(script, []) if option[0] in source for a in option]
        return [script, *RUNS[script], *extra]

    # two lanes on the two cores: part 2, and the rest
    lanes = [["part2_fc.py"], ["part1_loss_gradient.py", "part3_line.py", "part3_detection.py"]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(lambda lane=lane: [run(args_of(s), root) for s in lane]) for lane in lanes]:
            done.result()
    built = run(["tools/build_report.py"], root)
    results = {p.name: json.loads(p.read_text()) for p in (root / "figures").glob("*.json")}
    return {"root": root, "stdout": built.stdout, "pdf": (root / "report" / "report.pdf").read_bytes(),
            "results": results, "text": report_text(root)}


# ---------------------------------------------------------------------------------------------
# Results designed in this file: the ranking is not the usual one
# ---------------------------------------------------------------------------------------------

SEEDS = [0, 1, 2, 3, 4]
DESIGN = {  # iterations to 100% per seed; None: not reached. Fastest first, ReLU + CE last.
    "sigmoid-l2": [100, 120, 140, 160, 180],
    "sigmoid-ce": [300, 320, 340, 360, None],
    "relu-l2": [500, 600, 700, None, None],
    "relu-ce": [900, 1000, 1100, 1200, None],
}
HALF_LR = {"sigmoid-ce": [620, 640, 660, 700, None], "relu-ce": [1800, 2100, None, None, None]}
LRS = [0.1, 1.0, 10.0]
SWEEP_MEDIANS = {"sigmoid-l2": [140, 40, None], "sigmoid-ce": [340, 50, None], "relu-l2": [700, 30, None],
                 "relu-ce": [1100, 90, 20]}
LINE_MEDIAN, CLS_MEDIAN, DET_MEDIAN, TOLERANCE, WORST = 50, 100, 1000, 0.25, 0.249996
CAP = 10_000


def lower_quantile(values: list[int | None], q: float) -> float | None:
    """Order statistic ceil(q n) of the seeds, not reached counting as slowest (None there)."""
    ranked = sorted(values, key=lambda v: math.inf if v is None else v)
    value = ranked[max(math.ceil(q * len(ranked)) - 1, 0)]
    return None if value is None else float(value)


def summary(values: list[int | None]) -> dict[str, Any]:
    reached = sorted(v for v in values if v is not None)
    return {"n_seeds": len(values), "reached": len(reached), "reach_rate": len(reached) / len(values),
            "diverged": 0, "median": lower_quantile(values, 0.5), "q1": lower_quantile(values, 0.25),
            "q3": lower_quantile(values, 0.75), "p10": lower_quantile(values, 0.1),
            "p90": lower_quantile(values, 0.9), "min": reached[0] if reached else None,
            "max_reached": reached[-1] if reached else None,
            "mean_reached": sum(reached) / len(reached) if reached else None}


def rank_value(values: list[int | None]) -> float:
    m = lower_quantile(values, 0.5)
    return math.inf if m is None else m


def expected_order() -> list[str]:
    return sorted(SETTINGS, key=lambda k: (rank_value(DESIGN[k]), -summary(DESIGN[k])["reach_rate"]))


def designed_part2(p2: dict[str, Any]) -> dict[str, Any]:
    """Part 2's results with every number the report reads replaced by the design above."""
    p2 = copy.deepcopy(p2)
    n = len(SEEDS)
    p2["seeds"] = SEEDS
    p2["config"]["seeds"] = n
    p2["config"]["max_iters"] = CAP
    inf = math.inf
    for key, its in DESIGN.items():
        s = p2["settings"][key]
        s["iterations"] = its
        s["diverged"] = [False] * n
        s["diverged_at"] = [None] * n
        s["final_accuracy"] = [1.0 if i is not None else 0.953125 for i in its]
        s["final_loss"] = [0.05] * n
        s["summary"] = summary(its)
        order = sorted(range(n), key=lambda i: (inf if its[i] is None else its[i], i))
        median_seed = order[(n - 1) // 2]
        s["single"].update({"seed": SEEDS[median_seed], "iterations": its[median_seed], "diverged_at": None,
                            "final_accuracy": 1.0 if its[median_seed] is not None else 0.953125,
                            "final_loss": 0.05,
                            "percentile": sum(1 for v in its if v is not None and v < its[median_seed]) / n})
        dead = [1 if (s["activation"] == "relu" and its[i] is None) else 0 for i in range(n)]
        s["dead_units"], s["dead_units_start"] = dead, [0] * n
        missed = [i for i in range(n) if its[i] is None]
        s["dead_units_summary"] = {"seeds_with_dead_end": sum(dead), "missed": len(missed),
                                   "missed_with_dead_end": sum(dead[i] for i in missed),
                                   "reached_with_dead_end": 0}
    order = expected_order()
    p2["ranking"] = {"many_seeds": order, "single_seed": order}
    def share_faster(a: str, b: str) -> float:
        pairs = zip(DESIGN[a], DESIGN[b], strict=True)
        return sum(rank_value([x]) < rank_value([y]) for x, y in pairs) / n

    p2["paired_faster"] = {a: {b: share_faster(a, b) for b in SETTINGS if b != a} for a in SETTINGS}
    half = {"lr": p2["config"]["lr"] / 2,
            "settings": {k: {"iterations": v, "summary": summary(v)} for k, v in HALF_LR.items()}}
    median = {k: lower_quantile(v, 0.5) for k, v in DESIGN.items()}
    median.update({f"{k} at lr/2": lower_quantile(v, 0.5) for k, v in HALF_LR.items()})

    def factor(fid: str, num: str, den: str, predicted: float, kind: str) -> dict[str, Any]:
        m = None if median[num] is None or median[den] is None else median[num] / median[den]
        return {"id": fid, "numerator": num, "denominator": den, "predicted": predicted,
                "predicted_kind": kind, "basis": "designed in tests/test_report.py", "measured": m}

    p2["controls"] = {"half_lr_ce": half, "factors": [
        factor("l2_over_ce_sigmoid", "sigmoid-l2", "sigmoid-ce", 2.0, "approx"),
        factor("l2_over_ce_relu", "relu-l2", "relu-ce", 2.0, "approx"),
        factor("sigmoid_over_relu_l2", "sigmoid-l2", "relu-l2", 4.0, "upper bound"),
        factor("sigmoid_over_relu_ce", "sigmoid-ce", "relu-ce", 4.0, "upper bound"),
        factor("l2_over_half_lr_ce_sigmoid", "sigmoid-l2", "sigmoid-ce at lr/2", 1.0, "approx"),
        factor("l2_over_half_lr_ce_relu", "relu-l2", "relu-ce at lr/2", 1.0, "approx"),
    ]}
    settings = {}
    for key, medians in SWEEP_MEDIANS.items():
        ok = [(m, lr) for m, lr in zip(medians, LRS, strict=True) if m is not None]
        m, lr = min(ok)
        settings[key] = {"iterations": [[m] * n if m is not None else [None] * n for m in medians],
                         "median": medians, "reach_rate": [1.0 if m is not None else 0.0 for m in medians],
                         "best": {"lr": lr, "median": m, "reach_rate": 1.0,
                                  "at_edge": lr in (LRS[0], LRS[-1])}}
    at_best = sorted(SETTINGS, key=lambda k: settings[k]["best"]["median"])
    at_base = sorted(SETTINGS, key=lambda k: SWEEP_MEDIANS[k][0])
    p2["lr_sweep"] = {"lrs": LRS, "seeds": SEEDS, "min_reach": 0.9, "settings": settings,
                      "ranking_at_best": at_best, "ranking_at_base": at_base,
                      "ranking_survives": at_best == at_base}
    return p2


@pytest.fixture(scope="module")
def edited(small: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The small results with part 2 designed here and part 3's compared numbers set."""
    root = tmp_path_factory.mktemp("edited")
    shutil.copytree(small["root"] / "report", root / "report")
    shutil.copytree(small["root"] / "figures", root / "figures")
    results = copy.deepcopy(small["results"])
    results["part2_fc.json"] = designed_part2(results["part2_fc.json"])
    line = results["part3_line.json"]
    line["summary"]["median"] = float(LINE_MEDIAN)
    det = results["part3_detection.json"]
    det["classification_summary"]["median"] = float(CLS_MEDIAN)
    det["summary"]["median"] = float(DET_MEDIAN)
    det["width_tolerance"] = TOLERANCE
    det["max_width_error"] = [WORST, 0.1][: len(det["seeds"])]
    det["single"]["width_abs_error_max"] = WORST
    for name, data in results.items():
        (root / "figures" / name).write_text(json.dumps(data, sort_keys=True))
    return {"root": root, "results": results, "text": report_text(root)}


# ---------------------------------------------------------------------------------------------
# The build
# ---------------------------------------------------------------------------------------------

def test_pdf_builds_from_measured_results(small: dict[str, Any]) -> None:
    pdf = small["pdf"]
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    pages = build_report.page_count(pdf)
    answers = int(re.search(r"; (\d+) before the appendix", small["stdout"]).group(1))
    assert f"({pages} pages; {answers} before the appendix" in small["stdout"]
    # the answers come first and fit the eight pages issue 12 allows; the appendix follows
    assert 1 <= answers <= 8 and pages > answers


def test_pdf_has_every_handout_section(small: dict[str, Any]) -> None:
    titles = bookmarks(small["pdf"])
    for section in SECTIONS:
        assert any(t.startswith(section + " ") for t in titles), (section, titles)
    assert "Appendix" in titles
    numbered = [t.split(" ")[0] for t in titles if re.match(r"\d\.\d ", t)]
    assert numbered == sorted(numbered, key=lambda s: tuple(map(int, s.split(".")))), numbered
    # the appendix (choices, data, commands) comes after every answer
    assert titles.index("Appendix") > max(i for i, t in enumerate(titles) if re.match(r"3\.2 ", t))


def test_pdf_embeds_the_handouts_figures(small: dict[str, Any]) -> None:
    """The handout asks for: five surfaces (1.1-1.5), loss and accuracy per part-2 setting, two
    curves for 3.1 and four for 3.2; the report may add interpreted figures, never more than listed."""
    results = small["results"]
    listed = [f["file"] if isinstance(f, dict) else f for r in results.values() for f in r.get("figures", [])]
    assert len(listed) == len(set(listed))
    required = 5 + 2 * len(results["part2_fc.json"]["settings"]) + 2 + 4
    assert required <= embedded_images(small["pdf"]) <= len(listed)


def test_same_results_give_the_same_pdf(small: dict[str, Any], tmp_path: Path) -> None:
    """Issue 11 item 7: no clock in the PDF unless SOURCE_DATE_EPOCH asks for a date."""
    root = small["root"]
    first = tmp_path / "a.pdf"
    second = tmp_path / "b.pdf"
    run(["tools/build_report.py", "report/report.typ", str(first)], root)
    time.sleep(1.1)  # a clock-derived date would now differ
    run(["tools/build_report.py", "report/report.typ", str(second)], root)
    assert first.read_bytes() == second.read_bytes() == small["pdf"]
    assert b"CreationDate" not in first.read_bytes()
    dated = tmp_path / "c.pdf"
    run(["tools/build_report.py", "report/report.typ", str(dated)], root,
        env={"SOURCE_DATE_EPOCH": "1575849600"})
    assert b"2019" in dated.read_bytes() and dated.read_bytes() != first.read_bytes()


def test_front_matter_placeholders_and_values(small: dict[str, Any]) -> None:
    text = small["text"]
    assert "[your name: make all NAME=" in text and "[make all PENN_KEY=" in text
    assert "COLLABORATORS=" in text
    named = report_text(small["root"], name="Ada Lovelace", penn_key="adal", collaborators="C. Babbage")
    head = named[: named.index("Summary")]
    assert "Ada Lovelace" in head and "PennKey: adal" in head and "Collaborators: C. Babbage" in head
    assert "make all NAME=" not in named and "PENN_KEY=" not in head


def test_build_rejects_a_missing_figures_folder(small: dict[str, Any], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "tools/build_report.py", "--figures", str(tmp_path / "nope")],
                            cwd=small["root"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--figures" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# The text shows what was measured
# ---------------------------------------------------------------------------------------------

def test_text_shows_measured_numbers(small: dict[str, Any]) -> None:
    text, results = small["text"], small["results"]
    part1 = results["part1_loss_gradient.json"]
    assert group(part1["corners"]["w_pos_b_pos"]["ratio_ce_to_l2"]) in text  # the 1.6 ratio
    part2 = results["part2_fc.json"]
    for setting in part2["settings"].values():
        one = setting["single"]
        if one["iterations"] is not None:
            assert f"100% after {group(one['iterations'])} iterations" in text, setting["label"]
        else:
            assert "at the cap" in text
    assert part2["data"]["sha256"]["random/random_imgs.npy"] in text
    line = results["part3_line.json"]["single"]
    assert (f"after {group(line['iterations'])} iterations" if line["iterations"] is not None
            else "does not reach") in text
    assert f"Seed {line['seed']}" in text


def test_report_degrades_without_part3(small: dict[str, Any]) -> None:
    """A part not yet run leaves a note naming its results file; the build does not fail."""
    root = small["root"]
    inputs = {**build_report.report_inputs(root), "results": "part1_loss_gradient.json,part2_fc.json"}
    source = str(root / "report" / "report.typ")
    html = typst.compile(source, root=str(root), format="html", sys_inputs=inputs)
    text = html_text(html.decode())
    assert "figures/part3_line.json is not there" in text
    assert "figures/part3_detection.json is not there" in text
    pdf = typst.compile(source, root=str(root), format="pdf", sys_inputs=inputs)
    titles = bookmarks(pdf)
    assert any(t.startswith("3.1 ") for t in titles) and any(t.startswith("3.2 ") for t in titles)


# ---------------------------------------------------------------------------------------------
# Issue 11's must-have: with other results, other sentences
# ---------------------------------------------------------------------------------------------

def test_ranking_sentences_follow_the_results(edited: dict[str, Any]) -> None:
    text = edited["text"]
    order = expected_order()
    assert order[-1] == "relu-ce" and order[0] == "sigmoid-l2"
    listing = ", ".join(
        f"({i + 1}) {NAMES[k]} (median {group(lower_quantile(DESIGN[k], 0.5))}, "
        f"{pct(summary(DESIGN[k])['reach_rate'])} reach 100%)" for i, k in enumerate(order))
    assert text.count(listing) == 2, listing  # the summary and 2.5
    assert f"{NAMES[order[0]]} is fastest, {NAMES[order[-1]]} slowest" in text
    # the table lists the settings in that order
    rows = [text.index(f"{i + 1} {NAMES[k]} (2.") for i, k in enumerate(order)]
    assert rows == sorted(rows)
    # nothing says the usual winner is the fastest
    assert "found fastest" not in text
    assert "fastest part-2 setting (ReLU + cross-entropy)" not in text


def test_part3_comparisons_follow_the_results(edited: dict[str, Any]) -> None:
    text = edited["text"]
    fast = expected_order()[0]
    fast_median = lower_quantile(DESIGN[fast], 0.5)
    assert (f"a median of {LINE_MEDIAN} iterations, against {group(fast_median)} for the fastest "
            f"part-2 setting ({NAMES[fast]})") in text
    assert f"{sig2(fast_median / LINE_MEDIAN)} times fewer than the fastest" in text
    assert "not the fastest part-2 setting" in text  # the conv net's ReLU + CE came last here
    assert (f"{group(CLS_MEDIAN)} iterations against {LINE_MEDIAN} for the line images "
            f"({sig2(CLS_MEDIAN / LINE_MEDIAN)}× as many)") in text
    assert f"{group(DET_MEDIAN)}, {sig2(DET_MEDIAN / LINE_MEDIAN)}× the line classification" in text


def test_factors_and_sweep_follow_the_results(edited: dict[str, Any]) -> None:
    text, p2 = edited["text"], edited["results"]["part2_fc.json"]
    factors = {f["id"]: f["measured"] for f in p2["controls"]["factors"]}
    ratio = factors["l2_over_ce_sigmoid"]
    assert ratio < 1 and f"L2 over cross-entropy: {sig2(ratio)}× with sigmoid units" in text
    assert "L2 is faster than cross-entropy, against the prediction" in text
    assert "Both are consistent with the constant factor" not in text
    assert f"gives {sig2(factors['l2_over_half_lr_ce_sigmoid'])}× (sigmoid)" in text
    sweep = p2["lr_sweep"]
    assert not sweep["ranking_survives"]
    best_order = ", ".join(f"({i + 1}) {NAMES[k]}" for i, k in enumerate(sweep["ranking_at_best"]))
    assert f"At the best rates the order is {best_order}" in text
    assert "does not survive a fair choice of rate" in text
    at_edge = [NAMES[k] for k in SETTINGS if sweep["settings"][k]["best"]["at_edge"]]
    assert at_edge and f"For {', '.join(at_edge)} the best rate is at the edge" in text


def test_width_numbers_are_true_to_the_rule(edited: dict[str, Any]) -> None:
    """Issue 11 item 2 and issue 12: the tolerance comes from the numeric key, and an error just
    under it is printed with the digits that keep it under (never as the tolerance itself)."""
    text = edited["text"]
    assert f"< {TOLERANCE} pixels, strictly" in text
    assert f"{WORST}" in text and f"{TOLERANCE:.3f} pixels" not in text
    assert f"largest final error over the seeds is {WORST} pixels" in text


def test_answers_fit_eight_pages_on_the_committed_results(tmp_path: Path) -> None:
    """Issue 12: at most eight pages before the appendix, on the results `make all` made."""
    figures = REPO_ROOT / "figures"
    p2 = figures / "part2_fc.json"
    if not p2.is_file() or "lr_sweep" not in json.loads(p2.read_text()):
        pytest.skip("figures/ holds no results of the current scripts (run make all)")
    root = tmp_path / "root"
    source = build_report.staged_root(REPO_ROOT / "report" / "report.typ", figures, root)
    assert build_report.answer_pages(source, root) <= 8


def test_report_builds_without_the_controls(small: dict[str, Any], tmp_path: Path) -> None:
    """Results from runs without the controls and sweep (flags off) still give a whole report."""
    root = tmp_path / "root"
    shutil.copytree(small["root"] / "report", root / "report")
    shutil.copytree(small["root"] / "figures", root / "figures")
    optional = {
        "part2_fc.json": ("lr_sweep", "controls"),
        "part3_line.json": ("holdout", "conv2_class_means"),
        "part3_detection.json": ("controls", "width_tolerance", "width_l2_fall_20x", "max_width_error"),
    }
    for name, keys in optional.items():
        data = {k: v for k, v in small["results"][name].items() if k not in keys}
        (root / "figures" / name).write_text(json.dumps(data))
    text = report_text(root)
    assert "Is the comparison fair?" not in text and "Learned rule or memorisation?" not in text
    pdf = build_report.compile_report(root / "report" / "report.typ", root)
    assert all(any(t.startswith(s + " ") for t in bookmarks(pdf)) for s in SECTIONS)


def test_a_median_beyond_the_cap_gives_a_lower_bound(edited: dict[str, Any], tmp_path: Path) -> None:
    """When L2's median is not reached, the ratio L2 / CE is only known to exceed cap / CE's median."""
    root = tmp_path / "root"
    shutil.copytree(edited["root"], root)
    p2 = edited["results"]["part2_fc.json"]
    p2 = {**p2, "settings": {**p2["settings"]}}
    relu_l2 = {**p2["settings"]["relu-l2"], "iterations": [None] * len(SEEDS)}
    relu_l2["summary"] = summary(relu_l2["iterations"])
    p2["settings"]["relu-l2"] = relu_l2
    p2["controls"] = {**p2["controls"], "factors": [
        {**f, "measured": None} if "relu-l2" in (f["numerator"], f["denominator"]) else f
        for f in p2["controls"]["factors"]]}
    (root / "figures" / "part2_fc.json").write_text(json.dumps(p2))
    text = report_text(root)
    bound = CAP / lower_quantile(DESIGN["relu-ce"], 0.5)
    assert f"and >{sig2(bound)}× with ReLU units" in text
    assert "Both are consistent with the constant factor" not in text
