"""Tests for part3_detection.py (3.2): the objective against an independent nn.Module + optim.SGD loop
(float64), the two learning rates in one step (every tensor's update), a seed alone and among others in
forked workers (float32), the width stop rule, the measurements (group rows, first 100%, L2 fall,
mean-width baseline) on hand-made runs, the command line end to end and bad input.

Tolerances (float64): the reference is written independently, so curves agree within 1e-9 relative
(summation order only); one update computed two ways (one combined backward, two separate gradients)
within 1e-12 relative.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import part3_detection as p32
import part3_line as p3
from part1_loss_gradient import run_main
from part2_fc import Config, Dataset, load_dataset, summarize_stops

import numpy as np
import pytest
import torch
from torch import nn


@pytest.fixture(scope="module")
def data(standin_dir: Path) -> Dataset:
    return load_dataset(standin_dir, "detection")


@pytest.fixture(scope="module")
def batch(data: Dataset) -> dict[str, np.ndarray]:
    """The training batch as part3_detection.main builds it (with the group averaging rows)."""
    return p3.batch_of(data) | {"groups": p32.group_matrix(data)[1]}


def image_of(data: Dataset) -> tuple[int, int]:
    return tuple(data.images.shape[1:])


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(p32.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skip drawing (~1 s a figure) in runs that only compare the JSON; the names it lists stay."""
    monkeypatch.setattr(p3, "save_figure", lambda *args: True)  # part3_line draws 3.2's figures too


# --- the objective against an independent reference (float64) ------------------------------------


class ReferenceNet(nn.Module):
    """Figure 4 with the width head, written out again: two Linear heads off the conv2 features."""

    def __init__(self, image: tuple[int, int]) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 16, 7), nn.Conv2d(16, 8, 7)
        n = 8 * (image[0] - 12) * (image[1] - 12)
        self.fc, self.reg = nn.Linear(n, 1), nn.Linear(n, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = torch.relu(self.conv2(torch.relu(self.conv1(x)))).flatten(1)
        return self.fc(f).squeeze(1), self.reg(f).squeeze(1)


def reference_start(seed: int, data: Dataset, cfg: Config) -> ReferenceNet:
    net = ReferenceNet(image_of(data)).double()
    net.load_state_dict(p3.initial_model(p32.DetectionNet, seed, image_of(data), cfg).state_dict())
    return net


def test_trunk_and_classifier_start_as_in_3_1(data: Dataset) -> None:
    line = p3.initial_model(p3.LineNet, 4, image_of(data), Config()).state_dict()
    detection = p3.initial_model(p32.DetectionNet, 4, image_of(data), Config()).state_dict()
    assert set(detection) == set(line) | {"reg.weight", "reg.bias"}
    assert all(torch.equal(detection[k], v) for k, v in line.items())


@pytest.mark.parametrize(("lr", "lr_reg"), [(0.1, 0.001), (0.05, 0.02)])
def test_one_step_is_lr_times_dce_plus_lr_reg_times_dl2(data: Dataset, batch: dict, lr: float,
                                                        lr_reg: float) -> None:
    """Classifier moved by lr dCE, width head by lr_reg dL2, shared conv layers by both."""
    cfg = Config(dtype="float64", lr=lr, lr_reg=lr_reg, max_iters=1, log=False)
    net = reference_start(0, data, cfg)
    params = dict(net.named_parameters())
    logits, pred = net(torch.tensor(batch["x"]))
    ce = nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(batch["y"]))
    l2 = ((pred - torch.tensor(batch["widths"])) ** 2).mean()
    g_ce = torch.autograd.grad(ce, list(params.values()), allow_unused=True, retain_graph=True)
    g_l2 = torch.autograd.grad(l2, list(params.values()), allow_unused=True)
    run = p3.train_seed(0, cfg, batch, p32.DetectionNet)
    assert run.stop == 1 and not run.reached and not run.diverged
    for (name, before), a, b in zip(params.items(), g_ce, g_l2, strict=True):
        assert (a is None) == name.startswith("reg.") and (b is None) == name.startswith("fc."), name
        step = lr * (a if a is not None else 0) + lr_reg * (b if b is not None else 0)
        torch.testing.assert_close(before.detach() - run.params[name], step, rtol=1e-12, atol=1e-15, msg=name)


def test_train_seed_equals_a_plain_module_and_optim_sgd_in_float64(data: Dataset, batch: dict) -> None:
    seed, cfg = 2, Config(dtype="float64", max_iters=20, log=False)
    run = p3.train_seed(seed, cfg, batch, p32.DetectionNet)
    net = reference_start(seed, data, cfg)
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr)
    x, y, widths = (torch.tensor(batch[k]) for k in ("x", "y", "widths"))
    groups = {f"label {c}": data.labels == c for c in (0, 1)} | {
        f"width {w:g}": data.widths == w for w in np.unique(data.widths)}
    names = p32.group_matrix(data)[0]
    curves: dict[str, list[float]] = {}
    for t in range(cfg.max_iters + 1):
        logits, pred = net(x)
        ce = nn.functional.binary_cross_entropy_with_logits(logits, y)
        l2 = ((pred - widths) ** 2).mean()
        objective = ce + (cfg.lr_reg / cfg.lr) * l2
        right = ((logits > 0).double() == y).numpy()
        error = (pred - widths).abs().detach().numpy()
        row = {"objective": objective.item(), "ce": ce.item(), "l2": l2.item(), "accuracy": right.mean(),
               "width_accuracy": (error < 0.5).mean(), "max_width_error": error.max()}
        row |= {f"group_{i}": right[groups[name]].mean() for i, name in enumerate(names)}
        for k, v in row.items():
            curves.setdefault(k, []).append(float(v))
        if row["width_accuracy"] == 1 or t == cfg.max_iters:
            break
        opt.zero_grad()
        objective.backward()
        opt.step()
    assert run.stop == len(curves["ce"]) - 1 and run.reached == (curves["width_accuracy"][-1] == 1)
    for k, curve in curves.items():
        np.testing.assert_allclose(run.curves[k], curve, rtol=1e-9, atol=0, err_msg=k)
    for name, value in net.state_dict().items():
        torch.testing.assert_close(run.params[name], value, rtol=1e-9, atol=1e-12, msg=name)


# --- a seed alone and among others (float32) ---------------------------------------------------------


def test_a_seed_alone_equals_it_among_others_in_two_workers(batch: dict) -> None:
    cfg = Config(max_iters=15, log=False)
    studies = {"3.2": (cfg, batch, p32.DetectionNet), "x10": (replace(cfg, lr_reg=0.01), batch, p32.DetectionNet)}
    spread = p3.train_seeds(studies, [0, 1, 2], 2, log=False)
    for name, (study_cfg, _, _) in studies.items():
        alone = p3.train_seed(1, study_cfg, batch, p32.DetectionNet)
        among = spread[name][1]
        assert (among.seed, among.stop, among.reached, among.diverged) == (1, alone.stop, alone.reached,
                                                                           alone.diverged)
        for k, curve in alone.curves.items():
            np.testing.assert_array_equal(among.curves[k], curve, err_msg=k)
        assert all(torch.equal(among.params[k], v) for k, v in alone.params.items())


# --- the stop rule: the first 100% width accuracy ------------------------------------------------------


def test_stops_at_the_first_iteration_with_every_width_within_half_a_pixel(data: Dataset, batch: dict) -> None:
    """A batch whose widths sit 0.7 px above the seed's initial predictions (every width wrong at the
    start, reachable in a few steps at lr_reg 0.01): the rule is checked for every seed tried, and on
    the first that reaches, against a plain forward pass at the stop and one update before."""
    cfg = Config(lr_reg=0.01, max_iters=60, log=False)
    x = torch.tensor(batch["x"], dtype=torch.float32)
    found = None
    for seed in range(10):
        with torch.no_grad():
            start = p3.initial_model(p32.DetectionNet, seed, image_of(data), cfg)(x)[1].double().numpy()
        shifted = batch | {"widths": start + 0.7}
        run = p3.train_seed(seed, cfg, shifted, p32.DetectionNet)
        accuracy = run.curves["width_accuracy"]
        assert accuracy[0] == 0 and (accuracy[:-1] < 1).all() and len(accuracy) == run.stop + 1
        if run.reached:
            assert accuracy[-1] == 1 and run.iterations == run.stop and not run.diverged
            found = (run, shifted)
            break
        assert run.diverged or (run.stop == cfg.max_iters and accuracy[-1] < 1)
    assert found is not None, "no seed in 0..9 reached 100% widths"
    run, shifted = found
    widths = torch.tensor(shifted["widths"], dtype=torch.float32)

    def errors(r: p3.SeedRun) -> torch.Tensor:
        with torch.no_grad():
            return (p3.trained_model(r, cfg, image_of(data), p32.DetectionNet)(x)[1] - widths).abs()

    assert bool((errors(run) < 0.5).all())
    assert run.final("max_width_error") == pytest.approx(float(errors(run).max()), rel=1e-5)
    before = p3.train_seed(run.seed, replace(cfg, max_iters=run.stop - 1), shifted, p32.DetectionNet)
    assert before.iterations is None and before.stop == run.stop - 1 and not bool((errors(before) < 0.5).all())


def test_non_finite_from_the_start_is_diverged(batch: dict) -> None:
    run = p3.train_seed(0, Config(init_std=1e30, max_iters=5, log=False), batch, p32.DetectionNet)
    assert run.diverged and run.diverged_at == 0 and run.iterations is None
    assert run.final("l2") is None and run.final("width_accuracy") is None


# --- the measurements ---------------------------------------------------------------------------------


def tiny(labels: list[int], widths: list[float]) -> Dataset:
    n = len(labels)
    return Dataset("detection", "-", np.zeros((n, 16, 16)), np.array(labels, float), np.array(widths, float),
                   "other", {})


def test_group_matrix_rows_average_each_label_then_each_width() -> None:
    names, matrix = p32.group_matrix(tiny([0, 1, 1, 0, 1], [1, 2, 2, 3.5, 1]))
    assert names == ["label 0", "label 1", "width 1", "width 2", "width 3.5"]
    expected = np.array([[1 / 2, 0, 0, 1 / 2, 0], [0, 1 / 3, 1 / 3, 0, 1 / 3], [1 / 2, 0, 0, 0, 1 / 2],
                         [0, 1 / 2, 1 / 2, 0, 0], [0, 0, 0, 1, 0]])
    np.testing.assert_allclose(matrix, expected, rtol=1e-15)
    correct = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(matrix @ correct, [1, 1 / 3, 1 / 2, 1 / 2, 1], rtol=1e-15)
    names, matrix = p32.group_matrix(tiny([1, 1], [2, 2]))  # a class with no image has no row
    assert names == ["label 1", "width 2"] and matrix.shape == (2, 2)


def hand_run(**curves: list[float]) -> p3.SeedRun:
    arrays = {k: np.array(v, dtype=float) for k, v in curves.items()}
    return p3.SeedRun(0, {"objective": arrays["l2"], **arrays}, reached=False, diverged=False, params={})


def test_width_measurements_on_a_hand_made_run() -> None:
    run = hand_run(l2=[100, 50, 5, 4, 1], width_accuracy=[0, 0.25, 0.5, 0.75, 1],
                   accuracy=[0.5, 0.75, 1, 0.875, 1], group_0=[0, 1, 1, 1, 1], group_1=[0.5, 0.5, 0.5, 0.5, 0.5])
    m = p32.width_measurements(run, 4.5, ["label 0", "label 1"])
    assert m["classification_iterations"] == 2  # the first 100%, not the last
    assert m["group_classification_iterations"] == {"label 0": 1, "label 1": None}
    # 100 / 20 = 5: "fell 20x" includes equality; "beats the baseline" is strict
    assert m["l2_fall_20x"] == {"iteration": 2, "width_accuracy": 0.5, "rms": pytest.approx(5**0.5)}
    assert m["beats_mean_width"] == {"iteration": 3, "width_accuracy": 0.75, "rms": 2.0}
    assert p32.width_measurements(run, 4.0, [])["beats_mean_width"]["iteration"] == 4
    never = p32.width_measurements(run, 0.5, [])
    assert never["beats_mean_width"] is None and never["group_classification_iterations"] == {}
    flat = hand_run(l2=[3, 2, 1], width_accuracy=[0, 0, 0], accuracy=[0, 0.5, 0.5])
    assert p32.width_measurements(flat, 0.5, [])["l2_fall_20x"] is None
    assert p32.first_at(np.array([0.2, 0.9, 0.95]), 0.9) == 1 and p32.first_at(np.array([0.2, 0.5])) is None


# --- the command line, end to end ---------------------------------------------------------------------

CLI_ARGS = ["--seeds", "2", "--max-iters", "60", "--control-no-width-head", "--control-width-lr-x10", "--quiet"]


@pytest.fixture(scope="module")
def cli_runs(standin_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The CLI three times: workers 2 (figures drawn), the same again and workers 1 (figures skipped)."""
    out = tmp_path_factory.mktemp("detection_cli")
    argv = ["--data-dir", str(standin_dir), "--out", str(out), *CLI_ARGS]
    runs: dict = {"out": out}
    assert run_main(p32.main, [*argv, "--workers", "2"]) == 0
    runs["files"] = sorted(p.name for p in out.iterdir())
    runs["first"] = (out / "part3_detection.json").read_bytes()
    with pytest.MonkeyPatch.context() as mp:
        no_figures(mp)
        assert run_main(p32.main, [*argv, "--workers", "2"]) == 0
        runs["again"] = (out / "part3_detection.json").read_bytes()
        assert run_main(p32.main, [*argv, "--workers", "1"]) == 0
        runs["one"] = (out / "part3_detection.json").read_bytes()
    return runs


def test_cli_json_figures_and_same_bytes_on_rerun(cli_runs: dict, data: Dataset) -> None:
    results = json.loads(cli_runs["first"])
    for key in ("script", "config", "seeds", "data", "device", "iterations", "diverged_at", "summary",
                "network", "workers", "width_tolerance", "mean_width_baseline", "classification_iterations",
                "classification_summary", "measurements", "final_regression_accuracy", "final_l2_loss",
                "max_width_error", "single", "conv2_class_means", "controls", "figures"):
        assert key in results, key
    assert cli_runs["files"] == sorted([*results["figures"], "part3_detection.json"])
    assert len(results["figures"]) == 7 and all(Path(cli_runs["out"], f).stat().st_size for f in results["figures"])
    assert cli_runs["again"] == cli_runs["first"]
    assert results["seeds"] == [0, 1] and results["width_tolerance"] == 0.5
    baseline = results["mean_width_baseline"]
    assert baseline["mse"] == pytest.approx(float(np.var(data.widths)), rel=1e-12)
    assert baseline["rms"] == pytest.approx(float(np.std(data.widths)), rel=1e-12)
    for key in ("iterations", "classification_iterations", "measurements", "final_regression_accuracy",
                "final_l2_loss", "max_width_error"):
        assert len(results[key]) == 2, key
    assert results["classification_iterations"] == [m["classification_iterations"] for m in results["measurements"]]
    assert results["classification_summary"] == summarize_stops(results["classification_iterations"],
                                                                results["diverged_at"])
    assert results["summary"] == summarize_stops(results["iterations"], results["diverged_at"])
    for its, done in zip(results["iterations"], results["final_regression_accuracy"], strict=True):
        assert (its is not None) == (done == 1.0)
    fc_inputs = 8 * (image_of(data)[0] - 12) * (image_of(data)[1] - 12)
    assert results["network"]["parameters"] == (49 + 1) * 16 + (16 * 49 + 1) * 8 + 2 * (fc_inputs + 1)
    for name in ("no_width_head", "width_lr_x10"):
        control = results["controls"][name]
        assert len(control["iterations"]) == 2 and control["summary"]["n_seeds"] == 2, name
    assert set(results["conv2_class_means"]) == {"0", "1"}


def test_cli_one_or_two_workers_same_results(cli_runs: dict) -> None:
    two, one = json.loads(cli_runs["first"]), json.loads(cli_runs["one"])
    assert two.pop("workers") == 2 and one.pop("workers") == 1
    assert two["config"].pop("workers") == 2 and one["config"].pop("workers") == 1
    assert one == two


# --- bad input: one line, exit 2, nothing written ---------------------------------------------------


def write_detection_data(folder: Path, size: int, skip: str = "") -> Path:
    rng = np.random.default_rng(0)
    arrays = {"imgs": rng.random((16, size, size)), "labs": np.arange(16) % 2, "width": 1.0 + np.arange(16) % 3}
    (folder / "detection").mkdir(parents=True)
    for name, array in arrays.items():
        if name != skip:
            np.save(folder / "detection" / f"detection_{name}.npy", array)
    return folder


@pytest.mark.parametrize("case", ["small images", "missing widths", "first seed", "lr-reg"])
def test_bad_input_one_line_exit_2_nothing_written(case: str, tmp_path: Path, standin_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data_dir, flags, expect = standin_dir, [], ""
    if case == "small images":
        data_dir, flags, expect = write_detection_data(tmp_path / "d", 8), ["--padding", "valid"], "--padding"
    elif case == "missing widths":
        data_dir, expect = write_detection_data(tmp_path / "d", 16, skip="width"), "detection_width.npy"
    elif case == "first seed":
        flags, expect = ["--first-seed", str(2**32 - 1), "--seeds", "2"], "--first-seed"
    else:
        flags, expect = ["--lr-reg", "0"], "--lr-reg"
    out = tmp_path / "out"
    code, stdout, stderr = cli(["--data-dir", str(data_dir), "--out", str(out), *flags], capsys)
    assert code == 2 and stdout == "" and len(stderr.strip().splitlines()) == 1, stderr
    assert expect in stderr and "Traceback" not in stderr and not out.exists()
