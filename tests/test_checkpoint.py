"""Checkpoints: HF Llama directories that transformers loads with the same logits; atomic; clear errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from datawall.data.tokenizer import Tokenizer
from datawall.errors import DatawallError
from datawall.model import Transformer, load_checkpoint, load_model, model_config, save_checkpoint

TOK = Tokenizer.for_chars("abcdefghij0123456789 +-=#\n")


def make_model(**overrides) -> Transformer:
    torch.manual_seed(0)
    shape = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=4, ffn_dim=64) | overrides
    model = Transformer(model_config(shape, vocab_size=TOK.vocab_size, max_seq_len=32))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save_checkpoint(path, make_model(), TOK, {"task": "arith", "tokens": 123})
    return path


def test_directory_layout_and_meta(saved):
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "datawall.json"} <= names
    config = json.loads((saved / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (config["hidden_size"], config["num_hidden_layers"], config["head_dim"]) == (32, 2, 8)
    meta = json.loads((saved / "datawall.json").read_text())
    assert meta["task"] == "arith" and meta["tokens"] == 123 and meta["format_version"] == 1
    assert meta["params_non_embedding"] == make_model().num_params(non_embedding=True)
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_round_trip(saved):
    ckpt = load_checkpoint(saved)
    x = torch.randint(0, TOK.vocab_size, (2, 32))
    with torch.no_grad():
        assert torch.equal(ckpt.model(x), make_model()(x))
    assert ckpt.tokenizer == TOK and ckpt.meta["task"] == "arith"
    assert ckpt.config == make_model().config
    assert isinstance(load_model(saved), Transformer)


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False}, {"n_kv_heads": 1, "rope_theta": 777.0},
                                       {"n_kv_heads": 2, "tie_embeddings": False}])
def test_transformers_loads_the_same_logits(tmp_path, overrides):
    transformers = pytest.importorskip("transformers")
    model = make_model(**overrides)
    save_checkpoint(tmp_path / "m", model, TOK, {})
    hf = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert hf.config.tie_word_embeddings == model.config.tie_embeddings
    x = torch.randint(0, TOK.vocab_size, (3, 32))
    with torch.no_grad():
        diff = (hf(x).logits - model(x)).abs().max().item()
    assert diff <= 1e-4


def test_replacing_a_checkpoint_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    save_checkpoint(path, make_model(), TOK, {"version": 1})
    save_checkpoint(path, make_model(n_layers=1), TOK, {"version": 2})
    assert load_checkpoint(path).meta["version"] == 2 and load_checkpoint(path).config.n_layers == 1

    def broken_save(self, directory, model_max_length=None):
        raise OSError("disk full")

    monkeypatch.setattr(Tokenizer, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, make_model(), TOK, {"version": 3})
    assert load_checkpoint(path).meta["version"] == 2  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_save_refuses_foreign_directories_and_bad_meta(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(DatawallError, match="not a checkpoint directory"):
        save_checkpoint(tmp_path / "notes", make_model(), TOK, {})
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    with pytest.raises(DatawallError, match="JSON"):
        save_checkpoint(tmp_path / "c", make_model(), TOK, {"bad": object()})
    assert not (tmp_path / "c").exists()


def _copy(saved, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(saved, dst)
    return dst


def _edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config.update(changes)
    (path / "config.json").write_text(json.dumps(config))


def test_missing_datawall_json_is_a_plain_llama_directory(saved, tmp_path):
    path = _copy(saved, tmp_path)
    (path / "datawall.json").unlink()
    assert load_checkpoint(path).meta == {}


@pytest.mark.parametrize("damage,message", [
    (lambda p: shutil.rmtree(p), "does not exist"),
    (lambda p: (p / "config.json").unlink(), r"config.json: missing"),
    (lambda p: (p / "config.json").write_text("{oops"), r"config.json: not valid JSON"),
    (lambda p: _edit_config(p, model_type="gpt2"), r"config.json: model_type is 'gpt2'"),
    (lambda p: _edit_config(p, hidden_act="gelu"), r"config.json: hidden_act"),
    (lambda p: _edit_config(p, intermediate_size=48), r"model.safetensors: tensor .*gate_proj.* shape"),
    (lambda p: _edit_config(p, num_hidden_layers=3), r"model.safetensors: missing tensor model.layers.2"),
    (lambda p: _edit_config(p, num_attention_heads=5, head_dim=None), r"config.json: .*divisible"),
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:1000]),
     r"model.safetensors: cannot read safetensors"),
    (lambda p: (p / "model.safetensors").unlink(), r"model.safetensors: missing"),
    (lambda p: (p / "tokenizer.json").unlink(), r"tokenizer.json"),
    (lambda p: (p / "datawall.json").write_text("[1, 2"), r"datawall.json: not valid JSON"),
    (lambda p: (p / "datawall.json").write_text('{"format_version": 99}'), r"datawall.json: format_version 99"),
])
def test_corrupt_or_foreign_directories_give_one_line_errors(saved, tmp_path, damage, message):
    path = _copy(saved, tmp_path)
    damage(path)
    with pytest.raises(DatawallError, match=message) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_checkpoint_dir_accepts_a_run_directory(tmp_path):
    from datawall.model import checkpoint_dir

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "config.json").write_text('{"run": {}}')  # a run's config, not a model's
    (run / "checkpoint" / "config.json").write_text('{"model_type": "llama"}')
    assert checkpoint_dir(run) == run / "checkpoint"
    assert checkpoint_dir(run / "checkpoint") == run / "checkpoint"
    with pytest.raises(DatawallError, match="no such model directory"):
        checkpoint_dir(tmp_path / "missing")


def _poison(path, name: str, value: float, count: int = 1):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path / "model.safetensors"))
    tensors[name].view(-1)[:count] = value
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_huge_but_finite_weights_load(saved, tmp_path):
    path = _copy(saved, tmp_path)
    _poison(path, "model.norm.weight", 3e38, 4)  # their sum overflows to inf; every value is finite
    assert float(load_checkpoint(path).model.norm.weight.detach().max()) == pytest.approx(3e38)


@pytest.mark.parametrize("name,value,count", [
    ("model.layers.1.mlp.down_proj.weight", float("nan"), 1),
    ("model.embed_tokens.weight", float("inf"), 3),
    ("model.norm.weight", float("-inf"), 1),
])
def test_non_finite_weights_are_refused_at_load_naming_the_tensor(saved, tmp_path, name, value, count):
    path = _copy(saved, tmp_path)
    _poison(path, name, value, count)
    with pytest.raises(DatawallError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(str(path / "model.safetensors")) and f"tensor {name} holds {count} non-finite" in message
    assert "\n" not in message
    with pytest.raises(DatawallError, match=name):
        load_model(path)


def test_sample_json_never_prints_nan_for_a_diverged_checkpoint(saved, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = _copy(saved, tmp_path)
    _poison(path, "model.layers.0.self_attn.q_proj.weight", float("nan"), 10)
    exe = Path(sys.executable).parent / "datawall"
    proc = subprocess.run([str(exe), "sample", "--model", str(path), "--prompt", "ab", "--max-tokens", "4", "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stdout == "" and "NaN" not in proc.stdout
    assert proc.stderr.startswith("error: ") and "q_proj.weight holds 10 non-finite" in proc.stderr
