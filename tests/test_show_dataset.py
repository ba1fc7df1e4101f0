"""tools/show_dataset.py on a small real converted dataset and, through a mapping, on a bridge-spec
RLDS dataset: the table's rows, the PNG/MP4 files and their content."""

import imageio.v2 as imageio
import pytest

from conftest import SMALL_SPEC, make_episode
from foreign_rlds import write_bridge_source
from vlarft.datasets.raw_episodes import write_raw_episode
from vlarft.pipelines.convert_demos import convert
from vlarft.tools import show_dataset


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("show")
    (root / "raw").mkdir()
    for i in range(3):  # 3 + i transitions; ep01 is a time-limit end without success
        write_raw_episode(root / "raw" / f"ep{i:02d}.npz",
                          make_episode(episode_id=f"ep{i:02d}", length=3 + i, terminal=i != 1, seed=i), SMALL_SPEC)
    return convert([str(root / "raw")], str(root / "data"), "show_demos", validation_fraction=0.0,
                   log=lambda msg: None).dataset_dir


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "240")  # rich sizes the table to the terminal: no wrapped cells


def table_rows(text: str) -> dict[str, list[str]]:
    """episode id -> its table cells."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 8 and cells[0].isdigit():
            rows[cells[2]] = cells
    return rows


def test_our_dataset_table_contact_sheet_video_and_statistics(demos, tmp_path, capsys):
    out = tmp_path / "look"
    assert show_dataset.main([demos, "--episodes=0,ep02", f"--out={out}", "--frames=3", "--fps=5"]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    # make_episode: interventions on odd transitions (t % 2 == 1), success iff terminal
    assert rows["ep00"] == ["0", "train", "ep00", "4", "yes", "1", "demo", "do the unit task"]
    assert rows["ep01"][3:6] == ["5", "no", "2"]
    assert rows["ep02"][3:6] == ["6", "yes", "2"]
    assert "3 episode(s), 2 successful, 15 steps, 5 intervention step(s)" in printed
    written = {p.name for p in out.iterdir()}
    assert written == {"statistics_action.png", "statistics_state.png", "episode_ep00.png", "episode_ep00.mp4",
                       "episode_ep02.png", "episode_ep02.mp4"}
    video = [frame for frame in imageio.get_reader(str(out / "episode_ep02.mp4"))]
    assert len(video) == 6  # one frame per step
    sheet = imageio.imread(str(out / "episode_ep00.png"))
    assert sheet.ndim == 3 and sheet.shape[1] > sheet.shape[0] > 300


def test_an_rlds_dataset_through_a_mapping_lists_what_does_not_map(tmp_path, capsys):
    source = write_bridge_source(tmp_path / "bridge")
    out = tmp_path / "look"
    assert show_dataset.main([source, "--mapping=bridge", "--episodes=test-000000", f"--out={out}",
                              "--formats=png"]) == 0
    printed = capsys.readouterr().out
    rows = table_rows(printed)
    assert rows["train-000000"][3:5] == ["5", "yes"]
    assert rows["test-000000"][7] == "wipe the table"
    assert rows["train-000001"][4] == "not mapped" and "empty language instruction" in rows["train-000001"][7]
    assert "non-finite value" in rows["train-000002"][7]
    assert {p.name for p in out.iterdir()} == {"statistics_action.png", "statistics_state.png",
                                               "episode_test-000000.png"}
    assert show_dataset.main([source, "--mapping=no_such_mapping"]) == 1
    assert "no bundled mapping of that name" in capsys.readouterr().err
