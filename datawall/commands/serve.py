"""`datawall serve MODEL_DIR`: an OpenAI-compatible HTTP server for a checkpoint."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from datawall.errors import DatawallError
from datawall.progress import stderr

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, so a busy port is one clear error instead of a uvicorn traceback."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        raise DatawallError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def serve(
    model_dir: Annotated[Path, typer.Argument(help="Checkpoint directory (or a run directory).")],
    host: Annotated[str, typer.Option(help="Address to bind; the default accepts local clients only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 picks a free one).")] = 8000,
    api_key_env: Annotated[str | None, typer.Option(help="Name of an environment variable holding the API key; "
                                                    "requests must then send 'Authorization: Bearer KEY'.")] = None,
    max_n: Annotated[int, typer.Option(help="Most samples per request (n x prompts).")] = 128,
    max_tokens: Annotated[int, typer.Option(help="Most new tokens per sample.")] = 1024,
    max_prompt_tokens: Annotated[int | None, typer.Option(help="Most prompt tokens (default: the context).")] = None,
    max_prompt_bytes: Annotated[int | None, typer.Option(help="Most UTF-8 bytes of a text prompt, refused before "
                                                         "tokenizing (default: 4x the longest vocabulary entry per "
                                                         "prompt token); request bodies may be 2 x max-n times "
                                                         "that, plus 1 MiB.")] = None,
    model_name: Annotated[str | None, typer.Option(help="Model id clients send (default: the directory name).")
                          ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    log_level: Annotated[str, typer.Option(help="uvicorn log level: warning, info, debug.")] = "info",
) -> None:
    """Serve a checkpoint over OpenAI's /v1/models, /v1/completions and /v1/chat/completions."""
    import uvicorn

    from datawall.model import checkpoint_dir
    from datawall.serve import Limits, create_app

    for flag, value in (("--max-n", max_n), ("--max-tokens", max_tokens), ("--max-prompt-tokens", max_prompt_tokens),
                        ("--max-prompt-bytes", max_prompt_bytes)):
        if value is not None and value < 1:
            raise DatawallError(f"{flag} must be >= 1, got {value}")
    if not 0 <= port <= 65535:
        raise DatawallError(f"--port must be in 0..65535, got {port}")
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise DatawallError(f"--api-key-env {api_key_env}: that environment variable is not set or empty")
    from datawall.device import require_device

    require_device(device)
    limits = Limits(max_n=max_n, max_tokens=max_tokens, max_prompt_tokens=max_prompt_tokens,
                    max_prompt_bytes=max_prompt_bytes)
    app = create_app(checkpoint_dir(model_dir), api_key=api_key, limits=limits, model_name=model_name,
                     device=device)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    stderr.print(f"serving model '{app.state.model_name}' at http://{shown}:{bound}/v1 "
                 f"({'API key from $' + api_key_env if api_key else 'no API key'})", markup=False, highlight=False)
    if api_key is None and host not in LOOPBACK:
        stderr.print(f"warning: listening on {host} without an API key: anyone who can reach this address can "
                     "use the model (--api-key-env VAR)", style="yellow", markup=False)
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


def register(app: typer.Typer) -> None:
    """Add `serve` to the root app."""
    app.command("serve")(serve)
