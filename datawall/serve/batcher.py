"""Dynamic batching: concurrent requests queue up and one worker runs them through shared generate() calls.

The worker takes every job waiting in the queue, groups the jobs whose sampling parameters agree (max_tokens,
temperature, top_p, stop strings, seed) and runs each group as ONE generate() call on a single background
thread, so the event loop keeps accepting requests while the model runs (torch releases the GIL). A job's n
samples are its prompt repeated n times: generate() prefills identical prompts once, so a request's samples
share one prefill, and jobs with different n still batch together.

A job whose client went away is cancelled (`Job.cancelled`, set on the event loop): if it is still queued
it never runs, and if its call is running, generate() drops its rows at the next decoding step, so an
abandoned n=128 request stops costing the requests queued behind it.

Seeds stay reproducible: generate()'s randomness depends on (seed, prompt, which copy of the prompt in the
call, step), so two seeded jobs with the same prompt are never put in the same call (the second would get
the later copies and different samples than it gets alone).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from datawall.model.sampler import Sample, generate, is_greedy

TopLogprobs = list[list[tuple[int, float]]]  # per completion token: the k most likely (id, logprob)


@dataclass(frozen=True)
class SamplingParams:
    """What must agree for jobs to share a generate() call."""

    max_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    seed: int | None

    def normalized(self) -> SamplingParams:
        """Greedy decoding (temperature below 1e-5) ignores top_p and the seed, so greedy jobs group regardless."""
        if is_greedy(self.temperature):
            return SamplingParams(self.max_tokens, 0.0, 1.0, self.stop, None)
        return self


@dataclass
class Choice:
    """One sample of one prompt, with its top alternatives when they were asked for."""

    sample: Sample
    top: TopLogprobs | None = None


@dataclass
class Job:
    """One request: its prompts (token ids, bos first), n samples each, and where the answer goes."""

    prompts: list[list[int]]
    n: int
    params: SamplingParams
    top_logprobs: int
    future: asyncio.Future = field(repr=False)
    cancelled: bool = False  # its client went away; read by the generate thread at every step

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n


def plan(jobs: list[Job], max_rows: int) -> list[tuple[SamplingParams, list[Job]]]:
    """Split waiting jobs into generate() calls: same params, at most max_rows rows (a bigger job runs
    alone), and no two seeded jobs sharing a prompt. First fit, in arrival order."""
    calls: list[tuple[SamplingParams, list[Job], set[tuple[int, ...]]]] = []
    for job in jobs:
        mine = {tuple(p) for p in job.prompts}
        for params, members, seen in calls:
            rows = sum(j.rows for j in members)
            if (params == job.params and rows + job.rows <= max_rows
                    and (params.seed is None or not seen & mine)):
                members.append(job)
                seen |= mine
                break
        else:
            calls.append((job.params, [job], mine))
    return [(params, members) for params, members, _ in calls]


class Batcher:
    """Queue of generation jobs drained by one worker task; generate() runs on one background thread."""

    def __init__(self, model: torch.nn.Module, tokenizer, max_rows: int = 256, window_s: float = 0.002):
        self.model, self.tokenizer = model, tokenizer
        self.max_rows, self.window_s = max_rows, window_s
        self.stats = {"requests": 0, "generate_calls": 0, "rows": 0, "max_requests_per_call": 0, "cancelled": 0,
                      "rows_cancelled_running": 0}
        self._queue: asyncio.Queue[Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="datawall-generate")

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker; jobs still waiting are cancelled."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def pending(self) -> int:
        """Jobs waiting for the worker."""
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, prompts: list[list[int]], n: int, params: SamplingParams, top_logprobs: int = 0
                     ) -> list[Choice]:
        """Queue a job and wait for its choices, in OpenAI order (prompt i, sample j -> index i * n + j)."""
        assert self._queue is not None, "Batcher.start() was not called"
        job = Job(prompts, n, params.normalized(), top_logprobs, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(job)
        try:
            return await job.future
        except asyncio.CancelledError:  # the caller gave up (its client disconnected): stop generating for it
            job.cancelled = True
            self.stats["cancelled"] += 1
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            if self.window_s > 0:
                await asyncio.sleep(self.window_s)  # let requests that arrived together join this batch
            while not self._queue.empty():
                jobs.append(self._queue.get_nowait())
            for params, members in plan(jobs, self.max_rows):
                live = [j for j in members if not (j.cancelled or j.future.done())]  # a client may have gone away
                if not live:
                    continue
                try:
                    results = await loop.run_in_executor(self._executor, self._generate, params, live)
                except Exception as e:  # handed to the waiting requests; the worker keeps serving
                    results = [e] * len(live)
                self.stats["generate_calls"] += 1
                self.stats["requests"] += len(live)
                self.stats["rows"] += sum(j.rows for j in live)
                self.stats["max_requests_per_call"] = max(self.stats["max_requests_per_call"], len(live))
                for job, result in zip(live, results, strict=True):
                    if job.future.done():
                        continue
                    if isinstance(result, Exception):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)

    def _generate(self, params: SamplingParams, jobs: list[Job]) -> list[list[Choice]]:
        """One generate() call for all rows of these jobs (runs on the worker thread)."""
        prompts = [p for job in jobs for p in job.prompts for _ in range(job.n)]
        owners = [job for job in jobs for _ in range(job.rows)]
        starts = [sum(j.rows for j in jobs[:i]) for i in range(len(jobs))]
        dropped: set[int] = set()  # jobs whose rows generate() was told to drop

        def cancelled_rows() -> list[int]:
            rows = []
            for i, job in enumerate(jobs):
                if job.cancelled and i not in dropped:
                    dropped.add(i)
                    rows += range(starts[i], starts[i] + job.rows)
            self.stats["rows_cancelled_running"] += len(rows)
            return rows

        outs = generate(self.model, self.tokenizer, prompts, n=1, max_new_tokens=params.max_tokens,
                        temperature=params.temperature, top_p=params.top_p if params.top_p < 1 else None,
                        stop=list(params.stop), seed=params.seed, return_logprobs=True, cancelled=cancelled_rows)
        choices = [Choice(o[0]) for o in outs]
        asked = [r for r, job in enumerate(owners) if job.top_logprobs > 0 and not job.cancelled]
        if asked:
            k = max(job.top_logprobs for job in jobs)
            pairs = [(prompts[r], choices[r].sample.token_ids) for r in asked]
            for r, top in zip(asked, top_logprobs(self.model, pairs, k, self.tokenizer.pad_id), strict=True):
                choices[r].top = [t[: owners[r].top_logprobs] for t in top]
        per_job, start = [], 0
        for job in jobs:
            per_job.append(choices[start : start + job.rows])
            start += job.rows
        return per_job


@torch.inference_mode()
def top_logprobs(model: torch.nn.Module, seqs: list[tuple[list[int], list[int]]], k: int, pad_id: int,
                 chunk: int = 16) -> list[TopLogprobs]:
    """The k most likely tokens (unmodified distribution) at each completion position of (prompt, completion)
    pairs, by one teacher-forced forward pass per chunk of right-padded sequences."""
    dev = next(model.parameters()).device
    k = min(k, model.config.vocab_size)
    out: list[TopLogprobs] = []
    for c0 in range(0, len(seqs), chunk):
        part = seqs[c0 : c0 + chunk]
        inputs = [(p + c)[:-1] for p, c in part]  # the last completion token is never an input
        x = torch.full((len(part), max(len(i) for i in inputs)), pad_id, dtype=torch.long)
        for r, ids in enumerate(inputs):
            x[r, : len(ids)] = torch.tensor(ids)
        values, indices = torch.log_softmax(model(x.to(dev)), dim=-1).topk(k, dim=-1)
        values, indices = values.tolist(), indices.tolist()
        for r, (p, c) in enumerate(part):
            out.append([list(zip(indices[r][t], values[r][t], strict=True))
                        for t in range(len(p) - 1, len(p) - 1 + len(c))])
    return out
