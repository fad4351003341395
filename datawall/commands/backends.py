"""The sampling-backend flags shared by `think` and `synth generate`: check them and build the one backend asked for."""

from __future__ import annotations

from pathlib import Path

from datawall.errors import DatawallError
from datawall.sampling.backends import Backend


def check_backend_flags(model: Path | None, hf: Path | None, endpoint: str | None, api_model: str | None,
                        api_key_env: str | None) -> None:
    """One line unless exactly one of --model, --hf, --endpoint is given (an endpoint with its --api-model)."""
    if sum(x is not None for x in (model, hf, endpoint)) != 1:
        raise DatawallError("give exactly one of --model DIR, --hf DIR or --endpoint URL (with --api-model NAME)")
    if endpoint is not None and not api_model:
        raise DatawallError("--endpoint needs --api-model NAME (the model id the server serves)")
    if endpoint is None and (api_model or api_key_env):
        raise DatawallError("--api-model and --api-key-env go with --endpoint")


def build_backend(model: Path | None = None, hf: Path | None = None, endpoint: str | None = None,
                  api_model: str | None = None, api_key_env: str | None = None, chat: bool = False,
                  concurrency: int = 4, timeout: float = 120.0, retries: int = 5, api_params: float | None = None,
                  price: str | None = None, prices: Path | None = None, device: str = "cpu",
                  compile_step: bool = False) -> Backend:
    """datawall's engine for --model, transformers for --hf, or the OpenAI-compatible --endpoint (checked first);
    compile_step: --model's decode step compiled (see `datawall.model.compiled_decode`)."""
    check_backend_flags(model, hf, endpoint, api_model, api_key_env)
    if compile_step and model is None:
        raise DatawallError("--compile compiles datawall's engine: it goes with --model DIR, not --hf or --endpoint")
    price_file = str(prices) if prices else None
    if model is not None:
        from datawall.sampling.backends.local import LocalBackend

        return LocalBackend(model, device=device, price=price, prices=price_file, compile_step=compile_step)
    if hf is not None:
        from datawall.sampling.backends.hf import HFBackend

        return HFBackend(hf, device=device, price=price, prices=price_file)
    from datawall.sampling.backends.openai_endpoint import OpenAIEndpoint

    return OpenAIEndpoint(endpoint, api_model, api_key_env=api_key_env, chat=chat, concurrency=concurrency,
                          timeout_s=timeout, max_retries=retries, price=price, prices=price_file, params=api_params)


def close_backend(backend: Backend) -> None:
    """Release what a backend holds open (the endpoint's connection pool)."""
    if hasattr(backend, "close"):
        backend.close()
