"""Small random Hugging Face Llama checkpoints with real BPE tokenizers, built by transformers in the test."""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = ["Question: what is 12 plus 30?\nAnswer: 12 + 30 = 42\n#### 42",
         "The quick brown fox jumps over the lazy dog. " * 3,
         "def f(x):\n    return x * 2  # doubles\n", "Ünïcödé, émojis 🙂 and tabs\tand  spaces"] * 4

# shapes the issue names: GQA, a rope theta, Llama 3's rope scaling, linear scaling, tied and untied embeddings
SHAPES = {
    "gqa-tied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True, rope_theta=100000.0),
    "mha-untied": dict(num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),
    "llama3-rope": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True, rope_theta=500000.0,
                        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "linear-rope": dict(num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
                        rope_scaling={"rope_type": "linear", "factor": 4.0}),
}


def bpe_tokenizer(vocab_size: int = 400, adds_bos: bool = True):
    """A transformers fast tokenizer around a byte-level BPE trained here, with Llama-style special tokens
    (`<s>`, `</s>`, `<unk>`, ChatML turn tokens) and a chat template; bos added on encode when adds_bos."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                           special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>", chat_template=CHAT_TEMPLATE)


def random_llama(directory: Path, shape: str = "gqa-tied", seed: int = 0, adds_bos: bool = True,
                 layers: int = 2, dim: int = 64) -> Path:
    """Save a random-weight LlamaForCausalLM of one of SHAPES with a BPE tokenizer to directory (fp32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bpe_tokenizer(adds_bos=adds_bos)
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=dim, intermediate_size=96, num_hidden_layers=layers,
                         max_position_embeddings=256, bos_token_id=1, eos_token_id=2, pad_token_id=2,
                         **SHAPES[shape])
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # norms away from 1, so a missed norm weight shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
