"""`make lab`: the command the Makefile runs starts a JupyterLab that serves the notebooks."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN = "rpo-tutorial-test-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def lab_command(port: int) -> list[str]:
    """The last line `make -n lab` prints (the jupyter command itself), for this interpreter's venv."""
    args = f"--no-browser --port {port} --ServerApp.ip=127.0.0.1 --ServerApp.token={TOKEN}"
    printed = subprocess.run(["make", "-s", "-n", "lab", f"VENV={sys.prefix}", f"LAB_ARGS={args}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    return shlex.split([line for line in printed if " jupyter lab" in line][-1])


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for_api(port: int, process: subprocess.Popen, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"jupyter lab exited with code {process.returncode}")
        try:
            return get_json(f"http://127.0.0.1:{port}/api?token={TOKEN}")
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"no answer from http://127.0.0.1:{port}/api within {timeout:.0f} s")


def test_the_notebook_extras_make_progress_bars_widgets():
    pytest.importorskip("jupyterlab")
    import tqdm.notebook

    assert tqdm.notebook.IProgress is not None  # else every notebook prints "IProgress not found"


def test_make_lab_serves_the_notebooks_with_a_python_kernel(tmp_path):
    pytest.importorskip("jupyterlab")
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port = free_port()
    command = lab_command(port)
    assert command[:4] == [str(Path(sys.prefix) / "bin" / "python"), "-m", "jupyter", "lab"]
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        assert "version" in wait_for_api(port, process)
        listing = get_json(f"http://127.0.0.1:{port}/api/contents?token={TOKEN}")
        names = {item["name"] for item in listing["content"]}
        expected = {path.name for path in (REPO_ROOT / "notebooks").glob("0*.ipynb")}
        assert len(expected) >= 7 and expected <= names
        specs = get_json(f"http://127.0.0.1:{port}/api/kernelspecs?token={TOKEN}")
        assert "python3" in specs["kernelspecs"]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # the server and any kernel it started
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
