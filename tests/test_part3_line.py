"""Tests for part3_line.py: shapes, initialisation, the engine against a plain nn.Module + optim.SGD
loop (float64), seed invariance (float32), the stop and divergence rules, the held-out control, the CLI.

Tolerance (float64): the script's training and the reference loop here are written independently
(the reference computes its own loss, accuracy and stop), so curves are compared within 1e-9
relative over 30 iterations rather than bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import part3_line as p3
from part1_loss_gradient import InputError, load_dataset, run_main
from part2_fc import seed_generator, truncated_normal

GEOMETRIES = {  # (image size, padding) -> (conv1 maps, conv2 maps)
    (16, "valid"): ((10, 10), (4, 4)),
    (16, "same"): ((16, 16), (16, 16)),
    (13, "valid"): ((7, 7), (1, 1)),
}


def line_batch(data_dir: Path) -> dict[str, np.ndarray]:
    return p3.batch_of(load_dataset(data_dir, "line"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(p3.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the network ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "padding"), list(GEOMETRIES))
def test_shapes(size: int, padding: str) -> None:
    conv1, conv2 = GEOMETRIES[(size, padding)]
    assert p3.conv_sizes((size, size), padding) == (conv1, conv2)
    net = p3.initial_model(0, p3.Config(image=(size, size), padding=padding, width_head=True))
    x = torch.rand(5, 1, size, size)
    a1, a2 = net.feature_maps(x)
    assert a1.shape == (5, 16, *conv1) and a2.shape == (5, 8, *conv2)
    logits, widths = net(x)
    assert logits.shape == (5,) and widths is not None and widths.shape == (5,)
    assert net.fc.in_features == 8 * conv2[0] * conv2[1]


def test_valid_padding_refuses_small_images() -> None:
    with pytest.raises(InputError, match=r"too small .*need at least 13x13.*--padding same"):
        p3.conv_sizes((12, 16), "valid")


def test_initialisation_order_bounds_and_biases() -> None:
    cfg = p3.Config(image=(16, 16))
    net = p3.initial_model(7, cfg)
    assert all(p.dtype == torch.float32 for p in net.parameters())
    gen = seed_generator(7)  # the documented draw order: conv1, conv2, fc weights
    for layer in (net.conv1, net.conv2, net.fc):
        expected = truncated_normal(tuple(layer.weight.shape), 0.1, gen).float()
        assert torch.equal(layer.weight.detach(), expected) and torch.all(layer.bias == 0.1)
        assert layer.weight.abs().max() <= 0.2
    with_head = p3.initial_model(7, p3.Config(image=(16, 16), width_head=True)).state_dict()
    for name, value in net.state_dict().items():  # the width head comes last: same trunk
        assert torch.equal(with_head[name], value)


# --- the engine against an independent reference -----------------------------------------------


class ReferenceNet(nn.Module):
    """The conv net of Figure 4 written out again: conv 7x7x16, ReLU, conv 7x7x8, ReLU, FC."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 7), nn.Conv2d(16, 8, 7)
        self.fc = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)).squeeze(1)


def reference_curves(seed: int, batch: dict[str, np.ndarray], iters: int) -> tuple[list[float], list[float]]:
    """Cross-entropy and accuracy at iterations 0..iters by nn.Module + optim.SGD, float64."""
    net = ReferenceNet().double()
    net.load_state_dict(p3.initial_model(seed, p3.Config(image=(16, 16), dtype="float64")).state_dict())
    x, y = torch.tensor(batch["x"]), torch.tensor(batch["y"])
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    losses, accuracies = [], []
    for _ in range(iters + 1):
        logits = net(x)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, y)
        losses.append(loss.item())
        accuracies.append(((logits > 0) == (y == 1)).double().mean().item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses, accuracies


def test_engine_equals_the_reference_loop_in_float64(standin_dir: Path) -> None:
    batch = line_batch(standin_dir)
    cfg = p3.Config(image=(16, 16), dtype="float64", max_iters=30)
    runs = [p3.train_seed(s, cfg, batch, p3.classification_task) for s in [0, 1]]
    for run in runs:
        losses, accuracies = reference_curves(run.seed, batch, run.stop)
        np.testing.assert_allclose(run.curves["ce"], losses, rtol=1e-9, atol=0)
        np.testing.assert_array_equal(run.curves["accuracy"], accuracies)
        reached = [t for t, a in enumerate(accuracies) if a == 1.0]
        assert run.iterations == (reached[0] if reached else None)


# --- seed invariance (float32) -----------------------------------------------------------------


def test_a_seed_is_the_same_alone_in_company_and_across_workers(standin_dir: Path) -> None:
    batch = line_batch(standin_dir)
    cfg = p3.Config(image=(16, 16), max_iters=60)

    def study(seeds: list[int], workers: int) -> dict[int, p3.SeedRun]:
        runs = p3.run_studies({"s": p3.Study(seeds, cfg, batch, p3.classification_task)}, workers)["s"]
        return {r.seed: r for r in runs}

    alone, pair, many = study([3], 1), study([3, 9], 1), study(list(range(8)), 1)
    spread = study(list(range(8)), 2)
    stops = {r.stop for r in many.values()}
    assert len(stops) > 2  # the others stop at different times
    for other in (pair[3], many[3], spread[3]):
        assert other.stop == alone[3].stop and other.iterations == alone[3].iterations
        for name, curve in alone[3].curves.items():
            np.testing.assert_array_equal(other.curves[name], curve)
        for name, value in alone[3].params.items():
            assert torch.equal(other.params[name], value)
    for seed in range(8):
        np.testing.assert_array_equal(spread[seed].curves["ce"], many[seed].curves["ce"])


# --- the rules ---------------------------------------------------------------------------------


def test_stop_at_the_first_100_percent_and_the_cap(standin_dir: Path) -> None:
    batch = line_batch(standin_dir)
    run = p3.train_seed(0, p3.Config(image=(16, 16), max_iters=200), batch, p3.classification_task)
    accuracy = run.curves["accuracy"]
    assert run.iterations is not None and run.iterations == run.stop
    assert accuracy[-1] == 1.0 and (accuracy[:-1] < 1.0).all() and np.isfinite(run.curves["ce"]).all()
    # the weights returned are the ones evaluated at the stop: all 64 images right
    with torch.no_grad():
        logits = p3.trained_model(run, p3.Config(image=(16, 16)))(torch.tensor(batch["x"]).float())[0]
    assert bool(((logits > 0) == torch.tensor(batch["y"] == 1)).all())
    capped = p3.train_seed(0, p3.Config(image=(16, 16), max_iters=run.stop - 1), batch,
                               p3.classification_task)
    assert capped.iterations is None and capped.stop == run.stop - 1 and not capped.diverged


def test_divergence_is_a_non_finite_loss_by_default_and_the_factor_opt_in(standin_dir: Path) -> None:
    batch = line_batch(standin_dir)
    huge = p3.train_seed(0, p3.Config(image=(16, 16), lr=1e6, max_iters=30), batch,
                             p3.classification_task)
    assert huge.diverged and huge.iterations is None and not np.isfinite(huge.curves["ce"][-1])
    assert np.isfinite(huge.curves["ce"][:-1]).all()
    # a finite loss never diverges by default; with a factor below 1 the initial loss itself exceeds
    # factor x initial, so the opt-in rule stops the run at iteration 0
    plain = p3.train_seed(0, p3.Config(image=(16, 16), max_iters=3), batch, p3.classification_task)
    strict = p3.train_seed(0, p3.Config(image=(16, 16), max_iters=3, diverge_factor=0.5), batch,
                               p3.classification_task)
    assert not plain.diverged and strict.diverged_at == 0


def test_typical_run_is_the_lower_median_with_ties_to_the_smallest_seed() -> None:
    def fake(seed: int, stop: int | None) -> p3.SeedRun:
        return p3.SeedRun(seed, {"objective": np.zeros((stop or 9) + 1)}, reached=stop is not None)

    runs = [fake(0, 50), fake(1, None), fake(2, 30), fake(3, 30), fake(4, 70)]
    one, share = p3.typical_run(runs)  # sorted: 30 (2), 30 (3), 50, 70, never -> the third
    assert one.seed == 0 and share == 2 / 5
    one, share = p3.typical_run(runs[1:])  # never, 30, 30, 70 -> lower median = second = seed 3
    assert one.seed == 3 and share == 0  # no seed needed fewer than 30


def test_holdout_split_is_balanced_disjoint_and_fixed(standin_dir: Path) -> None:
    labels = load_dataset(standin_dir, "line").labels
    rows = p3.holdout_split(labels, 16)
    assert len(set(rows.tolist())) == 16 and (labels[rows] == 0).sum() == 8
    assert np.array_equal(rows, p3.holdout_split(labels, 16))
    for bad in (15, 2 * int(min((labels == 0).sum(), (labels == 1).sum()))):
        with pytest.raises(InputError, match="--holdout"):
            p3.holdout_split(labels, bad)


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--seeds", "0"], "--seeds"),
    (["--lr", "-1"], "--lr"),
    (["--padding", "full"], "--padding"),
    (["--dtype", "float16"], "--dtype"),
    (["--workers", "0"], "--workers"),
    (["--holdout", "7"], "--holdout"),
    (["--diverge-factor", "0"], "--diverge-factor"),
    (["--data-dir", "no/such/folder"], "--data-dir"),
])
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   standin_dir: Path, flags: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run(["--data-dir", str(standin_dir), "--out", str(out), *flags], capsys)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1 and message in stderr
    assert "Traceback" not in stderr and not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_one_line(tmp_path: Path, standin_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = run(["--data-dir", str(standin_dir), "--out", str(tmp_path / "o"), "--device", "cuda"],
                          capsys)
    assert code == 2 and "--device cuda" in stderr and len(stderr.strip().splitlines()) == 1


def test_cli_json_layout_holdout_and_same_bytes_on_rerun(tmp_path: Path, standin_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["--data-dir", str(standin_dir), "--out", str(out), "--seeds", "3", "--max-iters", "15",
            "--holdout", "16", "--workers", "1", "--quiet"]
    assert run(argv, capsys)[0] == 0
    first = (out / "part3_line.json").read_bytes()
    results = json.loads(first)
    assert {p.name for p in out.iterdir()} == set(results["figures"]) | {"part3_line.json"}
    assert "comparison_part2" not in results and "engine" not in results["config"]
    assert results["torch_threads"] == 1 and results["workers"] == 1
    assert results["config"]["dtype"] == "float32" and results["config"]["device"] == "cpu"
    assert results["config"]["diverge_factor"] is None
    assert len(results["iterations"]) == 3 and results["single"]["seed"] in results["seeds"]
    assert set(results["conv2_class_means"]) == {"0", "1"} and len(results["conv2_class_means"]["0"]) == 8
    holdout = results["holdout"]
    assert holdout["n_test"] == 16 and holdout["n_train"] == 48 and len(holdout["test_indices"]) == 16
    assert len(holdout["test_accuracy"]) == 3 and holdout["summary"]["chance"] == 0.5
    assert set(holdout["summary"]) == {"median", "mean", "min", "max", "chance"}
    assert run(argv, capsys)[0] == 0
    assert (out / "part3_line.json").read_bytes() == first
