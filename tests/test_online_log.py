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
