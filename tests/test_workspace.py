"""The install layout: our folders import as vlarft.*, and never shadow Hugging Face's `datasets`."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOP_LEVEL = ("datasets", "pipelines", "agents", "robot_io", "tools", "tests")


def test_top_level_folders_exist_without_init():
    for name in TOP_LEVEL:
        assert (REPO / name).is_dir(), name
        assert not (REPO / name / "__init__.py").exists(), f"{name}/__init__.py would shadow other packages"
    assert (REPO / "WORKSPACE.md").read_text().strip()


def test_hugging_face_datasets_wins_even_from_the_checkout_root(tmp_path):
    # A stand-in for HF's regular `datasets` package, installed after our checkout on sys.path.
    fake = tmp_path / "site" / "datasets"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("WHO = 'huggingface'\n")
    code = ("import datasets, vlarft.datasets.schema as s; "
            "print(datasets.WHO, s.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    who, schema_file = out.stdout.split()
    assert who == "huggingface"
    assert Path(schema_file) == REPO / "datasets" / "schema.py"


def test_lock_pins_a_version_inside_every_declared_range():
    """pyproject.toml declares ranges; requirements.lock (what tools/setup_env.sh installs) pins one
    version of each dependency and dev extra, inside its range."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            lock[canonicalize_name(name)] = version.strip()
    declared = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    assert len(declared) > 20
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{name} is not in requirements.lock"
        assert requirement.specifier.contains(lock[name], prereleases=True), (str(requirement), lock[name])
    assert lock["mujoco"].startswith("3.8.") and lock["gym-hil"] == "0.1.14"
