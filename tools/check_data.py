"""Check the three datasets with the scripts' own loader; keep make's record of what was checked.

    python tools/check_data.py [--data-dir DIR] [--stamps DIR]

Validates random, line and detection in --data-dir through part2_fc.load_dataset (the checks every
script makes) and prints each one's provenance. Bad data: one line naming the file (or, for data
too large to load, the dataset), exit status 2, no stamp written. For each dataset it keeps a
stamp, <stamps>/data-<name>.json (data folder, provenance, sha256 of each file), rewritten only when
one of those changes. The Makefile makes each part's results depend on its dataset's stamp, so a
part reruns exactly when its data changed, also when course files are copied in with old timestamps
or DATA names another folder.

When every file still has the sha256 its stamp recorded, the data is the data that passed the last
check: that is reported without loading the scripts (importing torch costs seconds), which keeps a
`make all` with nothing to do quick.

No read blocks: a named pipe (FIFO), a folder or a device in place of a .npy file is one line naming
it, exit status 2 (checked before the loader runs), and a stamp that is not a regular file counts
as no stamp. Runs on Linux, macOS and Windows.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from part1_loss_gradient import InputError, Parser, run_main, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_report import NotRegularFileError, check_regular, open_regular  # noqa: E402  (reads that never block)

DATASETS = ("random", "line", "detection")


def read_stamp(path: Path) -> dict | None:
    """The record a stamp holds, or None when there is none or it cannot be read (a FIFO included)."""
    try:
        with open_regular(path) as file:
            record = json.loads(file.read())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def sha256_of(path: Path) -> str:
    """The sha256 of a regular file, read in chunks (a huge file costs time, not memory); OSError
    (NotRegularFileError for a FIFO, a folder or a device, never opened) when it cannot be read."""
    with open_regular(path) as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def still_checked(record: dict | None, data_dir: Path) -> bool:
    """True when `record` is for `data_dir` and every file it lists still has the recorded sha256."""
    if not record or record.get("data_dir") != str(data_dir) or not record.get("sha256") \
            or not isinstance(record.get("provenance"), str):
        return False
    for rel, digest in record["sha256"].items():
        try:
            if sha256_of(data_dir / rel) != digest:
                return False
        except OSError:
            return False
    return True


def refuse_irregular_files(data_dir: Path) -> None:
    """InputError naming the first .npy in a dataset folder that is not a regular file: a named pipe
    (FIFO) would block the loader forever, a device would feed it without end."""
    for name in DATASETS:
        try:
            with os.scandir(data_dir / name) as entries:
                npy = sorted(Path(e.path) for e in entries if e.name.endswith(".npy"))
        except OSError:
            continue  # no such folder: the loader names the missing file
        for path in npy:
            try:
                check_regular(path, path.stat().st_mode)
            except NotRegularFileError as err:
                raise InputError(f"{err.strerror}; put the dataset's .npy file there") from None
            except OSError:
                continue  # a dangling link: the loader names it


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="check_data.py", description="Check the datasets; keep make's data stamps.")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="folder holding the datasets")
    parser.add_argument("--stamps", type=Path, default=Path("build"), help="folder for the stamp files")
    args = parser.parse_args(argv)

    stamps = {name: args.stamps / f"data-{name}.json" for name in DATASETS}
    records = {name: read_stamp(path) for name, path in stamps.items()}
    if all(still_checked(record, args.data_dir) for record in records.values()):
        for name, record in records.items():
            provenance = record["provenance"]
            print(f"data: {name:<9} {provenance:<11} unchanged since its last check ({args.data_dir})")
        return 0

    refuse_irregular_files(args.data_dir)  # before the loader, which would block on a FIFO
    from part2_fc import load_dataset  # the scripts' own loader and checks (imports torch)

    fresh = {}
    for name in DATASETS:
        try:
            dataset = load_dataset(args.data_dir, name)
        except MemoryError:  # e.g. a .npy header that claims 10^10 images
            raise InputError(f"{name} dataset in {args.data_dir}: too large to load into memory; "
                             "check the shapes its .npy files declare") from None
        provenance = dataset.record["provenance"]
        fresh[name] = {"data_dir": str(args.data_dir), "provenance": provenance, "sha256": dataset.record["sha256"]}
        n, h, w = dataset.images.shape
        print(f"data: {name:<9} {provenance:<11} {n} images {h}x{w}, checked ({args.data_dir})")
    for name, record in fresh.items():  # written only once all three passed
        if records[name] != record:
            write_json(stamps[name], record)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
