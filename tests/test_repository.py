"""What the repository ships: the license pyproject.toml declares, and no built artefacts."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_file_is_the_one_pyproject_declares():
    declared = re.search(r'^license = \{ text = "(\w+)" \}$', (ROOT / "pyproject.toml").read_text(),
                         re.M).group(1)
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License\n")
    assert "Copyright (c) 2026 descend contributors" in text


def test_no_wheel_is_committed_and_wheels_are_ignored():
    if (ROOT / ".git").exists():
        tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "*.whl"], capture_output=True,
                                 text=True, check=True, timeout=60).stdout.split()
    else:  # an unpacked source tree
        tracked = [str(p) for p in ROOT.rglob("*.whl")]
    assert tracked == []
    assert "*.whl" in (ROOT / ".gitignore").read_text().splitlines()
