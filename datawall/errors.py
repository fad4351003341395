"""The one exception type for expected mistakes (bad flags, configs, data rows, checkpoints)."""


class DatawallError(Exception):
    """An expected, user-facing error: the CLI prints its message on one line and exits non-zero."""
