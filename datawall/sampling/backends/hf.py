"""Any Hugging Face causal-LM directory, sampled through transformers' generate (one prompt at a time)."""

from __future__ import annotations

import time
from pathlib import Path

from datawall.device import require_device
from datawall.economics.cost import CostModel
from datawall.errors import DatawallError
from datawall.sampling.backends import Completion


class HFBackend:
    """Samples from a transformers AutoModelForCausalLM directory on cpu or cuda."""

    name = "hf"

    def __init__(self, model_dir: str | Path, device: str = "cpu", price: str | None = None,
                 prices: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise DatawallError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
        require_device(device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
            self.model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
        except (OSError, ValueError) as e:
            raise DatawallError(f"{model_dir}: transformers cannot load it ({str(e).splitlines()[0]})") from None
        self.device = device
        self.price = price or ("h100" if device.startswith("cuda") else "local-cpu")
        self.prices = prices
        # matmul weights (attention, MLP, output head): 2 N FLOPs per token
        self.params = float(sum(m.weight.numel() for m in self.model.modules() if isinstance(m, torch.nn.Linear)))
        files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
        stamp = ",".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        self.identity = f"hf:{model_dir.resolve()}:{stamp}"

    def sample(self, prompts: list[str], n: int, max_tokens: int, temperature: float, top_p: float | None,
               stop: list[str] | None, seed: int) -> list[list[Completion]]:
        """n completions per prompt; temperature 0 (or below 1e-5) is greedy: one completion, repeated n times."""
        import torch

        from datawall.model.sampler import check_sampling, is_greedy

        check_sampling(temperature, top_p, "hf backend")
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        out = []
        for i, prompt in enumerate(prompts):
            ids = self.tokenizer(prompt, return_tensors="pt").input_ids
            bos = self.tokenizer.bos_token_id
            if bos is not None and (ids.shape[1] == 0 or ids[0, 0] != bos):
                ids = torch.cat([torch.tensor([[bos]]), ids], dim=1)  # as trained: bos first
            ids = ids.to(self.device)
            torch.manual_seed(seed + i)  # transformers samples from torch's global generator
            # below GREEDY_TEMPERATURE transformers would divide the logits into inf and NaN: greedy, as ours;
            # greedy draws one sequence (transformers refuses num_return_sequences > 1 then) and repeats it
            greedy = is_greedy(temperature)
            kwargs = {"do_sample": False} if greedy else \
                {"do_sample": True, "temperature": temperature, "top_p": top_p or 1.0}
            start = time.perf_counter()
            with torch.inference_mode():
                seqs = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                           num_return_sequences=1 if greedy else n, pad_token_id=pad,
                                           eos_token_id=eos, stop_strings=stop or None,
                                           tokenizer=self.tokenizer if stop else None, **kwargs)
            share = (time.perf_counter() - start) / n
            row = []
            for seq in seqs[:, ids.shape[1]:].tolist() * (n if greedy else 1):
                length = seq.index(eos) + 1 if eos in seq else len(seq)
                text = self.tokenizer.decode(seq[:length], skip_special_tokens=True)
                for s in stop or []:
                    text = text.split(s)[0]
                row.append(Completion(text, length, ids.shape[1], share))
            out.append(row)
        return out

    def cost_model(self) -> CostModel:
        """2 N FLOPs per token from the model's linear layers, priced by the named entry."""
        return CostModel.for_backend(self.price, params=self.params, prices=self.prices)

    def count_tokens(self, text: str) -> int | None:
        """Tokens of text under the model's tokenizer (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)
