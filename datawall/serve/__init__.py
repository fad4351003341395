"""OpenAI-compatible HTTP server for datawall checkpoints (`datawall serve`)."""

from datawall.serve.app import APIError, Limits, create_app

__all__ = ["APIError", "Limits", "create_app"]
