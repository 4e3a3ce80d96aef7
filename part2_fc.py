"""Part 2: the 16-4-1 fully connected network on the random dataset (handout questions 2.1-2.5).

PART2_DOC_PLACEHOLDER
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from part1_loss_gradient import InputError

# ---------------------------------------------------------------------------------------------
# Data: one loader for every part (parts 3.1 and 3.2 import it from here).
# ---------------------------------------------------------------------------------------------

# The course's files, as in the course repository (see data/README.md).
DATASET_FILES: dict[str, dict[str, str]] = {
    "random": {"images": "random/random_imgs.npy", "labels": "random/random_labs.npy"},
    "line": {"images": "line/line_imgs.npy", "labels": "line/line_labs.npy"},
    "detection": {
        "images": "detection/detection_imgs.npy",
        "labels": "detection/detection_labs.npy",
        "widths": "detection/detection_width.npy",
    },
}

# sha256 of the course's own files (from the course repository), to name the data's provenance.
COURSE_SHA256: dict[str, str] = {
    "random/random_imgs.npy": "a671e6e9e57f89e41d768a4c2da6038a3706383467da267d607afc3583fd4a12",
    "random/random_labs.npy": "420a533486ac6e58964c2c09f4e2d6531174e5f3d8f3e61d40ac9c15e3632cf7",
    "line/line_imgs.npy": "9d8d09f61820711abc2a0db5cb5d4f4d5a0424c269d60949bacbc29dbc4c5a05",
    "line/line_labs.npy": "2b65647ee1af1e154539d4b25c8146b9040ac15ee520613e6598d713855b12a2",
    "detection/detection_imgs.npy": "a750b95934a620757ff4399f01012ea089feec4b8df8530bd1e1390c54cbccfd",
    "detection/detection_labs.npy": "8d32857fd713faa01397ed9b867d34d1a21d441c76e5c75f378920184ad493af",
    "detection/detection_width.npy": "351e417718a42d70a8bbb68b178df19e245bcfef722d6bfc296df80cebb43b20",
}

# sha256 of the stand-ins that data/make_standins.py writes (a test keeps these in step).
STANDIN_SHA256: dict[str, str] = {}


@dataclass(frozen=True)
class Dataset:
    """One dataset, validated. N images of H x W pixels.

    images: (N, H, W) float64 in [0, 1]; labels: (N,) float64 in {0, 1};
    widths: (N,) float64 > 0 (half-extent in pixels) for the detection set, else None.
    provenance: "course data", "stand-in" or "other"; sha256: file (relative path) -> digest.
    """

    name: str
    data_dir: str
    images: np.ndarray
    labels: np.ndarray
    widths: np.ndarray | None
    provenance: str
    sha256: dict[str, str]

    def record(self) -> dict[str, Any]:
        """What a results file says about the data it was computed from."""
        n, h, w = self.images.shape
        return {
            "name": self.name,
            "data_dir": self.data_dir,
            "provenance": self.provenance,
            "sha256": self.sha256,
            "n_images": n,
            "image_size": [h, w],
            "label_counts": {"0": int((self.labels == 0).sum()), "1": int((self.labels == 1).sum())},
        }


def _load_npy(path: Path) -> np.ndarray:
    """Load one .npy file with pickle disabled; any problem is an InputError naming the file."""
    if not path.is_file():
        raise InputError(f"{path}: file is missing")
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise InputError(f"{path}: holds Python objects (pickle); refusing to load it") from None
        raise InputError(f"{path}: not a readable .npy array ({err})") from None
    except (OSError, EOFError) as err:
        raise InputError(f"{path}: not a readable .npy file ({err})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path}: holds an archive, not one array")
    if array.dtype.kind not in "biuf":
        raise InputError(f"{path}: values must be numbers, found dtype {array.dtype}")
    if array.size and not np.isfinite(array.astype(np.float64)).all():
        raise InputError(f"{path}: holds NaN or infinite values")
    return array


def _check_shape(path: Path, array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim or array.shape[0] == 0 or 0 in array.shape:
        raise InputError(f"{path}: expected {what}, found shape {array.shape}")


def load_dataset(data_dir: Path | str, name: str) -> Dataset:
    """Load and validate dataset `name` ("random", "line" or "detection") from `data_dir`.

    Raises InputError with one line naming the file and the problem.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(f"--data-dir {root}: no such folder")
    files = DATASET_FILES[name]
    paths = {role: root / rel for role, rel in files.items()}
    arrays = {role: _load_npy(path) for role, path in paths.items()}

    images, labels = arrays["images"], arrays["labels"]
    _check_shape(paths["images"], images, 3, "(N, H, W) images")
    _check_shape(paths["labels"], labels, 1, "(N,) labels")
    if labels.shape[0] != images.shape[0]:
        raise InputError(f"{paths['labels']}: {labels.shape[0]} labels for {images.shape[0]} images")
    if images.min() < 0 or images.max() > 1:
        raise InputError(f"{paths['images']}: pixel values must lie in [0, 1], found "
                         f"{images.min():g}..{images.max():g}")
    if not np.isin(labels, (0, 1)).all():
        raise InputError(f"{paths['labels']}: labels must be 0 or 1, found {np.unique(labels)[:5]}")
    widths = arrays.get("widths")
    if widths is not None:
        _check_shape(paths["widths"], widths, 1, "(N,) widths")
        if widths.shape[0] != images.shape[0]:
            raise InputError(f"{paths['widths']}: {widths.shape[0]} widths for {images.shape[0]} images")
        if widths.min() <= 0:
            raise InputError(f"{paths['widths']}: widths must be > 0, found {widths.min():g}")
        widths = widths.astype(np.float64)

    digests = {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in files.values()}
    return Dataset(
        name=name,
        data_dir=str(data_dir),
        images=images.astype(np.float64),
        labels=labels.astype(np.float64),
        widths=widths,
        provenance=_provenance(digests),
        sha256=digests,
    )


def _provenance(digests: dict[str, str]) -> str:
    """"course data" when every file is the course's own, "stand-in" for ours, else "other"."""
    if all(COURSE_SHA256.get(rel) == digest for rel, digest in digests.items()):
        return "course data"
    if all(STANDIN_SHA256.get(rel) == digest for rel, digest in digests.items()):
        return "stand-in"
    return "other"
