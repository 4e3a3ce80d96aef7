"""Tests for part3_detection.py (3.2).

The loop against an independent float64 network (nn.Module + optim.SGD, written out again here) seed
for seed, for 3.2 and for each control; one update split into its two rates; a seed alone and among
others in two worker processes (float32, bit for bit); results that cross processes as numpy only;
every tensor the loop makes on the run's device; progress lines; the stop rules; the measurements on
hand-made runs with hand-derived answers; the controls wired as named (end to end); bad input; and
the script under simulated Windows and macOS.

Tolerances (float64): the reference computes the same sums in another order, so a curve agrees
within 1e-9 relative over 20 iterations; one update computed two ways within 1e-12 relative.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import part3_detection as p3d
from part2_fc import Config, Dataset, load_dataset, run_jobs, run_main
from part3_line import LineNet, initial_model

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

F64 = Config(dtype=torch.float64, log=False)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As the script runs (part2_fc.config_from_args): one thread, so float32 sums come out the same
    in every process (and a busy machine does not slow the threads down)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(standin_dir: Path) -> Dataset:
    return load_dataset(standin_dir, "detection")


def image_of(data: Dataset) -> tuple[int, int]:
    return tuple(data.images.shape[1:])


# --- an independent float64 reference: Figure 4 (plus the width head) and the handout's loop ---------


class Reference(nn.Module):
    """conv 7x7 x16 -> ReLU -> conv 7x7 x8 -> ReLU -> flatten -> Linear (class logit); with the width
    head a second Linear off the same features (the width)."""

    def __init__(self, image: tuple[int, int], width_head: bool) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 7), nn.Conv2d(16, 8, 7)
        n = 8 * (image[0] - 12) * (image[1] - 12)
        self.fc = nn.Linear(n, 1)
        self.width_head = nn.Linear(n, 1) if width_head else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)
        return self.fc(f)[:, 0], None if self.width_head is None else self.width_head(f)[:, 0]


def reference_start(seed: int, data: Dataset, width_head: bool) -> Reference:
    """The reference holding the seed's start (the start itself is part3_line's, tested there)."""
    net = Reference(image_of(data), width_head).double()
    start = initial_model(p3d.DetectionNet if width_head else LineNet, seed, image_of(data), F64)
    net.load_state_dict(start.state_dict())
    return net


def reference_run(seed: int, data: Dataset, lr: float, lr_reg: float, max_iters: int,
                  width_head: bool = True, freeze: bool = False) -> dict:
    """optim.SGD at lr on CE + (lr_reg / lr) L2 (without the head: CE), stop at 100% widths
    (without the head: 100% classes) or the cap. freeze: from the first 100% classification on, the
    layers before the width head keep their weights (a second optimiser over the head alone), so its
    features stay as they were. Returns per-iteration values, the last weights and the frozen-at t."""
    net = reference_start(seed, data, width_head)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    out_frozen_at = None
    x = torch.tensor(data.images[:, None])
    y, w = torch.tensor(data.labels), torch.tensor(data.widths)
    out: dict = {"ce": [], "l2": [], "accuracy": [], "width_accuracy": [], "logits": []}
    for t in range(max_iters + 1):
        logits, width = net(x)
        ce = -(y * F.logsigmoid(logits) + (1 - y) * F.logsigmoid(-logits)).mean()
        right = ((logits > 0).double() == y).double()
        out["ce"].append(ce.item())
        out["accuracy"].append(right.mean().item())
        out["logits"].append(logits.detach().numpy().copy())
        loss, done = ce, right.mean().item() == 1
        if freeze and out_frozen_at is None and done:  # every image classified: the head alone from here
            out_frozen_at, opt = t, torch.optim.SGD(net.width_head.parameters(), lr=lr)
        if width is not None:
            l2 = ((width - w) ** 2).sum() / len(w)
            width_right = ((width - w).abs() < 0.5).double().mean().item()
            out["l2"].append(l2.item())
            out["width_accuracy"].append(width_right)
            loss, done = ce + lr_reg / lr * l2, width_right == 1
        if done or t == max_iters:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["stop"], out["done"], out["frozen_at"] = t, done, out_frozen_at
    out["weights"] = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    return out


@pytest.mark.parametrize("study", ["3.2", "no_width_head", "width_lr_x10"])
def test_loop_equals_a_plain_module_and_optim_sgd_in_float64(data: Dataset, study: str) -> None:
    """Every iteration's losses, accuracies and logits, and the weights at the stop; the control
    without the width head trains 3.1's network on CE alone (its trunk gets no width gradient)."""
    lr_reg = {"3.2": 0.001, "no_width_head": 0.001, "width_lr_x10": 0.01}[study]
    cfg = replace(F64, max_iters=20, lr_reg=lr_reg)
    run = p3d.train(study, 2, cfg, data)
    ref = reference_run(2, data, cfg.lr, lr_reg, cfg.max_iters, width_head=study != "no_width_head")
    assert (run.stop, run.iterations, run.diverged_at) == (ref["stop"], ref["stop"] if ref["done"] else None, None)
    for key in ("ce", "accuracy", *(("l2", "width_accuracy") if study != "no_width_head" else ())):
        np.testing.assert_allclose(run.curves[key], ref[key], rtol=1e-9, atol=0, err_msg=key)
    np.testing.assert_allclose(run.logits, np.array(ref["logits"]), rtol=1e-9, atol=1e-12)
    assert set(run.weights) == set(ref["weights"])
    for name, value in ref["weights"].items():
        np.testing.assert_allclose(run.weights[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    if study == "no_width_head":
        assert np.isnan(run.widths).all() and np.isnan(run.curves["l2"]).all()



def test_the_frozen_features_control_trains_the_width_head_alone_once_classified(data: Dataset) -> None:
    """Every iteration's losses and the weights at the stop against the reference, whose second
    optimiser holds the width head alone from the first 100% classification on; every other layer
    ends as it was then, and the run is 3.2's up to that iteration."""
    cfg = replace(F64, max_iters=110)
    run, plain = p3d.train("frozen_features", 2, cfg, data), p3d.train("3.2", 2, cfg, data)
    ref = reference_run(2, data, cfg.lr, cfg.lr_reg, cfg.max_iters, freeze=True)
    frozen_at = ref["frozen_at"]
    assert frozen_at is not None and frozen_at < run.stop  # the case freezes, then trains the head
    for key in ("ce", "l2", "accuracy", "width_accuracy"):
        np.testing.assert_allclose(run.curves[key], ref[key], rtol=1e-9, atol=0, err_msg=key)
        np.testing.assert_array_equal(run.curves[key][:frozen_at + 1], plain.curves[key][:frozen_at + 1])
    for name, value in ref["weights"].items():
        np.testing.assert_allclose(run.weights[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    assert not np.allclose(run.curves["l2"][frozen_at + 1:], plain.curves["l2"][frozen_at + 1:run.stop + 1])


def test_head_sharpness_is_the_rate_times_the_largest_eigenvalue_of_the_width_loss_hessian(data: Dataset) -> None:
    """At the stop: lr_reg x the largest eigenvalue of the Hessian of the mean squared width error in
    the head's weights and bias, by autograd on the features the run ends with; at the first 100%
    classification, the same for the features then (the frozen control keeps those)."""
    cfg = replace(F64, max_iters=110)
    run = p3d.train("frozen_features", 2, cfg, data)
    net = initial_model(p3d.DetectionNet, 2, image_of(data), F64)
    net.load_state_dict({k: torch.tensor(v) for k, v in run.weights.items()})
    x = torch.tensor(data.images[:, None])
    w = torch.tensor(data.widths)
    with torch.no_grad():
        features = net.features(x)
    n = features.shape[1]

    def width_loss(theta: torch.Tensor) -> torch.Tensor:  # the head's weights then its bias, (n + 1,)
        return ((features @ theta[:n] + theta[n] - w) ** 2).mean()

    hessian = torch.autograd.functional.hessian(width_loss, torch.zeros(n + 1, dtype=torch.float64))
    want = cfg.lr_reg * float(torch.linalg.eigvalsh(hessian).max())
    assert run.sharpness["stop"] == pytest.approx(want, rel=1e-9)
    assert run.sharpness["classified"] == pytest.approx(want, rel=1e-9)  # frozen: the same features
    grown = p3d.train("3.2", 2, cfg, data).sharpness
    assert grown["classified"] == pytest.approx(want, rel=1e-9) and grown["stop"] != pytest.approx(want, rel=1e-3)

@pytest.mark.parametrize(("lr", "lr_reg"), [(0.1, 0.001), (0.05, 0.02)])
def test_one_update_moves_classifier_by_lr_dce_width_head_by_lr_reg_dl2_trunk_by_both(
        data: Dataset, lr: float, lr_reg: float) -> None:
    net = reference_start(0, data, width_head=True)
    params = dict(net.named_parameters())
    logits, width = net(torch.tensor(data.images[:, None]))
    y, w = torch.tensor(data.labels), torch.tensor(data.widths)
    ce = F.binary_cross_entropy_with_logits(logits, y)
    l2 = ((width - w) ** 2).mean()
    g_ce = torch.autograd.grad(ce, list(params.values()), allow_unused=True, retain_graph=True)
    g_l2 = torch.autograd.grad(l2, list(params.values()), allow_unused=True)
    run = p3d.train("3.2", 0, replace(F64, lr=lr, lr_reg=lr_reg, max_iters=1), data)
    assert run.stop == 1
    for (name, before), a, b in zip(params.items(), g_ce, g_l2, strict=True):
        assert (a is None) == name.startswith("width_head.") and (b is None) == name.startswith("fc."), name
        step = lr * (a if a is not None else 0) + lr_reg * (b if b is not None else 0)
        np.testing.assert_allclose(before.detach().numpy() - run.weights[name], step.numpy(), rtol=1e-12,
                                   atol=1e-15, err_msg=name)


def test_the_width_head_is_declared_after_3_1s_layers_so_a_seed_starts_3_1s_net(data: Dataset) -> None:
    line = initial_model(LineNet, 4, image_of(data), Config()).state_dict()
    detection = initial_model(p3d.DetectionNet, 4, image_of(data), Config()).state_dict()
    assert list(detection) == [*line, "width_head.weight", "width_head.bias"]
    assert all(torch.equal(detection[k], v) for k, v in line.items())


# --- processes, devices, progress ---------------------------------------------------------------------


def test_a_seed_alone_equals_it_among_others_in_two_workers_float32(data: Dataset) -> None:
    cfg = Config(max_iters=12, log=False)
    jobs = [(study, seed, replace(cfg, lr_reg=0.01) if study == "width_lr_x10" else cfg, data)
            for seed in (0, 1, 2) for study in ("3.2", "width_lr_x10", "no_width_head")]
    among = run_jobs(p3d.train, jobs, 2)
    for job, run in zip(jobs, among, strict=True):
        if job[1] != 1:
            continue
        alone = p3d.train(*job)
        assert (run.study, run.seed, run.stop) == (alone.study, 1, alone.stop)
        for key, curve in alone.curves.items():
            np.testing.assert_array_equal(run.curves[key], curve, err_msg=key)
        np.testing.assert_array_equal(run.logits, alone.logits)
        np.testing.assert_array_equal(run.widths, alone.widths)
        for name, value in alone.weights.items():
            np.testing.assert_array_equal(run.weights[name], value, err_msg=name)


def holds_a_tensor(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    if isinstance(value, dict):
        return any(holds_a_tensor(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(holds_a_tensor(v) for v in value)
    return hasattr(value, "__dataclass_fields__") and holds_a_tensor(vars(value))


def test_a_seed_crosses_processes_as_numpy_and_plain_numbers_only(data: Dataset) -> None:
    """Torch tensors travel between processes as open file descriptors (hundreds of seeds: "too many
    open files", then a hang)."""
    run = p3d.train("3.2", 0, Config(max_iters=2, log=False), data)
    assert not holds_a_tensor(run)
    assert isinstance(run.logits, np.ndarray) and all(isinstance(v, np.ndarray) for v in run.weights.values())


FACTORIES = {torch.tensor, torch.as_tensor, torch.from_numpy, torch.zeros, torch.ones, torch.full, torch.empty,
             torch.arange, torch.linspace, torch.eye, torch.rand, torch.randn, torch.randint}


class FactoryCalls(TorchFunctionMode):
    """Records (function, device) for every new tensor that part3_detection.py makes from scratch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, object]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and sys._getframe(1).f_code.co_filename == p3d.__file__:
            self.calls.append((func.__name__, kwargs.get("device")))
        return func(*args, **kwargs)


@pytest.mark.parametrize("study", ["3.2", "no_width_head"])
def test_every_tensor_the_loop_makes_is_made_on_the_runs_device(data: Dataset, study: str) -> None:
    """Without a GPU every device is the CPU, so check the request: every tensor made from scratch
    asks for device=cfg.device, and with torch's default device set to "meta" (where a tensor made
    without a device lands, and then cannot meet the run's) the run still ends with numbers. Either
    catches, say, torch.arange(n) later indexed by masks on CUDA."""
    cfg = Config(max_iters=3, log=False)
    with torch.device("meta"), FactoryCalls() as watch:
        run = p3d.train(study, 0, cfg, data)
    assert watch.calls, "the loop makes its data tensors"
    assert all(device == cfg.device for _, device in watch.calls), watch.calls
    assert np.isfinite(run.curves["ce"]).all() and run.stop == 3


def test_a_long_seed_prints_progress_at_most_every_progress_seconds(data: Dataset, monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    cfg = Config(max_iters=4, log=True)
    monkeypatch.setattr(p3d, "PROGRESS_SECONDS", 0.0)
    p3d.train("width_lr_x10", 3, cfg, data)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].split(",")[0] for line in lines] == [f" iteration {t}" for t in range(4)]
    assert all(line.startswith("  width_lr_x10, seed 3:") for line in lines)
    monkeypatch.setattr(p3d, "PROGRESS_SECONDS", 3600.0)
    p3d.train("3.2", 3, cfg, data)
    p3d.train("3.2", 3, replace(cfg, log=False, max_iters=2), data)
    assert capsys.readouterr().out == ""


# --- the stop rules --------------------------------------------------------------------------------------


def test_stops_at_the_first_iteration_with_every_width_within_half_a_pixel(data: Dataset) -> None:
    """Widths set 0.7 px above the seed's starting predictions: all wrong at first, all right after
    a few steps at lr_reg 0.01."""
    cfg = Config(lr_reg=0.01, max_iters=60, log=False)
    with torch.no_grad():
        start = initial_model(p3d.DetectionNet, 0, image_of(data), cfg)(
            torch.tensor(data.images[:, None], dtype=torch.float32))[1].double().numpy()
    shifted = replace(data, widths=start + 0.7)
    run = p3d.train("3.2", 0, cfg, shifted)
    right = np.abs(run.widths - shifted.widths.astype(np.float32)) < 0.5  # (T, B), float32 as trained
    assert not right[0].any() and right[-1].all() and not right[:-1].all(1).any()
    assert run.iterations == run.stop == len(right) - 1 and run.diverged_at is None
    np.testing.assert_array_equal(run.curves["width_accuracy"], right.mean(1))


def test_the_control_without_the_width_head_stops_at_the_first_100_percent_classification(data: Dataset) -> None:
    run = p3d.train("no_width_head", 0, Config(max_iters=400, log=False), data)
    right = ((run.logits > 0) == (data.labels > 0.5)).all(1)
    assert run.iterations == run.stop == int(np.flatnonzero(right)[0]) and not right[:-1].any()


def test_a_non_finite_loss_is_diverged_and_the_cap_is_neither(data: Dataset) -> None:
    run = p3d.train("3.2", 0, Config(init_std=1e30, max_iters=5, log=False), data)
    assert (run.stop, run.diverged_at, run.iterations) == (0, 0, None)
    assert np.isnan(run.curves["ce"]).all()
    late = p3d.train("3.2", 0, Config(lr=1e4, max_iters=50, log=False), data)
    assert late.diverged_at == late.stop > 0 and np.isnan(late.curves["ce"][-1])
    assert np.isfinite(late.curves["ce"][:-1]).all()
    capped = p3d.train("3.2", 0, Config(max_iters=3, log=False), data)
    assert (capped.stop, capped.iterations, capped.diverged_at) == (3, None, None)


# --- the measurements, on hand-made runs -------------------------------------------------------------


def tiny(labels: list[int], widths: list[float]) -> Dataset:
    """N images of 16x16 pixels: image i lights pixel i (and, for two images, a shared pixel)."""
    n = len(labels)
    images = np.zeros((n, 16, 16))
    for i in range(n):
        images[i, 0, i] = 1
    return Dataset(images, np.array(labels, float), np.array(widths, float), {}, "tiny")


def hand_run(logits: list[list[float]], widths: list[list[float]], study: str = "3.2", seed: int = 0,
             conv2: np.ndarray | None = None, iterations: int | None = None) -> p3d.SeedRun:
    """A SeedRun whose curves follow from its logits and widths as the loop computes them."""
    z, p = np.array(logits, float), np.array(widths, float)
    n = z.shape[1]
    return p3d.SeedRun(study, seed, len(z) - 1, iterations, None, {
        "ce": np.full(len(z), math.log(2)), "l2": np.array([100.0, 50, 5, 4, 1][:len(z)]),
        "accuracy": np.full(len(z), 0.5), "width_accuracy": np.linspace(0, 1, len(z))},
        z, p, np.ones((n, 8)) if conv2 is None else conv2, {}, {"classified": 0.2, "stop": 0.8})


def test_seed_record_relapses_stays_groups_and_width_milestones() -> None:
    data = tiny([0, 1, 1, 0], [1, 2, 2, 3])
    # signs right (label 0: z < 0, label 1: z > 0):      image 0  1  2  3
    logits = [[1, -1, -1, 1],    # t0: none right
              [-1, 1, -1, -1],   # t1: 0, 1, 3
              [-1, 1, 1, -1],    # t2: all right (first 100%)
              [-1, -1, 1, -1],   # t3: image 1 wrong again (relapse)
              [-1, 1, 1, -1]]    # t4: all right, to the stop
    widths = [[1, 2, 2, 3]] * 5
    groups = {"label 0": np.array([0, 3]), "label 1": np.array([1, 2]), "width 2": np.array([1, 2])}
    m = p3d.seed_record(hand_run(logits, widths), data, groups, baseline_mse=4.5, chance_ce=math.log(2))
    assert m["classification_iterations"] == 2 and m["all_classified_from"] == 4
    assert m["relapsed_images"] == [1] and m["relapse_iterations"] == 1
    assert m["head_sharpness"] == {"classified": 0.2, "stop": 0.8}  # the run's, passed on
    assert m["image_classified_from"] == [1, 4, 2, 1]
    assert m["group_classification_iterations"] == {"label 0": 1, "label 1": 4, "width 2": 4}
    assert m["group_first_classified"] == {"label 0": 1, "label 1": 2, "width 2": 2}
    assert m["initial_margin"] == [-1, -1, -1, -1]
    # l2 curve 100, 50, 5, 4, 1: falls 20x (<= 5) at t2; beats the mean width (< 4.5) at t3
    assert m["l2_fall_20x"] == {"iteration": 2, "width_accuracy": 0.5, "rms": pytest.approx(5 ** 0.5)}
    assert m["beats_mean_width"] == {"iteration": 3, "width_accuracy": 0.75, "rms": 2.0}
    assert m["widths_90"] == {"iteration": 4, "width_accuracy": 1.0, "rms": 1.0}  # width accuracy 0, .25, .5, .75, 1
    assert m["width_right_from"] == [0, 0, 0, 0]  # every predicted width equals the true one throughout
    # the accuracies fall at no step here (class accuracy flat, width accuracy rising)
    assert m["accuracy_falls"] == 0 and m["width_accuracy_falls"] == 0
    assert m["final_l2"] == 1 and m["final_width_accuracy"] == 1 and m["final_max_width_error"] == 0
    assert m["dead_conv2_maps"] == 0


def test_seed_record_collapse_dead_maps_and_never_all_right() -> None:
    data = tiny([0, 1], [1, 3])
    conv2 = np.ones((2, 8))
    conv2[:, [2, 5]] = 0  # two maps silent on every image
    m = p3d.seed_record(hand_run([[0.0, 0.0]] * 3, [[2.0, 2.0]] * 3, conv2=conv2), data, {}, 4.0, math.log(2))
    assert m["collapsed"] and m["dead_conv2_maps"] == 2
    assert m["classification_iterations"] is None and m["relapsed_images"] is None
    assert m["image_classified_from"] == [0, None] and m["all_classified_from"] is None
    assert m["final_max_width_error"] == 1
    not_flat = p3d.seed_record(hand_run([[0.0, 0.0]] * 3, [[2.0, 2.0]] * 3), data, {}, 4.0, math.log(2) + 2e-3)
    assert not not_flat["collapsed"]
    control = p3d.seed_record(hand_run([[-1.0, 1.0]], [[np.nan] * 2], study="no_width_head"), data, {}, 4.0, 1.0)
    assert "final_l2" not in control and "l2_fall_20x" not in control
    broken = p3d.seed_record(hand_run([[np.nan, np.inf]], [[1.0, 3.0]]), data, {}, 4.0, 1.0)
    assert broken["initial_margin"] == [None, None]  # JSON has no NaN


def test_rank_correlation_is_spearmans_rho_with_mean_ranks_for_ties() -> None:
    assert p3d.rank_correlation(np.array([1, 2, 3, 4]), [10, 20, 40, 80]) == pytest.approx(1)
    assert p3d.rank_correlation(np.array([1, 2, 3, 4]), [4, 3, 2, 1]) == pytest.approx(-1)
    # ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): by hand, r = 4.5 / sqrt(4.5 * 5)
    assert p3d.rank_correlation(np.array([1, 5, 5, 9]), [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert p3d.rank_correlation(np.array([3, 3, 3]), [1, 2, 3]) is None
    assert p3d.rank_correlation(np.array([1, np.inf, 2]), [1, 3, 2]) == pytest.approx(1)  # never right = last


def test_slow_images_nearest_image_of_the_other_class() -> None:
    data = tiny([0, 0, 1, 1], [1, 1, 1, 1])
    data.images[0, 5, 5] = data.images[2, 5, 5] = 1  # images 0 and 2 share a pixel: each other's nearest
    per_seed = [{"image_classified_from": [9, 1, 7, 2], "relapsed_images": [0], "initial_margin": [0.1] * 4},
                {"image_classified_from": [3, 2, 8, 1], "relapsed_images": [], "initial_margin": [0.1] * 4}]
    s = p3d.slow_images(per_seed, data)
    assert s["nearest_other"] == [True, False, True, False] and s["n_nearest_other"] == 2
    assert s["cos_other"][0] == pytest.approx(0.5) and s["cos_same"][0] == 0
    assert s["image_classified_from_median"] == [6, 1.5, 7.5, 1.5]
    assert s["classified_from_median"] == {"nearest_other": 7.5, "nearest_same": 1.5}
    assert s["last_image_nearest_other"] == 2 and s["relapses"] == 1 and s["relapses_nearest_other"] == 1
    assert s["labels"] == [0, 0, 1, 1] and s["relapsing_seeds_per_image"] == [1, 0, 0, 0]
    assert s["last_seeds_per_image"] == [1, 0, 1, 0]  # seed 0: image 0 (9), seed 1: image 2 (8)
    assert s["rank_correlation"]["label"]["per_seed"][0] == pytest.approx(0)
    assert s["rank_correlation"]["initial_margin"]["median"] is None


def test_relapse_summary_and_comparison_with_3_2() -> None:
    groups = {"label 0": np.array([0]), "label 1": np.array([1])}
    m = [{"relapsed_images": [1], "all_classified_from": 9, "group_first_classified": {"label 0": 2, "label 1": 3},
          "group_classification_iterations": {"label 0": 2, "label 1": 9}},
         {"relapsed_images": [], "all_classified_from": 5, "group_first_classified": {"label 0": 4, "label 1": 5},
          "group_classification_iterations": {"label 0": 4, "label 1": 5}},
         {"relapsed_images": None, "all_classified_from": None, "group_first_classified": {"label 0": None,
          "label 1": None}, "group_classification_iterations": {"label 0": None, "label 1": None}}]
    study = {"measurements": m, "diverged_at": [None] * 3, "classification_summary": {"median": 5.0}}
    r = p3d.relapse_summary(study, groups)  # the third seed never classifies all: slower than any other
    assert r["seeds_with_relapses"] == 1 and r["all_classified_from_median"] == 9 and r["n_seeds"] == 3
    assert r["relapsed_images"]["n"] == 2 and r["relapsed_images"]["max"] == 1
    assert r["groups"]["label 1"] == {"first_classified_median": 5, "classified_from_median": 9, "seeds_relapsing": 1}
    assert r["groups"]["label 0"]["seeds_relapsing"] == 0 and r["groups"]["label 0"]["classified_from_median"] == 4
    base = {"iterations": [100, 200, None], "summary": {"median": 200.0},
            "classification_iterations": [10, 20, 30], "classification_summary": {"median": 20.0}}
    faster = {"iterations": [50, 300, 80], "summary": {"median": 80.0},
              "classification_iterations": [5, 10, 15], "classification_summary": {"median": 10.0}}
    c = p3d.compare_with_3_2("width_lr_x10", faster, base)
    assert c["iterations"]["median_ratio"] == 2.5 and c["classification_iterations"]["median_ratio"] == 2
    assert (c["iterations"]["paired"]["wins"], c["iterations"]["paired"]["losses"]) == (2, 1)
    assert set(p3d.compare_with_3_2("no_width_head", faster, base)) == {"classification_iterations"}


# --- the command line, end to end --------------------------------------------------------------------


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(p3d.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def no_drawing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Figures cost ~0.5 s each; the runs below check the numbers (the simulated runs draw)."""
    monkeypatch.setattr(p3d, "save_figure", lambda path, draw, *args: True)


def test_default_run_one_seed_json_and_its_figures(standin_dir: Path, tmp_path: Path, no_drawing: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(["--data-dir", str(standin_dir), "--out", str(tmp_path), "--max-iters", "30"], capsys)
    results = json.loads((tmp_path / "part3_detection.json").read_text())
    assert code == 0 and "seed 0" in out
    assert results["seeds"] == [0] and results["single"]["seed"] == 0 and results["workers"] == 1
    assert results["figures"] == ["part3_detection_classification.png", "part3_detection_width.png",
                                  "part3_detection_width_scatter.png", "part3_detection_kernels.png",
                                  "part3_detection_feature_maps.png"]
    assert results["controls"] == {"no_width_head": None, "width_lr_x10": None, "frozen_features": None}
    assert results["relapses"] is None and results["slow_images"] is None
    assert results["network"]["parameters"] == (49 + 1) * 16 + (16 * 49 + 1) * 8 + 2 * (8 * 4 * 4 + 1)
    assert results["mean_width_baseline"]["rms"] == pytest.approx(float(np.std(np.load(
        standin_dir / "detection" / "detection_width.npy"))), rel=1e-12)


def test_a_run_diverged_from_the_start_still_writes_its_json(standin_dir: Path, tmp_path: Path,
                                                             no_drawing: None) -> None:
    """Weights of std 1e6: widths near 1e20, an L2 loss beyond float32 at iteration 0."""
    argv = ["--data-dir", str(standin_dir), "--out", str(tmp_path), "--init-std", "1e6", "--seeds", "2",
            "--max-iters", "3", "--control-width-lr-x10", "--quiet"]
    assert run_main(p3d.main, argv) == 0
    results = json.loads((tmp_path / "part3_detection.json").read_text())
    assert results["diverged_at"] == [0, 0] and results["summary"]["diverged"] == 2
    assert results["single"]["final_ce"] is None and results["single"]["final_max_width_error"] is None
    assert results["slow_images"]["image_classified_from_median"] == [None] * 64


def test_groups_and_their_label_width_confound_counted_from_the_files(standin_dir: Path, tmp_path: Path,
                                                                      no_drawing: None) -> None:
    assert run_main(p3d.main, ["--data-dir", str(standin_dir), "--out", str(tmp_path), "--max-iters", "1",
                               "--quiet"]) == 0
    groups = json.loads((tmp_path / "part3_detection.json").read_text())["groups"]
    labels = np.load(standin_dir / "detection" / "detection_labs.npy")
    widths = np.load(standin_dir / "detection" / "detection_width.npy")
    for w in set(widths.tolist()):
        assert groups["label_by_width"][f"{w:g}"] == {c: int(((widths == w) & (labels == int(c))).sum())
                                                      for c in ("0", "1")}
        assert groups["width"][f"{w:g}"] == int((widths == w).sum())
    assert groups["label"] == {"0": int((labels == 0).sum()), "1": int((labels == 1).sum())}


def test_the_controls_train_what_they_are_named(standin_dir: Path, data: Dataset, tmp_path: Path,
                                                no_drawing: None) -> None:
    """float64, 3 updates: the x10 control's losses are the reference's at lr_reg x 10 (not x1); the
    no-width-head control's are 3.1's network trained on CE alone (not the width head's)."""
    argv = ["--data-dir", str(standin_dir), "--out", str(tmp_path), "--max-iters", "3", "--dtype", "float64",
            "--control-no-width-head", "--control-width-lr-x10", "--control-frozen-features", "--quiet"]
    assert run_main(p3d.main, argv) == 0
    results = json.loads((tmp_path / "part3_detection.json").read_text())
    got = {"3.2": results["measurements"][0]} | {k: v["measurements"][0] for k, v in results["controls"].items()}
    frozen = results["controls"]["frozen_features"]  # not classified within 3 updates: 3.2's run, compared
    assert frozen["measurements"][0]["final_l2"] == pytest.approx(got["3.2"]["final_l2"], rel=1e-12)
    assert frozen["compared_with_3_2"]["iterations"]["paired"]["ties"] == 1
    refs = {"3.2": reference_run(0, data, 0.1, 0.001, 3), "width_lr_x10": reference_run(0, data, 0.1, 0.01, 3),
            "no_width_head": reference_run(0, data, 0.1, 0.001, 3, width_head=False)}
    for study, ref in refs.items():
        assert got[study]["final_ce"] == pytest.approx(ref["ce"][-1], rel=1e-9), study
        if study != "no_width_head":
            assert got[study]["final_l2"] == pytest.approx(ref["l2"][-1], rel=1e-9), study
    assert abs(refs["width_lr_x10"]["l2"][-1] - refs["3.2"]["l2"][-1]) > 1e-3  # the test tells them apart
    assert abs(refs["no_width_head"]["ce"][-1] - refs["3.2"]["ce"][-1]) > 1e-9
    assert "final_l2" not in got["no_width_head"]


# --- bad input: one line, exit 2, nothing written ---------------------------------------------------


def write_detection_data(folder: Path, size: int = 16, skip: str = "", widths: np.ndarray | None = None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"imgs": rng.random((16, size, size)), "labs": np.arange(16) % 2,
              "width": 1.0 + np.arange(16) % 3 if widths is None else widths}
    (folder / "detection").mkdir(parents=True)
    for name, array in arrays.items():
        if name != skip:
            np.save(folder / "detection" / f"detection_{name}.npy", array)
    return folder


@pytest.mark.parametrize("case", ["small images", "missing widths", "overflowing widths", "lr-reg 0", "lr-reg nan"])
def test_bad_input_one_line_exit_2_nothing_written(case: str, tmp_path: Path, standin_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, flags = standin_dir, []
    if case == "small images":
        data_dir, expect = write_detection_data(tmp_path / "d", size=8), "--padding valid"
    elif case == "missing widths":
        data_dir, expect = write_detection_data(tmp_path / "d", skip="width"), "detection_width.npy"
    elif case == "overflowing widths":
        data_dir = write_detection_data(tmp_path / "d", widths=np.full(16, 1e154))
        expect = "detection_width.npy"
    else:
        flags, expect = ["--lr-reg", case.split()[1]], "--lr-reg"
    out = tmp_path / "out"
    code, stdout, stderr = cli(["--data-dir", str(data_dir), "--out", str(out), *flags], capsys)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    assert expect in stderr and "Traceback" not in stderr and not out.exists()


# --- simulated Windows and macOS (spawned workers, few open files) -------------------------------------

SIM = Path(__file__).resolve().parents[2] / "shared" / "platform-sim"


@pytest.mark.skipif(not SIM.is_dir(), reason=f"no platform simulation at {SIM}")
def test_many_seeds_with_both_controls_under_simulated_windows_and_macos(standin_dir: Path, tmp_path: Path,
                                                                          repo_root: Path) -> None:
    """30 seeds x 3 studies, both systems at once. macOS: the 90 results through two spawned workers
    with at most 256 open files (its default), figures not drawn (time); Windows: one process, every
    figure drawn. Both exit 0 with their JSON, and the same numbers."""
    argv = ["--data-dir", str(standin_dir), "--seeds", "30", "--max-iters", "2", "--control-no-width-head",
            "--control-width-lr-x10", "--quiet"]
    skip_drawing = ("import sys, part3_detection as p; p.save_figure = lambda path, draw, *args: True; "
                    "sys.exit(p.run_main(p.main))")
    commands = {"windows": ["part3_detection.py", "--workers", "1"], "macos": ["-c", skip_drawing, "--workers", "2"]}

    def at_most_256_open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    runs = {name: subprocess.Popen([sys.executable, *command, *argv, "--out", str(tmp_path / name)],
                                   cwd=repo_root, env=dict(os.environ, PYTHONPATH=str(SIM / name)),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=at_most_256_open_files)  # the test runs on Linux
            for name, command in commands.items()}
    results = {}
    for name, proc in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{name}: {err}"
        results[name] = json.loads((tmp_path / name / "part3_detection.json").read_text())
    assert (results["windows"]["workers"], results["macos"]["workers"]) == (1, 2)
    for key in ("iterations", "classification_iterations", "final_loss", "measurements", "controls"):
        assert results["windows"][key] == results["macos"][key], key
    assert len(results["macos"]["iterations"]) == 30 and results["macos"]["controls"]["width_lr_x10"] is not None
    drawn = results["windows"]["figures"]
    assert len(drawn) == 8 and all((tmp_path / "windows" / name).stat().st_size > 10_000 for name in drawn)


def test_width_right_from_and_slow_widths_by_hand() -> None:
    """Per image the iteration from which its width stays within the tolerance; over seeds, the rank
    correlation of that with the distance from the mean width, and the true widths of each seed's last."""
    data = tiny([0, 1, 1, 0], [1, 2, 3, 4])  # mean width 2.5: distances 1.5, 0.5, 0.5, 1.5
    widths = [[3, 2, 2, 2],      # t0: images 1, 2 right? 2 vs 2 yes, 2 vs 3 no (|1| >= 0.5)
              [2, 2, 3, 3],      # t1: 1, 2 right
              [1.2, 2, 3, 3.8],  # t2: all right
              [1.2, 2, 3, 4.6],  # t3: image 3 wrong again (0.6)
              [1.1, 2, 3, 4]]    # t4: all right to the stop
    logits = [[-1, 1, 1, -1]] * 5
    groups = {"label 0": np.array([0, 3]), "label 1": np.array([1, 2])}
    m = p3d.seed_record(hand_run(logits, widths), data, groups, baseline_mse=1.25, chance_ce=math.log(2))
    assert m["width_right_from"] == [2, 0, 1, 4]
    second = m | {"width_right_from": [1, 0, 3, 2]}
    slow = p3d.slow_widths([m, second], data)
    # seed 1: stays (2, 0, 1, 4) against distances (1.5, .5, .5, 1.5): far widths last
    rho = slow["rank_correlation"]["distance_from_mean"]["per_seed"]
    assert rho[0] == pytest.approx(np.corrcoef([3, 1, 2, 4], [3.5, 1.5, 1.5, 3.5])[0, 1])
    assert rho[1] == pytest.approx(np.corrcoef([2, 1, 4, 3], [3.5, 1.5, 1.5, 3.5])[0, 1])
    assert slow["last_width_seeds"] == {"1": 0, "2": 0, "3": 1, "4": 1} and slow["n_seeds"] == 2
    assert slow["mean_width"] == 2.5


# --- --control-confusable: 3.1's network without the images nearer the other class ----------------


def test_confusable_images_are_those_more_like_an_image_of_the_other_class() -> None:
    """Checked against a plain double loop over the pairs' cosines: C (label 1) is almost A and A'
    (label 0), so all three are nearer the other class; B is not."""
    images = np.array([[[1.0, 0.0, 0.0]], [[1.0, 0.1, 0.0]], [[0.0, 0.0, 1.0]], [[1.0, 0.05, 0.01]]])
    labels = np.array([0, 0, 1, 1])
    data = Dataset(images, labels, np.ones(4), {}, "four images")
    flat = images.reshape(4, -1)

    def cos(i: int, j: int) -> float:
        return float(flat[i] @ flat[j] / np.linalg.norm(flat[i]) / np.linalg.norm(flat[j]))

    expected = [max(cos(i, j) for j in range(4) if labels[j] != labels[i])
                > max(cos(i, j) for j in range(4) if j != i and labels[j] == labels[i]) for i in range(4)]
    assert p3d.confusable_images(data).tolist() == expected == [True, True, False, True]


def test_the_random_drop_takes_as_many_others_per_label_and_depends_on_the_seed() -> None:
    labels = np.arange(40) % 2
    drop = np.zeros(40, dtype=bool)
    drop[[0, 2, 4, 1]] = True  # three of label 0, one of label 1
    draws = {seed: p3d.random_like(drop, labels, seed) for seed in (0, 1)}
    for seed, other in draws.items():
        assert not (other & drop).any()
        assert [int((other & (labels == c)).sum()) for c in (0, 1)] == [3, 1]
        assert (p3d.random_like(drop, labels, seed) == other).all()  # the same seed, the same draw
    assert (draws[0] != draws[1]).any()


def test_the_confusable_control_trains_3_1s_network_on_the_images_left(standin_dir: Path, data: Dataset,
                                                                      tmp_path: Path, no_drawing: None) -> None:
    """float64, 3 updates, 2 seeds: each drop's loss is the reference's (3.1's network on CE alone) on the
    dataset without the images the results list as dropped; the confusable drop leaves out exactly the
    images nearer the other class, the random drop as many others of each label."""
    argv = ["--data-dir", str(standin_dir), "--out", str(tmp_path), "--max-iters", "3", "--dtype", "float64",
            "--seeds", "2", "--control-confusable", "--workers", "1", "--quiet"]
    assert run_main(p3d.main, argv) == 0
    cc = json.loads((tmp_path / "part3_detection.json").read_text())["confusable_control"]
    confusable = p3d.confusable_images(data)
    assert cc["without_confusable"]["dropped"] == np.flatnonzero(confusable).tolist()
    assert cc["n_images"] == {"all": len(data.labels), "without": len(data.labels) - int(confusable.sum())}
    for seed in (0, 1):
        random_drop = np.zeros(len(data.labels), dtype=bool)
        random_drop[cc["without_random"]["dropped"][seed]] = True
        assert not (random_drop & confusable).any()
        assert [int((random_drop & (data.labels == c)).sum()) for c in (0, 1)] == \
            [int((confusable & (data.labels == c)).sum()) for c in (0, 1)]
        for study, drop in (("no_width_head", np.zeros_like(confusable)), ("without_confusable", confusable),
                            ("without_random", random_drop)):
            kept = Dataset(data.images[~drop], data.labels[~drop], data.widths[~drop], {}, "kept")
            ref = reference_run(seed, kept, 0.1, 0.001, 3, width_head=False)
            assert cc[study]["final_loss"][seed] == pytest.approx(ref["ce"][-1], rel=1e-9), (study, seed)
    assert cc["without_confusable"]["final_loss"][0] != pytest.approx(cc["no_width_head"]["final_loss"][0], rel=1e-6)
