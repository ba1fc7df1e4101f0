"""Raw episode files: round trip (frames as the dataset stores them, or lossless), atomic writes,
damaged files named."""

import dataclasses

import numpy as np
import pytest

from conftest import SMALL_SPEC, make_episode
from vlarft.datasets import raw_episodes
from vlarft.datasets.episode_serializer import EpisodeSerializer
from vlarft.datasets.frames import FrameError, JpegFrames, as_stored, encode_frame, jpeg_frame_shape
from vlarft.datasets.raw_episodes import RawEpisodeError, next_episode_path, read_raw_episode, write_raw_episode
from vlarft.datasets.schema import SchemaError, flatten, tfds_features, validate_episode


def _assert_same_steps(want, got, frame=lambda f: f):
    want, got = flatten(want), flatten(got)
    assert set(want) == set(got)
    for key in want:
        expected = np.asarray(want[key])
        if key.startswith("observation/image_"):
            expected = np.stack([frame(f) for f in expected])
        assert np.array_equal(expected, np.asarray(got[key])), key
        assert np.asarray(got[key]).dtype == expected.dtype or key == "language_instruction"


def test_round_trip_frames_as_the_dataset_stores_them(tmp_path):
    ep = make_episode(episode_id="rt", length=7)
    path = write_raw_episode(tmp_path / "a.npz", ep, SMALL_SPEC)
    back, spec = read_raw_episode(path)
    assert spec == SMALL_SPEC
    assert back["episode_metadata"] == ep["episode_metadata"]
    # every field exact; each frame is what the dataset returns for the live frame
    _assert_same_steps(ep["steps"], back["steps"], frame=as_stored)
    encoded, _ = read_raw_episode(path, decode_frames=False)
    frames = encoded["steps"]["observation"]["image_front"]
    assert isinstance(frames, JpegFrames) and frames.shape == ep["steps"]["observation"]["image_front"].shape
    assert frames.data == JpegFrames.encode(ep["steps"]["observation"]["image_front"]).data
    # written again from the encoded frames: the same bytes, not a second lossy pass
    again = write_raw_episode(tmp_path / "b.npz", encoded, SMALL_SPEC)
    assert read_raw_episode(again, decode_frames=False)[0]["steps"]["observation"]["image_front"].data == frames.data


def test_round_trip_is_exact_without_jpeg(tmp_path):
    ep = make_episode(episode_id="rt", length=7)
    back, _ = read_raw_episode(write_raw_episode(tmp_path / "a.npz", ep, SMALL_SPEC, jpeg_frames=False))
    _assert_same_steps(ep["steps"], back["steps"])


def test_damaged_frame_is_named(tmp_path):
    ep = make_episode(episode_id="bad", length=5)
    encoded = {"steps": dict(ep["steps"]), "episode_metadata": ep["episode_metadata"]}
    frames = JpegFrames.encode(ep["steps"]["observation"]["image_front"])
    frames.data[3] = frames.data[3][: len(frames.data[3]) // 3]  # a cut-off JPEG at step 3
    encoded["steps"]["observation"] = {**ep["steps"]["observation"], "image_front": frames}
    path = write_raw_episode(tmp_path / "bad.npz", encoded, SMALL_SPEC)
    with pytest.raises(RawEpisodeError) as err:
        read_raw_episode(path)
    assert str(path) in str(err.value) and "frame 3" in err.value.reason


def test_the_frame_check_reads_the_jpeg_markers_and_catches_a_cut_off_frame():
    frame = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    data = encode_frame(frame)
    assert jpeg_frame_shape(data) == (24, 40, 3) and jpeg_frame_shape(data + b"\x00" * 3) == (24, 40, 3)
    # start-of-image, an 8-byte APP0 segment, a baseline frame header of 300 x 200, one component, end
    hand_made = b"\xff\xd8" + b"\xff\xe0\x00\x08" + b"JFIF\x00\x01" + b"\xff\xc0\x00\x0b\x08\x01\x2c\x00\xc8\x01" \
        + b"\x01\x11\x00" + b"\xff\xd9"
    assert jpeg_frame_shape(hand_made) == (300, 200, 1)
    for bad, reason in ((data[: len(data) // 2], "cut off"), (b"\x89PNG" + data[4:], "start-of-image"),
                        (data[:2] + b"\xff\xda\x00\x02" + b"\xff\xd9", "no frame header")):
        with pytest.raises(ValueError, match=reason):
            jpeg_frame_shape(bad)
    # The header of a cut-off frame is intact (a header-only reader would pass it): the check names it.
    frames = JpegFrames([data] * 4, (24, 40, 3))
    frames.check()
    frames.data[2] = data[: len(data) - 50]
    with pytest.raises(FrameError, match="cut off") as err:
        frames.check()
    assert err.value.step == 2
    with pytest.raises(FrameError, match="expected a 40x24x3 JPEG frame, got 40x24x1"):
        JpegFrames([hand_made.replace(b"\x01\x2c\x00\xc8", b"\x00\x18\x00\x28")], (24, 40, 3)).check()  # 24 x 40, gray


def test_conversion_validation_refuses_a_cut_off_frame_and_names_its_step():
    ep = make_episode(episode_id="cut", length=5)
    frames = JpegFrames.encode(ep["steps"]["observation"]["image_front"])
    frames.data[3] = frames.data[3][:-40]  # header intact, end of the scan missing
    steps = {**ep["steps"], "observation": {**ep["steps"]["observation"], "image_front": frames}}
    with pytest.raises(SchemaError) as err:
        validate_episode({"steps": steps, "episode_metadata": ep["episode_metadata"]}, SMALL_SPEC)
    assert "cut off" in str(err.value) and err.value.step == 3 and "image_front" in str(err.value)


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
    monkeypatch.setattr(raw_episodes.np, "savez", explode)
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


def test_column_wise_serializer_writes_tfds_bytes():
    """The conversion job's serializer gives exactly TFDS's `serialize_example` bytes, from pixel
    arrays and from frames the recorder already encoded, with every optional field present."""
    spec = dataclasses.replace(SMALL_SPEC, embedding_dim=3, with_mc_return=True, language_embedding_dim=4)
    ep = make_episode(episode_id="ser", length=6)
    n = len(ep["steps"]["is_first"])
    ep["steps"]["embedding"] = np.arange(n * 3, dtype=np.float32).reshape(n, 3) / 7
    ep["steps"]["mc_return"] = np.linspace(-1, 1, n).astype(np.float32)
    ep["steps"]["language_embedding"] = np.ones((n, 4), np.float32) * 0.25
    ep = validate_episode(ep, spec)
    want = tfds_features(spec).serialize_example(ep)
    serializer = EpisodeSerializer(spec)
    assert serializer.serialize(ep) == want
    encoded = {"steps": {**ep["steps"], "observation": {
        key: JpegFrames.encode(value) if key.startswith("image_") else value
        for key, value in ep["steps"]["observation"].items()}}, "episode_metadata": ep["episode_metadata"]}
    assert serializer.serialize(validate_episode(encoded, spec)) == want


def test_version_1_files_still_read(tmp_path):
    """Files recorded before frames were stored as JPEG (format 1: zlib npz, pixel frames)."""
    ep = make_episode(episode_id="old", length=4)
    modern = write_raw_episode(tmp_path / "m.npz", ep, SMALL_SPEC, jpeg_frames=False)
    with np.load(modern, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["format_version"] = np.asarray(1)
    old = tmp_path / "old.npz"
    np.savez_compressed(old, **arrays)
    back, _ = read_raw_episode(old)
    _assert_same_steps(ep["steps"], back["steps"])
