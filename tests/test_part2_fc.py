"""Tests for part2_fc.py: initialisation, gradients, the stop rule, batched == plain, divergence, CLI.

All training is float64. "Same curves" means |batched - plain| <= 1e-12 (the two differ only in
the order of floating-point sums); iteration counts must be equal.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import part2_fc as p2

CURVE_TOL = {"rtol": 1e-9, "atol": 1e-12}


@pytest.fixture(scope="module")
def random_data(standin_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = p2.load_dataset(standin_dir, "random")
    return (torch.tensor(data.images.reshape(64, -1), dtype=p2.DTYPE),
            torch.tensor(data.labels, dtype=p2.DTYPE))


# --- initialisation ------------------------------------------------------------------------


def test_truncated_normal_is_tensorflow_truncated_normal() -> None:
    w = p2.truncated_normal((200_000,), 0.1, p2.seed_generator(0))
    assert w.dtype == p2.DTYPE
    assert w.abs().max() <= 0.2  # redrawn beyond two standard deviations
    assert w.abs().max() > 0.199  # ... and the tails reach the bound
    assert abs(w.mean().item()) < 1e-3
    # a N(0, 0.1^2) cut at +-2 std has std 0.1 * 0.8796
    assert w.std().item() == pytest.approx(0.1 * 0.8796, rel=5e-3)


def test_init_is_paired_and_seeded() -> None:
    cfg = p2.TrainConfig()
    a, b, c = (p2.init_fc_params(s, 16, cfg) for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["w1"], c["w1"])
    assert a["w1"].shape == (4, 16) and a["w2"].shape == (1, 4)
    assert torch.all(a["b1"] == 0.1) and torch.all(a["b2"] == 0.1)
    # seed k starts from the same weights in every setting
    models = [p2.plain_model(s, 3, 16, cfg) for s in p2.SETTINGS]
    assert all(torch.equal(m.fc1.weight, a["w1"]) and torch.equal(m.fc2.weight, a["w2"]) for m in models)


# --- gradients and the update --------------------------------------------------------------


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_batched_gradients_match_autograd(activation: str, random_data) -> None:
    x, y = random_data
    p = p2.stack_params(list(range(6)), 16, p2.TrainConfig(init_std=1.0))
    ce = torch.tensor([False, True] * 3)
    logits, grads = p2.batched_grads(p, x, y, activation, ce)

    leaves = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    z1 = torch.einsum("bd,dhs->bhs", x, leaves["w1"]) + leaves["b1"]
    a1 = torch.relu(z1) if activation == "relu" else torch.sigmoid(z1)
    z2 = (a1 * leaves["w2"]).sum(1) + leaves["b2"]
    loss = torch.where(ce, p2.loss_from_logits("ce", z2.T, y), p2.loss_from_logits("l2", z2.T, y))
    loss.sum().backward()  # runs are independent: the gradient of the sum is each run's own
    torch.testing.assert_close(logits, z2.detach(), rtol=1e-12, atol=1e-14)
    for k in p:
        torch.testing.assert_close(grads[k], leaves[k].grad, rtol=1e-10, atol=1e-14)


def test_loss_gradients_match_finite_differences(random_data) -> None:
    x, y = random_data
    model = p2.plain_model("sigmoid-ce", 0, 16, p2.TrainConfig())
    for kind in ("l2", "ce"):
        model.zero_grad()
        p2.loss_from_logits(kind, model(x), y).backward()
        w = model.fc2.weight
        h = 1e-6
        for j in range(4):
            with torch.no_grad():
                w[0, j] += h
                up = p2.loss_from_logits(kind, model(x), y).item()
                w[0, j] -= 2 * h
                down = p2.loss_from_logits(kind, model(x), y).item()
                w[0, j] += h
            assert w.grad[0, j].item() == pytest.approx((up - down) / (2 * h), rel=1e-6, abs=1e-10)


def test_ce_is_stable_for_huge_logits() -> None:
    z = torch.tensor([[-800.0, 800.0, 0.0]], dtype=p2.DTYPE)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=p2.DTYPE)
    loss = p2.loss_from_logits("ce", z, y)
    assert torch.isfinite(loss).all()
    assert loss.item() == pytest.approx((800 + 800 + np.log(2)) / 3)


@pytest.mark.parametrize("setting", list(p2.SETTINGS))
def test_one_batched_step_equals_optim_sgd(setting: str, random_data) -> None:
    x, y = random_data
    cfg = p2.TrainConfig(max_iters=1)
    model = p2.plain_model(setting, 5, 16, cfg)
    p2.train_plain(model, x, y, p2.SETTINGS[setting][1], cfg)  # one optim.SGD update
    p = p2.stack_params([5], 16, cfg)
    _, grads = p2.batched_grads(p, x, y, p2.SETTINGS[setting][0],
                                torch.tensor([p2.SETTINGS[setting][1] == "ce"]))
    torch.testing.assert_close(p["w1"][..., 0] - cfg.lr * grads["w1"][..., 0], model.fc1.weight.T.detach(),
                               rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(p["b2"] - cfg.lr * grads["b2"], model.fc2.bias.detach(),
                               rtol=1e-12, atol=1e-15)


# --- the stop rule -------------------------------------------------------------------------


def test_stop_rule_counts_updates_before_first_100_percent(random_data) -> None:
    x, y = random_data
    cfg = p2.TrainConfig(max_iters=3000)
    runs = p2.train_plain(p2.plain_model("relu-ce", 0, 16, cfg), x, y, "ce", cfg)
    t = runs.iterations[0]
    assert t is not None and 0 < t < 3000
    acc = runs.accuracies[:, 0]
    assert acc[t] == 1.0 and np.all(acc[:t] < 1.0)  # the first evaluation at 100%
    assert np.isnan(acc[t + 1:]).all()  # ... and training stopped there

    # by hand: t updates of plain SGD, then the weights classify every image
    model = p2.plain_model("relu-ce", 0, 16, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)
    for _ in range(t):
        opt.zero_grad()
        p2.loss_from_logits("ce", model(x), y).backward()
        opt.step()
    assert p2.accuracy_from_logits(model(x), y).item() == 1.0


def test_already_perfect_weights_stop_at_iteration_zero() -> None:
    x = torch.tensor([[1.0], [-1.0]], dtype=p2.DTYPE)
    y = torch.tensor([1.0, 0.0], dtype=p2.DTYPE)
    model = p2.FCNet(1, 1, "relu")
    with torch.no_grad():
        model.fc1.weight.fill_(1.0)
        model.fc1.bias.fill_(0.0)
        model.fc2.weight.fill_(4.0)
        model.fc2.bias.fill_(-1.0)
    runs = p2.train_plain(model, x, y, "ce", p2.TrainConfig(max_iters=10))
    assert runs.iterations == [0]


def test_cap_means_not_reached(random_data) -> None:
    x, y = random_data
    runs = p2.train_batched(["sigmoid-l2"], [0, 1], x, y, p2.TrainConfig(max_iters=50))["sigmoid-l2"]
    assert runs.iterations == [None, None] and runs.diverged_at == [None, None]
    assert runs.losses.shape == (51, 2) and np.isfinite(runs.losses).all()


# --- batched == plain, seed for seed -------------------------------------------------------


def test_batched_equals_plain_seed_for_seed(random_data) -> None:
    x, y = random_data
    cfg = p2.TrainConfig(max_iters=900)
    seeds = [0, 7]
    batched = p2.train_batched(list(p2.SETTINGS), seeds, x, y, cfg)
    reached = 0
    for setting, runs in batched.items():
        for k, seed in enumerate(seeds):
            plain = p2.train_plain(p2.plain_model(setting, seed, 16, cfg), x, y, p2.SETTINGS[setting][1], cfg)
            assert runs.iterations[k] == plain.iterations[0], (setting, seed)
            assert runs.diverged_at[k] == plain.diverged_at[0]
            np.testing.assert_allclose(runs.losses[:, k], plain.losses[:, 0], equal_nan=True, **CURVE_TOL)
            np.testing.assert_array_equal(runs.accuracies[:, k], plain.accuracies[:, 0])
            reached += plain.iterations[0] is not None
    assert reached >= 2  # some runs stopped inside the cap, so the stop iteration itself was compared


@pytest.mark.parametrize("chunk", [3, 64])
def test_batched_result_does_not_depend_on_chunk(chunk: int, random_data) -> None:
    x, y = random_data
    cfg = p2.TrainConfig(max_iters=900)
    ref = p2.train_stack("relu", torch.tensor([True, True, False]), p2.stack_params([0, 1, 2], 16, cfg),
                         x, y, cfg, chunk=100)
    got = p2.train_stack("relu", torch.tensor([True, True, False]), p2.stack_params([0, 1, 2], 16, cfg),
                         x, y, cfg, chunk=chunk)
    assert got.iterations == ref.iterations
    # dropping stopped runs changes the matrix sizes, hence the order of the sums: rounding only
    np.testing.assert_allclose(got.losses, ref.losses, equal_nan=True, **CURVE_TOL)


# --- divergence ----------------------------------------------------------------------------


def test_huge_learning_rate_is_reported_as_diverged_not_a_crash(random_data) -> None:
    x, y = random_data
    cfg = p2.TrainConfig(lr=50, max_iters=200)
    batched = p2.train_batched(list(p2.SETTINGS), [0, 1], x, y, cfg)
    for setting in ("sigmoid-ce", "relu-ce"):
        assert all(d is not None for d in batched[setting].diverged_at), setting
        assert batched[setting].iterations == [None, None]
        plain = p2.train_plain(p2.plain_model(setting, 0, 16, cfg), x, y, "ce", cfg)
        assert plain.diverged_at[0] == batched[setting].diverged_at[0]


def test_non_finite_weights_are_divergence(random_data) -> None:
    x, y = random_data
    cfg = p2.TrainConfig(lr=1e308, max_iters=20)
    runs = p2.train_batched(["relu-ce"], [0], x, y, cfg)["relu-ce"]
    assert runs.diverged_at[0] is not None
    assert runs.final(runs.losses, 0) is not None  # the last finite loss survives for the report


# --- statistics ----------------------------------------------------------------------------


def test_summary_treats_not_reached_as_slowest() -> None:
    s = p2.summarize_stops([10, 20, None, 30, None], [None, None, None, None, 4])
    assert s["reached"] == 3 and s["reach_rate"] == 0.6 and s["diverged"] == 1
    assert s["median"] == 30 and s["min"] == 10 and s["max_reached"] == 30
    assert s["p90"] is None  # falls among the runs that never reached 100%
    assert p2.share_stopped([0, 2, None], 3).tolist() == [1 / 3, 1 / 3, 2 / 3, 2 / 3]


def test_paired_faster_compares_the_same_seed() -> None:
    share = p2.paired_faster({"a": [1, 5, None], "b": [2, 4, 3]})
    assert share["a"]["b"] == pytest.approx(1 / 3)
    assert share["b"]["a"] == pytest.approx(2 / 3)


# --- the command line ----------------------------------------------------------------------


def run_cli(args: list[str], out: Path, capsys) -> tuple[int, str, str]:
    code = p2.run_main(p2.main, ["--out", str(out), "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_figures_and_deterministic_json(tmp_path: Path, standin_dir: Path, capsys) -> None:
    args = ["--data-dir", str(standin_dir), "--seeds", "3", "--max-iters", "900"]
    code, out, _ = run_cli(args, tmp_path / "a", capsys)
    assert code == 0 and "2.5 ranking" in out
    a = (tmp_path / "a" / "part2_fc.json").read_bytes()
    run_cli(args, tmp_path / "a", capsys)  # same command, same bytes
    assert a == (tmp_path / "a" / "part2_fc.json").read_bytes()
    results = json.loads(a)
    assert set(results["settings"]) == set(p2.SETTINGS)
    for setting in results["settings"].values():
        assert len(setting["iterations"]) == 3
        assert all(i is None or isinstance(i, int) for i in setting["iterations"])
    assert results["data"]["provenance"] == "stand-in"
    assert results["seeds"] == [0, 1, 2] and results["config"]["lr"] == 0.1
    assert set(results["versions"]) >= {"python", "torch", "numpy"}
    for name in results["figures"]:
        assert (tmp_path / "a" / name).stat().st_size > 1000


def test_plain_engine_gives_the_batched_results(tmp_path: Path, standin_dir: Path, capsys) -> None:
    common = ["--data-dir", str(standin_dir), "--seeds", "2", "--max-iters", "900", "--settings", "relu-ce"]
    run_cli(common, tmp_path / "b", capsys)
    run_cli([*common, "--engine", "plain"], tmp_path / "p", capsys)
    b = json.loads((tmp_path / "b" / "part2_fc.json").read_text())
    p = json.loads((tmp_path / "p" / "part2_fc.json").read_text())
    assert b["settings"]["relu-ce"]["iterations"] == p["settings"]["relu-ce"]["iterations"]


@pytest.mark.parametrize(("args", "flag"), [
    (["--seeds", "0"], "--seeds"),
    (["--seeds", "-3"], "--seeds"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-0.1"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--max-iters", "-1"], "--max-iters"),
    (["--init-bias", "nan"], "--init-bias"),
    (["--first-seed", str(2**63)], "--first-seed"),
    (["--seeds", "2.5"], "--seeds"),
    (["--settings", "tanh-l2"], "--settings"),
    (["--settings", "relu-ce,relu-ce"], "--settings"),
    (["--engine", "gpu"], "--engine"),
    (["--data-dir", "/no/such/folder"], "--data-dir"),
])
def test_bad_flags_give_one_line_and_write_nothing(args, flag, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(args, tmp_path / "out", capsys)
    assert code == 2
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_out_must_be_a_folder(tmp_path: Path, capsys) -> None:
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, _, err = run_cli([], target, capsys)
    assert code == 2 and "--out" in err and target.read_text() == "keep me"
