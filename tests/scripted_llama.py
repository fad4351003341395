"""A Hugging Face Llama whose greedy completion of any 'Answer:\\n' prompt is scripted: '#### 42\\n\\nQuestion: 7'.

Its attention and MLP write nothing (zero output projections), the embeddings are one-hot, so the next token
is a function of the current token alone, and the output head maps each token of the script to the next: the
model answers, then runs on into the next question as a base model does after a few-shot prompt. The pieces
of the script are whole tokens (added tokens), so each appears once in the chain.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hf_llama import CHAT_TEMPLATE

PIECES = ["####", " 42", "\n\n", "Question:", " 7"]
SCRIPT = "".join(PIECES)
TEXTS = ["Question: what is 40 plus 2?\nAnswer:\n#### 42\n\nQuestion: what is 3 plus 4?\nAnswer:\n",
         "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"] * 8


def scripted_llama(directory: Path, chat_template: str | None = CHAT_TEMPLATE) -> Path:
    """Save the scripted model (BPE tokenizer with `chat_template`) to directory; the script ends with eos."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.add_tokens([AddedToken(p, normalized=False) for p in PIECES])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B:1",
                                                       special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="</s>", chat_template=chat_template)
    vocab = len(tokenizer)
    newline = tokenizer("Answer:\n", add_special_tokens=False).input_ids[-1]  # every prompt's last token
    chain = [newline, *tokenizer(SCRIPT, add_special_tokens=False).input_ids, tokenizer.eos_token_id]
    assert len(set(chain)) == len(chain) == len(PIECES) + 2, [tokenizer.decode([i]) for i in chain]
    dim = -(-vocab // 8) * 8
    config = LlamaConfig(vocab_size=vocab, hidden_size=dim, intermediate_size=16, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=False)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.eye(vocab, dim))
        model.model.layers[0].self_attn.o_proj.weight.zero_()
        model.model.layers[0].mlp.down_proj.weight.zero_()
        head = torch.zeros(vocab, dim)
        for a, b in zip(chain[:-1], chain[1:], strict=True):
            head[b, a] = 1.0
        model.lm_head.weight.copy_(head)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
