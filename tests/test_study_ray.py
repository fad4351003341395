"""The study on a Ray cluster of two nodes started as a user starts one (`ray start --head`, then `ray start
--address`, one CPU each) gives the same run directories and the same summary as the local executor."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from study_tiny import TINY_SPEC, run_study, tiny_study

pytestmark = pytest.mark.slow
RAY = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(address: str, env: dict) -> int:
    """Alive nodes of the cluster, asked from a separate process (this one must not hold a Ray connection)."""
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(len([n for n in ray.nodes() " \
           "if n['Alive']]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two Ray nodes on this machine, one CPU each; `--block` ties each node's processes to one we can stop
    (`ray stop` would stop every Ray on the machine, other tests' included)."""
    if RAY is None:
        pytest.fail("the ray command is missing (a dev dependency)")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("ray_logs")
    # a HOME of its own: a ~/.ray/auth_token left by someone's earlier `ray start` turns on token auth in the nodes,
    # which the driver (auth mode disabled) then cannot pass
    # and no RAY_* settings a Ray driver earlier in this pytest worker left in os.environ (auth mode among them)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, "RAY_USAGE_STATS_ENABLED": "0",
           "HOME": str(logs)}
    # every node on the loopback address the test asks (Ray otherwise picks the machine's own IP, which a probe of
    # 127.0.0.1 may not reach), and a generous deadline: on a loaded 2-core machine a node takes a minute to start
    common = ["--num-cpus", "1", "--disable-usage-stats", "--node-ip-address", "127.0.0.1", "--block"]
    head = subprocess.Popen([RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common],
                            stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT, env=env)
    procs = [head]
    try:
        deadline = time.time() + 300
        worker = None
        while time.time() < deadline:
            if worker is None and _nodes(address, env) >= 1:
                worker = subprocess.Popen([RAY, "start", "--address", address, *common],
                                          stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT, env=env)
                procs.append(worker)
            if worker is not None and _nodes(address, env) == 2:
                break
            time.sleep(2)
        else:
            pytest.fail(f"the two-node Ray cluster did not come up; logs in {logs}")
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()


def _comparable(x):
    """A summary without what differs between two correct runs of the same study: wall seconds and file paths."""
    if isinstance(x, dict):
        return {k: _comparable(v) for k, v in x.items() if "seconds" not in k and k != "files"}
    if isinstance(x, list):
        return [_comparable(v) for v in x]
    return x


def test_a_two_node_cluster_gives_the_local_runs_and_summary(cluster, tmp_path_factory, tmp_path):
    local_root, local = tiny_study(tmp_path_factory)
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY_SPEC)
    result = run_study(str(spec), "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out"),
                       "--executor", "ray", "--address", cluster, "--json")
    assert result.exit_code == 0, (result.stderr, result.exception)
    remote = json.loads(result.stdout)
    names = sorted(p.name for p in (local_root / "store" / "runs").iterdir())
    assert sorted(p.name for p in (tmp_path / "store" / "runs").iterdir()) == names
    assert _comparable(remote) == _comparable(local)
    import ray

    assert not ray.is_initialized()  # the driver let go of the cluster it joined
