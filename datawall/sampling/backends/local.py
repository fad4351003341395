"""A datawall checkpoint sampled in-process with the KV-cache sampler (one shared prefill per prompt)."""

from __future__ import annotations

import time
from pathlib import Path

from datawall.device import require_device
from datawall.economics.cost import CostModel
from datawall.sampling.backends import Completion, Prompt


class LocalBackend:
    """Samples from a checkpoint directory on cpu or cuda."""

    name = "local"

    def __init__(self, model_dir: str | Path, device: str = "cpu", price: str | None = None,
                 prices: str | None = None, batch_size: int = 64, compile_step: bool = False):
        from datawall.model import checkpoint_dir, load_checkpoint

        model_dir = checkpoint_dir(model_dir)
        require_device(device)
        self.ckpt = load_checkpoint(model_dir)
        self.model = self.ckpt.model.to(device).eval()
        self.tokenizer = self.ckpt.tokenizer
        self.device = device
        self.batch_size = batch_size
        self.price = price or ("h100" if device.startswith("cuda") else "local-cpu")
        self.prices = prices
        weights = model_dir / "model.safetensors"
        stat = weights.stat()
        # path + size + mtime: cheap to compute, and changes whenever the weights are rewritten
        self.identity = f"local:{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        # the compiled step's samples may differ from the eager step's by float rounding: cached apart
        self.compile_step = compile_step
        if compile_step:
            self.identity += ":compiled"

    def sample(self, prompts: list[Prompt], n: int, max_tokens: int, temperature: float, top_p: float | None,
               stop: list[str] | None, seed: int) -> list[list[Completion]]:
        """n completions per prompt, batched so that at most batch_size prompts share a forward pass; chat
        messages are rendered by the checkpoint's chat template (its special tokens included)."""
        from datawall.model.sampler import generate

        out: list[list[Completion]] = []
        per_batch = max(1, self.batch_size // n)
        for i in range(0, len(prompts), per_batch):
            chunk = [p if isinstance(p, str) else self.tokenizer.encode_chat(p) for p in prompts[i:i + per_batch]]
            start = time.perf_counter()
            samples = generate(self.model, self.tokenizer, chunk, n=n, max_new_tokens=max_tokens,
                               temperature=temperature, top_p=top_p, stop=stop, seed=seed, device=self.device,
                               return_logprobs=False, compile_step=self.compile_step)
            share = (time.perf_counter() - start) / (len(chunk) * n)
            out += [[Completion(s.text, s.completion_tokens, s.prompt_tokens, share) for s in row] for row in samples]
        return out

    def cost_model(self) -> CostModel:
        """Exact FLOPs from the model's shape, priced by the named price-table entry."""
        return CostModel.for_backend(self.price, config=self.ckpt.config, prices=self.prices)

    def count_tokens(self, text: str) -> int | None:
        """Tokens of text under the checkpoint's tokenizer."""
        return len(self.tokenizer.encode(text))
