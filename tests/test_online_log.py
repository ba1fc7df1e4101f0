"""The online stage's JSON-lines records survive a crash mid-line."""

import json

from vlarft.agents.online_log import EPISODES_FILE, EpisodeStats, OnlineRecord, read_jsonl


def episode(index: int) -> EpisodeStats:
    return EpisodeStats(index=index, length=10, success=True, intervention_steps=2, intervention_segments=1,
                        policy_version=3, env_steps_total=10 * (index + 1), elapsed_s=float(index))


def test_a_line_torn_by_a_crash_is_cut_before_the_resumed_run_appends(tmp_path):
    first = OnlineRecord(str(tmp_path))
    for index in range(2):
        first.add_episode(episode(index))
    first.drain()
    with open(tmp_path / EPISODES_FILE, "a") as f:
        f.write(json.dumps({"index": 2, "length": 10})[:15])  # killed in the middle of the third row
    resumed = OnlineRecord(str(tmp_path))
    assert resumed.episodes_before == 2
    resumed.add_episode(episode(2))
    resumed.drain()
    rows = read_jsonl(tmp_path / EPISODES_FILE)
    assert [row["index"] for row in rows] == [0, 1, 2]
    assert all(json.loads(line) for line in (tmp_path / EPISODES_FILE).read_text().splitlines())


def test_online_report_success_curve_ends_with_the_final_evaluation(tmp_path):
    from vlarft.agents.online_log import EvalPoint, read_final_evaluation
    from vlarft.agents.plots import online_curves, online_report

    record = OnlineRecord(str(tmp_path))
    for index in range(3):
        record.add_episode(episode(index))
    record.add_evaluation(EvalPoint(env_steps_total=20, elapsed_s=1.0, policy_version=2, episodes=2,
                                    success_rate=0.5, mean_success_length=9.0, mean_episode_length=12.0))
    record.drain()
    assert record.env_steps_total() == 30
    record.write_final_evaluation({"success_rate": 0.75, "mean_success_length": 8.0, "mean_episode_length": 10.0,
                                   "episodes": 4, "video": "v.mp4"}, policy_version=7,
                                  env_steps_total=record.env_steps_total())
    final = read_final_evaluation(tmp_path)
    assert final["success_rate"] == 0.75 and final["policy_version"] == 7 and final["env_steps_total"] == 30
    curves = online_curves(tmp_path)
    evaluation_line = next(points for label, points in curves["success_rate"][3].items() if "evaluation" in label)
    assert [(row["env_steps_total"], value) for row, value in evaluation_line] == [(20, 0.5), (30, 0.75)]
    written = online_report(tmp_path, tmp_path / "report")
    assert str(tmp_path / "report" / "online_success_rate_vs_env_steps.png") in written
