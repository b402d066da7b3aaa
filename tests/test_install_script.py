"""scripts/install.sh with stand-ins for apt-get and python3: it waits for another apt's lock, then goes on."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_APT = """#!/bin/bash
# Holds "the lock" for the first $LOCKED calls, as unattended upgrades would; records every call.
echo "$*" >> "$CALLS"
n=$(wc -l < "$CALLS")
if [ "$n" -le "$LOCKED" ]; then
  echo "E: Could not get lock /var/lib/dpkg/lock-frontend. It is held by process 4242 (unattended-upgr)" >&2
  exit 100
fi
exit 0
"""

FAKE_PYTHON3 = """#!/bin/bash
# `python3 -m venv .venv`: a .venv whose python and pip only say they ran.
mkdir -p .venv/bin
printf '#!/bin/bash\\necho "pip $*" >> "$CALLS"\\n' > .venv/bin/pip
printf '#!/bin/bash\\necho "torch x diffusers y gradio z"\\n' > .venv/bin/python
chmod +x .venv/bin/pip .venv/bin/python
"""


def _run(tmp_path: Path, locked: int, wait_s: int) -> tuple[subprocess.CompletedProcess, list[str]]:
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "install.sh", repo / "scripts" / "install.sh")
    bin_ = tmp_path / "bin"  # no ffmpeg, espeak-ng or chromium here: the script must apt-get them
    bin_.mkdir()
    for tool in ("dirname", "id", "grep", "sleep", "wc", "mkdir", "chmod", "cat"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed")
        (bin_ / tool).symlink_to(found)
    for name, body in (("apt-get", FAKE_APT), ("python3", FAKE_PYTHON3), ("sudo", '#!/bin/bash\nexec "$@"\n')):
        (bin_ / name).write_text(body)
        (bin_ / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.touch()
    env = {
        "PATH": str(bin_),
        "HOME": str(tmp_path),
        "CALLS": str(calls),
        "LOCKED": str(locked),
        "APT_LOCK_WAIT": str(wait_s),
        "APT_LOCK_POLL": "0.1",
    }
    bash = shutil.which("bash") or "/bin/bash"
    res = subprocess.run(
        [bash, str(repo / "scripts" / "install.sh")], env=env, capture_output=True, text=True, timeout=120
    )
    return res, calls.read_text().splitlines()


def test_install_waits_for_a_held_apt_lock_then_goes_on(tmp_path):
    res, calls = _run(tmp_path, locked=3, wait_s=300)
    assert res.returncode == 0, res.stderr
    assert "waiting up to 300 s" in res.stdout and res.stdout.count("waiting") == 1
    apt = [c for c in calls if not c.startswith("pip")]
    assert len(apt) == 5 and apt[-2].endswith("update -qq") and "install -y" in apt[-1]
    assert all("DPkg::Lock::Timeout=300" in c for c in apt)  # apt itself waits too, where it can
    assert any(c.startswith("pip install") for c in calls)  # and the install went on


def test_install_gives_up_on_a_lock_held_too_long(tmp_path):
    res, calls = _run(tmp_path, locked=10_000, wait_s=1)
    assert res.returncode != 0
    assert "Could not get lock" in res.stderr
    assert not any(c.startswith("pip") for c in calls)
    assert os.path.exists(tmp_path / "calls.txt")
