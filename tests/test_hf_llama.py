"""Foreign Hugging Face Llama checkpoints in datawall's engine: logits, tokenizer, chat template, sampling, save."""

from __future__ import annotations

import json

import pytest
import torch
from hf_llama import SHAPES, random_llama

from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model import generate, load_checkpoint, save_checkpoint

transformers = pytest.importorskip("transformers")
PROMPTS = ["Question: what is 12 plus 30?\nAnswer:", "The quick brown", "def f(x):", "Ünïcödé 🙂"]


def hf_logits(directory, ids: list[list[int]]) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.stack([model(torch.tensor([i])).logits[0] for i in ids])


@pytest.mark.parametrize("shape", list(SHAPES))
def test_logits_equal_transformers(tmp_path, shape):
    directory = random_llama(tmp_path / shape, shape)
    ckpt = load_checkpoint(directory)
    # long enough that llama3's low- and high-frequency bands and the linear scaling all act
    ids = [[1, *range(5, 5 + 150)], [1, *range(200, 350)]]
    ours = ckpt.model(torch.tensor(ids))
    theirs = hf_logits(directory, ids)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert ckpt.config.tie_embeddings == SHAPES[shape]["tie_word_embeddings"]
    assert ckpt.config.n_kv_heads == SHAPES[shape]["num_key_value_heads"]


def test_tokenizer_and_chat_template_as_transformers(tmp_path):
    directory = random_llama(tmp_path / "m")
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    ours = Tokenizer.load(directory)
    assert (ours.bos, ours.eos, ours.pad, ours.unk) == ("<s>", "</s>", "</s>", "<unk>")
    assert (ours.bos_id, ours.eos_id, ours.pad_id) == (theirs.bos_token_id, theirs.eos_token_id, theirs.pad_token_id)
    assert ours.vocab_size == len(theirs) and ours.adds_bos
    for text in PROMPTS:
        assert ours.encode_prompt(text) == theirs(text).input_ids
        assert ours.decode(ours.encode(text)) == text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "12+30?"},
                {"role": "assistant", "content": "42"}, {"role": "user", "content": "and 1+1?"}]
    text = ours.apply_chat_template(messages)
    assert text == theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ours.encode_chat(messages) == list(ids)
    assert ours.encode_chat(messages)[:2] == [ours.bos_id, ours.token_to_id("<|im_start|>")]  # turn tokens parsed


def test_tokenizer_without_bos_is_not_given_one(tmp_path):
    directory = random_llama(tmp_path / "m", adds_bos=False)
    ours = Tokenizer.load(directory)
    theirs = transformers.AutoTokenizer.from_pretrained(directory)
    assert not ours.adds_bos
    for text in PROMPTS:
        assert ours.encode_prompt(text) == theirs(text).input_ids


def test_greedy_samples_equal_transformers_generate(tmp_path):
    directory = random_llama(tmp_path / "m", "llama3-rope")
    ckpt = load_checkpoint(directory)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    tok = transformers.AutoTokenizer.from_pretrained(directory)
    samples = generate(ckpt.model, ckpt.tokenizer, PROMPTS, n=1, max_new_tokens=24, temperature=0.0, ignore_eos=True)
    for prompt, (sample,) in zip(PROMPTS, samples, strict=True):
        ids = tok(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False,
                              min_new_tokens=24, pad_token_id=tok.pad_token_id)
        assert sample.token_ids == out[0, ids.shape[1]:].tolist()
        assert sample.prompt_tokens == ids.shape[1]


def test_sampling_stops_at_every_end_of_turn_token(tmp_path):
    directory = random_llama(tmp_path / "m")
    ckpt = load_checkpoint(directory)
    (first,), = generate(ckpt.model, ckpt.tokenizer, ["hi"], n=1, max_new_tokens=8, temperature=0.0, ignore_eos=True)
    turn_end = first.token_ids[3]  # what greedy draws 4th stands for Llama 3's <|eot_id|> beside its eos
    gen = json.loads((directory / "generation_config.json").read_text())
    gen["eos_token_id"] = [2, turn_end]
    (directory / "generation_config.json").write_text(json.dumps(gen))
    ckpt = load_checkpoint(directory)
    assert ckpt.tokenizer.stop_ids == tuple(dict.fromkeys([2, turn_end]))
    (s,), = generate(ckpt.model, ckpt.tokenizer, ["hi"], n=1, max_new_tokens=8, temperature=0.0)
    stop = first.token_ids.index(turn_end)
    assert s.finish_reason == "stop" and s.token_ids == first.token_ids[:stop + 1]


def test_fine_tuned_foreign_checkpoint_saves_back_as_hf(tmp_path):
    directory = random_llama(tmp_path / "m", "llama3-rope")
    ckpt = load_checkpoint(directory)
    with torch.no_grad():
        ckpt.model.blocks[0].mlp.w2.weight.mul_(1.5)  # stands for a training step
    out = save_checkpoint(tmp_path / "tuned", ckpt.model, ckpt.tokenizer, {"note": "tuned"})
    again = load_checkpoint(out)
    assert again.config == ckpt.config and again.tokenizer.chat_template == ckpt.tokenizer.chat_template
    ids = [[1, *range(5, 120)]]
    assert (again.model(torch.tensor(ids)) - hf_logits(out, ids)).abs().max().item() <= 1e-4
    theirs = transformers.AutoTokenizer.from_pretrained(out)
    for text in PROMPTS:
        assert theirs(text).input_ids == again.tokenizer.encode_prompt(text)
    messages = [{"role": "user", "content": "12+30?"}]
    assert theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        again.tokenizer.apply_chat_template(messages)


def test_unsupported_rope_scaling_is_one_line(tmp_path):
    directory = random_llama(tmp_path / "m")
    cfg = json.loads((directory / "config.json").read_text())
    cfg["rope_scaling"] = cfg["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    (directory / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DatawallError, match=r"config.json: .*rope scaling 'yarn' is not supported"):
        load_checkpoint(directory)


def test_chat_without_template_is_one_line():
    tok = Tokenizer.for_chars("abc")
    with pytest.raises(DatawallError, match="no chat template"):
        tok.encode_chat([{"role": "user", "content": "a"}])


def test_pretrain_init_fine_tunes_a_foreign_checkpoint_and_saves_hf(tmp_path):
    from typer.testing import CliRunner

    from datawall.cli import app

    directory = random_llama(tmp_path / "m", "gqa-tied")
    rows = [{"question": f"what is {a} plus {b}?", "answer": str(a + b)} for a in range(12) for b in range(12)]
    data = tmp_path / "add.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = load_checkpoint(directory)
    args = ["pretrain", "--init", str(directory), "--task", f"jsonl:{data}", "--tokens", "4k", "--unique-tokens", "2k",
            "--batch-size", "8", "--seq-len", "64", "--eval-problems", "4", "--out", str(tmp_path / "run"), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "run" / "checkpoint"
    after = load_checkpoint(out)
    assert after.config == before.config and after.tokenizer == before.tokenizer
    assert after.tokenizer.chat_template == before.tokenizer.chat_template
    assert not torch.equal(after.model.blocks[0].mlp.w2.weight, before.model.blocks[0].mlp.w2.weight)
    ids = [[1, *range(5, 60)]]
    assert (after.model(torch.tensor(ids)) - hf_logits(out, ids)).abs().max().item() <= 1e-4
    # trained as it is prompted: bos (this tokenizer adds one) then the prompt, the loss on the solution only
    prompt = "Question: what is 3 plus 4?\nAnswer:\n"
    assert transformers.AutoTokenizer.from_pretrained(out)(prompt).input_ids == after.tokenizer.encode_prompt(prompt)
