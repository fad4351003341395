"""Every command that takes --device refuses an unknown or absent device in one line, before writing anything
(issue 17 item 4): no torch RuntimeError or 'Torch not compiled with CUDA' traceback, no config.json left."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_arith import TASK, random_checkpoint
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError

DATAWALL = str(Path(sys.executable).parent / "datawall")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("device") / "ckpt", TASK.alphabet, max_seq_len=64)


COMMANDS = {
    "pretrain": lambda ck, out: ["pretrain", "--task", "arith", "--size", "100k", "--tokens", "2k", "--out", out],
    "eval": lambda ck, out: ["eval", "--model", ck, "--task", "arith", "--problems", "2"],
    "sample": lambda ck, out: ["sample", "--model", ck, "--prompt", "12+34="],
    "think": lambda ck, out: ["think", "--model", ck, "--task", "arith", "--problems", "2", "--n-max", "2",
                              "--out", out],
    "reward train": lambda ck, out: ["reward", "train", "--model", ck, "--task", "arith", "--problems", "2",
                                     "--out", out],
    "serve": lambda ck, out: ["serve", ck, "--port", "0"],
    "laws ladder": lambda ck, out: ["laws", "ladder", "--out", out],
}
# cuda:7 is absent both without CUDA and on a machine with fewer than 8 GPUs
BAD = ["tpu", "cuda:7"] + ([] if torch.cuda.is_available() else ["cuda"])
runner = CliRunner()


def _files(*roots: Path) -> set[str]:
    return {str(p) for root in roots if root.exists() for p in root.rglob("*")}


@pytest.mark.parametrize("device", BAD)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_device_is_refused_before_anything_is_written(command, device, checkpoint, tmp_path):
    out = tmp_path / "out"
    home = Path(os.environ["DATAWALL_HOME"])
    before = _files(tmp_path, home, checkpoint)
    result = runner.invoke(app, [*COMMANDS[command](str(checkpoint), str(out)), "--device", device])
    assert isinstance(result.exception, DatawallError), (result.output, result.exception)
    message = str(result.exception)
    assert message.startswith("--device: ") and repr(device) in message and "\n" not in message
    assert _files(tmp_path, home, checkpoint) == before and not out.exists()


@pytest.mark.parametrize("command", ["eval", "sample", "pretrain"])
def test_console_script_prints_one_line_and_exits_2(command, checkpoint, tmp_path):
    device = "cuda:7" if torch.cuda.is_available() else "cuda"  # was 'Torch not compiled with CUDA enabled'
    out = tmp_path / "out"
    proc = subprocess.run([DATAWALL, *COMMANDS[command](str(checkpoint), str(out)), "--device", device],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "" and not out.exists()
    assert proc.stderr.startswith("error: --device: ") and proc.stderr.count("\n") == 1, proc.stderr
