"""Server throughput: 32 concurrent clients vs one client in a loop, against `datawall serve` on one model.

A random-weight model (preset 1m, character tokenizer) is served in a subprocess on 127.0.0.1; the same
number of requests (distinct prompts, temperature 1, max_tokens 32) is sent first by one client in a loop,
then by 32 client threads at once. Completion tokens/s come from the responses' `usage`; the ratio is what
the server's request batching buys.
Run: .venv/bin/python benchmarks/serve_throughput.py [--preset 1m] [--requests 64] [--clients 32] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import torch
from common import machine
from openai import OpenAI

from datawall.data.tokenizer import Tokenizer
from datawall.model import Transformer, model_config, save_checkpoint

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 +-*/=()#\n"
SERVER = """
import sys, torch, uvicorn
from datawall.serve import create_app
torch.set_num_threads(int(sys.argv[3]))
uvicorn.run(create_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def start_server(model_dir: str, threads: int) -> tuple[subprocess.Popen, int]:
    """The server in its own process (so client threads do not share its GIL); waits until it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", SERVER, model_dir, str(port), str(threads)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server did not start in 120 s")


def run(client: OpenAI, model: str, prompts: list[str], clients: int, max_tokens: int) -> tuple[int, float]:
    """(completion tokens, seconds) for all prompts sent by `clients` threads."""
    def one(prompt: str) -> int:
        return client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                         temperature=1.0).usage.completion_tokens

    t = time.perf_counter()
    if clients == 1:
        tokens = sum(one(p) for p in prompts)
    else:
        with ThreadPoolExecutor(clients) as pool:
            tokens = sum(pool.map(one, prompts))
    return tokens, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1m")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    args = ap.parse_args()

    tok = Tokenizer.for_chars(ALPHABET)
    torch.manual_seed(0)
    model = Transformer(model_config(args.preset, vocab_size=tok.vocab_size, max_seq_len=256)).eval()
    rng = random.Random(0)
    prompts = ["".join(rng.choice(ALPHABET[:36]) for _ in range(16)) + "=" for _ in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(f"{tmp}/bench", model, tok)
        proc, port = start_server(f"{tmp}/bench", args.threads)
        try:
            client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=300,
                            http_client=httpx.Client(limits=httpx.Limits(max_connections=args.clients)))
            run(client, "bench", prompts[:4], 1, args.max_tokens)  # warm-up
            rows = []
            for clients in (1, args.clients):
                before = httpx.get(f"http://127.0.0.1:{port}/v1/stats").json()
                tokens, seconds = run(client, "bench", prompts, clients, args.max_tokens)
                after = httpx.get(f"http://127.0.0.1:{port}/v1/stats").json()
                rows.append((clients, tokens, seconds, after["generate_calls"] - before["generate_calls"]))
        finally:
            proc.terminate()
            proc.wait(30)

    print(f"machine: {machine()}; server torch threads {args.threads}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)")
    print(f"model: preset {args.preset} ({model.num_params(non_embedding=True):,} non-embedding params), "
          f"{args.requests} requests x max_tokens {args.max_tokens}, temperature 1")
    print(f"{'clients':>8} {'tokens':>8} {'seconds':>8} {'tok/s':>8} {'generate calls':>15}")
    for clients, tokens, seconds, calls in rows:
        print(f"{clients:>8} {tokens:>8} {seconds:>8.2f} {tokens / seconds:>8.0f} {calls:>15}")
    (_, t1, s1, _), (_, tn, sn, _) = rows
    print(f"throughput ratio ({args.clients} clients / 1 client): {(tn / sn) / (t1 / s1):.2f}x")


if __name__ == "__main__":
    main()
