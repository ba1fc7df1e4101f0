"""The ConRFT benchmark's comparison table and plot (`tools/benchmark_conrft.py`) from hand-made
stage results shaped as the stages write them: intervals against hand-computed values, every
method's row, and one PNG with both panels."""

import io

import matplotlib.image
import pytest
from rich.console import Console

from vlarft.tools import benchmark_conrft as bench

T_975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom


def online_result(success: float, length: float, quarters: list[float], minutes: float) -> dict:
    return {"success_rate": success, "mean_episode_length": length, "env_steps": 6000, "intervention_rate": 0.25,
            "updates_per_env_step": 0.98, "online_minutes": minutes, "intervention_quarters": quarters,
            "evaluations": [{"env_steps": s, "success_rate": success * s / 6000} for s in (0, 3000, 6000)]}


def runs_of_three_seeds() -> list[dict]:
    return [{"sft": {"success_rate": s, "mean_episode_length": 80.0, "stage_wall_s": 360.0},
             "hil_conrft": online_result(s + 0.2, 30.0 + i, [2.0, 1.0, 0.5, 0.0], 5.0),
             "rlpd_embedding": online_result(0.0, 100.0, [3.0, 3.0, 2.0, 2.0], 6.0)}
            for i, s in enumerate((0.5, 0.7, 0.3))]


def test_the_methods_summary_has_hand_computed_intervals_and_every_row(tmp_path):
    runs = runs_of_three_seeds()
    methods = ["sft", "hil_conrft", "rlpd_embedding"]
    summary = bench.summarize_methods({"pick_cube": runs}, methods)["pick_cube"]
    mean, half = summary["sft"]["success_rate"]
    # [0.5, 0.7, 0.3]: mean 0.5, sample std 0.2, half-width t * 0.2 / sqrt(3)
    assert mean == pytest.approx(0.5) and half == pytest.approx(T_975_2 * 0.2 / 3 ** 0.5)
    assert summary["sft"]["wall_minutes"] == pytest.approx((6.0, 0.0))
    assert "env_steps" not in summary["sft"]  # an offline row has no online figures
    assert summary["hil_conrft"]["success_rate"][0] == pytest.approx(0.7)
    assert summary["hil_conrft"]["mean_episode_length"] == pytest.approx((31.0, T_975_2 * 1.0 / 3 ** 0.5))
    assert summary["hil_conrft"]["interventions_first"] == pytest.approx((2.0, 0.0))
    assert summary["hil_conrft"]["interventions_last"] == pytest.approx((0.0, 0.0))
    assert summary["rlpd_embedding"]["per_seed"] == [0.0, 0.0, 0.0]

    console = Console(file=io.StringIO(), width=200)
    markdown = bench.render_methods_table({"pick_cube": summary}, console, "t")
    rows = [line for line in markdown.splitlines() if line.startswith("| pick_cube")]
    assert [row.split(" | ")[1] for row in rows] == ["SFT only", "HIL-ConRFT", "RLPD (VLA embedding)"]
    assert "| 50 ± 50% |" in rows[0] and "2.00 ± 0.00 → 0.00 ± 0.00" in rows[1]

    path = tmp_path / "curves.png"
    row = {**bench.summarize({"pick_cube": runs})["pick_cube"], **summary, "seed_list": [0, 1, 2]}
    bench.plot_curves("pick_cube", runs, row, path, methods)
    height, width = matplotlib.image.imread(path).shape[:2]
    assert width > 2 * height  # the success panel beside the interventions panel


def test_an_interval_of_one_seed_is_zero_wide_and_missing_values_are_skipped():
    assert bench.interval([0.4]) == (0.4, 0.0)
    assert bench.interval([0.2, None, float("nan"), 0.4])[0] == pytest.approx(0.3)
    mean, half = bench.interval([])
    assert mean != mean and half != half  # NaN: nothing measured
