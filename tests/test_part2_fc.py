"""Tests for part2_fc.py: initialisation, the engine against an independent plain loop, seed
invariance, gradients, the sweep, dead units, the half-rate control, divergence, the command line.

The reference is a plain nn.Module + optim.SGD loop written here, float64, one seed at a time; the
engine runs with dtype float64 for the comparison. Expected values are derived, never observed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import part2_fc as p2

F64 = p2.TrainConfig(dtype=torch.float64)


@pytest.fixture(scope="module")
def data(standin_dir: Path) -> dict[torch.dtype, tuple[torch.Tensor, torch.Tensor]]:
    d = p2.load_dataset(standin_dir, "random")
    return {dt: (torch.tensor(d.images.reshape(64, -1), dtype=dt), torch.tensor(d.labels, dtype=dt))
            for dt in (torch.float32, torch.float64)}


# --- the independent reference: the handout's network as two nn.Linear layers ----------------


class Reference(nn.Module):
    def __init__(self, seed: int, activation: str) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 4, dtype=torch.float64), nn.Linear(4, 1, dtype=torch.float64)
        self.act = nn.ReLU() if activation == "relu" else nn.Sigmoid()
        w1, b1, w2, b2 = p2.initial_weights([seed], 16, F64)  # the same draws as the engine
        with torch.no_grad():
            self.fc1.weight.copy_(w1[0])
            self.fc1.bias.copy_(b1[0, :, 0])
            self.fc2.weight.copy_(w2[0].T)
            self.fc2.bias.copy_(b2[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x))).squeeze(1)


def reference_run(setting: str, seed: int, x, y, max_iters: int) -> tuple[int | None, list[float]]:
    """Plain SGD at lr 0.1 until the first evaluation at 100% accuracy; (iterations, losses)."""
    activation, loss_kind, _ = p2.SETTINGS[setting]
    model = Reference(seed, activation)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for t in range(max_iters + 1):
        z = model(x)
        if loss_kind == "l2":
            loss = F.mse_loss(torch.sigmoid(z), y)
        else:
            loss = F.binary_cross_entropy_with_logits(z, y)
        losses.append(loss.item())
        if bool(((torch.sigmoid(z) > 0.5) == (y > 0.5)).all()):
            return t, losses
        if t < max_iters:
            opt.zero_grad()
            loss.backward()
            opt.step()
    return None, losses


@pytest.mark.parametrize("setting", list(p2.SETTINGS))
def test_engine_curves_match_the_reference_loop(setting: str, data) -> None:
    x, y = data[torch.float64]
    cfg = p2.TrainConfig(dtype=torch.float64, max_iters=200)
    engine = p2.train_stack(setting, [(1, 0.1)], x, y, cfg, keep_curves=True)
    _, ref = reference_run(setting, 1, x, y, 200)
    np.testing.assert_allclose(engine["curves"]["loss"], ref, rtol=1e-9, atol=0)


@pytest.mark.parametrize("setting", list(p2.SETTINGS))
def test_engine_stops_where_the_reference_loop_stops(setting: str, data) -> None:
    x, y = data[torch.float64]
    seeds = [0, 1, 2]
    engine = p2.train_stack(setting, [(s, 0.1) for s in seeds], x, y, F64)["runs"]
    for seed, run in zip(seeds, engine, strict=True):
        assert run["iterations"] == reference_run(setting, seed, x, y, 10_000)[0], (setting, seed)


# --- initialisation -------------------------------------------------------------------------


def test_truncated_normal_is_tensorflow_truncated_normal() -> None:
    w = p2.truncated_normal((200_000,), 0.1, p2.seed_generator(0))
    assert w.abs().max() <= 0.2 and w.abs().max() > 0.199  # redrawn beyond 2 std; tails reach it
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.1 * 0.8796, rel=5e-3)  # std of N(0, 1) cut at +-2


def test_initial_weights_are_paired_and_per_seed() -> None:
    cfg = p2.TrainConfig()
    alone = p2.initial_weights([3], 16, cfg)
    among = p2.initial_weights([5, 3, 4], 16, cfg)
    assert all(torch.equal(a[0], b[1]) for a, b in zip(alone, among, strict=True))
    assert not torch.equal(among[0][0], among[0][1])
    assert [w.shape for w in among] == [(3, 4, 16), (3, 4, 1), (3, 4, 1), (3, 1)]
    assert torch.all(among[1] == torch.tensor(0.1, dtype=torch.float32)) and among[0].dtype == torch.float32


# --- seed invariance, float32 ----------------------------------------------------------------


@pytest.mark.parametrize("setting", ["relu-ce", "sigmoid-ce"])
def test_a_seed_is_the_same_alone_and_in_company(setting: str, data) -> None:
    x, y = data[torch.float32]
    cfg = p2.TrainConfig(max_iters=1500)
    alone = p2.train_stack(setting, [(3, 0.1)], x, y, cfg, keep_curves=True)
    # company: other seeds and rates (0.5, 3 stop early or diverge; 0.01 trains to the cap),
    # dropped at other times, in chunks of another length
    company = [(3, 0.1)] + [(s, lr) for s in range(8) for lr in (0.01, 0.5, 3.0)]
    crowd = p2.train_stack(setting, company, x, y, cfg, keep_curves=True, chunk=7)
    stops = {r["iterations"] for r in crowd["runs"][1:]}
    assert len(stops) > 3  # the others really stop at different times
    assert alone["runs"][0] == crowd["runs"][0]
    for key in ("loss", "accuracy"):
        np.testing.assert_array_equal(alone["curves"][key], crowd["curves"][key])


@pytest.mark.parametrize("setting", ["sigmoid-l2", "relu-l2"])
def test_a_seed_is_the_same_alone_and_in_a_large_stack(setting: str, data) -> None:
    # The hidden layer is one matrix product over all runs; a large stack (1200 weight rows) must
    # not change how a run's numbers are computed.
    x, y = data[torch.float32]
    cfg = p2.TrainConfig(max_iters=800)
    alone = p2.train_stack(setting, [(3, 0.1)], x, y, cfg, keep_curves=True)
    crowd = p2.train_stack(setting, [(3, 0.1)] + [(s, 0.1) for s in range(100, 399)], x, y, cfg,
                           keep_curves=True)
    assert alone["runs"][0] == crowd["runs"][0]
    np.testing.assert_array_equal(alone["curves"]["loss"], crowd["curves"]["loss"])


def test_the_half_rate_is_exactly_sgd_at_half_the_rate(data) -> None:
    x, y = data[torch.float32]
    half = p2.train_stack("relu-ce", [(3, 0.05)], x, y, p2.TrainConfig(max_iters=600), keep_curves=True)
    direct = p2.train_stack("relu-ce", [(3, 0.05)], x, y, p2.TrainConfig(lr=0.05, max_iters=600),
                            keep_curves=True)
    np.testing.assert_array_equal(half["curves"]["loss"], direct["curves"]["loss"])


# --- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", list(p2.SETTINGS))
def test_autograd_gradients_match_finite_differences(setting: str, data) -> None:
    x, y = data[torch.float64]
    activation, loss_kind, _ = p2.SETTINGS[setting]
    model = p2.FCNet(*p2.initial_weights([0, 1], 16, F64), activation)

    def objective() -> torch.Tensor:
        return p2.loss_from_logits(loss_kind, model(x), y).sum()

    objective().backward()
    h = 1e-6
    for param in model.parameters():
        flat, grad = param.data.view(-1), param.grad.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 7)):
            flat[i] += h
            up = objective().item()
            flat[i] -= 2 * h
            down = objective().item()
            flat[i] += h
            assert grad[i].item() == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-9)


# --- losses, dead units, divergence, statistics ---------------------------------------------


def test_losses_are_the_documented_formulas() -> None:
    z = torch.tensor([[-800.0, 800.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    assert p2.loss_from_logits("ce", z, y).item() == pytest.approx((800 + 800 + np.log(2)) / 3)
    assert p2.loss_from_logits("l2", z, y).item() == pytest.approx((1 + 1 + 0.25) / 3)  # no 1/2
    assert p2.accuracy_from_logits(z, y).item() == 0.0  # sigmoid(0) = 0.5 is not > 0.5


def test_a_constructed_dead_unit_is_counted(data) -> None:
    x, _ = data[torch.float64]  # binary images: every pixel >= 0
    w1, b1, w2, b2 = p2.initial_weights([0], 16, F64)
    w1[0, 2, :], b1[0, 2, 0] = -1.0, -1.0  # unit 2: pre-activation <= -1 on every image
    assert p2.dead_units(p2.FCNet(w1, b1, w2, b2, "relu"), x).tolist() == [1]
    assert p2.dead_units(p2.FCNet(w1, b1, w2, b2, "sigmoid"), x).tolist() == [0]
    w1[0, 3, :], b1[0, 3, 0] = -1.0, -1.0
    assert p2.dead_units(p2.FCNet(w1, b1, w2, b2, "relu"), x).tolist() == [2]


def test_divergence_is_a_non_finite_loss_unless_the_factor_is_asked_for(data) -> None:
    loss, initial = torch.tensor([np.inf, np.nan, 100.0, 0.5]), torch.ones(4)
    assert p2.is_diverged(loss, initial, None).tolist() == [True, True, False, False]
    assert p2.is_diverged(loss, initial, 5.0).tolist() == [True, True, True, False]
    x, y = data[torch.float32]
    # lr 1e30: the weights overflow, the loss stops being finite -> diverged, not a crash
    runs = p2.train_stack("relu-ce", [(0, 1e30)], x, y, p2.TrainConfig(max_iters=50))["runs"]
    assert runs[0]["diverged_at"] is not None and runs[0]["iterations"] is None
    assert runs[0]["final_loss"] is not None  # the last finite loss is kept
    # a factor below 1 makes iteration 0 itself "diverged": the opt-in rule is applied
    cfg = p2.TrainConfig(max_iters=50, diverge_factor=0.5)
    assert p2.train_stack("relu-ce", [(0, 0.1)], x, y, cfg)["runs"][0]["diverged_at"] == 0
    default = p2.train_stack("relu-ce", [(0, 0.1)], x, y, p2.TrainConfig(max_iters=50))["runs"][0]
    assert default["diverged_at"] is None


def test_summary_typical_seed_and_paired_comparison() -> None:
    s = p2.summarize_stops([10, 20, None, 30, None], [None, None, None, None, 4])
    assert s["reached"] == 3 and s["reach_rate"] == 0.6 and s["diverged"] == 1
    assert s["median"] == 30 and s["min"] == 10 and s["p90"] is None
    # ranked 10, 20, 30, inf, inf (seeds 5, 6, 8, 7, 9): the median is the third
    assert p2.typical_seed([5, 6, 7, 8, 9], [10, 20, None, 30, None]) == (8, 0.4)
    assert p2.typical_seed([0, 1, 2, 3], [7, 5, 5, 9]) == (2, 0.0)  # lower median, tie -> smallest seed
    share = p2.paired_faster({"a": [1, 5, None], "b": [2, 4, 3]})
    assert share["a"]["b"] == pytest.approx(1 / 3) and share["b"]["a"] == pytest.approx(2 / 3)
    assert p2.dead_units_summary([5, None, None, 7], [0, 1, 0, 2]) == {
        "seeds_with_dead_end": 2, "missed": 2, "missed_with_dead_end": 1, "reached_with_dead_end": 1}


# --- the command line -------------------------------------------------------------------------


def run_cli(args: list[str], out: Path, capsys) -> tuple[int, str, str]:
    code = p2.run_main(p2.main, ["--out", str(out), "--quiet", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def study(tmp_path_factory, standin_dir: Path) -> dict:
    """One small study with the sweep and the control in two processes (and, in-process, the same
    seeds without them)."""
    out = tmp_path_factory.mktemp("study")
    common = ["--data-dir", str(standin_dir), "--seeds", "3", "--max-iters", "500", "--quiet"]
    assert p2.main(["--out", str(out / "plain"), *common, "--workers", "1"]) == 0  # in-process
    assert p2.main(["--out", str(out / "full"), *common, "--lrs", "1e30,0.1,1", "--sweep-seeds", "2",
                    "--control-half-lr"]) == 0
    first = (out / "full" / "part2_fc.json").read_bytes()
    assert p2.main(["--out", str(out / "full"), *common, "--lrs", "1e30,0.1,1", "--sweep-seeds", "2",
                    "--control-half-lr"]) == 0
    return {"out": out, "first": first, "plain": json.loads((out / "plain" / "part2_fc.json").read_text()),
            "full": json.loads((out / "full" / "part2_fc.json").read_text())}


def test_rerun_gives_the_same_bytes_and_figures_exist(study) -> None:
    assert study["first"] == (study["out"] / "full" / "part2_fc.json").read_bytes()
    full = study["full"]
    assert full["torch_threads"] == p2.TORCH_THREADS and full["config"]["dtype"] == "float32"
    assert full["workers"] == 2 and study["plain"]["workers"] == 1
    assert full["config"]["device"] == "cpu" and full["config"]["diverge_factor"] is None
    assert "part2_lr_sweep.png" in full["figures"]
    for name in full["figures"]:
        assert (study["out"] / "full" / name).stat().st_size > 1000


def test_sweep_and_control_leave_the_main_study_unchanged(study) -> None:
    plain, full = study["plain"]["settings"], study["full"]["settings"]
    for s in p2.SETTINGS:
        for key in ("iterations", "diverged_at", "final_loss", "dead_units", "single"):
            assert plain[s][key] == full[s][key], (s, key)
        # the sweep at the base rate gives exactly the main study's iterations for its seeds
        sweep = study["full"]["lr_sweep"]
        assert sweep["settings"][s]["iterations"][sweep["lrs"].index(0.1)] == plain[s]["iterations"][:2]


def test_sweep_layout_and_a_diverging_rate(study) -> None:
    sweep = study["full"]["lr_sweep"]
    assert sweep["lrs"] == [0.1, 1.0, 1e30] and sweep["seeds"] == [0, 1] and sweep["min_reach"] == 0.9
    for row in sweep["settings"].values():
        assert len(row["iterations"]) == 3 and all(len(col) == 2 for col in row["iterations"])
        assert row["iterations"][2] == [None, None] and row["median"][2] is None and row["reach_rate"][2] == 0
        for k, col in enumerate(row["iterations"]):
            assert row["reach_rate"][k] == sum(i is not None for i in col) / 2
        if row["best"] is not None:
            k = sweep["lrs"].index(row["best"]["lr"])
            assert row["reach_rate"][k] >= 0.9 and row["best"]["median"] == row["median"][k]
            assert row["best"]["at_edge"] == (k in (0, 2))
    assert sorted(sweep["ranking_at_best"]) == sorted(p2.SETTINGS)
    assert sweep["ranking_survives"] == (sweep["ranking_at_best"] == sweep["ranking_at_base"])


def test_control_layout_and_dead_units(study) -> None:
    full = study["full"]
    control = full["controls"]["half_lr_ce"]
    assert control["lr"] == 0.05 and set(control["settings"]) == {"sigmoid-ce", "relu-ce"}
    for row in control["settings"].values():
        assert len(row["iterations"]) == 3 and row["summary"]["n_seeds"] == 3
    factors = {f["id"]: f for f in full["controls"]["factors"]}
    assert set(factors) == {"l2_over_ce_sigmoid", "l2_over_ce_relu", "sigmoid_over_relu_l2",
                            "sigmoid_over_relu_ce", "l2_over_half_lr_ce_sigmoid", "l2_over_half_lr_ce_relu"}
    f = factors["l2_over_ce_relu"]
    num, den = (full["settings"][k]["summary"]["median"] for k in ("relu-l2", "relu-ce"))
    assert f["measured"] == (None if num is None or den is None else num / den)
    assert factors["sigmoid_over_relu_ce"]["predicted_kind"] == "upper bound"
    for rec in full["settings"].values():
        assert len(rec["dead_units"]) == len(rec["dead_units_start"]) == 3
        assert all(0 <= d <= 4 for d in rec["dead_units"] + rec["dead_units_start"])
        if rec["activation"] == "sigmoid":
            assert rec["dead_units"] == [0, 0, 0]
        one = rec["single"]
        assert rec["iterations"][full["seeds"].index(one["seed"])] == one["iterations"]
        assert one["percentile"] == sum((i if i is not None else np.inf) < (one["iterations"] or np.inf)
                                        for i in rec["iterations"]) / 3


@pytest.mark.parametrize(("args", "flag"), [
    (["--lrs", ""], "--lrs"),
    (["--lrs", "0"], "--lrs"),
    (["--lrs", "0.1,-1"], "--lrs"),
    (["--lrs", "abc"], "--lrs"),
    (["--lrs", "nan"], "--lrs"),
    (["--lrs", "0.1,inf"], "--lrs"),
    (["--seeds", "0"], "--seeds"),
    (["--lr", "nan"], "--lr"),
    (["--max-iters", "-1"], "--max-iters"),
    (["--first-seed", str(2**63)], "--first-seed"),
    (["--settings", "tanh-l2"], "--settings"),
    (["--dtype", "float16"], "--dtype"),
    (["--diverge-factor", "0"], "--diverge-factor"),
    (["--min-reach", "1.5"], "--min-reach"),
    (["--engine", "plain"], "--engine"),
    (["--workers", "0"], "--workers"),
    (["--data-dir", "/no/such/folder"], "--data-dir"),
])
def test_bad_flags_give_one_line_and_write_nothing(args, flag, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(args, tmp_path / "out", capsys)
    assert code == 2
    assert err.count("\n") == 1 and flag in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cuda_asked_for_without_one_is_one_line(tmp_path: Path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, err = run_cli(["--device", "cuda"], tmp_path / "out", capsys)
    assert code == 2 and err.count("\n") == 1 and "--device" in err
