"""Makes `tests/data/lerobot_v30_fixture/` with the real `lerobot` package (not a dependency of
vlarft: it needs Python >= 3.12). Run once in a scratch venv, never by the test suite:

    python3.12 -m venv /tmp/lerobot-venv && /tmp/lerobot-venv/bin/pip install "lerobot[dataset]==0.6.1"
    /tmp/lerobot-venv/bin/python tests/data/make_lerobot_fixture.py tests/data/lerobot_v30_fixture
    /tmp/lerobot-venv/bin/python tests/data/make_lerobot_fixture.py tests/data/lerobot_v30_images_fixture --images

Three episodes (4, 6 and 3 frames) at 10 fps, two tasks, one 32x24 camera as AV1 video with
lerobot's default encoder (with --images: PNG `image` features inside the parquet), a 4-d state and a 3-d action with names, `next.reward` and
`next.success`. The frames are smooth gradients so the codec error stays small.
"""

import shutil
import sys
from pathlib import Path

import numpy as np
from lerobot.datasets.lerobot_dataset import LeRobotDataset

FEATURES = {
    "observation.images.front": {"dtype": "video", "shape": (24, 32, 3), "names": ["height", "width", "channels"]},
    "observation.state": {"dtype": "float32", "shape": (4,), "names": ["x", "y", "z", "gripper"]},
    "action": {"dtype": "float32", "shape": (3,), "names": ["dx", "dy", "gripper"]},
    "next.reward": {"dtype": "float32", "shape": (1,), "names": None},
    "next.success": {"dtype": "bool", "shape": (1,), "names": None},
}


def frame_image(episode: int, t: int) -> np.ndarray:
    y, x = np.mgrid[0:24, 0:32]
    base = np.stack([60 + 4 * x + 8 * t, 80 + 5 * y + 20 * episode, 120 + 2 * x + 2 * y], -1)
    return np.clip(base, 0, 255).astype(np.uint8)


def main(out: str, use_videos: bool) -> None:
    root = Path(out)
    shutil.rmtree(root, ignore_errors=True)
    features = dict(FEATURES)
    if not use_videos:
        features["observation.images.front"] = dict(features["observation.images.front"], dtype="image")
    dataset = LeRobotDataset.create("vlarft/fixture", fps=10, features=features, root=root,
                                    robot_type="toy_arm", use_videos=use_videos)
    rng = np.random.default_rng(0)
    for episode, (length, task) in enumerate([(4, "pick the cube"), (6, "push the cube left"),
                                              (3, "pick the cube")]):
        for t in range(length):
            last = t == length - 1
            dataset.add_frame({
                "observation.images.front": frame_image(episode, t),
                "observation.state": rng.normal(size=4).astype(np.float32),
                "action": rng.uniform(-1, 1, 3).astype(np.float32),
                "next.reward": np.asarray([float(last and episode != 1)], np.float32),
                "next.success": np.asarray([last and episode != 1]),
                "task": task,
            })
        dataset.save_episode()
    dataset.finalize()


if __name__ == "__main__":
    main(sys.argv[1], use_videos="--images" not in sys.argv[2:])
