"""Task configs of the real robot: bundled TOMLs load, errors name the file and the field."""

import math

import pytest
from vlarft.robot_io.cameras import CameraConfig
from vlarft.robot_io.task_config import (
    TASKS_DIR,
    TaskConfig,
    TaskConfigError,
    bundled_tasks,
    load_task_config,
)

VALID = """
instruction = "do the test task"
server_url = "http://127.0.0.2:5000/"
xyz_low = [0.3, -0.2, 0.05]
xyz_high = [0.7, 0.2, 0.4]
euler_low = [2.94159, -0.2, -0.5]
euler_high = [3.34159, 0.2, 0.5]
reset_pose = [0.5, 0.0, 0.2, -3.1, 0.0, 0.0]   # roll -3.1 is pi + 0.04: inside the box around pi

[[cameras]]
name = "wrist"
kind = "synthetic"
size = [64, 64]
crop = [0, 16, 96, 96]

[compliance_params]
translational_stiffness = 2000
"""


def write(tmp_path, text, name="my_task.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_configs_all_load():
    assert set(bundled_tasks()) == {"pick_place", "open_drawer", "peg_insertion"}
    for task in bundled_tasks():
        config = load_task_config(task)
        assert config.name == task and config.instruction
        assert config.server_url.startswith("http://") and config.server_url.endswith("/")
        assert [c.name for c in config.cameras] == ["wrist", "front"]
        assert all(c.size == (128, 128) and c.crop is not None for c in config.cameras)
        assert config.workspace.contains(config.reset_pose[:3], config.reset_pose[3:])
        assert config.precision_params and config.compliance_params
        assert config.reward_source == "operator"
    assert not load_task_config("peg_insertion").gripper_enabled


def test_valid_file_loads_with_defaults_and_overrides(tmp_path):
    path = write(tmp_path, VALID)
    config = load_task_config(path, server_url="http://10.0.0.3:5000", control_hz=20.0)
    assert config.name == "my_task"  # from the file name
    assert config.server_url == "http://10.0.0.3:5000/"  # trailing slash added
    assert config.control_hz == 20.0 and config.max_episode_steps == TaskConfig.max_episode_steps
    assert config.cameras == (CameraConfig("wrist", "synthetic", size=(64, 64), crop=(0, 16, 96, 96)),)
    assert config.compliance_params == {"translational_stiffness": 2000.0}
    assert config.precision_params == {}
    assert load_task_config(str(path)).reset_pose[3] == -3.1


@pytest.mark.parametrize("edit, field", [
    ('control_hz = -1.0\n', "control_hz"),
    ('max_episode_steps = 2.5\n', "max_episode_steps"),
    ('action_frame = "world"\n', "action_frame"),
    ('reward_source = "magic"\n', "reward_source"),
    ('reward_source = "classifier"\n', "classifier_dir"),
    ('gripper_threshold = 1.5\n', "gripper_threshold"),
    ('gripper_enabled = "yes"\n', "gripper_enabled"),
    ('pos_scale = "big"\n', "pos_scale"),
    ('[precision_params]\nstiffness = "stiff"\n', "precision_params.stiffness"),
    ('[precision_params]\ntranslational_stifness = 2000\n',
     "'precision_params.translational_stifness' is not a parameter .* did you mean 'translational_stiffness'"),
    ('[precision_params]\ntranslational_stiffness = 60000\n', r"precision_params.translational_stiffness' = 60000 is outside"),
    ('pos_scale = 30\n', "'pos_scale' = 30.0 exceeds 0.1"),
    ('rot_scale = 3.0\n', "'rot_scale' = 3.0 exceeds 0.5"),
])
def test_bad_values_name_the_file_and_field(tmp_path, edit, field):
    text = VALID.replace("[[cameras]]", edit + "\n[[cameras]]", 1) if not edit.startswith("[") else VALID + edit
    path = write(tmp_path, text)
    with pytest.raises(TaskConfigError, match=field) as err:
        load_task_config(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("old, new, field", [
    ("xyz_low = [0.3, -0.2, 0.05]", "xyz_low = [0.3, -0.2]", "xyz_low"),
    ("reset_pose = [0.5, 0.0, 0.2, -3.1, 0.0, 0.0]", "reset_pose = [0.9, 0.0, 0.2, 3.14, 0.0, 0.0]", "reset_pose"),
    ("reset_pose = [0.5, 0.0, 0.2, -3.1, 0.0, 0.0]", "reset_pose = [0.5, 0.0, 0.2, 2.5, 0.0, 0.0]", "reset_pose"),
    ("xyz_high = [0.7, 0.2, 0.4]", "xyz_high = [0.2, 0.2, 0.4]", "xyz_low"),
    ('server_url = "http://127.0.0.2:5000/"', 'server_url = "127.0.0.2:5000"', "server_url"),
    ('kind = "synthetic"', 'kind = "webcam"', r"cameras\[0\]"),
    ('size = [64, 64]', 'size = [64, 64]\nzoom = 2', r"cameras\[0\]\.zoom"),
    ('kind = "synthetic"', 'kind = "realsense"', r"cameras\[0\]\.device' is required for a realsense camera"),
    ('kind = "synthetic"', 'kind = "opencv"\ndevice = "/dev/video0"\n[[cameras]]\nname = "front"\nkind = "opencv"\n'
                           'device = "/dev/video0"', r"cameras\[1\]\.device': '/dev/video0' is already camera 'wrist'"),
])
def test_bad_fields_name_the_file_and_field(tmp_path, old, new, field):
    path = write(tmp_path, VALID.replace(old, new))
    with pytest.raises(TaskConfigError, match=field) as err:
        load_task_config(path)
    assert str(path) in str(err.value)


def test_unknown_and_missing_keys_are_refused(tmp_path):
    path = write(tmp_path, "serverurl = 'http://x/'\n" + VALID)
    with pytest.raises(TaskConfigError, match="unknown key 'serverurl'") as err:
        load_task_config(path)
    assert str(path) in str(err.value)
    path = write(tmp_path, VALID.replace('instruction = "do the test task"', ""), "no_instruction.toml")
    with pytest.raises(TaskConfigError, match="'instruction' is required"):
        load_task_config(path)
    with pytest.raises(TaskConfigError, match="unknown override 'server'"):
        load_task_config(write(tmp_path, VALID), server="http://x/")


def test_teleop_tables_configure_the_lab_devices(tmp_path, monkeypatch):
    import sys
    import time
    from types import SimpleNamespace

    from vlarft.robot_io.teleop import make_device_for

    teleop = '\n[teleop.spacemouse]\nbutton_events = {12 = "success", 13 = "failure"}\ndead_zone = 0.1\n'
    config = load_task_config(write(tmp_path, VALID + teleop))
    assert config.teleop == {"spacemouse": {"button_events": {12: "success", 13: "failure"}, "dead_zone": 0.1}}
    assert load_task_config(write(tmp_path, VALID, "plain.toml")).teleop == {}
    # make_device_for applies them (FrankaEnv exposes them as `teleop_options`); hidapi faked:
    # one SpaceMouse Pro whose reads time out.
    device = SimpleNamespace(open_path=lambda path: None, close=lambda: None,
                             read=lambda size, timeout_ms: time.sleep(timeout_ms / 1000) or [])
    pro = {"vendor_id": 0x046D, "product_id": 0xC62B, "path": b"/dev/hidraw1", "usage_page": 1, "usage": 8}
    monkeypatch.setitem(sys.modules, "hid", SimpleNamespace(enumerate=lambda: [pro], device=lambda: device))
    env = SimpleNamespace(teleop_options=config.teleop)
    env.unwrapped = env
    mouse = make_device_for("spacemouse", env)
    mouse.close()
    assert mouse.config.button_events == {12: "success", 13: "failure"} and mouse.config.dead_zone == 0.1
    with pytest.raises(TaskConfigError, match=r"teleop\.joystick9000"):
        load_task_config(write(tmp_path, VALID + "\n[teleop.joystick9000]\ngain = 1\n", "bad.toml"))
    with pytest.raises(TaskConfigError, match=r"teleop\.spacemouse"):
        load_task_config(write(tmp_path, VALID + '\n[teleop]\nspacemouse = "pro"\n', "bad2.toml"))


def test_syntax_errors_and_missing_files_name_the_file(tmp_path):
    path = write(tmp_path, VALID + "\ncontrol_hz = = 3\n")
    with pytest.raises(TaskConfigError, match="not valid TOML") as err:
        load_task_config(path)
    assert str(path) in str(err.value)
    with pytest.raises(TaskConfigError, match="pick_place"):  # lists the bundled tasks
        load_task_config(tmp_path / "nowhere.toml")


def test_bundled_files_live_in_the_package_data_folder():
    assert TASKS_DIR.name == "tasks" and (TASKS_DIR / "pick_place.toml").is_file()
    config = load_task_config("pick_place")
    assert math.isclose(config.reset_pose[3], math.pi, abs_tol=1e-6)
