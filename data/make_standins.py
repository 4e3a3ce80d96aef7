"""Write the stand-in datasets: seven .npy files in the course's layout, shapes, dtypes and meaning.

The course's own files may not be shipped (see data/README.md), so the project ships these instead.
Everything comes from numpy's PCG64 generator seeded with SEED (one stream per dataset, so changing
one dataset never changes another); the same numpy gives the same bytes on every run.

    random/random_imgs.npy        (64, 4, 4) int64 in {0, 1}: fair coin flips per pixel
    random/random_labs.npy        (64,) float64 in {0, 1}: 11 ones at random places, redrawn until
                                  a perceptron separates them, so the set is linearly separable
    line/line_imgs.npy            (64, 16, 16) float64 in {0, 1}: one vertical bar (2-4 px wide,
                                  11-14 px tall) and one square of odd side (1-11 px), at least one
                                  empty column apart, so they never touch, not even diagonally
    line/line_labs.npy            (64,) float64: 1 = square LEFT of the bar (indices 0-31),
                                  0 = square RIGHT of the bar (indices 32-63)
    detection/detection_imgs.npy  (64, 16, 16) float64 in {0, 1}: one filled object of half-extent w,
                                  bounding box (2w+1) x (2w+1): a diamond |dx|+|dy| <= w (label 0,
                                  indices 0-31) or an axis-aligned square max(|dx|,|dy|) <= w (label 1,
                                  indices 32-63)
    detection/detection_labs.npy  (64,) float64 in {0, 1}
    detection/detection_width.npy (64,) float64: w, integers 1..7, each width 4 or 5 times per label

Usage:
    python data/make_standins.py              # (re)write the files into data/
    python data/make_standins.py --out DIR    # write them into DIR
    python data/make_standins.py --check      # regenerate into a temporary folder; exit 1 if data/
                                              # (or --out) differs, or part2_fc.STANDIN_SHA256 is stale
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the shared helpers live in the top-level part scripts

from part1_loss_gradient import atomic_write  # noqa: E402

SEED = 680  # the course number; each dataset draws from its own stream (SEED, index)
N_IMAGES = 64
RANDOM_SIDE = 4  # random images are 4 x 4
IMAGE_SIDE = 16  # line and detection images are 16 x 16, like the course files
RANDOM_ONES = 11  # label-1 count of the random set, as in the course file (53 zeros, 11 ones)
RANDOM_MAX_DRAWS = 10_240  # labellings tried before giving up (about 1 in 100 passes the check)
RANDOM_BATCH = 256  # labellings checked at once
PERCEPTRON_EPOCHS = 300  # a labelling counts as separable when the perceptron separates it in time
BAR_WIDTHS = (2, 3, 4)
BAR_HEIGHTS = (11, 12, 13, 14)
SQUARE_SIDES = (1, 3, 5, 7, 9, 11)
DETECTION_WIDTHS = tuple(range(1, 8))  # half-extents; the largest object is 15 x 15 pixels


# ---------------------------------------------------------------------------------------------
# The three datasets
# ---------------------------------------------------------------------------------------------


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
    raise RuntimeError(f"no separable labelling in {RANDOM_MAX_DRAWS} draws")  # not with this SEED


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
    """A vertical bar and a square, not touching; label 1 when the square is left of the bar.

    Returns images (64, 16, 16) float64 in {0, 1} and labels (64,) float64: 1 for indices 0-31,
    0 for 32-63 (the course's order).
    """
    images = np.zeros((N_IMAGES, IMAGE_SIDE, IMAGE_SIDE))
    labels = (np.arange(N_IMAGES) < N_IMAGES // 2).astype(np.float64)
    for image, label in zip(images, labels, strict=True):
        bar_w, bar_h = int(rng.choice(BAR_WIDTHS)), int(rng.choice(BAR_HEIGHTS))
        side = int(rng.choice(SQUARE_SIDES))
        # Left to right: margin, first shape, gap (>= 1 empty column), second shape, margin.
        spare = IMAGE_SIDE - (bar_w + 1 + side)
        left_margin = int(rng.integers(0, spare + 1))
        extra_gap = int(rng.integers(0, spare - left_margin + 1))
        first_w = side if label == 1 else bar_w
        first_x = left_margin
        second_x = first_x + first_w + 1 + extra_gap
        square_x, bar_x = (first_x, second_x) if label == 1 else (second_x, first_x)
        bar_y = int(rng.integers(0, IMAGE_SIDE - bar_h + 1))
        square_y = int(rng.integers(0, IMAGE_SIDE - side + 1))
        image[bar_y : bar_y + bar_h, bar_x : bar_x + bar_w] = 1
        image[square_y : square_y + side, square_x : square_x + side] = 1
    return images, labels


def make_detection(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One filled diamond (label 0) or axis-aligned square (label 1) of half-extent w per image.

    Returns images (64, 16, 16) float64 in {0, 1}, labels (64,) float64 (0 for indices 0-31, 1 for
    32-63, the course's order) and widths (64,) float64, the integer half-extent w in pixels.
    """
    half = N_IMAGES // 2
    labels = (np.arange(N_IMAGES) >= half).astype(np.float64)
    # Every width 1..7 four or five times per label, in random order.
    widths = np.concatenate([rng.permutation(np.resize(DETECTION_WIDTHS, half)) for _ in range(2)])
    images = np.zeros((N_IMAGES, IMAGE_SIDE, IMAGE_SIDE))
    rows, cols = np.indices((IMAGE_SIDE, IMAGE_SIDE))
    for image, label, w in zip(images, labels, widths, strict=True):
        cy, cx = (int(c) for c in rng.integers(w, IMAGE_SIDE - w, size=2))  # object stays inside
        dy, dx = np.abs(rows - cy), np.abs(cols - cx)
        inside = np.maximum(dy, dx) <= w if label == 1 else dy + dx <= w
        image[inside] = 1
    return images, labels, widths.astype(np.float64)


def make_all() -> dict[str, np.ndarray]:
    """All seven arrays, keyed by their path relative to the data folder."""
    random_imgs, random_labs = make_random(np.random.default_rng((SEED, 0)))
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


def write_all(out: Path, verbose: bool = True) -> dict[str, str]:
    """Write the seven files under `out`, each atomically; return relative path -> sha256."""
    digests = {}
    for rel, array in make_all().items():
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
    from part1_loss_gradient import STANDIN_SHA256

    if digests != STANDIN_SHA256:
        problems.append("part2_fc.py: STANDIN_SHA256 does not match the generated files")
    for problem in problems:
        print(f"make_standins.py: {problem}", file=sys.stderr)
    print("check failed" if problems else f"check passed: {out} holds exactly the stand-ins")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="data folder to write (default: this script's folder, data/)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if --out differs from a fresh generation")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.out)
    write_all(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
