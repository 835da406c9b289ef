"""scripts/system-packages.sh, which `make test` runs first: it asks apt-get for exactly the
Debian packages that are missing (chromium, postgresql, g++) and for nothing when all are present.

The script runs with a PATH of stubs only, so the machine's own chromium, initdb and g++ are hidden;
the stub apt-get and sudo record their arguments instead of installing anything."""
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "system-packages.sh"
BASH = shutil.which("bash")
NOBODY = 65534

RECORDER = """#!/bin/sh
echo "{name} DEBIAN_FRONTEND=$DEBIAN_FRONTEND $*" >> "{log}"
"""
# sudo's stub records, takes the VAR=value words as sudo does, and runs the command.
SUDO = RECORDER + """while case "$1" in *=*) export "$1";; *) false;; esac; do shift; done
exec "$@"
"""


@pytest.fixture
def box():
    """A world-readable scratch directory (the not-root case runs the script as nobody)."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        yield Path(d)


def _stub(bindir, name, text):
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _run(box, present=(), pg_versions=(), sudo=True, apt=True, as_nobody=False):
    """Run a copy of the script with PATH = stubs only; returns (completed process, log lines)."""
    bindir, log = box / "bin", box / "calls.log"
    bindir.mkdir(exist_ok=True)
    for name in present:
        _stub(bindir, name, "#!/bin/sh\nexit 0\n")
    if apt:
        _stub(bindir, "apt-get", RECORDER.format(name="apt-get", log=log))
    if sudo:
        _stub(bindir, "sudo", SUDO.format(name="sudo", log=log))
    for version in pg_versions:
        _stub(box / "postgresql" / version / "bin", "initdb", "#!/bin/sh\nexit 0\n")
    script = box / "system-packages.sh"
    shutil.copy(SCRIPT, script)
    script.chmod(0o755)
    env = {"PATH": str(bindir), "PG_LIB_DIR": str(box / "postgresql"), "HOME": str(box)}
    extra = {"user": NOBODY} if as_nobody and os.geteuid() == 0 else {}
    proc = subprocess.run([BASH, str(script)], env=env, capture_output=True, text=True,
                          timeout=60, **extra)
    lines = log.read_text().splitlines() if log.exists() else []
    return proc, lines


def _apt_calls(lines):
    return [line for line in lines if line.startswith("apt-get ")]


def test_all_missing_installs_all_after_one_update(box):
    proc, lines = _run(box)
    assert proc.returncode == 0, proc.stderr
    assert _apt_calls(lines) == [
        "apt-get DEBIAN_FRONTEND=noninteractive update -qq",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq chromium postgresql g++",
    ]
    # root calls apt-get itself; anyone else goes through sudo
    used_sudo = any(line.startswith("sudo ") for line in lines)
    assert used_sudo == (os.geteuid() != 0)
    assert "chromium postgresql g++" in proc.stdout


def test_nothing_is_installed_when_all_are_on_path(box):
    proc, lines = _run(box, present=("chromium", "initdb", "g++"))
    assert proc.returncode == 0, proc.stderr
    assert lines == []
    assert proc.stdout == "" and proc.stderr == ""


def test_initdb_under_the_versioned_postgresql_directory_counts_as_present(box):
    proc, lines = _run(box, present=("g++",), pg_versions=("15",))
    assert proc.returncode == 0, proc.stderr
    assert _apt_calls(lines) == [
        "apt-get DEBIAN_FRONTEND=noninteractive update -qq",
        "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq chromium",
    ]


def test_only_postgresql_when_chromium_is_present(box):
    proc, lines = _run(box, present=("chromium", "g++"))
    assert proc.returncode == 0, proc.stderr
    assert _apt_calls(lines)[-1] == "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq postgresql"
    assert len(_apt_calls(lines)) == 2


def test_only_the_compiler_when_chromium_and_postgresql_are_present(box):
    """PyTensor's C backend compiles with g++."""
    proc, lines = _run(box, present=("chromium", "initdb"))
    assert proc.returncode == 0, proc.stderr
    assert _apt_calls(lines)[-1] == "apt-get DEBIAN_FRONTEND=noninteractive install -y -qq g++"


def test_not_root_without_sudo_says_what_to_install(box):
    proc, lines = _run(box, present=("initdb", "g++"), sudo=False, as_nobody=True)
    assert proc.returncode == 1
    assert lines == []
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "apt-get install chromium" in message and "as root" in message


def test_without_apt_get_it_names_the_missing_packages(box):
    proc, lines = _run(box, apt=False)
    assert proc.returncode == 1
    assert lines == []
    message = proc.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "chromium postgresql" in message and "apt-get" in message


def test_make_test_runs_the_script_before_pytest():
    recipe = (SCRIPT.parents[1] / "Makefile").read_text().split("\ntest:", 1)[1].split("\n\n", 1)[0]
    steps = [line.strip() for line in recipe.splitlines()[1:]]
    assert steps[0] == "bash scripts/system-packages.sh"
    assert "pytest" in steps[1]
