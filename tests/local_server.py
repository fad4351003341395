"""A real uvicorn server on 127.0.0.1 in a background thread, for the tests that talk HTTP to an app."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(port: int, seconds: float = 60.0) -> None:
    """Poll /health until it answers (bounded)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"server on port {port} did not come up in {seconds} s")


@contextmanager
def running(app) -> Iterator[int]:
    """Serve `app` (it must answer GET /health) until the block ends; yields the port."""
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        wait_until_up(port)
        yield port
    finally:
        srv.should_exit = True
        thread.join(10)
