"""report/report.typ: the PDF builds from the results the four scripts write, answers the handout's
questions in order within five pages, and every number it prints is the results files' own.

The results come from the one shared end-to-end build (tests/e2e_build.py: tiny runs of the four
scripts). The report's text is read from Typst's HTML export of the same source. The numbers checked
here are recomputed from the per-seed lists in the JSON, with formatting written out below, never
with the report's or the scripts' own functions; variants of the results (a file missing, one seed,
a median beyond the cap, no figures) are built from edited copies.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from e2e_build import REPO_ROOT, Build, build, build_report

MINUS = "\u2212"
QUESTIONS = ("1.1", "1.2", "1.3", "1.4", "1.5", "1.6", "2.1–2.4", "2.5", "3.1", "3.2")
SHORT = {"sigmoid-l2": "sigmoid + L2", "sigmoid-ce": "sigmoid + CE", "relu-l2": "ReLU + L2", "relu-ce": "ReLU + CE"}


@pytest.fixture(scope="module")
def small() -> Build:
    return build()


# ---- numbers as the report writes them (written out independently of report.typ) -------------

def rounded(x: float, d: int = 0) -> float:
    """x to d decimals, halves away from zero, as Typst's calc.round (on x * 10**d in floating point)."""
    return math.copysign(math.floor(abs(x) * 10**d + 0.5), x) / 10**d


def fixed(x: float, d: int) -> str:
    return f"{rounded(x, d):.{d}f}".replace("-", MINUS)


def group(n: float) -> str:
    return f"{int(rounded(n)):,}".replace("-", MINUS)


def sig(x: float, n: int = 3) -> str:
    """n significant digits, thousands grouped (for 1e-3 <= |x| < 1e6)."""
    e = math.floor(math.log10(abs(x)))
    if abs(rounded(x / 10**e, n - 1)) >= 10:
        e += 1
    return group(x) if e >= n - 1 else fixed(x, n - 1 - e)


def num(x: float) -> str:
    """An iteration count or a median of counts: at most one decimal, thousands grouped."""
    r = rounded(x, 1)
    return group(r) if r == int(r) else f"{math.floor(r):,}.{round((r - math.floor(r)) * 10)}"


def pct(x: float, d: int = 0) -> str:
    return f"{fixed(100 * x, d)}%"


def median(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return float(v[mid]) if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def quantile(values: list[float], p: float) -> float:
    """Linear interpolation between order statistics."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def sign_test(wins: int, losses: int) -> float:
    n = wins + losses
    return min(1.0, 2 * sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n) if n else 1.0


def pval(p: float) -> str:
    """The start of a p-value as the report prints it (10^-4 and 10^-3 set as math)."""
    if p < 1e-4:
        return "𝑝 < 10"
    if p >= 1e-3:
        return f"𝑝 = {sig(p, 2)}"
    e = math.floor(math.log10(p))
    m = rounded(p / 10**e, 1)
    return f"𝑝 = {m / 10 if m >= 10 else m:.1f} × 10"


def without_spaces(text: str) -> str:
    return re.sub(r"\s+", "", text)


# ---- the build -----------------------------------------------------------------------------------

def test_pdf_builds_with_the_answers_within_five_pages(small: Build) -> None:
    assert small.pdf.read_bytes().startswith(b"%PDF")
    assert small.answer_pages is not None and 1 <= small.answer_pages <= 5, small.build_stdout


def test_questions_come_in_the_handouts_order(small: Build) -> None:
    text = small.text
    starts = [re.search(rf"\b{re.escape(q)} [A-Z][^.]*\.", text) for q in QUESTIONS]
    assert all(starts), [q for q, s in zip(QUESTIONS, starts, strict=True) if not s]
    positions = [s.start() for s in starts]
    assert positions == sorted(positions)
    # the table rows of 2.1-2.4, in order, between their heading and 2.5
    rows = [text.find(f"2.{k} ", positions[6] + 8) for k in range(1, 5)]
    assert positions[6] < rows[0] < rows[1] < rows[2] < rows[3] < positions[7], rows
    assert text.index("Appendix") > positions[-1]


def test_no_unresolved_reference_or_placeholder(small: Build) -> None:
    texts = [small.text]
    if shutil.which("pdftotext"):
        texts.append(subprocess.run(["pdftotext", str(small.pdf), "-"], capture_output=True, text=True,
                                    check=True).stdout)
    for text in texts:
        for bad in ("??", "None", "NaN", "nan%", "inf×", "undetermined", "No results yet"):
            assert bad not in text, bad
        assert "Ada Lovelace" in text and "PennKey: ada" in text


def test_nothing_the_grader_cannot_check(small: Build) -> None:
    """No absolute path, no build commands, tests, checksums or library versions in the report."""
    text = small.text
    assert str(small.work) not in text and str(REPO_ROOT) not in text
    assert not re.search(r"(?<![\w.])/(tmp|home|work|usr|Users)/", text)
    for word in ("make all", "pytest", "sha256", "README", "torch 2", "numpy 2"):
        assert word not in text, word


def test_every_figure_is_numbered_and_referred_to(small: Build) -> None:
    text = small.text
    captions = sorted({int(n) for n in re.findall(r"Figure (\d+):", text)})
    assert captions == list(range(1, len(captions) + 1)) and len(captions) >= 9
    body = text[:text.index("Appendix")]
    for n in captions:
        if f"Figure {n}:" in body:
            assert re.search(rf"Figure {n}\b(?!:)", body), f"Figure {n} is never referred to"
    tables = sorted({int(n) for n in re.findall(r"Table (\d+):", text)})
    assert tables == list(range(1, len(tables) + 1)) and len(tables) >= 3
    for n in tables:
        assert re.search(rf"Table {n}\b(?!:)", text), f"Table {n} is never referred to"


# ---- part 1 --------------------------------------------------------------------------------------

def test_part1_numbers_are_the_results(small: Build) -> None:
    p1, text = small.results["part1_loss_gradient.json"], small.text
    assert f"({p1['config']['grid']} points each)" in text
    assert f"{pct(p1['saturated_share'])} of it" in text
    l2 = p1["losses"]["l2"]
    # 1.3 signed: the ridge's largest value on the side z > 0, the trough's smallest on z < 0
    assert l2["grad_max"] > 0 > l2["grad_min"] and l2["grad_max_z"] > 0 > l2["grad_min_z"]
    assert "ridge on the side 𝑧 > 0" in text and f"largest on the grid {sig(l2['grad_max'])} at" in text
    assert "trough on the side 𝑧 < 0" in text and f"smallest {sig(l2['grad_min'])} at" in text
    assert "bumps" not in text
    if "gradient_check" in p1:
        assert "central differences" in text and "(check passed)" in text


# ---- part 2 --------------------------------------------------------------------------------------

def test_part2_table_is_recomputed_from_the_seeds(small: Build) -> None:
    p2, text = small.results["part2_fc.json"], small.text
    cap = p2["config"]["max_iters"]
    assert f"(at most {cap:,};" in text
    assert "last column: when the seeds first beat it" in re.sub(r"\s+", " ", text)
    for key, s in p2["settings"].items():
        its = s["iterations"]
        header = text.index(" at 100% ", text.index("Table 1:"))
        row = text[text.index(f" {s['question']} ", header):][:180]
        assert f"{sum(i is not None for i in its)} of {len(its)}" in row, (key, row)
        # the last column: the median first iteration above the majority score (never: the slowest)
        beyond = [math.inf if b is None else b for b in s["beyond_majority_at"]]
        assert math.isfinite(median(beyond)) and f" {num(median(beyond))}" in row, (key, row)
        if all(i is not None for i in its):
            m, q1, q3 = median(its), quantile(its, 0.25), quantile(its, 0.75)
            assert f" {num(m)} {num(q1)}–{num(q3)} " in row, (key, row)
        # the median seed: sorted by iterations (not reached last, ties by seed), position (n - 1) // 2
        ranked = sorted(zip(its, p2["seeds"], strict=True), key=lambda p: (p[0] is None, p[0] or 0, p[1]))
        seed = ranked[(len(ranked) - 1) // 2][1]
        assert s["single"]["seed"] == seed and f" {seed} " in row, (key, row)


def test_part2_predictions_and_controls_are_recomputed(small: Build) -> None:
    p2, text = small.results["part2_fc.json"], small.text
    st = p2["settings"]
    for act in ("sigmoid", "relu"):
        l2 = st[f"{act}-l2"]
        for key in ("l2_factor", "l2_factor_wrong"):
            factor = median([v for v in l2[key] if v is not None])
            assert f"1 / {sig(factor)} {sig(1 / factor)}×" in text, (act, key)
    for loss in ("ce", "l2"):
        s, r = st[f"sigmoid-{loss}"], st[f"relu-{loss}"]
        slopes = median([v for v in r["hidden_slope"] if v is not None]), median(
            [v for v in s["hidden_slope"] if v is not None])
        assert f"{sig(slopes[0])} / {sig(slopes[1])} {sig(slopes[0] / slopes[1])}×" in text, loss
    spread = {(k, key): median([v for v in st[k][key] if v is not None])
              for k in ("sigmoid-ce", "relu-ce") for key in ("hidden_spread_start", "hidden_spread")}
    start, run = (tuple(spread[(k, key)] for k in ("sigmoid-ce", "relu-ce"))
                  for key in ("hidden_spread_start", "hidden_spread"))
    assert f"is {sig(start[0])} for the sigmoid against {sig(start[1])} for ReLU at the start" in text
    assert f"{sig(run[0])} against {sig(run[1])} averaged over the run" in text
    half = p2["controls"]["half_lr_ce"]
    for key, c in half["settings"].items():
        base = st[key]["iterations"]
        if all(i is not None for i in c["iterations"] + base):
            assert f"{sig(median(c['iterations']) / median(base))}× ({SHORT[key]})" in text
            slower = sum(a > b for a, b in zip(c["iterations"], base, strict=True))
            assert slower == c["paired_vs_base"]["losses"]
        # Table 3's half-rate row: L2 at the base rate against CE at half of it, predicted 1 / (2c)
        l2 = st[key.replace("-ce", "-l2")]
        name = "ReLU" if key.startswith("relu") else "sigmoid"
        if all(i is not None for i in c["iterations"] + l2["iterations"]):
            wrong = median([v for v in l2["l2_factor_wrong"] if v is not None])
            ratio = sig(median(l2["iterations"]) / median(c["iterations"]))
            # the HTML text spaces math brackets
            flat = re.sub(r"\( ", "(", re.sub(r" \)", ")", re.sub(r"\s+", " ", text)))
            assert f"1 / (2 × {sig(wrong)}) {sig(1 / (2 * wrong))}×" in flat, key
            assert f"With CE at half its rate ({name}), L2 needs {ratio}× CE’s iterations" in flat, key


def test_part2_sweep_table_and_paired_tests_are_recomputed(small: Build) -> None:
    p2, text = small.results["part2_fc.json"], small.text
    sweep = p2["lr_sweep"]
    table = text[text.index("learning-rate sweep,"):]
    for key, row in sweep["settings"].items():
        for lr, its in zip(sweep["lrs"], row["iterations"], strict=True):
            reached = [i for i in its if i is not None]
            if len(reached) >= sweep["min_reach"] * len(its) and len(reached) > len(its) / 2:
                assert num(median([math.inf if i is None else i for i in its]) * lr) in table, (key, lr)
    best = sweep["ranking_at_best"]
    for a, b in itertools.pairwise(best):
        ia = sweep["settings"][a]["iterations"][sweep["lrs"].index(sweep["settings"][a]["best"]["lr"])]
        ib = sweep["settings"][b]["iterations"][sweep["lrs"].index(sweep["settings"][b]["best"]["lr"])]
        rank = [(math.inf if x is None else x, math.inf if y is None else y) for x, y in zip(ia, ib, strict=True)]
        wins, losses = sum(x < y for x, y in rank), sum(x > y for x, y in rank)
        sentence = f"{SHORT[a]} ({sweep['settings'][a]['best']['lr']:g}) ahead of {SHORT[b]}"
        assert sentence in text, sentence
        after = text[text.index(sentence):][:200]
        assert f"for {wins} of {len(ia)} seeds" in after and pval(sign_test(wins, losses)) in after, after
        # the best rates were picked on these same seeds: a small p is suggestive, never "significant"
        verdict = after[after.index(pval(sign_test(wins, losses))):][:40]
        assert "not significant" in verdict or "suggestive" in verdict, verdict
        if sign_test(wins, losses) < 0.05:
            assert "suggestive" in verdict, verdict
    assert "Bonferroni" not in text and "significant when 𝑝 < 0.05" in text and "decided" not in text


def sf(r: float) -> str:
    """A ratio of iterations in the report's words, its direction from the data."""
    if abs(r - 1) < 0.005:  # rounds to 1.00 either way
        return f"{sig(r)}× (unchanged)"
    return f"{sig(r)}× slower" if r >= 1 else f"{sig(1 / r)}× faster"


def control_medians(p2: dict[str, Any]) -> dict[str, float]:
    """Median iterations of the CE settings and of their activation controls, from the per-seed lists
    (a seed not reached counts as the slowest: inf)."""
    def med(its: list[int | None]) -> float:
        return median([math.inf if x is None else x for x in its])
    out = {k: med(p2["settings"][k]["iterations"]) for k in ("relu-ce", "sigmoid-ce")}
    for kind in ("slope", "spread", "mean"):
        out |= {f"{k} {kind}": med(p2["controls"][f"{kind}_ce"]["settings"][k]["iterations"])
                for k in ("relu-ce", "sigmoid-ce")}
    return out


def activation_controls_told(p2: dict[str, Any]) -> bool:
    """Whether the answer tells the spread and mean controls: every median reached."""
    return all(math.isfinite(v) for v in control_medians(p2).values())


def check_activation_controls(p2: dict[str, Any], opening: str, text: str) -> None:
    """2.5 (2) and its table: the slope, spread and mean controls, each median recomputed from the
    per-seed lists; the gap between the activations with the other's values swapped in."""
    m = control_medians(p2)
    opening = re.sub(r" ([,.:;])", r"\1", opening)  # the HTML text spaces emphasised words from their punctuation
    # in plain words first: the sigmoid's slope and spread, smaller by the factors the controls swap in
    factors = p2["controls"]["slope_ce"]["factors"]["sigmoid-ce"]
    assert "A sigmoid unit passes back less of the error signal than a ReLU unit" in opening
    assert f"{sig(factors['slope'])}× smaller averaged over the run" in opening
    assert f"is {sig(factors['spread'])}× smaller (also averaged)" in opening
    gap = {kind: (m[f"sigmoid-ce {kind}"] / m["relu-ce"], m["sigmoid-ce"] / m[f"relu-ce {kind}"])
           for kind in ("slope", "spread", "mean")} | {"own": (m["sigmoid-ce"] / m["relu-ce"],) * 2}
    assert re.search(r"Table \d+ retrains each CE setting with the other activation’s slope", opening)
    assert (f"then also with its spread: the sigmoid’s iterations over ReLU’s fall from {sig(gap['own'][0])}× to "
            f"{sig(gap['spread'][0])}× (the sigmoid given ReLU’s values) and {sig(gap['spread'][1])}× (ReLU given the "
            "sigmoid’s)") in opening
    mean_r = [m[f"{k} mean"] / m[f"{k} slope"] for k in ("relu-ce", "sigmoid-ce")]
    if all(abs(math.log(r)) < math.log(1.1) for r in mean_r):
        most = max(max(r, 1 / r) for r in mean_r) - 1
        told = f"the mean of h, swapped instead of the spread, changes the medians by {round(100 * most)}% or less"
        assert told in opening
    else:  # then only the table tells it (below)
        assert "swapped instead of the spread" not in opening
    # the answer first: swapped, slope and spread close the gap only in part (or nearly all of it)
    part = "part" if any(r > 1.05 for r in gap["spread"]) else "most"
    assert f"Activation: the slope and the spread explain {part} of the gap." in opening
    # the table: each row's medians and changes (against the row above; the mean against the slope row)
    table = re.sub(r"\s+", " ", text[text.index("2.5, the activation controls:"):])[:2500]
    for kind, base in (("slope", "{k}"), ("spread", "{k} slope"), ("mean", "{k} slope")):
        for k in ("relu-ce", "sigmoid-ce"):
            change = sf(m[f"{k} {kind}"] / m[base.format(k=k)])
            assert num(m[f"{k} {kind}"]) in table and change in table, (kind, k)
        assert f"{sig(gap[kind][0])}× {sig(gap[kind][1])}×" in table, kind


def test_ranking_opens_with_the_answer_and_why(small: Build) -> None:
    """2.5 begins with the ranking at the handout's rate and, before the details, why: CE's output error
    is not shrunk by 2ŷ(1 − ŷ); ReLU's slope against the sigmoid's, with the slope prediction's verdict
    (from Table 2's ratio of measured slopes); and that the order belongs to one rate (the sweep's
    best-rate medians, recomputed)."""
    p2, text = small.results["part2_fc.json"], small.text
    order = p2["ranking"]["many_seeds"]
    opening = text[text.index("2.5 Ranking"):text.index("Iterations scale as", text.index("2.5 Ranking"))]
    assert f"At rate {p2['config']['lr']:g}, fastest to slowest" in opening
    if all(order.index(f"{a}-ce") < order.index(f"{a}-l2") for a in ("sigmoid", "relu")):
        assert "Loss: cross-entropy’s error signal is not shrunk." in opening
        assert "error signal at the output is CE’s" in opening
    # which matters more, where it decides the middle of the ranking: the activation's gap against the loss's
    st = p2["settings"]
    medians = {k: median([math.inf if v is None else v for v in st[k]["iterations"]]) for k in st}
    told = "The activation matters more than the loss here" in opening
    ranked = (all(order.index(f"{a}-ce") < order.index(f"{a}-l2") for a in ("sigmoid", "relu"))
              and all(order.index(f"relu-{lo}") < order.index(f"sigmoid-{lo}") for lo in ("ce", "l2"))
              and order.index("relu-l2") < order.index("sigmoid-ce"))
    assert told == ranked
    if told and all(map(math.isfinite, medians.values())):
        assert (f"the sigmoid needs {sig(medians['sigmoid-ce'] / medians['relu-ce'])}× ReLU’s iterations (with CE), "
                f"L2 {sig(medians['relu-l2'] / medians['relu-ce'])}× CE’s (with ReLU)") in opening
    control = p2["controls"]["slope_ce"]["settings"]
    if all(order.index(f"relu-{lo}") < order.index(f"sigmoid-{lo}") for lo in ("ce", "l2")):
        # the slope control: each CE setting's seeds with the backward slope scaled, against the setting itself
        # and the other activation; every median recomputed from the per-seed lists
        its = {k: st[k]["iterations"] for k in ("relu-ce", "sigmoid-ce")} | {
            f"{k} control": control[k]["iterations"] for k in ("relu-ce", "sigmoid-ce")}
        assert all(None not in v for v in its.values()), "the tiny build reaches 100% in every seed"
        m = {k: median(v) for k, v in its.items()}
        if activation_controls_told(p2):
            check_activation_controls(p2, opening, text)
        else:  # a control whose median is beyond the cap: the slope alone, the rest unexplained
            assert "is part of the reason: given the other activation’s measured mean slope" in opening
            assert (f"ReLU + CE becomes {sf(m['relu-ce control'] / m['relu-ce'])} and sigmoid + CE "
                    f"{sf(m['sigmoid-ce control'] / m['sigmoid-ce'])}") in opening
            assert "is not explained here" in opening
        rest = sig(m["sigmoid-ce control"] / m["relu-ce"])
        activation_detail = text[text.index("Activation. The signal"):][:2000]
        assert f"with ReLU’s slope the sigmoid still needs {rest}× ReLU + CE’s" in activation_detail
        slope = {k: median([v for v in st[k]["hidden_slope"] if v is not None]) for k in st}
        measured = {lo: (st[f"sigmoid-{lo}"]["summary"]["median"], st[f"relu-{lo}"]["summary"]["median"])
                    for lo in ("ce", "l2")}
        if all(a is not None and b is not None for a, b in measured.values()):
            off = [slope[f"relu-{lo}"] / slope[f"sigmoid-{lo}"] / (a / b) - 1 for lo, (a, b) in measured.items()]
            detail = text[text.index("Activation. The signal"):][:600]
            if all(abs(d) > 0.15 for d in off):
                assert "the ratio of the mean slopes fails" in detail
            elif all(abs(d) <= 0.15 for d in off):
                assert "the ratio of the mean slopes holds" in detail
    sweep = p2["lr_sweep"]
    bests = [s["best"]["median"] for s in sweep["settings"].values() if s["best"]]
    if len(bests) >= 2:
        catch_up = f"; at their best rates the gap shrinks to {sig(max(bests) / min(bests))}×" if max(bests) / min(
            bests) < 2 else ""
        assert f"Rate: this order is measured at rate {p2['config']['lr']:g}{catch_up}." in opening
        assert f"only {sig(max(bests) / min(bests))}× at each setting’s best rate" in opening
    # "at least twice": where the sweep breaks the bound (rates where both settings have enough seeds at 100%)
    for act, name in (("relu", "ReLU"), ("sigmoid", "sigmoid")):
        l2, ce = sweep["settings"][f"{act}-l2"], sweep["settings"][f"{act}-ce"]
        for i, lr in enumerate(sweep["lrs"]):
            ok = all(r["reach_rate"][i] >= sweep["min_reach"] and r["median"][i] is not None for r in (l2, ce))
            if ok and l2["median"][i] < 2 * ce["median"][i]:
                assert f"{sig(l2['median'][i] / ce['median'][i])}× for {name} at rate {lr:g}" in opening, (act, lr)


# ---- variants of the results ---------------------------------------------------------------------

def edited_copy(small: Build, tmp_path: Path, edit: dict[str, Any] | None = None,
                keep: tuple[str, ...] = ("part1", "part2", "part3")) -> Path:
    figures = tmp_path / "figures"
    figures.mkdir()
    for f in small.figures.iterdir():
        if f.name.startswith(keep):
            shutil.copy2(f, figures / f.name)
    for name, change in (edit or {}).items():
        results = json.loads((figures / name).read_text())
        change(results)
        (figures / name).write_text(json.dumps(results))
    return figures


def test_seeds_run_past_the_cap_are_told_slow_not_stuck(small: Build, tmp_path: Path) -> None:
    """Where --control-past-cap ran on the seeds that miss: how many of them reach 100% by the longer
    cap and the setting's median over its seeds then; the heading says "slow, not stuck" only where all
    of them do; 2.5 (1) gives L2 / CE from the run-on median where the measured ratio is only a bound."""
    def missing_seed(p2: dict[str, Any], reach_all: bool) -> None:
        rec, n = p2["settings"]["sigmoid-l2"], len(p2["seeds"])
        cap = p2["config"]["max_iters"]
        rec["iterations"][0] = None
        rec["summary"]["reached"] = n - 1
        on = [cap + 7 if reach_all else None] + [v for v in rec["iterations"][1:]]
        p2["controls"]["past_cap"] = {"max_iters": 3 * cap, "settings": {"sigmoid-l2": {
            "iterations": on, "summary": {"median": median([math.inf if v is None else v for v in on])},
            "missed_seeds": [p2["seeds"][0]], "missed_reached": int(reach_all), "dead_end": [0]}}}
        next(f for f in p2["factors"] if f["id"] == "l2_over_ce_sigmoid")["measured"] = None

    for reach_all in (True, False):
        out = tmp_path / str(reach_all)
        out.mkdir()
        figures = edited_copy(small, out, {"part2_fc.json": lambda p2, r=reach_all: missing_seed(p2, r)})
        text = re.sub(r"\s+", " ", build_report(figures, out)["text"])
        p2 = json.loads((figures / "part2_fc.json").read_text())
        pc, cap, n = p2["controls"]["past_cap"], p2["config"]["max_iters"], len(p2["seeds"])
        on = pc["settings"]["sigmoid-l2"]
        assert (f"Run on from the same starts to {group(pc['max_iters'])} iterations (a control; the handout stops "
                f"at {group(cap)}), {int(reach_all)} of the 1 sigmoid + L2 seeds that miss the cap reach 100%") in text
        assert ("Seeds that miss are slow, not stuck." in text) == reach_all
        if reach_all:
            assert f"and the median over its {n} seeds is {num(on['summary']['median'])}" in text
            ce = p2["settings"]["sigmoid-ce"]["summary"]["median"]
            assert f"(sigmoid; {sig(on['summary']['median'] / ce)}× run past the cap, appendix)" in text


def test_missing_results_files_leave_a_note(small: Build, tmp_path: Path) -> None:
    text = build_report(edited_copy(small, tmp_path, keep=("part1", "part2")), tmp_path)["text"]
    assert "No results yet: part3_line.json is not there" in text
    assert "No results yet: part3_detection.json is not there" in text
    assert "2.5 Ranking" in text
    # built with no name, PennKey or collaborators (the official solution): the title alone, no placeholder
    for bad in ("NAME=", "PENN_KEY=", "COLLABORATORS=", "Your name", "PennKey:", "Collaborators:"):
        assert bad not in text, bad
    assert "Deep Learning Basics" in text


def test_one_seed_and_no_figures_still_build(small: Build, tmp_path: Path) -> None:
    """As `python part2_fc.py` writes it: one seed, no summary, paired tests, factors, controls or
    sweep; and every results file listing no figure."""
    def one_seed(p2: dict[str, Any]) -> None:
        for key in ("paired", "factors", "controls", "lr_sweep"):
            p2.pop(key, None)
        p2["seeds"] = p2["seeds"][:1]
        for s in p2["settings"].values():
            for key in ("summary", "factors", "dead_units_summary"):
                s.pop(key, None)
        p2["figures"] = []

    def no_figures(results: dict[str, Any]) -> None:
        results["figures"] = []

    edits = {"part2_fc.json": one_seed, "part3_line.json": no_figures, "part3_detection.json": no_figures}
    built = build_report(edited_copy(small, tmp_path, edits), tmp_path)
    assert built["pdf"].read_bytes().startswith(b"%PDF")
    text = built["text"]
    ranking = text[text.index("2.5 Ranking"):text.index("3.1 Line dataset")]
    assert "Fastest to slowest" in ranking and "sign test" not in ranking and "Table" not in ranking


def test_a_median_beyond_the_cap_gives_an_exact_lower_bound(small: Build, tmp_path: Path) -> None:
    """A ratio whose numerator's median is not reached prints cap / denominator rounded down; part 1's
    results without a gradient check build too, without the sentence."""
    cap = small.results["part2_fc.json"]["config"]["max_iters"]

    def beyond(p2: dict[str, Any]) -> None:
        p2["settings"]["sigmoid-l2"]["summary"]["median"] = None
        p2["settings"]["sigmoid-ce"]["summary"]["median"] = 137.5
        next(f for f in p2["factors"] if f["id"] == "l2_over_ce_sigmoid")["measured"] = None

    def unchecked(p1: dict[str, Any]) -> None:
        p1.pop("gradient_check", None)

    text = build_report(edited_copy(small, tmp_path, {"part2_fc.json": beyond,
                                                      "part1_loss_gradient.json": unchecked}), tmp_path)["text"]
    bound = math.floor(cap / 137.5 * 100 + 1e-9) / 100  # 3 significant digits, rounded down
    assert f">{bound:.2f}×" in text
    assert "central differences" not in text



def test_activation_controls_are_told_where_every_median_is_reached(small: Build, tmp_path: Path) -> None:
    """2.5 (2) with the spread and mean controls, from results where every control's median is reached
    (the tiny build's ReLU spread control never is): the answer's numbers and the appendix's paired
    counts, recomputed from the per-seed lists."""
    def paired(a: list[int], b: list[int]) -> dict[str, Any]:
        wins, losses = sum(x < y for x, y in zip(a, b, strict=True)), sum(x > y for x, y in zip(a, b, strict=True))
        return {"wins": wins, "losses": losses, "ties": len(a) - wins - losses, "sign_test_p": sign_test(wins, losses)}

    def reached(p2: dict[str, Any]) -> None:
        slope = p2["controls"]["slope_ce"]["settings"]
        stretches = {"spread": {"relu-ce": 3.0, "sigmoid-ce": 0.5}, "mean": {"relu-ce": 1.1, "sigmoid-ce": 1.2}}
        for kind, stretch in stretches.items():
            for k, f in stretch.items():
                its, base = [round(i * f) for i in slope[k]["iterations"]], slope[k]["iterations"]
                other = p2["settings"]["sigmoid-ce" if k == "relu-ce" else "relu-ce"]
                rec = p2["controls"][f"{kind}_ce"]["settings"][k]
                rec |= {"iterations": its, "summary": rec["summary"] | {"median": median(its), "reached": len(its)},
                        "vs_slope_control": {"ratio": median(its) / median(base), "paired": paired(its, base)},
                        "other": {"setting": "", "ratio": median(its) / other["summary"]["median"],
                                  "paired": paired(its, other["iterations"])}}

    figures = edited_copy(small, tmp_path, {"part2_fc.json": reached})
    p2 = json.loads((figures / "part2_fc.json").read_text())
    text = build_report(figures, tmp_path)["text"]
    assert activation_controls_told(p2)
    opening = text[text.index("2.5 Ranking"):text.index("Iterations scale as", text.index("2.5 Ranking"))]
    check_activation_controls(p2, opening, text)
    detail = text[text.index("The spread and mean controls ( Table"):][:2500]
    assert "keep the slope control’s backward pass" in detail
    assert "For the output weights alone, scaling the differences by 𝑠" in detail
    # the table's factors (ReLU's then the sigmoid's), by its rows: each the other's measured value over its own
    factors = p2["controls"]["spread_ce"]["factors"]
    table = re.sub(r"\s+", " ", text[text.index("2.5, the activation controls:"):])[:1500]
    r, g = factors["relu-ce"], factors["sigmoid-ce"]
    for row, kind in (("the other’s slope", "slope"), ("and its spread", "spread"), ("or its mean instead", "mean")):
        assert f"{row} (×{sig(r[kind])}, ×{sig(g[kind])})" in table, kind
    start, run = ([median([v for v in p2["settings"][k][key] if v is not None]) for k in ("sigmoid-ce", "relu-ce")]
                  for key in ("hidden_spread_start", "hidden_spread"))
    assert (f"The sigmoid’s spread is {sig(start[0])} against ReLU’s {sig(start[1])} at the start "
            f"({sig(start[1] / start[0], 2)}×) and {sig(run[0])} against {sig(run[1])} averaged over the run "
            f"(the factor swapped)") in detail
    assert "remains a hypothesis" not in opening and "size control" not in text

# ---- part 3 --------------------------------------------------------------------------------------

def rank_sum_p(a: list[int | None], b: list[int | None]) -> float:
    """Two-sided Mann-Whitney U test, normal approximation with the tie correction (not reached =
    slower than any)."""
    a2, b2 = ([math.inf if x is None else x for x in v] for v in (a, b))
    u = sum((x < y) + 0.5 * (x == y) for x in a2 for y in b2)
    pooled = a2 + b2
    ties = sum(c**3 - c for c in (pooled.count(v) for v in set(pooled)))
    n1, n2, n = len(a2), len(b2), len(pooled)
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    return math.erfc(abs(u - n1 * n2 / 2) / math.sqrt(var) / math.sqrt(2)) if var > 0 else 1.0


def line_rows(p2: dict[str, Any], line: dict[str, Any]) -> list[list[int | None]]:
    """Table 2's rows, top to bottom: each row's iterations per seed."""
    c = line["controls"]
    return [p2["settings"]["relu-ce"]["iterations"], c["fc_rescaled_shuffled"]["iterations"],
            c["fc_rescaled"]["iterations"], c["fc"]["iterations"], c["fc_matched"]["iterations"], line["iterations"]]


def check_line_steps(p2: dict[str, Any], line: dict[str, Any], text: str) -> None:
    """3.1 opens with Table 2's steps in order, each the ratio of its rows' medians, and says why larger
    inputs and more units help (the ratio of the rows' mean squared norms; the units)."""
    c = line["controls"]
    meds = [median([math.inf if x is None else x for x in its]) for its in line_rows(p2, line)]
    assert all(map(math.isfinite, meds))
    step = [meds[i] / meds[i + 1] for i in range(len(meds) - 1)]
    lead = (r"In the order of Table \d+ \(the factors depend on it\), most of the difference is the data: its"
            if step[1] == max(step) else "In order: the")
    steps = (f" labels follow a rule ({sig(step[1])}×); then come larger inputs ({sig(step[2])}×), a larger network "
             f"({sig(step[3])}×) and last the convolutions with a second hidden layer ({sig(step[4])}×).")
    assert re.search(lead + re.escape(steps), text), text[text.index("3.1 Line"):][:700]
    section = text[text.index("3.1 Line dataset"):]  # the network first, then the answer headed by its finding
    assert section.index("The network is handout Figure 4") < section.index("The conv net classifies every line image")
    told = re.search(r"Against part 2: mostly the data, in the order of Table \d+ ?\.", section) is not None
    assert told == (step[1] == max(step))
    told = "Larger inputs, more units: faster, by less than a first-order reading predicts." in text
    assert told == (step[2] > 1 and step[3] > 1)
    if told:
        scale = c["fc"]["input_scale"] / c["fc_rescaled"]["input_scale"]
        assert f"a {sig(scale)}× larger mean" in text and f"like a {sig(scale)}× larger rate" in text
        assert f"They need {sig(step[2])}× and {sig(step[3])}× fewer iterations" in text


def test_line_answer_opens_with_the_steps(small: Build, tmp_path: Path) -> None:
    """Where the labels' rule is a large step (the course data's story), 3.1's first sentences give
    every step of Table 2 in order, and the larger inputs and units are explained."""
    def set_iterations(run: dict[str, Any], its: list[int]) -> None:  # and the summary the report reads
        run["iterations"] = its
        run["summary"] |= {"median": median(its), "q1": quantile(its, 0.25), "q3": quantile(its, 0.75),
                           "reached": len(its)}

    def slow_shuffled(line: dict[str, Any]) -> None:
        c = line["controls"]
        rescaled = [x if x is not None else 100 for x in c["fc_rescaled"]["iterations"]]
        set_iterations(c["fc_rescaled"], rescaled)
        set_iterations(c["fc_rescaled_shuffled"], [10 * x for x in rescaled])
        for key, fill in (("fc", 50), ("fc_matched", 40)):
            set_iterations(c[key], [x if x is not None else fill for x in c[key]["iterations"]])
        set_iterations(line, [x if x is not None else 20 for x in line["iterations"]])

    figures = edited_copy(small, tmp_path, {"part3_line.json": slow_shuffled})
    text = build_report(figures, tmp_path)["text"]
    p2 = json.loads((figures / "part2_fc.json").read_text())
    line = json.loads((figures / "part3_line.json").read_text())
    check_line_steps(p2, line, text)


def test_part3_line_controls_are_recomputed(small: Build) -> None:
    """Table 2: each row's median and quartiles from its seeds, the speed-up and the test against the row
    above, a sign test between the FC-4 rows (paired by seed), else a rank-sum test (part 2's 2.4 network,
    FC rescaled with shuffled labels, FC rescaled, FC as is, FC at the conv net's size, conv net)."""
    p2, line, text = small.results["part2_fc.json"], small.results["part3_line.json"], small.text
    table = text[text.index("3.1, one change per step"):]
    c = line["controls"]
    rows = line_rows(p2, line)
    assert "shuffled" in table and "a new shuffle per seed" in table
    held = c["fc_rescaled_shuffled"]["holdout"]["summary"]
    m_shuffled, m_rescaled = (median([math.inf if x is None else x for x in c[k]["iterations"]])
                              for k in ("fc_rescaled_shuffled", "fc_rescaled"))
    if math.isfinite(m_shuffled) and m_shuffled > 2 * m_rescaled:  # the step is told in the text
        assert f"always answering the training images’ majority label: {pct(held['training_majority'], 1)}" in text
        check_line_steps(p2, line, text)
    cap = line["config"]["max_iters"]
    assert f"{p2['settings']['relu-ce']['question']}" in text  # the first row refers to Table 1 for its median
    for i, its in enumerate(rows[1:], start=1):
        if all(x is not None for x in its):
            iqr = f"({num(quantile(its, 0.25))}–{num(quantile(its, 0.75))})"
            assert f"{num(median(its))} {iqr}" in table, i
        elif sum(x is None for x in its) * 2 >= len(its):
            assert f">{cap:,}" in table
    conv = line["iterations"]
    if all(x is not None for x in conv):
        assert f"after a median of {num(median(conv))} iterations over {len(conv)} seeds" in text
    # rows 1-3 are FC-4 from the same seeds' starting weights: paired, a sign test; the others a rank-sum test
    paired = [False, True, True, False, False]
    for (above, below), same_net in zip(itertools.pairwise(rows), paired, strict=True):
        if same_net:
            key = [(math.inf if a is None else a, math.inf if b is None else b)
                   for a, b in zip(above, below, strict=True)]
            p = sign_test(sum(b < a for a, b in key), sum(b > a for a, b in key))
        else:
            p = rank_sum_p(below, above)
        # the p-value column, then the test column: the bare p, without "p ="
        bare = pval(p).removeprefix("𝑝 = ").removeprefix("𝑝 ")
        test = "sign" if same_net else "rank-sum"
        assert re.search(re.escape(bare) + r"[^a-z]{0,12}" + test, table), (p, test)
        if all(x is not None for x in above + below):
            assert f"{sig(median(above) / median(below))}×" in table
    for key in ("fc", "fc_rescaled", "fc_matched", "fc_rescaled_shuffled"):
        held = [x for x in c[key]["holdout"]["test_accuracy"] if x is not None]
        assert f"{pct(sum(held) / len(held), 1)} ({pct(min(held), 1)})" in table, key
    assert "seed pairs, ties as half" in table
    # generalisation: the conv net against the FC net of its size, seeds missing a held-out image and
    # the rank-sum test on held-out accuracy (diverged seeds worst)
    conv_held, fc_held = line["holdout"]["test_accuracy"], c["fc_matched"]["holdout"]["test_accuracy"]
    misses = [sum(a is None or a < 1 for a in v) for v in (fc_held, conv_held)]
    p = rank_sum_p(*([None if a is None else -a for a in v] for v in (conv_held, fc_held)))
    assert (f"misses a held-out image in {misses[0]} of {len(fc_held)} seeds, the conv net in {misses[1]} of "
            f"{len(conv_held)} (rank-sum {pval(p)}") in text
    assert "generalise about as well" not in text
    assert f"{c['fc_matched']['hidden']}, line" in table and f"{line['network']['parameters']:,}" in table


def test_part3_detection_numbers_are_recomputed(small: Build) -> None:
    """3.2: the stop and classification medians, the groups' stays-right medians, the relapses, the
    images nearer the other class and the x10 control's paired comparison, from the per-seed lists."""
    det, text = small.results["part3_detection.json"], small.text
    # the answer, and the tests behind it in the appendix ("Behind 3.2")
    answer = text[text.index("3.2 Detection dataset."):text.index("Appendix")] + \
        text[text.index("Behind 3.2"):text.index("Choices the handout leaves open")]
    inf = math.inf
    assert answer.index("The network is 3.1’s plus") < answer.index("The stop: the widths, not the classes.")
    cls = [inf if x is None else x for x in det["classification_iterations"]]
    if len([x for x in cls if x < inf]) * 2 > len(cls):
        assert f"after a median of {num(median(cls))} iterations" in answer
    stops = [inf if x is None else x for x in det["iterations"]]
    if all(x < inf for x in stops):
        iqr = f"{num(quantile(stops, 0.25))}–{num(quantile(stops, 0.75))}"
        assert f"takes a median of {num(median(stops))} (quartiles {iqr}" in answer
    meas = det["measurements"]
    table = answer[answer.index("stays right from"):][:200]
    for group in meas[0]["group_classification_iterations"]:
        its = [m["group_classification_iterations"][group] for m in meas]
        its = [inf if x is None else x for x in its]
        value = median(its)
        assert (num(value) if value < inf else f">{det['config']['max_iters']:,}") in table, group
    relapsing = sum(bool(m["relapsed_images"]) for m in meas)
    assert f"{relapsing} of {len(meas)} seeds do" in answer
    slow = det["slow_images"]
    pairs = zip(slow["cos_other"], slow["cos_same"], strict=True)
    nearer = [o is not None and s is not None and o > s for o, s in pairs]
    events = [i for m in meas for i in (m["relapsed_images"] or [])]
    assert f"{sum(nearer)} of the {det['data']['n_images']} images are closer" in answer
    assert f"{sum(nearer[i] for i in events)} of the {len(events)} relapses are theirs" in answer
    # the few images behind the pattern: each seed's last image(s) to stay right, and the relapses by image
    names = {0: "diamond", 1: "square"}
    last: dict[int, int] = {}
    for m in meas:
        stays = [inf if v is None else v for v in m["image_classified_from"]]
        for i, v in enumerate(stays):
            if v == max(stays):
                last[i] = last.get(i, 0) + 1
    labels = slow["labels"]
    assert len(slow["widths"]) == len(labels)  # one per image, as many of each width as the groups count
    assert {f"{w:g}": slow["widths"].count(w) for w in set(slow["widths"])} == det["groups"]["width"]

    def named(i: int) -> str:
        return f"{names[labels[i]]} of width {slow['widths'][i]:g}"

    if len(last) <= 3:
        for i, c in last.items():
            assert f"image {i} ({named(i)}, {c} seed" in answer, (i, c)
    by_image = {i: events.count(i) for i in set(events)}
    assert slow["relapsing_seeds_per_image"] == [by_image.get(i, 0) for i in range(len(labels))]
    top = sorted(by_image.items(), key=lambda ic: (-ic[1], ic[0]))[:2]
    for i, c in top:
        assert f"image {i} ({named(i)}) relapses in {c}" in answer, (i, c)
    counts = [len(m["relapsed_images"]) for m in meas if m["relapsed_images"]]
    if counts:
        assert f"a median of {num(median(counts))} images in each of those" in answer
    # the Spearman correlations: over each seed's images, the median and quartiles over seeds
    rc = slow["rank_correlation"]
    per = [x for x in rc["similarity_margin"]["per_seed"] if x is not None]
    assert f"Per seed ({det['data']['n_images']} images)" in answer and f"median over {len(per)} seeds" in answer
    assert f"(quartiles {sig(quantile(per, 0.25), 2)} to {sig(quantile(per, 0.75), 2)})" in answer
    for key in ("width", "label", "initial_margin"):
        v = [x for x in rc[key]["per_seed"] if x is not None]
        assert f"({sig(quantile(v, 0.25), 2)} to {sig(quantile(v, 0.75), 2)}) with" in answer, key
    assert "relapse on a square" not in answer  # an untested comparison: Table 5 gives the counts
    sw = det["slow_widths"]
    per = [x for x in sw["rank_correlation"]["distance_from_mean"]["per_seed"] if x is not None]
    if per:
        assert f"with that distance has a median of {sig(median(per), 2)}" in answer
        if median(per) < 0.3:
            pos, neg = sum(x > 0 for x in per), sum(x < 0 for x in per)
            assert f"positive in {pos} of {len(per)} seeds (sign test {pval(sign_test(pos, neg))}" in answer
    w90 = [m["widths_90"]["iteration"] for m in meas if m.get("widths_90")]
    if len(w90) == len(meas) and meas[0].get("l2_fall_20x"):
        assert f"90% of the widths are first right at a median iteration of {num(median(w90))}" in answer
    assert "What best predicts" not in answer
    x10 = det["controls"]["width_lr_x10"]
    its10 = [inf if x is None else x for x in x10["iterations"]]
    if median(stops) < inf and median(its10) < inf:
        assert f"only {sig(median(stops) / median(its10))}× sooner" in answer
        if median(stops) / median(its10) < 2:  # the answer points to the control's paragraph in the appendix
            main = text[text.index("3.2 Detection dataset."):text.index("Appendix")]
            assert (f"Ten times the width’s rate gets every width right only {sig(median(stops) / median(its10))}× "
                    "sooner, in a control that changes two things") in re.sub(r"\s+", " ", main)
        wins = sum(a < b for a, b in zip(its10, stops, strict=True))
        losses = sum(a > b for a, b in zip(its10, stops, strict=True))
        assert f"sooner in {wins} of {len(stops)} paired seeds, {pval(sign_test(wins, losses))}" in answer
    for seed in x10["collapsed_seeds"]:
        m = x10["measurements"][det["seeds"].index(seed)]
        assert f"seed {seed} collapses" in answer.lower() and f"cross-entropy {sig(m['final_ce'])}" in answer


def test_the_confusable_images_control_is_recomputed(small: Build) -> None:
    """3.2 against 3.1: the confusable images' count, then 3.1's network without them, with all the
    images and without as many at random (medians from the per-seed stops), and the paired sign test
    of the two drops; "much of the reason" only where that test decides for the confusable drop."""
    det, line = small.results["part3_detection.json"], small.results["part3_line.json"]
    text = re.sub(r"\( ", "(", re.sub(r"\s+", " ", small.text))  # HTML spaces math from its brackets
    cc, slow = det["confusable_control"], det["slow_images"]
    assert cc["without_confusable"]["dropped"] == [i for i, v in enumerate(slow["nearest_other"]) if v]
    n, k = cc["n_images"]["all"], len(cc["without_confusable"]["dropped"])
    meds = [median([math.inf if v is None else v for v in cc[key]["classification_iterations"]])
            for key in ("no_width_head", "without_confusable", "without_random")]
    assert meds[0] == median([math.inf if v is None else v for v in det["controls"]["no_width_head"][
        "classification_iterations"]])  # the same runs as the no-width-head control
    a, b = cc["without_confusable"]["classification_iterations"], cc["without_random"]["classification_iterations"]
    key = [(math.inf if x is None else x, math.inf if y is None else y) for x, y in zip(a, b, strict=True)]
    wins, losses = sum(x < y for x, y in key), sum(x > y for x, y in key)
    ties = len(key) - wins - losses
    p = sign_test(wins, losses)
    cls = median([math.inf if v is None else v for v in det["classification_iterations"]])
    if not (math.isfinite(cls) and cls > line["summary"]["median"] and all(map(math.isfinite, meds))):
        pytest.skip("the tiny build does not tell this comparison")
    decides = p < 0.05 and wins > losses
    assert (f"Of the {det['data']['n_images']} detection images, {slow['n_nearest_other']} look more like an image "
            f"of the other class") in text
    assert (f"{'and they are much of the reason' if decides else 'whether they are the reason is not settled'}. "
            f"Without them 3.1’s network classifies the other {n - k} after a median of {num(meds[1])} iterations; "
            f"with all {n} it needs {num(meds[0])}, and without {k} other images drawn at random (as many per label) "
            f"{num(meds[2])}. Leaving out the confusable images is faster than leaving out the random ones in "
            f"{wins} of {wins + losses + ties} paired seeds ({pval(p)}") in text
    assert ").." not in text


def test_no_confusable_images_no_claim_about_them(small: Build, tmp_path: Path) -> None:
    """Data without an image nearer the other class: 3.2 says nothing of confusable images (no "0 look
    more like...", no control read)."""
    def none_confusable(det: dict[str, Any]) -> None:
        det["slow_images"]["n_nearest_other"] = 0
        det["slow_images"]["nearest_other"] = [False] * len(det["slow_images"]["nearest_other"])
        det["confusable_control"]["without_confusable"]["dropped"] = []

    text = re.sub(r"\s+", " ", build_report(edited_copy(small, tmp_path, {"part3_detection.json": none_confusable}),
                                            tmp_path)["text"])
    assert "look more like an image of the other class" not in text and "Leaving out the confusable" not in text


def test_figures_are_read_in_the_text(small: Build) -> None:
    """What the curves show beyond the stop: how many seeds' untrained nets call every image 1 (part 2),
    and how many 3.1 seeds' losses ever rise."""
    p2, line = (small.results[f] for f in ("part2_fc.json", "part3_line.json"))
    text = small.text
    n = p2["data"]["n_images"]
    st = p2["settings"]
    for act in ("sigmoid", "relu"):
        ones = st[f"{act}-ce"]["predicted_ones_start"]
        assert ones == st[f"{act}-l2"]["predicted_ones_start"]  # seed k starts alike in both losses
        count = sum(v == n for v in ones)
        name = "ReLU" if act == "relu" else act
        assert f"{count} of {len(ones)} {name} seeds" in text, act
    rises = line["loss_rises"]
    if line["single"]["loss_rises_at"]:
        flat = re.sub(r"\s+", " ", text)
        assert f"the loss rises at least once in {sum(v > 0 for v in rises)} of {len(rises)}" in flat
        half = line["half_lr"]["loss_rises"]
        k = sum(v > 0 for v in half)
        assert f"in {k} of {len(half)}" in flat and "and, at half the rate" in flat
        # paired by seed: rises the half rate removes and rises it adds, with their sign test
        gone = sum(a > 0 and b == 0 for a, b in zip(rises, half, strict=True))
        new = sum(a == 0 and b > 0 for a, b in zip(rises, half, strict=True))
        assert f"halving the rate removes the rise in {gone} of the {sum(v > 0 for v in rises)} seeds" in flat
        assert f"gives one to {new} (sign test {pval(sign_test(gone, new))}" in flat
        # all the rises counted, and the steps they fall in (every run reaches 100%: its iterations are its steps)
        its, half_its = line["iterations"], line["half_lr"]["iterations"]
        if all(v is not None for v in its + half_its):
            total, half_total = sum(rises), sum(half)
            if half_total >= total:
                many = "as many" if half_total == total else "more"
                assert (f"counted in all, the rises are {many} ({total} and {half_total}) over runs "
                        f"{sig(sum(half_its) / sum(its), 2)}× as long ({pct(total / sum(its), 1)} and "
                        f"{pct(half_total / sum(half_its), 1)} of the steps): the prediction of fewer rises holds "
                        "seed by seed but fails in total") in flat
            else:
                assert f"counted in all, the rises fall from {total} to {half_total}" in flat
    # the median seed's overshoot: steps with rate x sharpness above 2, and the rises after them
    sharp, loss = line["single"]["sharpness"], line["single"]["replayed_loss"]
    steps = range(len(sharp) - 1)
    above = [t for t in steps if sharp[t] is not None and sharp[t] > 2]
    below = [t for t in steps if sharp[t] is not None and sharp[t] <= 2]
    if above and line["single"]["loss_rises_at"]:
        rises = sum(loss[t + 1] > loss[t] for t in above)
        assert (f"the loss rises after {rises} of the {len(above)} steps above 2 and after "
                f"{sum(loss[t + 1] > loss[t] for t in below)} of the {len(below)} at or below 2") in flat


def test_the_tests_behind_the_answers_sit_in_the_appendix(small: Build) -> None:
    """2.5 and 3.2 answer in a few lines and point to the appendix, where the tables and tests stand."""
    text = small.text
    appendix = text.index("Appendix")
    assert "Why (each reason tested in the appendix):" in re.sub(r"\s+", " ", text[:appendix])
    for heading in ("Behind 2.5: the tests of the reasons", "Behind 3.2: the late images and the widths"):
        assert text.index(heading) > appendix, heading
    for moved in ("ratios of median iterations, measured", "learning-rate sweep", "3.2 by group of images",
                  "Iterations scale as"):
        assert text.index(moved) > appendix, moved


def test_kernel_figure_is_read_in_numbers(small: Build) -> None:
    """3.1: Figure 12's two panels in the numbers part3_line.py measured (appendix): the kernels' change
    against their start, and how much of it the column and row means explain (stripes said only where
    the column means explain most of it)."""
    kc = small.results["part3_line.json"]["single"]["kernel_change"]
    text = re.sub(r"\s+", " ", small.text)
    assert f"The first layer’s kernels change by {pct(kc['relative_change'])} of their initial norm" in text
    shares = f"the column means of the change (each kernel’s mean removed) explain {pct(kc['column_share'])} of its " \
             f"variation, the row means {pct(kc['row_share'])} (independent noise: about 1/8 each)"
    assert shares in text
    vertical = kc["column_share"] > 2 * kc["row_share"] and kc["column_share"] > 0.5
    assert ("the change forms vertical stripes" in text) == vertical
    answer = text[text.index("3.1 Line dataset"):text.index("3.2 Detection dataset")]
    assert "initial norm" not in answer  # told beside the figure, in the appendix
    assert "Its first-layer kernels: Figure 12 , appendix" in re.sub(r"\s+", " ", answer)  # HTML spaces a reference


def test_what_limits_the_widths_is_read_from_the_frozen_control_and_the_curvature(small: Build) -> None:
    """3.2: the frozen-features control (its median stop or the cap, seeds within the cap, the paired
    comparison with 3.2) and the width head's rate x curvature at classification and at the stop."""
    det = small.results["part3_detection.json"]
    text = re.sub(r" \)", ")", re.sub(r"\s+", " ", small.text))
    fz = det["controls"]["frozen_features"]
    pf = fz["compared_with_3_2"]["iterations"]["paired"]
    stop = median([math.inf if v is None else v for v in fz["iterations"]])
    needs = (f"more than {det['config']['max_iters']:,} iterations in the median seed" if math.isinf(stop)
             else f"a median of {num(stop)}")
    assert (f"the width head alone needs {needs} ({sum(v is not None for v in fz['iterations'])} of "
            f"{len(fz['iterations'])} seeds within the cap; slower than 3.2 in {pf['losses']} of "
            f"{pf['wins'] + pf['losses'] + pf['ties']}, {pval(pf['sign_test_p'])})") in text
    slower = pf["sign_test_p"] < 0.05 and pf["losses"] > pf["wins"]
    # the widths' paragraph opens with what the frozen control says, where it takes over twice as long
    # (the control's paragraph is then headed plainly)
    base = median([math.inf if v is None else v for v in det["iterations"]])
    ratio = det["controls"]["frozen_features"]["compared_with_3_2"]["iterations"]["median_ratio"]
    pace = slower and ratio is not None and ratio < 0.5
    if ratio is not None and math.isfinite(stop) and math.isfinite(base):
        assert ratio == pytest.approx(base / stop)
    assert ("Changing features speed the widths up." in text) == (slower and not pace)
    assert ("Frozen features: changing features speed the widths up." in text) == pace
    classified = median([m["head_sharpness"]["classified"] for m in det["measurements"]
                         if m["head_sharpness"]["classified"] is not None])
    at_stop = median([m["head_sharpness"]["stop"] for m in det["measurements"]
                      if m["head_sharpness"]["stop"] is not None])
    if at_stop > classified:
        assert (f"rises from {sig(classified)} at the first 100% classification to {sig(at_stop)} at the stop "
                "(medians)") in text


@pytest.mark.parametrize("more", [False, True])
def test_half_rate_rises_are_counted_per_seed_and_in_all(small: Build, tmp_path: Path, more: bool) -> None:
    """3.1's bump at half the rate: the seeds that lose or gain a rise (a sign test), and all the rises
    counted over the steps of the runs, where a seed's rises are taken from the results per seed."""
    def rises(line: dict[str, Any]) -> None:
        n = len(line["seeds"])
        line["single"]["loss_rises_at"] = [3]
        line["iterations"] = [20 + k for k in range(n)]
        line["half_lr"]["iterations"] = [40 + k for k in range(n)]
        line["loss_rises"] = [2] * n
        line["half_lr"]["loss_rises"] = [2 * n + 1 if more else 3] + [0] * (n - 1)

    figures = edited_copy(small, tmp_path, {"part3_line.json": rises})
    flat = re.sub(r"\s+", " ", build_report(figures, tmp_path)["text"])
    line = json.loads((figures / "part3_line.json").read_text())
    n = len(line["seeds"])
    steps, half_steps = sum(line["iterations"]), sum(line["half_lr"]["iterations"])
    total, half_total = 2 * n, line["half_lr"]["loss_rises"][0]
    assert f"halving the rate removes the rise in {n - 1} of the {n} seeds with one and gives one to 0" in flat
    # why, from every run replayed: the steps above 2 and at or below 2 at each rate, and the rises after them
    os = line["overshoot"]
    f, h = os["full"], os["half"]
    assert f"the loss rises after {f['rises_above']} of the {f['above']} steps with rate × sharpness above 2" in flat
    assert f"and after {f['rises_below']} of the {f['below']} at or below 2" in flat
    only_above = f["rises_below"] == 0 and f["rises_above"] > 0
    assert ("in every run it rises only after a step above 2, as the argument implies" in flat) == only_above
    # the failed prediction in the answer: as many rises in all at half the rate, where the half rate's steps
    # also rise only after steps above 2
    half_told = h["rises_below"] == 0 and h["rises_above"] > 0 and half_total >= total
    gone = sum(a > 0 and b == 0 for a, b in zip(line["loss_rises"], line["half_lr"]["loss_rises"], strict=True))
    new = sum(a == 0 and b > 0 for a, b in zip(line["loss_rises"], line["half_lr"]["loss_rises"], strict=True))
    seedwise = gone > new and sign_test(gone, new) < 0.05
    told = (f"Halving the rate removes the rise in {gone} of the {n} seeds with one (sign test "
            f"{pval(sign_test(gone, new))}) but leaves the total number of rises unchanged ({total} and {half_total})"
            if seedwise else
            f"Halving the rate does not cut the total number of rises ({total} and {half_total}), a failed prediction")
    assert (told in flat) == half_told
    assert (f"Why, from every run replayed at half the rate: the loss rises after {h['rises_above']} of the "
            f"{h['above']} steps whose rate × sharpness is above 2 and after {h['rises_below']} of the {h['below']} "
            "at or below 2") in flat
    clean = f["rises_below"] == h["rises_below"] == 0 and f["rises_above"] > 0 and h["rises_above"] > 0
    assert ("every rise follows a step above 2, at both rates" in flat) == clean
    if more:
        assert (f"counted in all, the rises are more ({total} and {half_total}) over runs "
                f"{sig(half_steps / steps, 2)}× as long ({pct(total / steps, 1)} and {pct(half_total / half_steps, 1)} "
                "of the steps): the prediction of fewer rises holds seed by seed but fails in total") in flat
        assert "replayed at half the rate, stays at or below 2" not in flat  # every run's replay says more
    else:
        assert f"counted in all, the rises fall from {total} to {half_total}" in flat
