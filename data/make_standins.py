"""Write the stand-in datasets: seven .npy files in the course's layout, shapes, dtypes and meaning.

The course's own files may not be shipped (see data/README.md), so the project ships these instead.
They are drawn, never copied: numpy's PCG64 generator seeded with SEED (one stream per dataset, so
changing one dataset never changes another) draws every image from distributions matched to summary
statistics measured on the course files (counts below, in the constants); the same numpy gives the
same bytes on every run.

    random/random_imgs.npy        (64, 4, 4) int64 in {0, 1}: fair coin flips per pixel
    random/random_labs.npy        (64,) float64 in {0, 1}: 11 ones at random places, redrawn until
                                  a perceptron separates them, so the set is linearly separable;
                                  the draw is sub-seed RANDOM_SUBSEED, chosen by --select (below)
    line/line_imgs.npy            (64, 16, 16) float64 in {0, 1}: one vertical bar (2-4 px wide,
                                  11-14 px tall) and one square of odd side (1-11 px), 0-6 empty
                                  columns apart (0: they touch, as in 6 of the course's 64 images)
    line/line_labs.npy            (64,) float64: 1 = square LEFT of the bar (indices 0-31),
                                  0 = square RIGHT of the bar (indices 32-63)
    detection/detection_imgs.npy  (64, 16, 16) float64 in {0, 1}: one filled object of half-extent w,
                                  bounding box (2w+1) x (2w+1): a diamond |dx|+|dy| <= w (label 0,
                                  indices 0-31) or an axis-aligned square max(|dx|,|dy|) <= w (label 1,
                                  indices 32-63)
    detection/detection_labs.npy  (64,) float64 in {0, 1}
    detection/detection_width.npy (64,) float64: w, integers 1..7, the course's histogram per label

Why a selection for the random set: its 64 images and 11 positive labels are one small random draw,
and that one draw decides how hard part 2 is (how often sigmoid + L2 reaches 100% within 10,000
iterations, the medians of the other settings). Separable random draws differ a lot, so the draw is
chosen among candidate sub-seeds by the part-2 statistics they give, against the course's (TARGETS).
`--select` reruns that search; the default run writes the recorded choice, RANDOM_SUBSEED, directly.

Usage:
    python data/make_standins.py              # (re)write the files into data/
    python data/make_standins.py --out DIR    # write them into DIR
    python data/make_standins.py --check      # regenerate into a temporary folder; exit 1 if data/
                                              # (or --out) differs, or part2_fc.STANDIN_SHA256 is stale
    python data/make_standins.py --select 40 --select-seeds 30
                                              # rerun the choice of the random set: train part2_fc.py
                                              # on sub-seeds 0..39 (30 seeds each), rank them by their
                                              # distance to TARGETS; writes nothing
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the shared helpers live in the top-level part scripts

from part1_loss_gradient import atomic_write  # noqa: E402

SEED = 680  # the course number; each dataset draws from its own stream (SEED, index)
N_IMAGES = 64
RANDOM_SIDE = 4  # random images are 4 x 4
IMAGE_SIDE = 16  # line and detection images are 16 x 16, like the course files

# --- random: the draw ---------------------------------------------------------------------------
RANDOM_ONES = 11  # label-1 count of the random set, as in the course file (53 zeros, 11 ones)
RANDOM_SUBSEED = 19  # the chosen draw: stream (SEED, 0, RANDOM_SUBSEED); see --select and TARGETS
RANDOM_MAX_DRAWS = 10_240  # labellings tried before giving up (about 1 in 100 passes the check)
RANDOM_BATCH = 256  # labellings checked at once
PERCEPTRON_EPOCHS = 300  # a labelling counts as separable when the perceptron separates it in time

# The course files' part-2 statistics that --select aims at: `part2_fc.py --seeds 100` (seeds 0-99,
# handout defaults) on the course's random set: per setting, the share of seeds reaching 100% within
# 10,000 iterations and the median iterations (None: fewer than half of the seeds reach 100%).
TARGETS: dict[str, dict[str, float | None]] = {
    "sigmoid-l2": {"reach_rate": 0.23, "median": None},
    "sigmoid-ce": {"reach_rate": 1.00, "median": 4587},
    "relu-l2": {"reach_rate": 0.99, "median": 2308},
    "relu-ce": {"reach_rate": 1.00, "median": 906},
}
REACH_TOLERANCE = 0.10  # a setting is matched within 10 points of reach rate ...
MEDIAN_TOLERANCE = 0.25  # ... and within 25% of median (where both medians exist)

# --- line: counts measured on the course's 64 images (6 touching ones included where known) ------
BAR_WIDTHS = {2: 14, 3: 27, 4: 17}  # px wide
BAR_HEIGHTS = {11: 8, 12: 25, 13: 13, 14: 12}  # px tall
BAR_TOP_ROWS = (1, 2, 3)  # the bar starts in row 1-3 (and ends inside the image)
BAR_LEFT = {1: (7, 8, 9, 10), 0: (1, 2, 3, 4)}  # the bar's first column, per label
SQUARE_SIDES = {1: 7, 3: 15, 5: 32, 7: 7, 9: 2, 11: 1}  # odd side, px
GAPS = {0: 6, 1: 15, 2: 17, 3: 12, 4: 6, 5: 6, 6: 2}  # empty columns between the shapes; 0 = touch
PLACE_TRIES = 20  # (gap, bar column) draws for one square side before the side is drawn again

# --- detection: the course's width histogram per label, and where the centres lie ----------------
DETECTION_WIDTHS = {
    0: {2: 5, 3: 12, 4: 8, 5: 5, 6: 1, 7: 1},  # diamonds
    1: {1: 4, 2: 4, 3: 9, 4: 10, 5: 4, 6: 1},  # squares
}
CENTRE_RANGE = (4, 11)  # the centre's row and column, as in the course (and inside the image)


# ---------------------------------------------------------------------------------------------
# The three datasets
# ---------------------------------------------------------------------------------------------


def pick(rng: np.random.Generator, counts: dict[int, int]) -> int:
    """One value drawn with probability proportional to its count."""
    values = np.array(list(counts))
    weights = np.array(list(counts.values()), dtype=np.float64)
    return int(rng.choice(values, p=weights / weights.sum()))


def make_random(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random binary 4x4 images with random labels, redrawn until they are linearly separable.

    Returns images (64, 4, 4) int64 in {0, 1} and labels (64,) float64 with RANDOM_ONES ones.
    Random labels that happen to be separable, like the course's, make a hard problem (sigmoid + L2
    often misses 100% within 10,000 iterations); labels cut by a random hyperplane were far easier.
    Labellings are drawn in batches and checked together; the first one shown separable wins.
    """
    images = rng.integers(0, 2, size=(N_IMAGES, RANDOM_SIDE, RANDOM_SIDE), dtype=np.int64)
    x = images.reshape(N_IMAGES, -1).astype(np.float64)
    for _ in range(RANDOM_MAX_DRAWS // RANDOM_BATCH):
        labels = np.zeros((RANDOM_BATCH, N_IMAGES))
        for row in labels:
            row[rng.choice(N_IMAGES, RANDOM_ONES, replace=False)] = 1
        separable = np.flatnonzero(separable_by_perceptron(x, labels))
        if separable.size:
            return images, labels[separable[0]]
    raise RuntimeError(f"no separable labelling in {RANDOM_MAX_DRAWS} draws")  # not with these seeds


def separable_by_perceptron(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """For each labelling (rows of labels, (K, N)) of the points x (N, D): shown linearly separable?

    Runs K batch perceptrons (with bias) for PERCEPTRON_EPOCHS. A perceptron that makes no mistake
    has found a separating hyperplane, the proof; on a separable set it always gets there given
    enough epochs, so False means "not shown separable in time". Returns (K,) bool.
    """
    xb = np.hstack([x, np.ones((len(x), 1))])
    sign = 2 * labels - 1
    weights = np.zeros((len(labels), xb.shape[1]))
    for _ in range(PERCEPTRON_EPOCHS):
        wrong = sign * (weights @ xb.T) <= 0
        weights += (sign * wrong) @ xb  # a separated labelling makes no mistake: it stops moving
    return ~(sign * (weights @ xb.T) <= 0).any(axis=1)


def make_line(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A vertical bar and a square; label 1 when the square is left of the bar.

    Sizes and the gap are drawn with the course's frequencies (BAR_WIDTHS, ...); the bar stands in
    the right half (label 1) or the left half (label 0) and the square beside it, level with the bar
    (its top at most one row above the bar's). A gap and bar column whose square would leave the
    image are drawn again (the side only when no gap and bar column fit it). Gap 0 puts the shapes
    side by side, touching (one 8-connected component).
    Returns images (64, 16, 16) float64 in {0, 1} and labels (64,) float64: 1 for indices 0-31,
    0 for 32-63 (the course's order).
    """
    images = np.zeros((N_IMAGES, IMAGE_SIDE, IMAGE_SIDE))
    labels = (np.arange(N_IMAGES) < N_IMAGES // 2).astype(np.float64)
    for image, label in zip(images, labels, strict=True):
        bar_w, bar_h = pick(rng, BAR_WIDTHS), pick(rng, BAR_HEIGHTS)
        side, square_x = 0, -1
        while not (square_x >= 0 and square_x + side <= IMAGE_SIDE):
            side = pick(rng, SQUARE_SIDES)
            for _ in range(PLACE_TRIES):  # a square too big to fit beside the bar is drawn again
                gap, bar_x = pick(rng, GAPS), int(rng.choice(BAR_LEFT[int(label)]))
                square_x = bar_x - gap - side if label == 1 else bar_x + bar_w + gap
                if square_x >= 0 and square_x + side <= IMAGE_SIDE:
                    break
        bar_y = int(rng.choice([top for top in BAR_TOP_ROWS if top + bar_h <= IMAGE_SIDE]))
        low, high = max(bar_y - 1, 0), min(bar_y + bar_h - side, IMAGE_SIDE - side)
        square_y = int(rng.integers(low, max(high, low) + 1))
        image[bar_y : bar_y + bar_h, bar_x : bar_x + bar_w] = 1
        image[square_y : square_y + side, square_x : square_x + side] = 1
    return images, labels


def make_detection(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One filled diamond (label 0) or axis-aligned square (label 1) of half-extent w per image.

    The widths of each label follow the course's histogram (DETECTION_WIDTHS) in random order; the
    centre's row and column are drawn in CENTRE_RANGE, where the whole object stays inside.
    Returns images (64, 16, 16) float64 in {0, 1}, labels (64,) float64 (0 for indices 0-31, 1 for
    32-63, the course's order) and widths (64,) float64, the integer half-extent w in pixels.
    """
    half = N_IMAGES // 2
    labels = (np.arange(N_IMAGES) >= half).astype(np.float64)
    widths = np.concatenate([rng.permutation(np.repeat(list(DETECTION_WIDTHS[label]),
                                                       list(DETECTION_WIDTHS[label].values())))
                             for label in (0, 1)])
    images = np.zeros((N_IMAGES, IMAGE_SIDE, IMAGE_SIDE))
    rows, cols = np.indices((IMAGE_SIDE, IMAGE_SIDE))
    for image, label, w in zip(images, labels, widths, strict=True):
        low, high = max(w, CENTRE_RANGE[0]), min(IMAGE_SIDE - 1 - w, CENTRE_RANGE[1])
        cy, cx = (int(c) for c in rng.integers(low, high + 1, size=2))  # object stays inside
        dy, dx = np.abs(rows - cy), np.abs(cols - cx)
        inside = np.maximum(dy, dx) <= w if label == 1 else dy + dx <= w
        image[inside] = 1
    return images, labels, widths.astype(np.float64)


def make_all(random_subseed: int = RANDOM_SUBSEED) -> dict[str, np.ndarray]:
    """All seven arrays, keyed by their path relative to the data folder."""
    random_imgs, random_labs = make_random(np.random.default_rng((SEED, 0, random_subseed)))
    line_imgs, line_labs = make_line(np.random.default_rng((SEED, 1)))
    det_imgs, det_labs, det_width = make_detection(np.random.default_rng((SEED, 2)))
    return {
        "random/random_imgs.npy": random_imgs,
        "random/random_labs.npy": random_labs,
        "line/line_imgs.npy": line_imgs,
        "line/line_labs.npy": line_labs,
        "detection/detection_imgs.npy": det_imgs,
        "detection/detection_labs.npy": det_labs,
        "detection/detection_width.npy": det_width,
    }


# ---------------------------------------------------------------------------------------------
# Writing and checking
# ---------------------------------------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    """The exact bytes np.save writes for `array` (no pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def write_all(out: Path, verbose: bool = True, random_subseed: int = RANDOM_SUBSEED) -> dict[str, str]:
    """Write the seven files under `out`, each atomically; return relative path -> sha256."""
    digests = {}
    for rel, array in make_all(random_subseed).items():
        data = npy_bytes(array)
        atomic_write(out / rel, lambda tmp, data=data: tmp.write_bytes(data))
        digests[rel] = hashlib.sha256(data).hexdigest()
        if verbose:
            print(f"wrote {out / rel}  {array.shape} {array.dtype}  sha256 {digests[rel]}")
    return digests


def check(out: Path) -> int:
    """Regenerate into a temporary folder and compare with `out` and part2_fc.STANDIN_SHA256.

    Returns 0 when everything matches, else 1 (after one line per difference).
    """
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        digests = write_all(Path(tmp), verbose=False)
        for rel in digests:
            fresh, committed = Path(tmp, rel).read_bytes(), out / rel
            if not committed.is_file():
                problems.append(f"{committed}: missing")
            elif committed.read_bytes() != fresh:
                problems.append(f"{committed}: differs from what the generator writes")
    from part2_fc import STANDIN_SHA256

    if digests != STANDIN_SHA256:
        problems.append("part2_fc.py: STANDIN_SHA256 does not match the generated files")
    for problem in problems:
        print(f"make_standins.py: {problem}", file=sys.stderr)
    print("check failed" if problems else f"check passed: {out} holds exactly the stand-ins")
    return 1 if problems else 0


# ---------------------------------------------------------------------------------------------
# Choosing the random draw (--select)
# ---------------------------------------------------------------------------------------------


def distance(summaries: dict[str, dict[str, Any]], targets: dict[str, dict[str, Any]]) -> float:
    """How far part-2 statistics are from the targets, in units of the tolerances.

    Per setting: |reach rate - target| / REACH_TOLERANCE, plus |log(median / target)| / log(1.25)
    where both medians exist, or 1 where exactly one does. 0 = identical; a setting within both
    tolerances adds at most 2.
    """
    total = 0.0
    for setting, target in targets.items():
        summary = summaries[setting]
        total += abs(summary["reach_rate"] - target["reach_rate"]) / REACH_TOLERANCE
        ours, theirs = summary["median"], target["median"]
        if ours is not None and theirs is not None:
            total += abs(math.log(ours / theirs)) / math.log(1 + MEDIAN_TOLERANCE)
        elif (ours is None) != (theirs is None):
            total += 1.0
    return total


def part2_summaries(data_dir: Path, seeds: int, workers: int, scripts: Path) -> dict[str, dict[str, Any]]:
    """Run `part2_fc.py --seeds N` on data_dir (a subprocess); return setting -> its summary."""
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, str(scripts / "part2_fc.py"), "--data-dir", str(data_dir),
                        "--out", out, "--seeds", str(seeds), "--workers", str(workers), "--quiet"],
                       check=True, cwd=scripts, stdout=subprocess.DEVNULL)
        results = json.loads(Path(out, "part2_fc.json").read_text())
    return {name: setting["summary"] for name, setting in results["settings"].items()}


def select(candidates: int, seeds: int, workers: int, scripts: Path) -> int:
    """Train part 2 on the random draw of each sub-seed 0..candidates-1; print them ranked by distance.

    Returns the best sub-seed (the one to record as RANDOM_SUBSEED). Writes nothing in data/.
    """
    ranked = []
    with tempfile.TemporaryDirectory() as tmp:
        for subseed in range(candidates):
            folder = Path(tmp, str(subseed))
            write_all(folder, verbose=False, random_subseed=subseed)
            summaries = part2_summaries(folder, seeds, workers, scripts)
            score = distance(summaries, TARGETS)
            ranked.append((score, subseed))
            cells = "  ".join(f"{name} {100 * s['reach_rate']:.0f}%/{s['median'] or '-'}"
                              for name, s in summaries.items())
            print(f"sub-seed {subseed:3d}  distance {score:6.2f}  {cells}", flush=True)
    ranked.sort()
    print("best sub-seeds (distance):", ", ".join(f"{s} ({d:.2f})" for d, s in ranked[:5]))
    return ranked[0][1]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="data folder to write (default: this script's folder, data/)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if --out differs from a fresh generation")
    parser.add_argument("--select", type=int, metavar="N",
                        help="write nothing; rank the random draws of sub-seeds 0..N-1 by part 2's "
                             "statistics against TARGETS (trains part2_fc.py on each)")
    parser.add_argument("--select-seeds", type=int, default=30,
                        help="seeds per candidate in --select (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="part2_fc.py --workers in --select")
    parser.add_argument("--scripts", type=Path, default=REPO_ROOT,
                        help="folder holding part2_fc.py for --select (default: this repository)")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.out)
    if args.select is not None:
        best = select(args.select, args.select_seeds, args.workers, args.scripts)
        print(f"set RANDOM_SUBSEED = {best} in {Path(__file__).name} (now {RANDOM_SUBSEED})")
        return 0
    write_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
