"""Benchmark: the run a student makes first (each script with its defaults, one seed) against the
plain script a peer would write (benchmarks/plain/), given the same number of iterations; both
timed as whole processes (start-up, training, figures), alternating, `--repeats` times each.
Absolute times drift on a shared machine; read the ratio (plain / ours: above 1 = ours is faster).

    python benchmarks/bench_single_run.py [--data-dir data] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / "benchmarks" / "plain"


class ScriptFailedError(Exception):
    """A benchmarked command ended non-zero: its row says so, the other scripts still run."""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise ScriptFailedError(f"{Path(cmd[1]).name} exit {done.returncode}: {last}")
    return time.perf_counter() - start


def iterations(record: dict, cap: int) -> int:
    """Updates the run made: its stop, or the cap when it never stopped."""
    one = record["single"]
    return one["iterations"] if one["iterations"] is not None else one["diverged_at"] or cap


def compare(script: str, plain_task: str | None, py: str, data: list[str], tmp: str,
            repeats: int) -> tuple[str, list[float], list[float] | None, None]:
    """One row: the script's default run timed `repeats` times, alternating with the plain peer script
    given the iterations our run made (part 1 has no peer: plain_task "-")."""
    if plain_task == "-":  # part 1 takes no --data-dir
        ours = [py, script, "--out", tmp]
        return script, [timed(ours) for _ in range(repeats)], None, None
    ours = [py, script, *data, "--out", tmp]
    timed(ours)  # its iterations tell the plain script how long to train
    results = json.loads((Path(tmp) / script.replace(".py", ".json")).read_text())
    cap = results["config"]["max_iters"]
    if plain_task is None:
        settings = ("sigmoid-l2", "sigmoid-ce", "relu-l2", "relu-ce")
        its = [iterations(results["settings"][s], cap) for s in settings]
        plain = [py, str(PLAIN / "plain_part2.py"), "--iters", ",".join(map(str, its))]
    else:
        its = [iterations(results, cap)]
        plain = [py, str(PLAIN / "plain_part3.py"), "--task", plain_task, "--iters", str(its[0])]
    plain += [*data, "--out", f"{tmp}/plain"]
    t_ours, t_plain = [], []
    for _ in range(repeats):
        t_ours.append(timed(ours))
        t_plain.append(timed(plain))
    return f"{script} ({' / '.join(f'{i:,}' for i in its)} iterations)", t_ours, t_plain, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    py, data = sys.executable, ["--data-dir", args.data_dir]
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for script, plain_task in (("part1_loss_gradient.py", "-"), ("part2_fc.py", None), ("part3_line.py", "line"),
                                   ("part3_detection.py", "detection")):
            try:
                rows.append(compare(script, plain_task, py, data, tmp, args.repeats))
            except ScriptFailedError as err:
                rows.append((f"{script}: FAILED ({err})", [], None, None))
    print(f"{'script':<58} {'ours (s)':>9} {'plain (s)':>10} {'plain/ours':>11}")
    for name, t_ours, t_plain, _ in rows:
        if not t_ours:
            print(name)
            continue
        a = statistics.median(t_ours)
        b = statistics.median(t_plain) if t_plain else None
        print(f"{name:<58} {a:>9.2f} " + (f"{b:>10.2f} {b / a:>10.2f}x" if b else f"{'-':>10} {'-':>11}"))
    print(f"(medians of {args.repeats} alternating runs each)")


if __name__ == "__main__":
    main()
