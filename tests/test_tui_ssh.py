"""`battui train` over real SSH: the connection drops under the dashboard and the run still completes.

Starts its own sshd on a free loopback port (a temporary host key, a temporary
authorized key, nothing read from ~/.ssh) and skips when that is impossible
(no openssh-server: `apt-get install -y openssh-server`; the CI script installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from battui.engine.runlock import live_pid
from tests.support.processes import batches_after, kill, log_has, of_type, running, training, wait_for

SSHD, SSH, KEYGEN = (shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None),
                     shutil.which("ssh"), shutil.which("ssh-keygen"))
pytestmark = pytest.mark.skipif(not (SSHD and SSH and KEYGEN), reason="openssh-server / client not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """(port, ssh argv prefix) of a private sshd that lets this user in with a throw-away key."""
    keys = tmp_path / "ssh"
    keys.mkdir(mode=0o700)
    for name in ("host", "user"):
        subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    (keys / "authorized_keys").write_text((keys / "user.pub").read_text())
    os.chmod(keys / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    port = free_port()
    (keys / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nPidFile {keys / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {keys / 'authorized_keys'}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
        "ClientAliveInterval 1\nClientAliveCountMax 2\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(keys / "sshd_config")], stdout=subprocess.DEVNULL,
                            stderr=open(keys / "sshd.log", "wb"))
    ssh = [SSH, "-p", str(port), "-i", str(keys / "user"), "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "127.0.0.1"]
    try:
        ok = wait_for(lambda: proc.poll() is None and subprocess.run(
            [*ssh, "true"], capture_output=True, timeout=20).returncode == 0, timeout=20, step=0.5)
        if not ok:
            pytest.skip(f"could not start sshd on 127.0.0.1:{port}: {(keys / 'sshd.log').read_text()[-300:]}")
        yield ssh
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


EPOCHS = 8  # 56 batches: the hang-up, two batches in, lands well inside the run on any machine


def test_dropped_ssh_connection_leaves_the_dashboard_run_to_complete(tmp_path, sshd):
    run = tmp_path / "runs" / "ssh"
    remote = (f"cd {tmp_path} && env TERM=xterm-256color PYTHONPATH={os.environ.get('PYTHONPATH', '')} "
              f"OMP_NUM_THREADS=1 {sys.executable} -m battui train --preset synthetic-tiny --device cpu "
              f"--epochs {EPOCHS} --run-name ssh")
    client = subprocess.Popen([*sshd[:-1], "-tt", sshd[-1], remote], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    pid = None
    try:
        assert wait_for(lambda: training(run), timeout=120), "the run did not start over ssh"
        pid = live_pid(run)
        client.send_signal(signal.SIGKILL)  # the connection drops: sshd closes the remote terminal
        hung_up = time.time()
        client.wait(timeout=10)
        assert wait_for(lambda: log_has(run, "terminal lost: training continues headless"), timeout=120), \
            "the trainer did not notice the hang-up"
        assert wait_for(lambda: of_type(run, "run_finished"), timeout=300)
        assert of_type(run, "run_finished")[-1]["status"] == "completed"
        # it lived on after the hang-up: it trained batches after it, up to the last epoch
        after = batches_after(run, hung_up)
        assert after and after[-1]["epoch"] == EPOCHS - 1
        assert wait_for(lambda: not running(pid), timeout=30), "the trainer outlived its run"
    finally:
        if client.poll() is None:
            client.kill()
        kill(pid)
