"""Server throughput: 32 concurrent clients vs one client in a loop, against `datawall serve` on one model.

A random-weight model (preset 1m, character tokenizer) is served in a subprocess on 127.0.0.1; the same
number of requests (distinct prompts, temperature 1, max_tokens 32) is sent first by one client in a loop,
then by 32 client threads at once. Completion tokens/s come from the responses' `usage`; the ratio is what
the server's request batching buys. Each row also gives the requests' latency (p50, p99) and requests/s.

--hostile-mb 10 adds the hostile-load comparison, in the same run and against the same server: rounds of
the 32 clients alone, alternating with rounds of the 32 clients while one more client sends a 10 MB prompt
(again as soon as the last one is answered; --hostile-interval S waits S seconds between them). The small
requests' p50/p99 with and without it, and their ratio, say what one huge prompt costs everybody else.
--abandoned 20 adds: 20 clients send n=128 x 200-token requests and give up after 0.3 s, and a 4-token request
follows 0.2 s later (3 times), against the same request with nothing abandoned.
Run: .venv/bin/python benchmarks/serve_throughput.py [--preset 1m] [--requests 64] [--clients 32] [--threads 2]
     .venv/bin/python benchmarks/serve_throughput.py --preset 100k --hostile-mb 10 [--rounds 3] [--round-requests 256]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
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


def run(client: OpenAI, model: str, prompts: list[str], clients: int, max_tokens: int
        ) -> tuple[int, float, list[float]]:
    """(completion tokens, seconds, each request's latency) for all prompts sent by `clients` threads."""
    def one(prompt: str) -> tuple[int, float]:
        t0 = time.perf_counter()
        tokens = client.completions.create(model=model, prompt=prompt, max_tokens=max_tokens,
                                           temperature=1.0).usage.completion_tokens
        return tokens, time.perf_counter() - t0

    t = time.perf_counter()
    if clients == 1:
        results = [one(p) for p in prompts]
    else:
        with ThreadPoolExecutor(clients) as pool:
            results = list(pool.map(one, prompts))
    return sum(r[0] for r in results), time.perf_counter() - t, [r[1] for r in results]


def hostile(url: str, megabytes: float, interval: float, stop: threading.Event, answers: list) -> None:
    """Send prompts of `megabytes` MB until stop is set; append (HTTP status, seconds) per request to answers."""
    body = json.dumps({"model": "bench", "prompt": "1" * int(megabytes * 1e6), "max_tokens": 4}).encode()
    with httpx.Client(timeout=300) as client:
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                status = client.post(url, content=body, headers={"Content-Type": "application/json"}).status_code
            except httpx.HTTPError as e:
                status = type(e).__name__
            answers.append((status, time.perf_counter() - t0))
            stop.wait(interval)


def abandoned(url: str, clients: int, repeats: int = 3) -> tuple[list[float], list[float]]:
    """Seconds a 4-token request takes alone (5 times), and 0.2 s after `clients` clients gave up on n=128 x
    200-token requests (repeats times)."""
    def small() -> float:
        t0 = time.perf_counter()
        httpx.post(url, json={"model": "bench", "prompt": "12+34=", "max_tokens": 4}, timeout=600).raise_for_status()
        return time.perf_counter() - t0

    def give_up() -> None:
        try:
            httpx.post(url, json={"model": "bench", "prompt": "1+1=", "n": 128, "max_tokens": 200}, timeout=0.3)
        except httpx.TimeoutException:
            pass

    alone = [small() for _ in range(5)]
    after = []
    for _ in range(repeats):
        threads = [threading.Thread(target=give_up) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(0.2)
        after.append(small())
        time.sleep(1.0)
    return alone, after


def percentiles(latencies: list[float]) -> tuple[float, float]:
    return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="1m")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    ap.add_argument("--hostile-mb", type=float, default=0, help="also compare rounds with a prompt this big")
    ap.add_argument("--hostile-interval", type=float, default=0.0, help="seconds between hostile prompts")
    ap.add_argument("--rounds", type=int, default=3, help="hostile comparison: rounds of each condition")
    ap.add_argument("--round-requests", type=int, default=256, help="hostile comparison: requests per round")
    ap.add_argument("--abandoned", type=int, default=0, help="also time a request after this many clients gave "
                    "up on n=128 x 200-token requests")
    args = ap.parse_args()

    tok = Tokenizer.for_chars(ALPHABET)
    torch.manual_seed(0)
    model = Transformer(model_config(args.preset, vocab_size=tok.vocab_size, max_seq_len=256)).eval()
    rng = random.Random(0)
    count = max(args.requests, args.round_requests if args.hostile_mb else 0)
    prompts = ["".join(rng.choice(ALPHABET[:36]) for _ in range(16)) + "=" for _ in range(count)]
    conditions: dict[str, list[float]] = {"without": [], "with": []}
    seconds_in: dict[str, float] = {"without": 0.0, "with": 0.0}
    answers: list = []
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
                tokens, seconds, lat = run(client, "bench", prompts[:args.requests], clients, args.max_tokens)
                after = httpx.get(f"http://127.0.0.1:{port}/v1/stats").json()
                rows.append((clients, tokens, seconds, after["generate_calls"] - before["generate_calls"], lat))
            for _ in range(args.rounds if args.hostile_mb else 0):
                for condition in ("without", "with"):  # alternating, so drift in the machine's load hits both
                    stop = threading.Event()
                    sender = threading.Thread(target=hostile, args=(f"http://127.0.0.1:{port}/v1/completions",
                                                                    args.hostile_mb, args.hostile_interval, stop,
                                                                    answers))
                    if condition == "with":
                        sender.start()
                    _, seconds, lat = run(client, "bench", prompts[:args.round_requests], args.clients,
                                          args.max_tokens)
                    stop.set()
                    if condition == "with":
                        sender.join()
                    conditions[condition] += lat
                    seconds_in[condition] += seconds
            if args.abandoned:
                alone, after = abandoned(f"http://127.0.0.1:{port}/v1/completions", args.abandoned)
                gone = httpx.get(f"http://127.0.0.1:{port}/v1/stats").json().get("rows_cancelled_running")
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # a server stuck in a request does not get to its shutdown
                proc.kill()
                proc.wait()

    print(f"machine: {machine()}; server torch threads {args.threads}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)")
    print(f"model: preset {args.preset} ({model.num_params(non_embedding=True):,} non-embedding params), "
          f"{args.requests} requests x max_tokens {args.max_tokens}, temperature 1")
    print(f"{'clients':>8} {'tokens':>8} {'seconds':>8} {'tok/s':>8} {'generate calls':>15} {'req/s':>7} "
          f"{'p50 s':>6} {'p99 s':>6}")
    for clients, tokens, seconds, calls, lat in rows:
        p50, p99 = percentiles(lat)
        print(f"{clients:>8} {tokens:>8} {seconds:>8.2f} {tokens / seconds:>8.0f} {calls:>15} "
              f"{len(lat) / seconds:>7.1f} {p50:>6.3f} {p99:>6.3f}")
    (_, t1, s1, _, _), (_, tn, sn, _, _) = rows
    print(f"throughput ratio ({args.clients} clients / 1 client): {(tn / sn) / (t1 / s1):.2f}x")
    if args.abandoned:
        print(f"\n4-token request alone: {' '.join(f'{x:.3f}' for x in alone)} s; 0.2 s after {args.abandoned} "
              f"clients gave up on n=128 x 200-token requests: {' '.join(f'{x:.3f}' for x in after)} s "
              f"(rows the server dropped mid-batch: {gone})")
    if not args.hostile_mb:
        return
    how = "back to back" if args.hostile_interval == 0 else f"every {args.hostile_interval:g} s"
    print(f"\nhostile load: {args.rounds} rounds x {args.round_requests} requests from {args.clients} clients, "
          f"alternating without / with {args.hostile_mb:g} MB prompts sent {how} by one more client")
    print(f"{'condition':>24} {'requests':>9} {'req/s':>7} {'p50 s':>7} {'p99 s':>7}")
    stats = {}
    for condition, label in (("without", "32 clients alone"), ("with", f"with {args.hostile_mb:g} MB prompts")):
        lat = conditions[condition]
        stats[condition] = percentiles(lat)
        print(f"{label:>24} {len(lat):>9} {len(lat) / seconds_in[condition]:>7.1f} {stats[condition][0]:>7.3f} "
              f"{stats[condition][1]:>7.3f}")
    print(f"ratio with / without: p50 {stats['with'][0] / stats['without'][0]:.2f}x, "
          f"p99 {stats['with'][1] / stats['without'][1]:.2f}x (goal: p99 within 2x)")
    codes: dict = {}
    for status, _ in answers:
        codes[status] = codes.get(status, 0) + 1
    big = [s for _, s in answers]
    print(f"{args.hostile_mb:g} MB prompts sent: {len(answers)}, answers {codes}, "
          f"seconds each: p50 {np.percentile(big, 50):.3f}, max {max(big):.3f}" if answers else "none sent")


if __name__ == "__main__":
    main()
