"""deploy/multihost: its units verify clean, its key commands run as written."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from busd.core.auth import load_key_dir, load_public, load_secret

ROOT = Path(__file__).resolve().parents[2]
MULTIHOST = ROOT / "deploy" / "multihost"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (.ci/run installs it as root)"
)
@pytest.mark.parametrize("unit", ["busd-master.service", "busd-joined.service"])
def test_unit_verifies_clean(unit: str, tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    text = (MULTIHOST / unit).read_text().replace("/opt/app/.venv", str(venv))
    path = tmp_path / "app.service"
    path.write_text(text)
    assert SYSTEMD_ANALYZE is not None
    done = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == ""


def test_the_key_commands_of_the_readme_run_as_written(tmp_path: Path) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", (MULTIHOST / "README.md").read_text(), re.S)
    assert blocks, "the README shows its key commands in a sh block"
    bindir = Path(sys.executable).parent
    for block in blocks:
        done = subprocess.run(
            ["sh", "-ec", block],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": f"{bindir}:/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # What they made is what busd accepts: the master's secret, a host's key in authorized/.
    load_secret(tmp_path / "keys-master" / "server.key_secret")
    host = load_public(tmp_path / "keys-host1" / "client.key")
    assert load_key_dir(tmp_path / "authorized") == frozenset({host})
