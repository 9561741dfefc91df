"""Scale-out for real: two `edgevlm serve` replicas on loopback behind nginx with the shipped config.

Bounded: every request has a timeout, loops have fixed counts, and every process is torn down
in a finally block even when an assertion fails. Loopback only.
"""

from __future__ import annotations

import concurrent.futures as futures
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "edgevlm.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
FAILOVER_WINDOW_S = 2.0  # fail_timeout in the upstream lines: a dead replica is skipped after this
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Replica:
    port: int
    bundle: Path
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "edgevlm.cli", "serve", "--bundle", str(self.bundle),
                   "--host", "127.0.0.1", "--port", str(self.port), "--model-name", "edgevlm"]
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"replica on {self.port} not ready: {self.log.read_text()[-2000:]}")

    def served(self) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return sum(float(v) for v in re.findall(r'^edgevlm:request_success_total\{[^}]*\} ([0-9.e+]+)$', text, re.M))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _render_nginx(workdir: Path, port: int, replicas: list[Replica]) -> Path:
    upstreams = " ".join(f"server 127.0.0.1:{r.port} max_fails=1 fail_timeout={int(FAILOVER_WINDOW_S)}s;"
                         for r in replicas)
    site = (TEMPLATE.read_text().replace("${NGINX_PORT}", f"127.0.0.1:{port}")
            .replace("${EDGEVLM_UPSTREAM_SERVERS}", upstreams).replace("${EDGEVLM_RATE_LIMIT}", "1000r/s"))
    (workdir / "edgevlm.conf").write_text(site)
    main = workdir / "nginx.conf"
    main.write_text(
        f"daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log {workdir}/access.log; client_body_temp_path {workdir}/body;\n"
        f"  proxy_temp_path {workdir}/proxy; include {workdir}/edgevlm.conf; }}\n"
    )
    return main


@pytest.fixture()
def cluster(demo_bundle: Path, tmp_path: Path) -> Iterator[tuple[str, list[Replica]]]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed (.ci/run installs Debian's nginx)")
    replicas = [Replica(_free_port(), demo_bundle, tmp_path / f"replica{i}.log") for i in range(2)]
    port = _free_port()
    config = _render_nginx(tmp_path, port, replicas)
    nginx = None
    try:
        for replica in replicas:
            replica.start()
        for replica in replicas:
            replica.wait_ready()
        subprocess.run([NGINX, "-t", "-c", str(config), "-p", str(tmp_path)], check=True, capture_output=True)
        with (tmp_path / "nginx.out").open("wb") as out:
            nginx = subprocess.Popen([NGINX, "-c", str(config), "-p", str(tmp_path)],
                                     stdout=subprocess.DEVNULL, stderr=out)
        _wait_port(port)
        yield f"http://127.0.0.1:{port}", replicas
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(timeout=10)
        for replica in replicas:
            replica.stop(signal.SIGKILL)


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nginx did not listen on {port}")


def _ask(base: str, stream: bool = False, max_tokens: int = 8) -> tuple[str, str]:
    """One chat request through nginx: ("ok", text) or ("error", why). Never hangs (timeouts)."""
    body = {"model": "edgevlm", "messages": [{"role": "user", "content": "How many shapes are there?"}],
            "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    try:
        if not stream:
            r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=60)
            return ("ok", r.text) if r.status_code == 200 else ("error", f"{r.status_code} {r.text[:200]}")
        with httpx.stream("POST", f"{base}/v1/chat/completions", json=body, timeout=60) as r:
            if r.status_code != 200:
                return "error", f"{r.status_code}"
            lines = [line for line in r.iter_lines() if line]
        done = lines[-1:] == ["data: [DONE]"] and not any('"error"' in line for line in lines)
        return ("ok", "\n".join(lines)) if done else ("error", "stream ended early")
    except httpx.HTTPError as exc:
        return "error", type(exc).__name__


def test_requests_spread_over_both_replicas(cluster: tuple[str, list[Replica]]) -> None:
    base, replicas = cluster
    with futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _ask(base), range(200)))
    errors = [why for status, why in results if status != "ok"]
    assert not errors, errors[:5]
    shares = [replica.served() for replica in replicas]
    assert sum(shares) >= 200 and min(shares) >= 20, shares


def test_killed_replica_fails_cleanly_then_survivor_serves_then_restart_rejoins(
    cluster: tuple[str, list[Replica]],
) -> None:
    base, replicas = cluster
    victim, survivor = replicas
    with futures.ThreadPoolExecutor(8) as pool:
        in_flight = [pool.submit(_ask, base, True, 48) for _ in range(16)]
        time.sleep(0.5)
        assert victim.process is not None
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(timeout=10)
        killed_at = time.monotonic()
        # Requests that were on the victim end with an error or a cut stream, never a hang.
        outcomes = [f.result(timeout=90) for f in in_flight]
    assert all(status in ("ok", "error") for status, _ in outcomes)
    time.sleep(max(0.0, FAILOVER_WINDOW_S - (time.monotonic() - killed_at)))
    after = [_ask(base) for _ in range(20)]
    assert all(status == "ok" for status, _ in after), after
    victim.start()
    victim.wait_ready()
    before_restart = victim.served()
    time.sleep(FAILOVER_WINDOW_S)
    with futures.ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda _: _ask(base), range(40)))
    assert all(status == "ok" for status, _ in again), again
    assert victim.served() > before_restart, "restarted replica took no traffic"
    assert survivor.process is not None and survivor.process.poll() is None
