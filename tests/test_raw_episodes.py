"""Raw episode files: exact round trip, atomic writes, damaged files named."""

import numpy as np
import pytest

from conftest import SMALL_SPEC, make_episode
from vlarft.datasets import raw_episodes
from vlarft.datasets.raw_episodes import RawEpisodeError, next_episode_path, read_raw_episode, write_raw_episode
from vlarft.datasets.schema import flatten


def test_round_trip_is_exact(tmp_path):
    ep = make_episode(episode_id="rt", length=7)
    path = write_raw_episode(tmp_path / "a.npz", ep, SMALL_SPEC)
    back, spec = read_raw_episode(path)
    assert spec == SMALL_SPEC
    assert back["episode_metadata"] == ep["episode_metadata"]
    want, got = flatten(ep["steps"]), flatten(back["steps"])
    assert set(want) == set(got)
    for key in want:
        assert np.array_equal(np.asarray(want[key]), np.asarray(got[key])), key
        assert np.asarray(got[key]).dtype == np.asarray(want[key]).dtype or key == "language_instruction"


def test_never_overwrites_and_leaves_no_temporaries(tmp_path):
    first = make_episode(episode_id="first")
    path = write_raw_episode(tmp_path / "x.npz", first, SMALL_SPEC)
    with pytest.raises(FileExistsError):
        write_raw_episode(path, make_episode(episode_id="second"), SMALL_SPEC)
    assert read_raw_episode(path)[0]["episode_metadata"]["episode_id"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


def test_crash_during_write_leaves_nothing(tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(raw_episodes.np, "savez_compressed", explode)
    with pytest.raises(KeyboardInterrupt):
        write_raw_episode(tmp_path / "y.npz", make_episode(), SMALL_SPEC)
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_named(tmp_path):
    path = write_raw_episode(tmp_path / "z.npz", make_episode(), SMALL_SPEC)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RawEpisodeError) as err:
        read_raw_episode(path)
    assert str(path) in str(err.value) and "truncated" in err.value.reason


def test_next_episode_path_counts_up(tmp_path):
    assert next_episode_path(tmp_path, "pick").name == "pick_000000.npz"
    write_raw_episode(next_episode_path(tmp_path, "pick"), make_episode(), SMALL_SPEC)
    (tmp_path / "pick_000007.npz").write_bytes(b"")
    assert next_episode_path(tmp_path, "pick").name == "pick_000008.npz"
    assert raw_episodes.list_raw_episodes(tmp_path)[0].name == "pick_000000.npz"
