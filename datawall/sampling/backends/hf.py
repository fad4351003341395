"""Any Hugging Face causal-LM directory, sampled through transformers' generate (one prompt at a time)."""

from __future__ import annotations

import time
from pathlib import Path

from datawall.device import require_device
from datawall.economics.cost import CostModel
from datawall.errors import DatawallError
from datawall.sampling.backends import Completion, Prompt


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
        self.model_dir, self.device = model_dir, device
        self.price = price or ("h100" if device.startswith("cuda") else "local-cpu")
        self.prices = prices
        # matmul weights (attention, MLP, output head): 2 N FLOPs per token
        self.params = float(sum(m.weight.numel() for m in self.model.modules() if isinstance(m, torch.nn.Linear)))
        files = sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin"))
        stamp = ",".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
        self.identity = f"hf:{model_dir.resolve()}:{stamp}"

    def prompt_ids(self, prompt: Prompt) -> list[int]:
        """Token ids the model is given: chat messages through the tokenizer's chat template (which writes its
        own special tokens, bos too if the model has one), completion text with bos in front."""
        if not isinstance(prompt, str):
            if not getattr(self.tokenizer, "chat_template", None):
                raise DatawallError(f"{self.model_dir}: --chat: this model has no chat template "
                                    "(its tokenizer holds no chat_template)")
            return list(self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                           return_dict=True)["input_ids"])
        ids = self.tokenizer(prompt).input_ids
        bos = self.tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]  # as trained: bos first
        return ids

    def sample(self, prompts: list[Prompt], n: int, max_tokens: int, temperature: float, top_p: float | None,
               stop: list[str] | None, seed: int) -> list[list[Completion]]:
        """n completions per prompt; temperature 0 (or below 1e-5) is greedy: one completion, repeated n times."""
        import torch

        from datawall.model.sampler import check_sampling, is_greedy

        check_sampling(temperature, top_p, "hf backend")
        eos = self.tokenizer.eos_token_id
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        # a chat model may end its turn with a token of its generation config (<|im_end|>, <|eot_id|>) rather
        # than the tokenizer's eos: any of them ends a completion
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        ends = list(dict.fromkeys(t for t in [eos, *(configured if isinstance(configured, list) else [configured])]
                                  if t is not None))
        out = []
        for i, prompt in enumerate(prompts):
            ids = torch.tensor([self.prompt_ids(prompt)], device=self.device)
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
                                           eos_token_id=ends or None, stop_strings=stop or None,
                                           tokenizer=self.tokenizer if stop else None, **kwargs)
            share = (time.perf_counter() - start) / n
            row = []
            for seq in seqs[:, ids.shape[1]:].tolist() * (n if greedy else 1):
                length = next((k + 1 for k, t in enumerate(seq) if t in ends), len(seq))
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
