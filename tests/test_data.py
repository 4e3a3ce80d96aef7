"""The datasets: the stand-in generator (determinism, meaning) and the loader (provenance, the hash of
the bytes trained on, bad input: one line naming the file, never a block on a FIFO)."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import part2_fc
from part2_fc import DATASET_FILES, STANDIN_SHA256, InputError, load_dataset

import numpy as np
import pytest

ALL_FILES = [rel for files in DATASET_FILES.values() for rel in files.values()]

# The course files' shapes, dtypes and value sets (reference-data/SOURCE.md).
EXPECTED_FORMAT = {
    "random/random_imgs.npy": ((64, 4, 4), np.int64, {0, 1}),
    "random/random_labs.npy": ((64,), np.float64, {0, 1}),
    "line/line_imgs.npy": ((64, 16, 16), np.float64, {0, 1}),
    "line/line_labs.npy": ((64,), np.float64, {0, 1}),
    "detection/detection_imgs.npy": ((64, 16, 16), np.float64, {0, 1}),
    "detection/detection_labs.npy": ((64,), np.float64, {0, 1}),
    "detection/detection_width.npy": ((64,), np.float64, set(range(1, 8))),
}

# Summary statistics measured on the course files (numpy), which the stand-ins are drawn to match.
COURSE_WIDTHS = {0: {2: 5, 3: 12, 4: 8, 5: 5, 6: 1, 7: 1}, 1: {1: 4, 2: 4, 3: 9, 4: 10, 5: 4, 6: 1}}
COURSE_LINE_INK = 0.2431  # mean pixel value of the course's line images
COURSE_LINE_TOUCHING = 6  # course line images whose bar and square touch (one 8-connected component)
COURSE_DETECTION_INK = 0.1975  # follows from the width histogram: an object's area depends on w only


@pytest.fixture(scope="module")
def generator(repo_root: Path) -> ModuleType:
    """data/make_standins.py, imported from its file (data/ is not a package)."""
    spec = importlib.util.spec_from_file_location("make_standins", repo_root / "data" / "make_standins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(folder: Path, rel: str) -> np.ndarray:
    return np.load(folder / rel, allow_pickle=False)


# ---------------------------------------------------------------------------------------------
# Helpers: 8-connected components and a perceptron, written here so the tests do not trust the
# generator's own code.
# ---------------------------------------------------------------------------------------------


def components(image: np.ndarray) -> list[np.ndarray]:
    """8-connected components of the nonzero pixels, each as a boolean mask of image's shape."""
    seen = np.zeros(image.shape, dtype=bool)
    found = []
    for start in zip(*np.nonzero(image), strict=True):
        if seen[start]:
            continue
        mask = np.zeros(image.shape, dtype=bool)
        stack = [start]
        seen[start] = True
        while stack:
            r, c = stack.pop()
            mask[r, c] = True
            for nr in range(max(r - 1, 0), min(r + 2, image.shape[0])):
                for nc in range(max(c - 1, 0), min(c + 2, image.shape[1])):
                    if image[nr, nc] and not seen[nr, nc]:
                        seen[nr, nc] = True
                        stack.append((nr, nc))
        found.append(mask)
    return found


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a boolean mask's nonzero pixels."""
    rows, cols = np.nonzero(mask)
    return rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


def perceptron_converges(x: np.ndarray, labels: np.ndarray, max_epochs: int = 5000) -> bool:
    """True when the perceptron with bias makes an epoch without a mistake (the set is separable)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    sign = 2 * labels - 1
    w = np.zeros(xb.shape[1])
    for _ in range(max_epochs):
        clean = True
        for row, s in zip(xb, sign, strict=True):
            if s * (row @ w) <= 0:
                w += s * row
                clean = False
        if clean:
            return True
    return False


def test_components_finds_diagonal_neighbours_connected() -> None:
    image = np.zeros((5, 5))
    image[0, 0] = image[1, 1] = 1  # touch diagonally: one 8-connected component
    image[3, 3] = 1
    assert len(components(image)) == 2


def test_perceptron_detects_inseparable_set() -> None:
    xor = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    assert not perceptron_converges(xor, np.array([0.0, 1, 1, 0]), max_epochs=200)
    assert perceptron_converges(xor, np.array([0.0, 0, 0, 1]))


# ---------------------------------------------------------------------------------------------
# The generator: same bytes every run, and the hashes the loader knows
# ---------------------------------------------------------------------------------------------


def test_generator_rewrites_the_committed_files_byte_for_byte(
    generator: ModuleType, standin_dir: Path, tmp_path: Path
) -> None:
    digests = generator.write_all(tmp_path)
    assert sorted(digests) == sorted(ALL_FILES)
    for rel in ALL_FILES:
        fresh = (tmp_path / rel).read_bytes()
        assert fresh == (standin_dir / rel).read_bytes(), rel
        assert hashlib.sha256(fresh).hexdigest() == STANDIN_SHA256[rel] == digests[rel], rel
    assert sorted(STANDIN_SHA256) == sorted(ALL_FILES)


def test_generator_check_mode(generator: ModuleType, bad_data_dir: Callable[[], Path]) -> None:
    folder = bad_data_dir()
    assert generator.main(["--check", "--out", str(folder)]) == 0
    images = load(folder, "line/line_imgs.npy")
    images[0, 0, 0] = 1 - images[0, 0, 0]
    np.save(folder / "line/line_imgs.npy", images)
    assert generator.main(["--check", "--out", str(folder)]) == 1


@pytest.mark.parametrize("rel", ALL_FILES)
def test_standin_format_matches_course_files(standin_dir: Path, rel: str) -> None:
    shape, dtype, values = EXPECTED_FORMAT[rel]
    array = load(standin_dir, rel)
    assert array.shape == shape
    assert array.dtype == dtype
    assert set(np.unique(array).tolist()) <= values


# ---------------------------------------------------------------------------------------------
# The stand-ins mean what the course data mean
# ---------------------------------------------------------------------------------------------


def test_random_labels_are_linearly_separable_with_about_11_ones(standin_dir: Path) -> None:
    images = load(standin_dir, "random/random_imgs.npy")
    labels = load(standin_dir, "random/random_labs.npy")
    assert 8 <= labels.sum() <= 14
    assert perceptron_converges(images.reshape(len(images), -1).astype(float), labels)


def filled_rectangle(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """bbox(mask) when mask's nonzero pixels fill their bounding box exactly, else None."""
    if not mask.any():
        return None
    box = bbox(mask)
    return box if mask.sum() == box[2] * box[3] else None


def line_shapes(image: np.ndarray) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(bar, square) boxes (top, left, height, width) of a line image, found by a vertical cut.

    The image must split at some column into two filled rectangles, one a bar (11-14 tall, 2-4 wide)
    and one a square of odd side; the shapes may touch side by side (no empty column between).
    """
    found = set()
    for cut in range(1, image.shape[1]):
        left, right = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
        left[:, :cut], right[:, cut:] = image[:, :cut] > 0, image[:, cut:] > 0
        boxes = [filled_rectangle(left), filled_rectangle(right)]
        if None in boxes:
            continue
        bars = [b for b in boxes if b[2] > b[3] and 11 <= b[2] <= 14 and 2 <= b[3] <= 4]
        squares = [b for b in boxes if b[2] == b[3] and b[2] % 2 == 1]
        if len(bars) == 1 and len(squares) == 1:
            found.add((bars[0], squares[0]))
    assert len(found) == 1, f"not one bar and one square: {found}"
    return found.pop()


def test_line_shapes_parses_touching_shapes() -> None:
    image = np.zeros((16, 16))
    image[1:13, 7:10] = 1  # bar 12 x 3
    image[4:9, 2:7] = 1  # square of side 5, touching the bar on its left
    assert len(components(image)) == 1
    assert line_shapes(image) == ((1, 7, 12, 3), (4, 2, 5, 5))


def test_line_label_says_whether_the_square_is_left_of_the_bar(standin_dir: Path) -> None:
    images = load(standin_dir, "line/line_imgs.npy")
    labels = load(standin_dir, "line/line_labs.npy")
    assert (labels[:32] == 1).all() and (labels[32:] == 0).all()  # the course's order
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (_, bar_left, _, bar_w), (_, square_left, _, side) = line_shapes(image)
        assert image.sum() == bar_w * line_shapes(image)[0][2] + side * side, f"image {i}: shapes overlap"
        square_is_left = square_left + side <= bar_left
        square_is_right = bar_left + bar_w <= square_left
        assert square_is_left != square_is_right, f"image {i}: square and bar overlap in columns"
        assert square_is_left == (label == 1), f"image {i}: label {label} but square left={square_is_left}"


def test_line_statistics_match_the_course(standin_dir: Path) -> None:
    images = load(standin_dir, "line/line_imgs.npy")
    assert abs(images.mean() - COURSE_LINE_INK) < 0.02  # the old stand-ins held 0.35
    touching = sum(len(components(image)) == 1 for image in images)
    assert abs(touching - COURSE_LINE_TOUCHING) <= 3
    shapes = [line_shapes(image) for image in images]
    sides = np.array([square[2] for _, square in shapes])
    assert 4.0 <= sides.mean() <= 5.0  # course: 4.6 px, mostly 3 and 5
    assert 2.8 <= np.mean([bar[3] for bar, _ in shapes]) <= 3.3  # bar width, course 3.05


def test_detection_objects_match_label_and_width(standin_dir: Path) -> None:
    images = load(standin_dir, "detection/detection_imgs.npy")
    labels = load(standin_dir, "detection/detection_labs.npy")
    widths = load(standin_dir, "detection/detection_width.npy")
    assert (labels[:32] == 0).all() and (labels[32:] == 1).all()  # the course's order
    for i, (image, label, width) in enumerate(zip(images, labels, widths, strict=True)):
        w = int(width)
        assert w == width
        parts = components(image)
        assert len(parts) == 1, f"image {i}: {len(parts)} objects"
        top, left, h, bw = bbox(parts[0])
        assert h == bw == 2 * w + 1, f"image {i}: bounding box {h}x{bw} for width {w}"
        dy, dx = np.abs(np.indices(image.shape) - np.array([top + w, left + w])[:, None, None])
        expected = np.maximum(dy, dx) <= w if label == 1 else dy + dx <= w
        count = (2 * w + 1) ** 2 if label == 1 else 2 * w * w + 2 * w + 1
        assert image.sum() == count, f"image {i}: {image.sum():g} pixels, label {label}, width {w}"
        assert (image.astype(bool) == expected).all(), f"image {i}: not a {['diamond', 'square'][int(label)]}"


def test_detection_statistics_match_the_course(standin_dir: Path) -> None:
    images = load(standin_dir, "detection/detection_imgs.npy")
    labels = load(standin_dir, "detection/detection_labs.npy")
    widths = load(standin_dir, "detection/detection_width.npy")
    for label in (0, 1):
        values, counts = np.unique(widths[labels == label].astype(int), return_counts=True)
        assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == COURSE_WIDTHS[label]
    assert images.mean() == pytest.approx(COURSE_DETECTION_INK, abs=1e-4)
    for image in images:  # centres in rows and columns 4..11, as the course's
        rows, cols = np.nonzero(image)
        assert 4 <= (rows.min() + rows.max()) / 2 <= 11 and 4 <= (cols.min() + cols.max()) / 2 <= 11


def test_class_balance_matches_the_course(standin_dir: Path) -> None:
    assert load(standin_dir, "random/random_labs.npy").sum() == 11
    assert load(standin_dir, "line/line_labs.npy").sum() == 32
    assert load(standin_dir, "detection/detection_labs.npy").sum() == 32
    assert abs(load(standin_dir, "random/random_imgs.npy").mean() - 0.5) < 0.05


@pytest.mark.parametrize("rel", ALL_FILES)
def test_no_standin_file_equals_a_course_file(standin_dir: Path, course_dir: Path, rel: str) -> None:
    """The bytes always differ; so do the arrays, except the line and detection labels, which hold
    the course's order by design (1 then 0, 0 then 1: 32 each)."""
    ours, theirs = (standin_dir / rel).read_bytes(), (course_dir / rel).read_bytes()
    assert ours != theirs
    same_by_design = rel in ("line/line_labs.npy", "detection/detection_labs.npy")
    assert np.array_equal(load(standin_dir, rel), load(course_dir, rel)) == same_by_design
    for other in ALL_FILES:  # not under another name either
        assert ours != (course_dir / other).read_bytes()


def test_standin_images_are_drawn_not_copied(standin_dir: Path, course_dir: Path) -> None:
    """Few images coincide with a course image (small objects can by chance); none of the random set's."""
    limits = {"random/random_imgs.npy": 0, "line/line_imgs.npy": 2, "detection/detection_imgs.npy": 12}
    for rel, most in limits.items():
        ours, theirs = load(standin_dir, rel), load(course_dir, rel)
        course_images = {image.tobytes() for image in theirs}
        assert sum(image.tobytes() in course_images for image in ours) <= most, rel


def test_select_ranks_draws_by_distance_to_the_targets(
    generator: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--select without training: a stand-in part2_fc gives each draw statistics; the closest wins."""
    targets = generator.TARGETS
    assert generator.distance({s: dict(t) for s, t in targets.items()}, targets) == 0
    off = {s: {"reach_rate": t["reach_rate"], "median": t["median"]} for s, t in targets.items()}
    off["relu-ce"] = {"reach_rate": targets["relu-ce"]["reach_rate"] - 0.1, "median": None}
    assert generator.distance(off, targets) == pytest.approx(2.0)

    def fake_summaries(data_dir: Path, seeds: int, workers: int, scripts: Path) -> dict:
        subseed = int(data_dir.name)
        return {s: {"reach_rate": t["reach_rate"], "median": None if t["median"] is None
                    else t["median"] * (1 + abs(subseed - 2) / 10)} for s, t in targets.items()}

    monkeypatch.setattr(generator, "part2_summaries", fake_summaries)
    assert generator.select(4, seeds=3, workers=1, scripts=Path(".")) == 2
    assert "best sub-seeds (distance): 2 (0.00)" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# The loader: provenance
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DATASET_FILES))
def test_loader_names_the_standins(standin_dir: Path, name: str) -> None:
    data = load_dataset(standin_dir, name)
    files = DATASET_FILES[name]
    arrays = {role: load(standin_dir, rel) for role, rel in files.items()}
    assert data.record["provenance"] == "stand-in" and data.record["name"] == name
    assert data.record["sha256"] == {rel: hashlib.sha256((standin_dir / rel).read_bytes()).hexdigest()
                                     for rel in files.values()}
    assert data.record["sha256"] == {rel: STANDIN_SHA256[rel] for rel in files.values()}
    assert data.record["n_images"] == 64 and data.record["image_size"] == list(arrays["images"].shape[1:])
    labels = arrays["labels"]
    assert data.record["label_counts"] == {"0": int((labels == 0).sum()), "1": int((labels == 1).sum())}
    assert data.images.dtype == data.labels.dtype == np.float64
    np.testing.assert_array_equal(data.images, arrays["images"])
    np.testing.assert_array_equal(data.labels, labels)
    assert (data.widths is not None) == (name == "detection")
    if data.widths is not None:
        np.testing.assert_array_equal(data.widths, arrays["widths"])
    assert name in data.describe and "stand-in" in data.describe


@pytest.mark.parametrize("name", list(DATASET_FILES))
def test_loader_accepts_and_names_course_data(course_dir: Path, name: str) -> None:
    data = load_dataset(course_dir, name)
    assert data.record["provenance"] == "course data"
    assert data.images.shape[0] == 64


def test_loader_names_valid_other_data_other(bad_data_dir: Callable[[], Path]) -> None:
    folder = bad_data_dir()
    labels = load(folder, "random/random_labs.npy")
    np.save(folder / "random/random_labs.npy", 1 - labels)
    assert load_dataset(folder, "random").record["provenance"] == "other"
    assert load_dataset(folder, "line").record["provenance"] == "stand-in"


def test_the_recorded_hash_is_of_the_bytes_trained_on(bad_data_dir: Callable[[], Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 23: a file replaced while the loader reads it. The hash recorded must be that of the
    bytes the arrays came from (read once), not of the file as it is afterwards."""
    folder = bad_data_dir()
    path = folder / "random/random_labs.npy"
    first = path.read_bytes()
    replacement = np.zeros(64)  # valid labels, other bytes
    real_fdopen = part2_fc.os.fdopen

    class SwapAfterRead:
        """The file object the loader reads from; right after its read, another file takes its name."""

        def __init__(self, file) -> None:
            self.file = file

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

        def read(self, *args):
            data = self.file.read(*args)
            if data == first:  # the labels file was read: now replace it
                np.save(path, replacement)
            return data

    monkeypatch.setattr(part2_fc.os, "fdopen", lambda fd, *a, **k: SwapAfterRead(real_fdopen(fd, *a, **k)))
    data = load_dataset(folder, "random")
    assert path.read_bytes() != first  # the swap happened during the load
    assert data.record["sha256"]["random/random_labs.npy"] == hashlib.sha256(first).hexdigest()
    np.testing.assert_array_equal(data.labels, np.load(io.BytesIO(first)))  # trained on the first bytes
    assert data.record["provenance"] == "stand-in"


def test_widths_up_to_the_image_size_are_accepted(bad_data_dir: Callable[[], Path]) -> None:
    folder = bad_data_dir()
    widths = load(folder, "detection/detection_width.npy")
    widths[3], widths[4] = 16.0, 0.5  # (0, max(H, W)] for 16 x 16 images: both ends inside
    np.save(folder / "detection/detection_width.npy", widths)
    data = load_dataset(folder, "detection")
    assert data.widths[3] == 16.0 and data.record["provenance"] == "other"


# ---------------------------------------------------------------------------------------------
# The loader: a catalogue of bad input, each refused with one line naming the file and the problem
# ---------------------------------------------------------------------------------------------


def _save(folder: Path, rel: str, array: np.ndarray, **kwargs: bool) -> None:
    np.save(folder / rel, array, **kwargs)


def _edit(rel: str, change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], str]:
    """A corruption: replace file `rel` by change(its array); returns `rel` (the file to name)."""

    def corrupt(folder: Path) -> str:
        _save(folder, rel, change(load(folder, rel)))
        return rel

    return corrupt


def _set(array: np.ndarray, index: tuple, value: float) -> np.ndarray:
    array = array.astype(np.result_type(array, type(value)))
    array[index] = value
    return array


def _write_bytes(rel: str, data: bytes) -> Callable[[Path], str]:
    def corrupt(folder: Path) -> str:
        (folder / rel).write_bytes(data)
        return rel

    return corrupt


def _missing_dir(folder: Path) -> str:
    shutil.rmtree(folder)
    return "--data-dir"


def _data_dir_is_a_file(folder: Path) -> str:
    shutil.rmtree(folder)
    folder.write_text("not a folder")
    return "--data-dir"


def _delete(rel: str) -> Callable[[Path], str]:
    def corrupt(folder: Path) -> str:
        (folder / rel).unlink()
        return rel

    return corrupt


def _folder_in_place(rel: str) -> Callable[[Path], str]:
    def corrupt(folder: Path) -> str:
        (folder / rel).unlink()
        (folder / rel).mkdir()
        return rel

    return corrupt


def _pickled_object_array(folder: Path) -> str:
    rel = "line/line_labs.npy"
    _save(folder, rel, np.array([0.0, 1.0, {"a": 1}] * 21 + [0.0], dtype=object), allow_pickle=True)
    return rel


def _npz_renamed(folder: Path) -> str:
    rel = "line/line_imgs.npy"
    images = load(folder, rel)
    with (folder / rel).open("wb") as file:  # an .npz archive under the .npy name
        np.savez(file, images=images)
    return rel


def _truncated(folder: Path) -> str:
    rel = "detection/detection_imgs.npy"
    path = folder / rel
    path.write_bytes(path.read_bytes()[:1000])
    return rel


def _zero_images(folder: Path) -> str:
    _save(folder, "line/line_imgs.npy", np.zeros((0, 16, 16)))
    _save(folder, "line/line_labs.npy", np.zeros(0))
    return "line/line_imgs.npy"


# (id, dataset, corruption returning the file or flag the message must name, words it must hold)
BAD_INPUTS = [
    ("data-dir-missing", "line", _missing_dir, "no such folder"),
    ("data-dir-is-a-file", "line", _data_dir_is_a_file, "no such folder"),
    ("file-missing", "detection", _delete("detection/detection_width.npy"), "file is missing"),
    ("garbage-text", "line", _write_bytes("line/line_imgs.npy", b"hello, not an array\n"), "not a .npy file"),
    ("empty-file", "random", _write_bytes("random/random_labs.npy", b""), "file is empty"),
    ("raw-pickle", "random", _write_bytes("random/random_imgs.npy", pickle.dumps([[0, 1]] * 64)),
     "not a .npy file"),
    ("pickled-object-array", "line", _pickled_object_array, "pickle"),
    ("npz-renamed-npy", "line", _npz_renamed, "archive"),
    ("truncated", "detection", _truncated, "not a readable .npy array"),
    ("string-dtype", "line", _edit("line/line_labs.npy", lambda a: a.astype(str)), "must be numbers"),
    ("complex-dtype", "random", _edit("random/random_imgs.npy", lambda a: a.astype(complex)),
     "must be numbers"),
    ("nan-in-images", "line", _edit("line/line_imgs.npy", lambda a: _set(a, (5, 3, 3), np.nan)),
     "NaN or infinite"),
    ("inf-in-widths", "detection",
     _edit("detection/detection_width.npy", lambda a: _set(a, (7,), np.inf)), "NaN or infinite"),
    ("images-2d", "line", _edit("line/line_imgs.npy", lambda a: a[:, 0, :]), "expected (N, H, W) images"),
    ("labels-2d", "random", _edit("random/random_labs.npy", lambda a: a[:, None]), "expected (N,) labels"),
    ("zero-images", "line", _zero_images, "found shape (0, 16, 16)"),
    ("labels-count", "line", _edit("line/line_labs.npy", lambda a: a[:63]), "63 labels for 64 images"),
    ("pixel-2", "detection", _edit("detection/detection_imgs.npy", lambda a: _set(a, (0, 0, 0), 2.0)),
     "pixel values must lie in [0, 1]"),
    ("pixel-negative", "random", _edit("random/random_imgs.npy", lambda a: _set(a, (3, 1, 1), -1)),
     "pixel values must lie in [0, 1]"),
    ("label-half", "random", _edit("random/random_labs.npy", lambda a: _set(a, (0,), 0.5)),
     "labels must be 0 or 1"),
    ("width-zero", "detection", _edit("detection/detection_width.npy", lambda a: _set(a, (0,), 0.0)),
     "must lie in (0, 16]"),
    ("width-negative", "detection", _edit("detection/detection_width.npy", lambda a: _set(a, (9,), -3.0)),
     "must lie in (0, 16] for 16x16 images, found -3"),
    ("width-above-image", "detection", _edit("detection/detection_width.npy", lambda a: _set(a, (9,), 16.5)),
     "must lie in (0, 16]"),
    ("width-1e154", "detection", _edit("detection/detection_width.npy", lambda a: _set(a, (2,), 1e154)),
     "found 1..1e+154"),
    ("file-is-a-folder", "line", _folder_in_place("line/line_labs.npy"), "not a regular file"),
    ("widths-count", "detection", _edit("detection/detection_width.npy", lambda a: a[:60]),
     "60 widths for 64 images"),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes); {} when folder is not a directory."""
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("name", "corrupt", "problem"), [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_refused_with_one_clear_line(
    bad_data_dir: Callable[[], Path], name: str, corrupt: Callable[[Path], str], problem: str
) -> None:
    folder = bad_data_dir()
    culprit = corrupt(folder)
    before = _snapshot(folder)
    with pytest.raises(InputError) as caught:
        load_dataset(folder, name)
    message = str(caught.value)
    assert "\n" not in message
    assert problem in message
    if culprit == "--data-dir":
        assert message.startswith(f"--data-dir {folder}:")
    else:
        assert message.startswith(f"{folder / culprit}:")
    assert _snapshot(folder) == before  # nothing written or changed
    error = caught.value  # no chained traceback behind the one line
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)
