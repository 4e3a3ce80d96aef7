"""Tests for part3_line.py (3.1).

The loop against an independent float64 nn.Module + optim.SGD loop written here (its own initial
draws, loss, accuracy and stop), seed for seed; a seed's float32 numbers alone and among others in
two worker processes, bit for bit; the stop, cap and divergence rules; progress inside a long seed;
every tensor on the run's device; the held-out split; each fully connected control and each
held-out accuracy against an independent computation that a wrong wiring would miss; the command
line end to end; bad input; signals and a killed worker; simulated Windows and macOS.

Nothing here depends on which seed reaches 100% on the stand-in data: where a test needs a property
of a run (reaches, diverges, differs), it checks that the property holds before relying on it.
Tolerance (float64): the reference loops sum in another order, so curves agree within 1e-9
relative, not bit for bit; stops and accuracies agree exactly.
"""

from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import part3_line as p3
from part2_fc import TORCH_THREADS, Config, Dataset, load_dataset, run_jobs, run_main

import numpy as np
import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

F64 = Config(dtype=torch.float64, log=False)
F32 = Config(log=False)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Any:
    """As in every run (config_from_args, each worker): one torch thread, so float32 sums are the same
    here and in a worker (and float64 convolutions are not slowed by two threads contending)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(standin_dir: Path) -> Dataset:
    return load_dataset(standin_dir, "line")


@pytest.fixture(scope="module")
def random_data(standin_dir: Path) -> Dataset:
    return load_dataset(standin_dir, "random")


def xy(data: Dataset, rows: Any = slice(None)) -> tuple[np.ndarray, np.ndarray]:
    return data.images[rows][:, None], data.labels[rows]


def train(seed: int, data: Dataset, cfg: Config, rows: Any = slice(None)) -> p3.SeedRun:
    return p3.SeedRun(**p3.train_seed(seed, *xy(data, rows), cfg))


def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures cost ~0.5 s each; runs that only compare the JSON skip drawing them."""
    monkeypatch.setattr(p3, "save_figure", lambda *args: True)


# --- independent references: Figure 4 and part 2's FC net written out again, plain SGD in float64 ----


def trunc_normal(shape: tuple[int, ...], std: float, gen: torch.Generator) -> torch.Tensor:
    """TensorFlow's truncated normal (redrawn beyond 2 std), float64 on the CPU."""
    out = torch.empty(shape, dtype=torch.float64)
    return nn.init.trunc_normal_(out, std=std, a=-2 * std, b=2 * std, generator=gen)


class ReferenceConv(nn.Module):
    """conv 7x7 1->16, ReLU, conv 7x7 16->8, ReLU, flatten, FC -> 1 logit (no padding). Weights drawn
    from the seed's generator in layer order, biases `bias`."""

    def __init__(self, image: tuple[int, int], seed: int, std: float = 0.1, bias: float = 0.1) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 7), nn.Conv2d(16, 8, 7)
        self.fc = nn.Linear(8 * (image[0] - 12) * (image[1] - 12), 1)
        self.double()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for layer in (self.conv1, self.conv2, self.fc):
                layer.weight.copy_(trunc_normal(tuple(layer.weight.shape), std, gen))
                layer.bias.fill_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)).squeeze(1)


def reference_fc(n_in: int, hidden: int, seed: int) -> nn.Sequential:
    """Part 2's net written out: n_in -> hidden ReLU -> 1 logit; the seed draws the (n_in, hidden)
    input weights, then the (hidden, 1) output weights; biases 0.1."""
    net = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 1)).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net[0].weight.copy_(trunc_normal((n_in, hidden), 0.1, gen).T)
        net[2].weight.copy_(trunc_normal((hidden, 1), 0.1, gen).T)
        net[0].bias.fill_(0.1)
        net[2].bias.fill_(0.1)
    return net


def reference_loop(net: nn.Module, x: np.ndarray, y: np.ndarray, max_iters: int, lr: float = 0.1
                   ) -> tuple[int | None, list[float], list[float]]:
    """optim.SGD on the mean binary cross-entropy until the first 100% training accuracy or the cap:
    (iterations to 100% or None, loss per iteration, accuracy per iteration)."""
    xt, yt = torch.tensor(x), torch.tensor(y)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    losses, accuracies = [], []
    for t in range(max_iters + 1):
        logits = net(xt).reshape(-1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, yt)
        losses.append(loss.item())
        accuracies.append(((logits > 0).double() == yt).double().mean().item())
        if accuracies[-1] == 1.0:
            return t, losses, accuracies
        if t == max_iters:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    return None, losses, accuracies


def accuracy_of(net: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float(((net(torch.tensor(x)).reshape(-1) > 0).numpy() == (y == 1)).mean())


# --- the loop ------------------------------------------------------------------------------------------


def test_initial_weights_are_the_seeds_truncated_normals_in_layer_order(data: Dataset) -> None:
    cfg = Config(init_std=0.3, init_bias=-0.2)
    net = p3.initial_model(p3.LineNet, 5, data.images.shape[1:], cfg)
    ref = ReferenceConv(data.images.shape[1:], 5, std=0.3, bias=-0.2)
    for name, value in ref.state_dict().items():
        assert torch.equal(net.state_dict()[name], value.float()), name
    assert net.conv1.weight.dtype == torch.float32 and net.conv1.weight.abs().max() <= 0.6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loop_equals_a_plain_module_and_optim_sgd_in_float64(data: Dataset, seed: int) -> None:
    cfg = replace(F64, max_iters=60)
    run = train(seed, data, cfg)
    ref = ReferenceConv(data.images.shape[1:], seed)
    iterations, losses, accuracies = reference_loop(ref, *xy(data), cfg.max_iters)
    assert iterations is not None, "the reference did not reach 100%: the comparison would miss the stop"
    assert (run.iterations, run.diverged_at, len(run.loss)) == (iterations, None, len(losses))
    np.testing.assert_allclose(run.loss, losses, rtol=1e-9, atol=0)
    np.testing.assert_array_equal(run.accuracy, accuracies)
    assert run.final_loss == run.loss[-1] and run.final_accuracy == 1.0
    for name, value in ref.state_dict().items():  # the weights kept are those at the stop
        np.testing.assert_allclose(run.weights[name], value.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_a_seed_alone_equals_it_among_others_in_two_workers_float32(data: Dataset) -> None:
    cfg = replace(F32, max_iters=30)
    jobs = [(seed, *xy(data), cfg) for seed in (0, 1, 2)] + [(1, *xy(data, slice(0, 48)), cfg)]
    among = run_jobs(p3.train_seed, jobs, 2)
    for job, result in zip(jobs, among, strict=True):
        alone = p3.train_seed(*job)
        assert alone.keys() == result.keys()
        for key, value in alone.items():
            if key == "weights":
                assert all(np.array_equal(value[k], result[key][k]) for k in value), key
            else:
                np.testing.assert_array_equal(value, result[key], err_msg=key)
    assert among[3]["loss"][0] != among[1]["loss"][0]  # the job's own images were used, not the first job's


# --- the stop rule: first 100%, the cap, non-finite = diverged (opt-in: above a factor) ----------------


def test_stop_at_the_first_100_percent_or_the_cap(data: Dataset) -> None:
    cfg = replace(F32, max_iters=100)
    run = next(r for r in (train(s, data, cfg) for s in range(10)) if r.iterations is not None and r.iterations >= 2)
    assert (run.accuracy[:-1] < 1).all() and run.accuracy[-1] == 1 and len(run.loss) == run.iterations + 1
    net = p3.trained_model(run, data.images.shape[1:], cfg)  # the weights kept classify every image right
    with torch.no_grad():
        logits = net(torch.tensor(data.images[:, None], dtype=torch.float32))
    assert ((logits > 0).numpy() == (data.labels == 1)).all()
    capped = train(run.seed, data, replace(cfg, max_iters=run.iterations - 1))
    assert (capped.iterations, capped.diverged_at, len(capped.loss)) == (None, None, run.iterations)
    np.testing.assert_array_equal(capped.loss, run.loss[:-1])
    assert train(run.seed, data, replace(cfg, max_iters=0)).loss.shape == (1,)


@pytest.mark.parametrize("case", [{"init_std": 1e30}, {"init_bias": 1e39}])
def test_non_finite_from_the_start_is_diverged_at_0_with_no_final_value(data: Dataset, case: dict) -> None:
    run = train(0, data, replace(F32, max_iters=5, **case))  # 1e39 overflows float32 to inf: no crash
    assert (run.iterations, run.diverged_at, run.final_loss, run.final_accuracy) == (None, 0, None, None)
    assert np.isnan(run.loss).all() and np.isnan(run.accuracy).all()


def test_divergence_mid_run_keeps_the_last_finite_values(data: Dataset) -> None:
    cfg = replace(F32, lr=1e6, max_iters=40)
    late = [r for r in (train(s, data, cfg) for s in range(4)) if r.diverged_at]
    assert late, "lr 1e6 made no seed in 0..3 diverge after iteration 0"
    for run in late:
        assert np.isnan(run.loss[-1]) and np.isfinite(run.loss[:-1]).all() and run.iterations is None
        assert run.final_loss == run.loss[-2] and run.final_accuracy == run.accuracy[-2]


def test_diverge_factor_stops_at_the_first_loss_above_factor_times_the_first(data: Dataset) -> None:
    cfg = replace(F32, max_iters=30)
    plain = next(r for r in (train(s, data, cfg) for s in range(10)) if len(r.loss) > 3)
    factor = float(np.median(plain.loss[1:] / plain.loss[0]))  # some later loss lies above factor x the first
    above = next(t for t in range(1, len(plain.loss)) if plain.loss[t] > factor * plain.loss[0])
    run = train(plain.seed, data, replace(cfg, diverge_factor=factor))
    assert (run.diverged_at, run.iterations) == (above, None) and np.isfinite(run.loss).all()
    np.testing.assert_array_equal(run.loss, plain.loss[:above + 1])


def test_a_long_seed_prints_progress_only_when_logging(data: Dataset, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(p3, "PROGRESS_SECONDS", -1.0)  # every iteration is "long enough"
    train(3, data, replace(F32, lr=1e-9, max_iters=4, log=True))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == [f"  seed 3: iteration {t}" for t in range(4)]
    train(3, data, replace(F32, lr=1e-9, max_iters=4))
    assert capsys.readouterr().out == ""


# --- every tensor a run makes lives on cfg.device ------------------------------------------------------


class DeviceLog(TorchFunctionMode):
    """Records the device of every tensor any torch function returns."""

    def __init__(self) -> None:
        super().__init__()
        self.devices: set[str] = set()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for value in out if isinstance(out, tuple | list) else (out,):
            if isinstance(value, torch.Tensor):
                self.devices.add(value.device.type)
        return out


def on_device_only(fn: Any, *args: Any) -> tuple[Any, set[str]]:
    """fn(*args) with torch's default device set to "meta": a tensor made without device=cfg.device
    lands there (and the run mostly fails outright). Returns fn's result and every device seen."""
    log = DeviceLog()
    with torch.device("meta"), log:
        result = fn(*args)
    return result, log.devices


def test_every_tensor_the_run_makes_is_on_cfg_device(data: Dataset) -> None:
    _, devices = on_device_only(torch.arange, 3)  # the harness sees a tensor made without a device
    assert devices == {"meta"}
    cfg = replace(F32, max_iters=8)
    split = p3.holdout_split(data.images, data.labels, 16)
    result, devices = on_device_only(p3.train_seed, 0, *xy(data), cfg)
    assert devices == {"cpu"} and np.isfinite(result["loss"]).all()
    run = p3.SeedRun(**result)
    for fn, args in ((p3.study_record, ([run], cfg, data)), (p3.holdout_record, ([run], split, data, cfg)),
                     (p3.fc_replay_accuracy, ([0, 1], [3, 5], data.images.reshape(64, -1), data.labels, split,
                                              replace(cfg, hidden=4)))):
        _, devices = on_device_only(fn, *args)
        assert devices == {"cpu"}, fn.__name__


# --- the held-out split and the accuracy measured on it ------------------------------------------------


def check_split(images: np.ndarray, labels: np.ndarray, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    train_rows, test = p3.holdout_split(images, labels, n_test)
    flat = images.reshape(len(images), -1)
    assert len(test) == len(set(test.tolist())) == n_test
    assert (labels[test] == 0).sum() == n_test // 2 == (labels[test] == 1).sum()
    assert len(np.unique(flat[test], axis=0)) == n_test  # distinct images
    held = {row.tobytes() for row in flat[test]}
    assert not any(flat[i].tobytes() in held for i in train_rows)  # none is also trained on
    dropped = set(range(len(images))) - set(train_rows.tolist()) - set(test.tolist())
    assert all(flat[i].tobytes() in held for i in dropped)  # only copies of held-out images leave
    again = p3.holdout_split(images, labels, n_test)
    assert np.array_equal(again[0], train_rows) and np.array_equal(again[1], test)
    return train_rows, test



@pytest.mark.parametrize("stripes", ["vertical", "horizontal"])
def test_kernel_change_measures_stripes_and_size(data: Dataset, stripes: str) -> None:
    """Figure 12 in numbers: a change constant down each column (vertical stripes, zero mean along a
    row) is all column means and no row means, and the other way round; its size against the start."""
    cfg = replace(F32, dtype=torch.float64)
    start = p3.initial_model(p3.LineNet, 3, data.images.shape[1:], cfg)
    net = p3.initial_model(p3.LineNet, 3, data.images.shape[1:], cfg)
    profile = torch.tensor([-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0], dtype=torch.float64) * 0.01  # sums to 0
    pattern = profile.expand(7, 7) if stripes == "vertical" else profile[:, None].expand(7, 7)  # (row, column)
    change = pattern * torch.arange(1, 17, dtype=torch.float64)[:, None, None]  # (16, 7, 7), a size per kernel
    with torch.no_grad():
        net.conv1.weight[:, 0] += change
    out = p3.kernel_change(net, start)
    assert out["relative_change"] == pytest.approx(
        float(change.norm() / start.conv1.weight.detach().norm()), rel=1e-12)
    columns, rows = (1.0, 0.0) if stripes == "vertical" else (0.0, 1.0)
    assert out["column_share"] == pytest.approx(columns, abs=1e-12)
    assert out["row_share"] == pytest.approx(rows, abs=1e-12)
    assert p3.kernel_change(start, start)["column_share"] is None  # no change: no share
    with torch.no_grad():  # a change of one value per kernel is its mean: no variation left to share
        net.conv1.weight[:, 0] = start.conv1.weight[:, 0] + 0.05
    assert p3.kernel_change(net, start)["row_share"] is None

def test_holdout_split_distinct_balanced_deterministic_copies_dropped(data: Dataset) -> None:
    check_split(data.images, data.labels, 16)
    order = np.random.default_rng(1).permutation(3 * len(data.images))  # every image twice more, shuffled in
    train_rows, test = check_split(np.concatenate([data.images] * 3)[order], np.concatenate([data.labels] * 3)[order],
                                   16)
    assert 3 * len(data.images) - len(train_rows) - len(test) == 2 * 16


def test_holdout_split_refuses_odd_or_too_large(data: Dataset) -> None:
    distinct = [len(np.unique(data.images[data.labels == c].reshape(-1, data.images[0].size), axis=0))
                for c in (0, 1)]
    largest = 2 * (min(distinct) - 1)  # leaves one distinct image of the smaller class to train on
    check_split(data.images, data.labels, largest)
    for bad in (15, largest + 2):
        with pytest.raises(p3.InputError, match="--holdout"):
            p3.holdout_split(data.images, data.labels, bad)


def test_holdout_accuracy_is_measured_on_the_held_out_images(data: Dataset) -> None:
    cfg = replace(F64, max_iters=4)  # short: accuracy on the held-out and the training images differ
    train_rows, test = split = p3.holdout_split(data.images, data.labels, 16)
    runs, expected, on_training = [], [], []
    for seed in (0, 1):
        runs.append(train(seed, data, cfg, train_rows))
        ref = ReferenceConv(data.images.shape[1:], seed)
        reference_loop(ref, *xy(data, train_rows), cfg.max_iters)
        expected.append(accuracy_of(ref, *xy(data, test)))
        on_training.append(accuracy_of(ref, *xy(data, train_rows)))
    assert expected != on_training, "the case cannot tell held-out from training images apart"
    record = p3.holdout_record(runs, split, data, cfg)
    assert record["test_accuracy"] == expected and record["test_indices"] == test.tolist()
    assert record["iterations"] == [r.iterations for r in runs] and record["n_train"] == len(train_rows)
    assert record["summary"]["median"] == float(np.median(expected)) and record["summary"]["chance"] == 0.5


# --- the fully connected controls ----------------------------------------------------------------------


FC_MAX_ITERS = 300  # the controls' seeds 0 and 1 reach 100% by then; on shuffled labels they need 400-850


@pytest.fixture(scope="module")
def controls(data: Dataset, random_data: Dataset) -> dict[str, Any]:
    cfg = replace(F64, max_iters=FC_MAX_ITERS)
    split = p3.holdout_split(data.images, data.labels, 16)
    conv = sum(p.numel() for p in ReferenceConv(data.images.shape[1:], 0).parameters())
    return p3.fc_controls(data, random_data, split, [0, 1], cfg, conv) | {
        "split": split, "conv": conv}


def shuffled_labels(data: Dataset, seed: int) -> np.ndarray:
    """Seed `seed`'s labels in "fc_rescaled_shuffled", drawn here: numpy's generator from (0, seed,
    attempt), the first attempt that labels every group of identical images alike."""
    rows = [im.tobytes() for im in data.images]
    for attempt in range(100):
        y = data.labels[np.random.default_rng((0, seed, attempt)).permutation(len(data.labels))]
        if all(len({y[i] for i in range(len(rows)) if rows[i] == r}) == 1 for r in set(rows)):
            return y
    raise AssertionError("no shuffle keeps identical images alike")


def reference_fc_run(data: Dataset, y: np.ndarray, hidden: int, factor: float, seed: int, rows: Any
                     ) -> tuple[nn.Module, int | None]:
    net = reference_fc(data.images[0].size, hidden, seed)
    iterations, _, _ = reference_loop(net, data.images[rows].reshape(-1, data.images[0].size) * factor,
                                      y[rows], FC_MAX_ITERS)
    return net, iterations


def test_fc_controls_scales_and_sizes_from_the_data(controls: dict, data: Dataset, random_data: Dataset) -> None:
    line = float(np.mean([np.sum(im ** 2) for im in data.images]))
    rand = float(np.mean([np.sum(im ** 2) for im in random_data.images]))
    comparison, c = controls["comparison"], controls["controls"]
    assert comparison["input_scale"]["line"] == pytest.approx(line) and comparison["input_scale"]["random"] == rand
    assert c["fc"]["input_scale"] == pytest.approx(line) and c["fc_rescaled"]["input_scale"] == pytest.approx(rand)
    assert c["fc_rescaled_shuffled"]["input_scale"] == c["fc_rescaled"]["input_scale"]
    n_in = data.images[0].size
    sizes = {h: sum(p.numel() for p in reference_fc(n_in, h, 0).parameters()) for h in range(1, 200)}
    matched = min(sizes, key=lambda h: abs(sizes[h] - controls["conv"]))
    assert {k: c[k]["hidden"] for k in c} == {"fc": 4, "fc_rescaled": 4, "fc_matched": matched,
                                              "fc_rescaled_shuffled": 4}
    assert {k: c[k]["parameters"] for k in c} == {"fc": sizes[4], "fc_rescaled": sizes[4], "fc_matched": sizes[matched],
                                                  "fc_rescaled_shuffled": sizes[4]}
    assert comparison["parameters"]["part2_fc"] == sum(p.numel() for p in reference_fc(16, 4, 0).parameters())
    assert comparison["parameters"]["conv"] == controls["conv"]


@pytest.mark.parametrize("name", ["fc", "fc_rescaled", "fc_matched", "fc_rescaled_shuffled"])
def test_each_fc_control_trains_relu_ce_on_its_inputs(controls: dict, data: Dataset, name: str) -> None:
    """Against the reference loop (ReLU, cross-entropy, the control's hidden units, input scale and
    labels), seed for seed, on all images and on the held-out split's training rows; the held-out
    accuracy is the reference's on the held-out rows (against the shuffled labels for the shuffled control)."""
    record = controls["controls"][name]
    factor = math.sqrt(controls["comparison"]["input_scale"]["random"] / controls["comparison"]["input_scale"]["line"])
    factor = factor if name.startswith("fc_rescaled") else 1.0
    train_rows, test = controls["split"]
    expected, expected_held, expected_acc, expected_train = [], [], [], []
    for seed in (0, 1):
        y = shuffled_labels(data, seed) if name == "fc_rescaled_shuffled" else data.labels
        expected.append(reference_fc_run(data, y, record["hidden"], factor, seed, slice(None))[1])
        net, its = reference_fc_run(data, y, record["hidden"], factor, seed, train_rows)
        expected_held.append(its)
        expected_acc.append(accuracy_of(net, data.images[test].reshape(len(test), -1) * factor, y[test]))
        expected_train.append(accuracy_of(net, data.images[train_rows].reshape(len(train_rows), -1) * factor,
                                          y[train_rows]))
    if name == "fc_rescaled_shuffled":  # cheaper than reaching: compared at the cap, mid-run
        assert set(expected + expected_held) == {None} and max(expected_train) < 1, "lower FC_MAX_ITERS"
    else:
        assert None not in expected and None not in expected_held, "raise FC_MAX_ITERS: a reference run did not reach"
    assert record["iterations"] == expected and record["holdout"]["iterations"] == expected_held
    assert record["holdout"]["test_accuracy"] == expected_acc and record["holdout"]["train_accuracy"] == expected_train


def test_fc_controls_differ_where_their_wiring_differs(controls: dict, data: Dataset) -> None:
    """If two controls trained the same network on the same inputs and labels, the per-control tests
    above could not tell them apart: here the four differ seed by seed, and the shuffled labels keep
    the counts of each label but not the labels."""
    c = controls["controls"]
    its = {k: tuple(r["iterations"]) for k, r in c.items()}
    assert len(set(its.values())) == 4, its
    shuffled = [shuffled_labels(data, seed) for seed in (0, 1)]
    for y in shuffled:
        assert np.array_equal(np.bincount(y.astype(int)), np.bincount(data.labels.astype(int)))
        assert (y != data.labels).any()
    assert (shuffled[0] != shuffled[1]).any()  # each seed its own shuffle
    record = c["fc_rescaled_shuffled"]
    assert [data.labels[p].tolist() for p in record["label_permutations"]] == [y.tolist() for y in shuffled]
    assert {k: r["labels_shuffled"] for k, r in c.items()} == {
        "fc": False, "fc_rescaled": False, "fc_matched": False, "fc_rescaled_shuffled": True}
    assert record["label_conflicts"] == 0 and "label_permutations" not in c["fc_rescaled"]
    # guessing without the test labels: a coin, or always the training rows' majority label
    train, test = controls["split"]
    majority = [(y[test] == round(y[train].mean())).mean() if y[train].mean() != 0.5 else 0.5 for y in shuffled]
    assert record["holdout"]["summary"]["chance"] == 0.5
    assert record["holdout"]["summary"]["training_majority"] == pytest.approx(np.mean(majority))


def test_label_conflicts_counts_identical_images_with_different_labels() -> None:
    x = np.array([[0.0, 1], [0, 1], [1, 0], [1, 0], [1, 1]])  # two pairs of identical images, one lone image
    assert p3.label_conflicts(x, np.array([1, 0, 1, 1, 0])) == 1  # the first pair split
    assert p3.label_conflicts(x, np.array([1, 1, 0, 0, 1])) == 0


def test_shuffled_labels_skip_permutations_that_split_identical_images() -> None:
    """Images 0 and 1 identical: a seed's permutation is its first attempt that labels them alike
    (found here by testing the pair directly), so 100% stays reachable."""
    x = np.array([[0.0, 1], [0, 1], [1, 0], [1, 1], [2, 0], [0, 2]])
    labels = np.array([0.0, 0, 0, 1, 1, 1])

    def draw(seed: int, attempt: int) -> np.ndarray:
        return np.random.default_rng((0, seed, attempt)).permutation(6)

    for seed in range(5):
        first = next(a for a in range(100) if len(set(labels[draw(seed, a)][:2])) == 1)
        permutation, attempt = p3.shuffled_labels(x, labels, seed)
        assert attempt == first and permutation.tolist() == draw(seed, first).tolist()
    assert any(p3.shuffled_labels(x, labels, seed)[1] > 0 for seed in range(5))  # the redraw is exercised
    # nothing to split: the first draw
    permutation, attempt = p3.shuffled_labels(np.eye(6), labels, 3)
    assert attempt == 0 and permutation.tolist() == draw(3, 0).tolist()


# --- the command line, end to end ----------------------------------------------------------------------


CLI = ["--seeds", "2", "--max-iters", "40", "--holdout", "16", "--control-fc", "--quiet"]


@pytest.fixture(scope="module")
def cli_runs(standin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The CLI with 2 workers (figures drawn), then with 1 worker (figures skipped)."""
    out = tmp_path_factory.mktemp("line_cli")
    argv = ["--data-dir", str(standin_dir), "--out", str(out), *CLI]
    assert run_main(p3.main, [*argv, "--workers", "2"]) == 0
    runs = {"out": out, "files": sorted(p.name for p in out.iterdir()),
            "two": json.loads((out / "part3_line.json").read_text())}
    with pytest.MonkeyPatch.context() as mp:
        no_figures(mp)
        assert run_main(p3.main, [*argv, "--workers", "1"]) == 0
    runs["one"] = json.loads((out / "part3_line.json").read_text())
    return runs


def test_cli_json_holds_the_loops_numbers_and_the_figures(cli_runs: dict, data: Dataset) -> None:
    results = cli_runs["two"]
    assert results["seeds"] == [0, 1] and results["workers"] == 2
    assert cli_runs["files"] == sorted([*results["figures"], "part3_line.json"]) and len(results["figures"]) == 5
    runs = [train(seed, data, replace(F32, max_iters=40)) for seed in (0, 1)]
    assert results["iterations"] == [r.iterations for r in runs]
    assert results["final_loss"] == [r.final_loss for r in runs]
    reached = [i for i in results["iterations"] if i is not None]
    if len(reached) == 2:
        assert results["summary"]["median"] == (reached[0] + reached[1]) / 2
    its = [r.iterations if r.iterations is not None else math.inf for r in runs]
    assert results["single"]["seed"] == (0 if its[0] <= its[1] else 1)  # the lower median, ties by seed
    ref = ReferenceConv(data.images.shape[1:], 0)
    assert results["network"]["parameters"] == sum(p.numel() for p in ref.parameters())
    assert results["network"]["fc_inputs"] == ref.fc.in_features
    assert set(results["controls"]) == {"fc", "fc_rescaled", "fc_matched", "fc_rescaled_shuffled"}
    train_rows, _ = p3.holdout_split(data.images, data.labels, 16)
    held = [train(seed, data, replace(F32, max_iters=40), train_rows).iterations for seed in (0, 1)]
    assert held != results["iterations"], "the case cannot tell the training rows from all images"
    assert results["holdout"]["iterations"] == held and len(results["holdout"]["test_accuracy"]) == 2
    assert all(len(results["conv2_class_means"][c]) == 8 for c in "01")
    one = next(r for r in runs if r.seed == results["single"]["seed"])  # the median seed's kernels, start to stop
    want = p3.kernel_change(p3.trained_model(one, data.images.shape[1:], F32),
                            p3.initial_model(p3.LineNet, one.seed, data.images.shape[1:], F32))
    assert results["single"]["kernel_change"] == pytest.approx(want)


def test_cli_same_numbers_with_one_or_two_workers(cli_runs: dict) -> None:
    two, one = dict(cli_runs["two"]), dict(cli_runs["one"])
    assert (two.pop("workers"), one.pop("workers")) == (2, 1)
    assert two.pop("figures") and one.pop("figures")  # drawn the first time, stubbed the second
    assert one == two


def test_cli_without_controls_writes_null_controls(standin_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    no_figures(monkeypatch)
    assert run_main(p3.main, ["--data-dir", str(standin_dir), "--out", str(tmp_path), "--max-iters", "3",
                              "--quiet"]) == 0
    results = json.loads((tmp_path / "part3_line.json").read_text())
    assert results["controls"] == {"fc": None} and results["comparison"] is None and results["holdout"] is None
    assert results["half_lr"] is None
    assert results["figures"] == ["part3_line_curves.png", "part3_line_kernels.png", "part3_line_feature_maps.png"]


def test_cli_half_rate_control_trains_the_seeds_at_half_the_rate(standin_dir: Path, tmp_path: Path, data: Dataset,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """--control-half-lr: each seed again at lr / 2, its stop and how often its loss rises, against the loop
    run directly at that rate (and not at the full rate)."""
    no_figures(monkeypatch)  # 20 iterations: a half-rate run rises, and the two rates stop differently
    assert run_main(p3.main, ["--data-dir", str(standin_dir), "--out", str(tmp_path), "--seeds", "2",
                              "--max-iters", "20", "--holdout", "16", "--control-half-lr", "--quiet"]) == 0
    half = json.loads((tmp_path / "part3_line.json").read_text())["half_lr"]
    runs = [train(seed, data, replace(F32, lr=0.05, max_iters=20)) for seed in (0, 1)]
    full = [train(seed, data, replace(F32, max_iters=20)) for seed in (0, 1)]
    assert half["lr"] == 0.05 and half["iterations"] == [r.iterations for r in runs]
    assert half["iterations"] != [r.iterations for r in full]  # a control at the full rate would repeat the study
    assert any(np.diff(r.loss).max() > 0 for r in runs), "no half-rate loss rises: the counts below would be 0"
    assert half["loss_rises"] == [int((np.diff(r.loss) > 0).sum()) for r in runs]
    # the study's median seed replayed at the half rate: the half-rate run's own losses, one sharpness each
    study = json.loads((tmp_path / "part3_line.json").read_text())
    one = half["single"]
    assert one["seed"] == study["single"]["seed"]
    run = runs[[0, 1].index(one["seed"])]
    assert one["iterations"] == run.iterations
    assert one["loss_rises_at"] == (np.flatnonzero(np.diff(run.loss) > 0) + 1).tolist()
    assert one["replayed_loss"] == pytest.approx(run.loss.tolist(), rel=1e-4)
    assert len(one["sharpness"]) == len(run.loss) and all(v is not None and v > 0 for v in one["sharpness"])
    # every run replayed at its own rate: its steps by rate x sharpness (above 2 or not) and the rises of its loss
    counts = {"above": 0, "rises_above": 0, "below": 0, "rises_below": 0}
    for r in runs:  # the half rate's, recounted; the full rate's by their totals (the replay costs time)
        sharp = p3.replay_job(r.seed, *xy(data), replace(F32, lr=0.05, max_iters=20), len(r.loss) - 1)["sharpness"]
        assert len(sharp) == len(r.loss)
        for t in range(len(r.loss) - 1):
            side = "above" if sharp[t] > 2 else "below"
            counts[side] += 1
            counts[f"rises_{side}"] += bool(r.loss[t + 1] > r.loss[t])
    assert study["overshoot"]["half"] == counts
    whole = study["overshoot"]["full"]
    assert whole["above"] + whole["below"] == sum(len(r.loss) - 1 for r in full)
    assert whole["rises_above"] + whole["rises_below"] == sum(int((np.diff(r.loss) > 0).sum()) for r in full)


# --- bad input: one line, exit 2, nothing written ------------------------------------------------------


@pytest.mark.parametrize(("case", "flags", "expect"), [
    ("small images", ["--padding", "valid"], "--padding"), ("missing labels", [], "line_labs.npy"),
    ("no random data", ["--control-fc"], "random_imgs.npy"), ("seeds", ["--first-seed", str(2**32 - 2), "--seeds", "3"],
                                                               "--first-seed"),
    ("odd holdout", ["--holdout", "15"], "--holdout"), ("negative holdout", ["--holdout", "-2"], "--holdout"),
    ("large holdout", ["--holdout", "64"], "--holdout"), ("padding", ["--padding", "full"], "--padding"),
    ("lr", ["--lr", "-1e-3"], "--lr")])
def test_bad_input_one_line_exit_2_nothing_written(case: str, flags: list[str], expect: str, tmp_path: Path,
                                                   standin_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = standin_dir
    if case in ("small images", "missing labels", "no random data"):
        data_dir = tmp_path / "d"
        (data_dir / "line").mkdir(parents=True)
        small = case == "small images"
        np.save(data_dir / "line" / "line_imgs.npy", np.random.default_rng(0).random((16, 8, 8) if small else
                                                                                      (16, 16, 16)))
        if case != "missing labels":
            np.save(data_dir / "line" / "line_labs.npy", np.arange(16) % 2)
    out = tmp_path / "out"
    code = run_main(p3.main, ["--data-dir", str(data_dir), "--out", str(out), "--max-iters", "2", *flags])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured.err
    assert expect in captured.err and not out.exists()


# --- signals, a killed worker, simulated Windows and macOS (subprocesses) -----------------------------


def children(pid: int) -> list[int]:
    """Live child processes of pid, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def start_long_run(repo_root: Path, standin_dir: Path, out: Path) -> tuple[subprocess.Popen, list[int]]:
    """Four seeds at lr 1e-9 (none reaches 100%: each trains 20,000 updates) in two workers; returns
    once both workers train."""
    proc = subprocess.Popen([sys.executable, str(repo_root / "part3_line.py"), "--seeds", "4", "--workers", "2",
                             "--lr", "1e-9", "--max-iters", "20000", "--data-dir", str(standin_dir), "--out", str(out)],
                            cwd=repo_root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 60  # a guard against a hung test, not a claim on speed
    header = ""
    while not header.startswith("Part 3.1") or len(children(proc.pid)) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, header
        if selector.select(timeout=0.2):
            header = proc.stdout.readline()
    time.sleep(0.5)  # the workers have their first job
    return proc, children(proc.pid)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return code, proc.stderr.read()


def gone(pids: list[int]) -> bool:
    for _ in range(50):
        if not any(Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in pids if Path(f"/proc/{pid}/stat").exists()):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_sigterm_ends_the_run_with_143_one_line_no_worker_left(repo_root: Path, standin_dir: Path,
                                                               tmp_path: Path) -> None:
    proc, workers = start_long_run(repo_root, standin_dir, tmp_path / "out")
    os.kill(proc.pid, signal.SIGTERM)
    code, stderr = finish(proc, 10)
    assert code == 143 and len(stderr.strip().splitlines()) == 1 and "interrupted (SIGTERM)" in stderr, stderr
    assert gone(workers) and not list((tmp_path / "out").glob(".*tmp-*"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_killed_worker_ends_the_run_with_one_line(repo_root: Path, standin_dir: Path, tmp_path: Path) -> None:
    proc, workers = start_long_run(repo_root, standin_dir, tmp_path / "out")
    os.kill(workers[0], signal.SIGKILL)
    started = time.monotonic()
    code, stderr = finish(proc, 10)
    assert code == 1 and time.monotonic() - started < 5, stderr
    assert len(stderr.strip().splitlines()) == 1 and "SIGKILL" in stderr and "Traceback" not in stderr, stderr
    assert gone(workers) and not (tmp_path / "out" / "part3_line.json").exists()


SIM = Path(__file__).resolve().parents[2] / "shared" / "platform-sim"


@pytest.mark.skipif(not SIM.is_dir(), reason="no ../shared/platform-sim here")
def test_runs_under_simulated_windows_and_macos(repo_root: Path, standin_dir: Path, tmp_path: Path) -> None:
    """Many seeds in spawned workers, under 256 open files (macOS's default); Windows with the
    controls and the held-out split too, in one process. Both at once."""
    procs = {}
    for system, flags in (("windows", "--seeds 3 --holdout 16 --control-fc --workers 1"), ("macos", "--seeds 4")):
        command = (f"ulimit -n 256; exec {sys.executable} part3_line.py {flags} --max-iters 15 --quiet "
                   f"--data-dir {standin_dir} --out {tmp_path / system}")
        procs[system] = subprocess.Popen(["bash", "-c", command], cwd=repo_root, text=True, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(SIM / system)))
    for system, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, (system, stderr)
        assert ("1 process(es)" if system == "windows" else "2 process(es)") in stdout, stdout
        results = json.loads((tmp_path / system / "part3_line.json").read_text())
        assert len(results["iterations"]) == (3 if system == "windows" else 4) and len(results["figures"]) == 5


# --- 3.1's bump: the rate x sharpness of the steps ------------------------------------------------


def test_step_sharpness_is_the_rate_times_the_largest_curvature_of_a_quadratic() -> None:
    """On 1/2 (x^T A x + y^T B y), two parameter tensors, the Hessian is block-diagonal: the sharpness
    is lr x the largest eigenvalue of A and B together, found from any start with a part along it."""
    gen = torch.Generator().manual_seed(1)
    a, b = (torch.randn(n, n, generator=gen, dtype=torch.float64) for n in (3, 2))
    a, b = a @ a.T + torch.eye(3, dtype=torch.float64), b @ b.T  # symmetric, positive (semi)definite
    x, y = (torch.ones(n, dtype=torch.float64, requires_grad=True) for n in (3, 2))
    expected = 0.1 * max(torch.linalg.eigvalsh(a).max().item(), torch.linalg.eigvalsh(b).max().item())
    direction = [torch.ones(3, dtype=torch.float64), torch.ones(2, dtype=torch.float64)]
    value = 0.0
    for _ in range(20):  # warm starts, as the replay chains them
        objective = 0.5 * (x @ a @ x + y @ b @ y)
        grads = torch.autograd.grad(objective, [x, y], create_graph=True)
        value, direction = p3.step_sharpness(grads, [x, y], 0.1, direction)
    assert value == pytest.approx(expected, rel=1e-9)


def test_the_sharpness_replay_retraces_the_run(data: Dataset) -> None:
    """The replay takes the loop's own steps: its loss at every iteration is the run's (float64, so
    the two orders of summation agree to rounding), and it measures one sharpness per iteration."""
    cfg = replace(F32, dtype=torch.float64, max_iters=6)
    x, y = xy(data)
    run = p3.train_seed(0, x, y, cfg)
    xt, yt = (torch.tensor(v, dtype=torch.float64) for v in (x, y))
    net = p3.initial_model(p3.LineNet, 0, tuple(x.shape[2:]), cfg)
    losses, sharpness = p3.sharpness_replay(net, lambda n: p3.loss_fn("ce", n(xt), yt), cfg.lr, len(run["loss"]) - 1)
    assert losses == pytest.approx(run["loss"].tolist(), rel=1e-12)
    assert len(sharpness) == len(run["loss"]) and all(v is not None and v > 0 for v in sharpness)
