"""Seconds per DPO optimizer step: datawall's dpo objective against TRL's DPOTrainer, same checkpoint and batch, CPU.

One process, one batch of B pairs, side by side. TRL trains the checkpoint loaded by transformers
(LlamaForCausalLM) on a dataset of exactly those B pairs (so every step sees the same batch); datawall runs its
objective's step (one forward of the chosen and rejected rows, backward, clipping, AdamW) on its own model loaded
from the same directory. Both use the same reference (--reference: another checkpoint of the same tokenizer, so
that the first loss is not log 2 by construction; default the policy itself) and tokenize to the same ids
(checked): [bos] prompt, answer + eos. The loss of the first batch is computed by each before any update and
compared. TRL runs twice: with its default (the reference's forward in every step) and with
precompute_ref_log_probs (the reference once, before training, as datawall always does). Step times are medians
over the timed steps (after warm-up), wall and process CPU; the load average is printed beside them.

Needs the bench extra (`pip install -e .[bench]`, i.e. trl).
Run: .venv/bin/python benchmarks/dpo_step.py [--model DIR] [--reference DIR] [--pairs FILE] [--batch 32]
     [--steps 12] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from common import machine

from datawall.data.tokenizer import Tokenizer
from datawall.model import checkpoint_dir, load_checkpoint
from datawall.prefer.data import encode_pairs
from datawall.prefer.pairs import Pair, read_pairs
from datawall.train.objectives.dpo import DPOObjective, DPOSchedule, DPOSettings, sequence_logprobs
from datawall.train.optim import OptimConfig, ParamGroup, make_optimizer

BASELINE = Path("/work/shared-runs/baseline")


def default_pairs(model_dir: Path, count: int) -> list[Pair]:
    """Worked solutions against the same solution with another final answer, for the checkpoint's task."""
    from datawall.tasks import get_task

    meta = json.loads((model_dir / "datawall.json").read_text())
    task = get_task(meta["task"], **meta.get("task_args", {}))
    out = []
    for i in range(count):
        p = task.problem("train", 1000 + i)
        good = task.solution(p)
        body, answer = good.rsplit("#### ", 1)
        out.append(Pair(p.prompt, good, body + "#### " + str(int(answer) + 1 + i % 5)))
    return out


def datawall_steps(model_dir: Path, ref_dir: Path, pairs: list[Pair], settings: DPOSettings, steps: int, lr: float
                   ) -> tuple[float, list[float], list[float]]:
    """First-batch loss and per-step (wall, CPU) seconds of datawall's objective, as the loop runs a step."""
    ckpt = load_checkpoint(model_dir)
    model, tok = ckpt.model.train(), ckpt.tokenizer
    encoded = encode_pairs(tok, pairs, ckpt.config.max_seq_len)
    ref = sequence_logprobs(load_checkpoint(ref_dir).model, encoded, tok.pad_id)  # once, before training
    obj = DPOObjective(encoded, [], ref, (torch.zeros(0), torch.zeros(0)), ckpt.config, tok.pad_id, settings,
                       DPOSchedule(batch_size=len(encoded), lr=lr))
    opt, _ = make_optimizer([ParamGroup("model", list(model.parameters()))], OptimConfig(lr=lr, weight_decay=0.0))
    first, walls, cpus = None, [], []
    for s in range(steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step = obj.step(s, model)
        for micro in step.batches:
            loss, _ = obj.loss(model, micro, step)
            loss.backward()
            if first is None:
                first = loss.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return first, walls, cpus


def trl_steps(model_dir: Path, ref_dir: Path, pairs: list[Pair], settings: DPOSettings, steps: int, lr: float,
              precompute: bool, expected_ids: list[tuple[list[int], list[int], list[int]]]
              ) -> tuple[float, list[float], list[float]]:
    """First-batch loss (TRL's own compute_loss, before any update) and per-step seconds of TRL's DPOTrainer."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir, split_special_tokens=False)  # "<eos>" appended by TRL is eos
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir, dtype=torch.float32)
    data = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])

    class Clock(TrainerCallback):
        def __init__(self):
            self.walls, self.cpus = [], []

        def on_step_begin(self, args, state, control, **kw):
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            self.walls.append(time.perf_counter() - self.t0)
            self.cpus.append(time.process_time() - self.c0)

    clock = Clock()
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(output_dir=out, per_device_train_batch_size=len(pairs), max_steps=steps, learning_rate=lr,
                         lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
                         beta=settings.beta, loss_type=[settings.loss], label_smoothing=settings.label_smoothing,
                         max_length=None, precompute_ref_log_probs=precompute, logging_steps=1, save_strategy="no",
                         report_to="none", use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, seed=0,
                         disable_tqdm=True, adam_beta2=0.95)
        trainer = DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok,
                             callbacks=[clock])
        got = {(tuple(r["prompt_ids"]), tuple(r["chosen_ids"]), tuple(r["rejected_ids"]))
               for r in trainer.train_dataset}
        want = {(tuple(p), tuple(c), tuple(r)) for p, c, r in expected_ids}
        if got != want:
            raise SystemExit("TRL tokenized the pairs differently from datawall; the comparison would be unfair")
        batch = next(iter(trainer.get_train_dataloader()))
        with torch.no_grad():
            first = float(trainer.compute_loss(trainer.model, batch))
        trainer.train()
    return first, clock.walls, clock.cpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BASELINE, help="checkpoint or run directory (default: the "
                        "quick study's baseline)")
    parser.add_argument("--reference", type=Path, help="reference checkpoint or run directory (default: --model)")
    parser.add_argument("--pairs", type=Path, help="pairs JSONL (default: worked solutions vs a wrong final answer)")
    parser.add_argument("--batch", type=int, default=32, help="pairs per step")
    parser.add_argument("--steps", type=int, default=12, help="steps each; the first two are warm-up")
    parser.add_argument("--loss", default="sigmoid", choices=["sigmoid", "ipo", "hinge"])
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    model_dir = checkpoint_dir(args.model)
    ref_dir = checkpoint_dir(args.reference or args.model)
    pairs = read_pairs(args.pairs)[:args.batch] if args.pairs else default_pairs(model_dir, args.batch)
    settings = DPOSettings(loss=args.loss, beta=args.beta)
    tok = Tokenizer.load(model_dir)
    ids = [(tok.encode_prompt(p.prompt), tok.encode(p.chosen) + [tok.eos_id], tok.encode(p.rejected) + [tok.eos_id])
           for p in pairs]
    lr = 1e-4
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"model {model_dir}, reference {ref_dir}, {len(pairs)} pairs per step, loss {args.loss} beta "
          f"{args.beta:g}, {args.steps} steps each (first 2 warm-up)")
    runs = {}
    for name, fn in (("datawall", lambda: datawall_steps(model_dir, ref_dir, pairs, settings, args.steps, lr)),
                     ("trl", lambda: trl_steps(model_dir, ref_dir, pairs, settings, args.steps, lr, False, ids)),
                     ("trl-precomputed-ref", lambda: trl_steps(model_dir, ref_dir, pairs, settings, args.steps, lr,
                                                               True, ids))):
        first, walls, cpus = fn()
        runs[name] = {"first_loss": first, "wall": statistics.median(walls[2:]), "cpu": statistics.median(cpus[2:])}
        print(f"{name:>20}: first-batch loss {first:.7f}  median step {runs[name]['wall'] * 1e3:8.2f} ms wall "
              f"{runs[name]['cpu'] * 1e3:8.2f} ms CPU")
    dw = runs["datawall"]
    for name in ("trl", "trl-precomputed-ref"):
        r = runs[name]
        print(f"datawall vs {name}: {r['wall'] / dw['wall']:.2f}x faster (wall), {r['cpu'] / dw['cpu']:.2f}x (CPU); "
              f"first-batch losses differ by {abs(r['first_loss'] - dw['first_loss']):.2e}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(json.dumps(runs))


if __name__ == "__main__":
    main()
