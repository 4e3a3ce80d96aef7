"""Tests for part3_line.py: network shapes, initialisation, the stop rule, batched == plain, the CLI.

Tolerances (float64): the batched engine computes the same sums as nn.Conv2d in another order
(matrix products instead of convolutions), so values agree to rounding, which SGD then carries
along: |batched - plain| <= 1e-12 + 1e-9 |plain| over the short runs tested here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import part3_line as p3
from part1_loss_gradient import InputError, run_main
from part2_fc import DTYPE, load_dataset, seed_generator, truncated_normal

ENGINE_TOL = {"rtol": 1e-9, "atol": 1e-12}
# (image size, padding) -> (conv1 maps, conv2 maps, FC inputs)
GEOMETRIES = {
    (16, "valid"): ((10, 10), (4, 4), 128),
    (16, "same"): ((16, 16), (16, 16), 2048),
    (8, "same"): ((8, 8), (8, 8), 512),
    (13, "valid"): ((7, 7), (1, 1), 8),
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Run on one torch thread: on this shared 2-core machine two threads stall whenever another
    process holds a core (nn.Conv2d in float64 then runs up to 50x slower). Results do not
    depend on it (the tolerances above cover the summation order)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def line_tensors(data_dir: Path, crop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The line images x (64, 1, H, W) (top-left crop x crop when given) and labels y (64,)."""
    data = load_dataset(data_dir, "line")
    images = data.images if crop is None else data.images[:, :crop, :crop]
    return torch.tensor(images[:, None], dtype=DTYPE), torch.tensor(data.labels, dtype=DTYPE)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = run_main(p3.main, argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the network ------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "padding"), list(GEOMETRIES))
@pytest.mark.parametrize("regression", [False, True])
def test_output_shapes_plain_and_stacked(size: int, padding: str, regression: bool) -> None:
    conv1, conv2, n_features = GEOMETRIES[(size, padding)]
    geo = p3.conv_geometry((size, size), padding)
    assert (geo.conv1, geo.conv2, geo.n_features) == (conv1, conv2, n_features)
    x = torch.rand(5, 1, size, size, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    nets = [p3.initial_model(seed, geo, p3.ConvConfig(), regression) for seed in (3, 4, 5)]
    a1, a2 = nets[0].feature_maps(x)
    assert a1.shape == (5, 16, *conv1) and a2.shape == (5, 8, *conv2)
    logits, widths = nets[0](x)
    assert logits.shape == (5,)
    assert (widths is None) != regression and (widths is None or widths.shape == (5,))
    # the stacked forward of the batched engine gives each seed's own outputs
    stacked = {k: torch.stack([net.state_dict()[k] for net in nets]) for k in nets[0].state_dict()}
    s_logits, s_widths = p3.stacked_forward(stacked, p3.image_patches(x, geo), geo)
    assert s_logits.shape == (3, 5)
    with torch.no_grad():
        for s, net in enumerate(nets):
            one_logits, one_widths = net(x)
            torch.testing.assert_close(s_logits[s], one_logits, rtol=1e-12, atol=1e-14)
            if regression:
                assert s_widths is not None and one_widths is not None
                torch.testing.assert_close(s_widths[s], one_widths, rtol=1e-12, atol=1e-14)
            else:
                assert s_widths is None


@pytest.mark.parametrize("image", [(8, 8), (12, 16), (16, 12)])
def test_valid_padding_refuses_images_below_13_pixels(image: tuple[int, int]) -> None:
    with pytest.raises(InputError, match=r"too small .*need at least 13x13.*--padding same"):
        p3.conv_geometry(image, "valid")
    assert p3.conv_geometry(image, "same").n_features == 8 * image[0] * image[1]


def test_conv2_matrix_gradient_is_the_sum_over_its_copies() -> None:
    geo = p3.conv_geometry((16, 16), "valid")
    w2 = torch.randn(2, 8, 16, 7, 7, dtype=DTYPE, requires_grad=True)
    upstream = torch.randn(2, 10 * 10 * 16, 4 * 4 * 8, dtype=DTYPE)
    (p3.Conv2Matrix.apply(w2, geo) * upstream).sum().backward()
    reference = w2.detach().clone().requires_grad_()
    # the same matrix built by autograd-tracked indexing, entry by entry
    matrix = torch.zeros(2, 10, 10, 16, 4, 4, 8, dtype=DTYPE)
    for i in range(4):
        for j in range(4):
            matrix[:, i:i + 7, j:j + 7, :, i, j, :] = reference.permute(0, 3, 4, 2, 1)
    torch.testing.assert_close(matrix.view(2, 1600, 128), p3.Conv2Matrix.apply(w2, geo), rtol=0, atol=0)
    (matrix.view(2, 1600, 128) * upstream).sum().backward()
    assert w2.grad is not None and reference.grad is not None
    torch.testing.assert_close(w2.grad, reference.grad, rtol=1e-13, atol=1e-13)


def test_initialisation_order_bounds_and_biases() -> None:
    geo = p3.conv_geometry((16, 16), "valid")
    cfg = p3.ConvConfig()
    net = p3.initial_model(7, geo, cfg)
    gen = seed_generator(7)  # the documented draw order: conv1, conv2, fc weights
    for layer in (net.conv1, net.conv2, net.fc):
        expected = truncated_normal(tuple(layer.weight.shape), 0.1, gen)
        torch.testing.assert_close(layer.weight.detach(), expected, rtol=0, atol=0)
        assert torch.all(layer.bias == 0.1)
    weights = torch.cat([p.detach().flatten() for n, p in net.named_parameters() if n.endswith("weight")])
    assert weights.abs().max() <= 0.2 and abs(float(weights.std()) - 0.088) < 0.01  # 2-std truncation
    # the width head comes last, so 3.1 and 3.2 start the same trunk from the same seed
    with_head = p3.initial_model(7, geo, cfg, regression=True).state_dict()
    for name, value in net.state_dict().items():
        assert torch.equal(with_head[name], value)
    assert not torch.equal(with_head["reg.weight"], with_head["fc.weight"])


# --- training ---------------------------------------------------------------------------------


def manual_stop(x: torch.Tensor, y: torch.Tensor, seed: int, geo: p3.Geometry, max_iters: int) -> int | None:
    """Updates before the first 100% accuracy, by the most direct loop: nn.Module, BCE, SGD."""
    net = p3.initial_model(seed, geo, p3.ConvConfig())
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for t in range(max_iters + 1):
        logits = net(x)[0]
        if bool(((logits > 0) == (y == 1)).all()):
            return t
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
        opt.step()
    return None


def test_stop_rule_counts_updates_before_the_first_100_percent(standin_dir: Path) -> None:
    x, y = line_tensors(standin_dir)
    geo = p3.conv_geometry((16, 16), "valid")
    expected = manual_stop(x, y, 0, geo, 60)
    assert expected is not None and expected > 5
    for engine in (p3.train_plain, p3.train_batched):
        runs = engine([0], x, y, None, geo, p3.ConvConfig(max_iters=60), False)
        assert runs.iterations == [expected] and runs.diverged_at == [None]
        acc = runs.accuracies[:, 0]
        assert acc[expected] == 1.0 and (acc[:expected] < 1.0).all() and np.isnan(acc[expected + 1:]).all()
        assert np.isfinite(runs.losses[:expected + 1, 0]).all()
    # a cap below the stop: not reached, every iteration up to the cap recorded
    capped = p3.train_batched([0], x, y, None, geo, p3.ConvConfig(max_iters=expected - 1), False)
    assert capped.iterations == [None] and np.isfinite(capped.losses[:, 0]).all()


@pytest.mark.parametrize(("crop", "padding"), [(None, "valid"), (8, "same")])
def test_batched_equals_plain_seed_for_seed(standin_dir: Path, crop: int | None, padding: str) -> None:
    x, y = line_tensors(standin_dir, crop)
    geo = p3.conv_geometry(tuple(x.shape[2:]), padding)
    cfg = p3.ConvConfig(max_iters=40 if crop is None else 10)
    seeds = [0, 1, 2] if crop is None else [0, 1]
    plain = p3.train_plain(seeds, x, y, None, geo, cfg, False)
    batched = p3.train_batched(seeds, x, y, None, geo, cfg, False)
    assert batched.iterations == plain.iterations and batched.diverged_at == plain.diverged_at
    if crop is None:
        assert plain.iterations[0] is not None and None in plain.iterations  # stops and caps both tested
    for name, history in plain.histories().items():
        np.testing.assert_allclose(batched.histories()[name], history, equal_nan=True, **ENGINE_TOL)
    for s in range(len(seeds)):
        for name, value in plain.final_params[s].items():
            torch.testing.assert_close(batched.final_params[s][name], value, **ENGINE_TOL)


def test_divergence_is_detected_per_seed_without_nan_in_the_record(standin_dir: Path) -> None:
    x, y = line_tensors(standin_dir)
    geo = p3.conv_geometry((16, 16), "valid")
    cfg = p3.ConvConfig(lr=50.0, max_iters=30)
    batched = p3.train_batched([0, 1], x, y, None, geo, cfg, False)
    plain = p3.train_plain([0, 1], x, y, None, geo, cfg, False)
    assert all(d is not None for d in batched.diverged_at)
    assert batched.diverged_at == plain.diverged_at and batched.iterations == [None, None]
    for s, t in enumerate(batched.diverged_at):
        assert t is not None and np.isnan(batched.losses[t + 1:, s]).all()
        assert np.isfinite(batched.losses[:t, s]).all()


# --- the command line -------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "message"), [
    (["--seeds", "0"], "--seeds"),
    (["--lr", "0"], "--lr"),
    (["--lr", "-1"], "--lr"),
    (["--padding", "full"], "--padding"),
    (["--max-iters", "-1"], "--max-iters"),
    (["--init-bias", "nan"], "--init-bias"),
    (["--first-seed", str(2**63 - 1), "--seeds", "2"], "--first-seed"),
    (["--data-dir", "no/such/folder"], "--data-dir"),
])
def test_bad_flags_one_line_exit_2_nothing_written(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   flags: list[str], message: str) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run(["--out", str(out), *flags], capsys)
    assert code == 2 and stdout == ""
    assert len(stderr.strip().splitlines()) == 1 and message in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_small_images_with_valid_padding_are_refused(tmp_path: Path, standin_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data8" / "line"
    data.mkdir(parents=True)
    np.save(data / "line_imgs.npy", np.load(standin_dir / "line" / "line_imgs.npy")[:, 4:12, 4:12])
    np.save(data / "line_labs.npy", np.load(standin_dir / "line" / "line_labs.npy"))
    out = tmp_path / "out"
    code, _, stderr = run(["--data-dir", str(data.parent), "--out", str(out)], capsys)
    assert code == 2 and "8x8 pixels, too small" in stderr and len(stderr.strip().splitlines()) == 1
    assert not out.exists()
    code, _, _ = run(["--data-dir", str(data.parent), "--out", str(out), "--padding", "same",
                           "--max-iters", "3", "--quiet"], capsys)
    assert code == 0 and json.loads((out / "part3_line.json").read_text())["network"]["fc_inputs"] == 512


def test_cli_writes_figures_and_deterministic_json(tmp_path: Path, standin_dir: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = ["--data-dir", str(standin_dir), "--out", str(out), "--seeds", "2", "--max-iters", "30", "--quiet"]
    assert run(argv, capsys)[0] == 0
    first = (out / "part3_line.json").read_bytes()
    results = json.loads(first)
    assert set(results["figures"]) == {
        "part3_line_loss.png", "part3_line_accuracy.png", "part3_line_kernels.png",
        "part3_line_feature_maps.png", "part3_line_share_reached.png", "part3_line_loss_band.png"}
    assert {p.name for p in out.iterdir()} == set(results["figures"]) | {"part3_line.json"}
    assert results["seeds"] == [0, 1] and len(results["iterations"]) == 2
    assert results["iterations"][0] == results["single"]["iterations"] == 26  # stand-in data, seed 0
    assert results["summary"]["n_seeds"] == 2 and results["comparison_part2"] is None
    assert results["network"]["fc_inputs"] == 128 and results["data"]["provenance"] == "stand-in"
    assert run(argv, capsys)[0] == 0
    assert (out / "part3_line.json").read_bytes() == first  # same command, same bytes


def test_comparison_reads_part2_results_and_refuses_a_broken_file(tmp_path: Path, standin_dir: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    summary = {"n_seeds": 3, "median": 120.0, "q1": 80.0, "q3": None, "reach_rate": 2 / 3}
    part2 = {"data": {"provenance": "stand-in"},
             "settings": {"relu-ce": {"label": "ReLU + cross-entropy", "single": {"iterations": 90},
                                      "summary": summary}}}
    (out / "part2_fc.json").write_text(json.dumps(part2))
    argv = ["--data-dir", str(standin_dir), "--out", str(out), "--max-iters", "3", "--quiet"]
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "relu-ce" in stdout
    comparison = json.loads((out / "part3_line.json").read_text())["comparison_part2"]
    assert comparison["settings"]["relu-ce"] == {"label": "ReLU + cross-entropy", "single_iterations": 90,
                                                 **summary}
    (out / "part3_line.json").unlink()
    (out / "part2_fc.json").write_text("{not json")
    code, _, stderr = run(argv, capsys)
    assert code == 2 and "part2_fc.json" in stderr and not (out / "part3_line.json").exists()
