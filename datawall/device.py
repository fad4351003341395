"""Device names: `cpu`, `cuda` or `cuda:N`, checked once with one clear line instead of a torch traceback.

Importing this module does not import torch (configs validate device names without it).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

from datawall.errors import DatawallError

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_device_name(device: str, what: str = "--device") -> str:
    """`device` if it names a device datawall runs on (cpu, cuda, cuda:N), else a DatawallError naming `what`."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise DatawallError(f"{what}: unknown device {device!r}; use cpu, cuda or cuda:N")
    return device


def require_device(device: str, what: str = "--device") -> str:
    """`device` if its name is valid and it exists on this machine, else a DatawallError naming `what`."""
    check_device_name(device, what)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DatawallError(f"{what}: {device!r} but no CUDA device is available here (use cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise DatawallError(f"{what}: {device!r} but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _device_field(device: str) -> str:
    try:
        return check_device_name(device, "device")
    except DatawallError as e:
        raise ValueError(str(e).split(": ", 1)[1]) from None


# a pydantic field holding a device name (validated by name only: a spec may be planned where the GPU is not)
DeviceName = Annotated[str, AfterValidator(_device_field)]
