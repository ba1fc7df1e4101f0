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
