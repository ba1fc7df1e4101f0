"""Dataset statistics against hand-computed values."""

import numpy as np
import pytest

from vlarft.datasets.statistics import compute_statistics


def test_statistics_hand_computed():
    # Two episodes; the last action of each is RLDS padding and must be ignored.
    a1 = np.array([[0.0, 1.0], [2.0, 3.0], [99.0, 99.0]])
    a2 = np.array([[4.0, 5.0], [-99.0, -99.0]])
    s1 = np.array([[1.0], [2.0], [3.0]])
    s2 = np.array([[5.0], [9.0]])
    stats = compute_statistics([(a1, s1), (a2, s2)])
    assert stats["num_episodes"] == 2 and stats["num_transitions"] == 3 and stats["num_steps"] == 5
    assert stats["action"]["mean"] == pytest.approx([2.0, 3.0])
    assert stats["action"]["min"] == [0.0, 1.0] and stats["action"]["max"] == [4.0, 5.0]
    assert stats["action"]["std"] == pytest.approx([np.sqrt(8 / 3)] * 2)
    # numpy linear percentile of [0, 2, 4]: p01 = 0.04, p99 = 3.96
    assert stats["action"]["p01"] == pytest.approx([0.04, 1.04])
    assert stats["action"]["p99"] == pytest.approx([3.96, 4.96])
    assert stats["state"]["mean"] == pytest.approx([4.0])
    assert stats["state"]["max"] == [9.0]


def test_empty():
    assert compute_statistics([])["num_episodes"] == 0
