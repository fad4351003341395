"""Executors: run a list of jobs in dependency order on a local process pool or a Ray cluster.

Both share one scheduler (this process): finished runs are reused without touching a worker, ready jobs go
out up to the executor's capacity, results come back as they finish, and every change is recorded in the
store's index and reported as an Event. Workers only run `RunStore.execute` (lock, run or reuse, DONE), so a
run that another study holds is waited for and then reused, never computed twice.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from datawall.errors import DatawallError
from datawall.study.jobs import Job, check_deps
from datawall.study.store import RunStore

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Event:
    """A change in one job's state: queued, running (with progress), done, reused or failed."""

    key: str
    kind: str
    status: str
    result: dict | None = None
    progress: float | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        """The run directory's name, <kind>-<key>."""
        return f"{self.kind}-{self.key}"


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# the scheduler asks a pool worker to stop its job with this signal (training then saves a checkpoint); workers
# ignore SIGINT, so a Ctrl-C on the terminal reaches each job exactly once, through the scheduler
STOP_SIGNAL = signal.SIGUSR1


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextlib.contextmanager
def _terminate_interrupts():
    """While jobs run, SIGTERM (`kill`, a cluster's preemption) stops them like Ctrl-C: checkpoint, then exit."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set there
        yield
        return
    def once(signum, frame):  # a second SIGTERM must not cut short the checkpoints the first one asked for
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, once)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _work(root: str, job: Job, dep_dirs: dict[str, str], quiet: bool, threads: int) -> tuple[str, dict]:
    """Worker side of one job: fix the thread count, then run or reuse it under its lock."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    pooled = signal.getsignal(STOP_SIGNAL) is signal.SIG_IGN
    if pooled:
        signal.signal(STOP_SIGNAL, _interrupt)
    try:
        return RunStore(root).execute(job, {k: Path(v) for k, v in dep_dirs.items()}, quiet=quiet)
    finally:
        if pooled:
            signal.signal(STOP_SIGNAL, signal.SIG_IGN)


def _init_worker(threads: int, parent: int) -> None:
    """Pool worker setup: a thread budget, signals left to the scheduler, and death with the parent."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a SIGTERM to the whole group reaches jobs via the scheduler
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        try:  # PR_SET_PDEATHSIG: a SIGKILLed study must not leave orphans holding its runs' locks
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)
    import torch

    torch.set_num_threads(threads)


class Executor:
    """The scheduler shared by the local and Ray executors; subclasses start, submit, wait and stop."""

    name = "base"

    def __init__(self, workers: int | None = None, threads: int = 1):
        if workers is not None and workers < 0:
            raise DatawallError(f"--workers must be >= 0, got {workers}")
        if threads < 1:
            raise DatawallError(f"--threads must be >= 1, got {threads}")
        self.workers, self.threads = workers, threads

    # subclass hooks
    def _start(self, jobs: list[Job]) -> int:
        """Start the backend for these jobs; return how many may run at once."""
        raise NotImplementedError

    def _submit(self, store: RunStore, job: Job, dep_dirs: dict[str, str], quiet: bool):
        raise NotImplementedError

    def _wait(self, handles: list, timeout: float) -> list:
        raise NotImplementedError

    def _outcome(self, handle) -> tuple[str, dict]:
        raise NotImplementedError

    def _stop(self, handles: list) -> None:
        raise NotImplementedError

    def run(self, jobs: list[Job], store: RunStore, on_event: Callable[[Event], None] | None = None,
            quiet: bool = True, study: str | None = None, keep_going: bool = False) -> dict[str, dict]:
        """Run jobs (reusing finished runs) in dependency order; return key -> result.

        A failure stops new work (keep_going: only the failed job's dependents are skipped) and raises a
        DatawallError naming the failed run once running jobs are stopped (their checkpoints are kept).
        """
        emit = on_event or (lambda e: None)
        jobs = list({j.key: j for j in jobs}.values())
        check_deps(jobs)
        by_key = {j.key: j for j in jobs}
        dep_dirs = self._dep_dirs(jobs, store)
        results: dict[str, dict] = {}
        pending: list[Job] = []
        for job in jobs:
            result = store.result(job)  # None also when its result.json was damaged: then it is recomputed
            if result is not None:
                results[job.key] = result
                store.record(job, "done", result, study=study)
                emit(Event(job.key, job.kind, "reused", result))
            else:
                store.record(job, "queued", study=study)
                pending.append(job)
                emit(Event(job.key, job.kind, "queued"))
        for key in dep_dirs.keys() - by_key.keys():
            results[key] = {}  # finished outside this list: available to its dependents
        if not pending:
            return {k: results[k] for k in by_key}

        with _terminate_interrupts():
            return self._schedule(pending, results, by_key, dep_dirs, store, emit, quiet, study, keep_going)

    def _schedule(self, pending: list[Job], results: dict[str, dict], by_key: dict[str, Job],
                  dep_dirs: dict[str, str], store: RunStore, emit: Callable[[Event], None], quiet: bool,
                  study: str | None, keep_going: bool) -> dict[str, dict]:
        """Run the pending jobs as their dependencies finish (the loop behind run())."""
        capacity = max(1, self._start(pending))
        inflight: dict = {}  # handle -> job
        failures: list[tuple[Job, str]] = []
        last_poll = time.monotonic()
        try:
            while pending or inflight:
                if not failures or keep_going:
                    for job in list(pending):
                        if len(inflight) >= capacity:
                            break
                        if any(d not in results for d in job.deps):
                            continue  # waits on a dependency (or never runs: the dependency failed)
                        pending.remove(job)
                        handle = self._submit(store, job, {d: dep_dirs[d] for d in job.deps}, quiet)
                        inflight[handle] = job
                        store.record(job, "running", study=study)
                        emit(Event(job.key, job.kind, "running", progress=0.0))
                if not inflight:
                    break  # what is left depends on a failed job (or we are stopping)
                for handle in self._wait(list(inflight), POLL_SECONDS):
                    job = inflight.pop(handle)
                    try:
                        status, result = self._outcome(handle)
                    except KeyboardInterrupt:
                        raise
                    except Exception as e:
                        msg = _error_message(e)
                        failures.append((job, msg))
                        store.record(job, "failed", error=msg, study=study)
                        emit(Event(job.key, job.kind, "failed", error=msg))
                        continue
                    results[job.key] = result
                    store.record(job, "done", result, study=study)
                    emit(Event(job.key, job.kind, status, result, progress=1.0))
                if failures and not keep_going and inflight:
                    self._stop(list(inflight))
                    for job in inflight.values():
                        store.record(job, "interrupted", study=study)
                    inflight.clear()
                if time.monotonic() - last_poll >= POLL_SECONDS:
                    last_poll = time.monotonic()
                    for job in inflight.values():
                        progress = _progress(job, store)
                        emit(Event(job.key, job.kind, "running", progress=progress))
        except BaseException:
            self._stop(list(inflight))
            for job in inflight.values():
                store.record(job, "interrupted", study=study)
            raise
        finally:
            self._finish()
        if failures:
            job, msg = failures[0]
            skipped = len(pending)
            more = f" ({len(failures) - 1} more failed)" if len(failures) > 1 else ""
            rest = f"; {skipped} job(s) not run" if skipped else ""
            raise DatawallError(f"run {job.name} failed: {msg}{more}{rest} (details: "
                                f"{store.dir_for(job) / 'error.txt'})")
        return {k: results[k] for k in by_key}

    def _finish(self) -> None:
        """Release per-run resources (the local pool); Ray stays up until close()."""

    def close(self) -> None:
        """Release everything the executor started."""
        self._finish()

    @staticmethod
    def _dep_dirs(jobs: list[Job], store: RunStore) -> dict[str, str]:
        """key -> run directory for every dependency: a job in the list, or a finished run already in the store."""
        by_key = {j.key: j for j in jobs}
        out: dict[str, str] = {}
        for job in jobs:
            for d in job.deps:
                if d in by_key:
                    out[d] = str(store.dir_for(by_key[d]))
                    continue
                found = [p for p in store.runs_dir.glob(f"*-{d}") if (p / "DONE").exists()]
                if not found:
                    raise DatawallError(f"{job.name} depends on run {d}, which is neither in the job list nor "
                                        f"finished in {store.root}")
                out[d] = str(found[0])
        return out


def _uses_cuda(job: Job) -> bool:
    device = job.config.get("device") or job.config.get("train", {}).get("device") or "cpu"
    return str(device).startswith("cuda")


def _progress(job: Job, store: RunStore) -> float | None:
    from datawall.study.jobs import KINDS

    try:
        return KINDS[job.kind].progress(job.config, store.dir_for(job))
    except (OSError, ValueError, KeyError):
        return None


def _error_message(e: BaseException) -> str:
    """One line for a failed job: the DatawallError's message, or the exception type and message."""
    cause = getattr(e, "cause", None)  # Ray wraps the worker's exception
    if isinstance(cause, BaseException):
        e = cause
    if isinstance(e, BrokenProcessPool):
        return "its worker process died abruptly (out of memory or killed); rerun to resume from its checkpoint"
    if isinstance(e, DatawallError):
        return str(e)
    return f"{type(e).__name__}: {e}".splitlines()[0]


class LocalExecutor(Executor):
    """A process pool on this machine (spawned workers, `threads` torch threads each); workers=0 runs inline."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int = 1):
        super().__init__(workers, threads)
        self.pool: ProcessPoolExecutor | None = None

    def _start(self, jobs: list[Job]) -> int:
        n = self.workers if self.workers is not None else max(1, cpu_count() // self.threads)
        if self.workers is None and any(_uses_cuda(j) for j in jobs):
            n = 1  # one GPU run at a time (runs do not pick devices among several GPUs)
        if n == 0:
            return 1
        n = min(n, len(jobs))  # no idle workers to spawn (each imports torch)
        import multiprocessing

        self.pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_init_worker, initargs=(self.threads, os.getpid()))
        return n

    def _submit(self, store: RunStore, job: Job, dep_dirs: dict[str, str], quiet: bool) -> Future:
        if self.pool is not None:
            return self.pool.submit(_work, str(store.root), job, dep_dirs, quiet, self.threads)
        future: Future = Future()  # inline: run now, in this process
        import torch

        before = torch.get_num_threads()
        try:
            future.set_result(_work(str(store.root), job, dep_dirs, quiet, self.threads))
        except Exception as e:
            future.set_exception(e)
        finally:
            torch.set_num_threads(before)
        return future

    def _wait(self, handles: list, timeout: float) -> list:
        done, _ = wait_futures(handles, timeout=timeout, return_when=FIRST_COMPLETED)
        return [h for h in handles if h in done]

    def _outcome(self, handle: Future) -> tuple[str, dict]:
        return handle.result()

    def _stop(self, handles: list) -> None:
        if self.pool is None:
            return
        for h in handles:
            h.cancel()
        running = [h for h in handles if not h.done()]
        if not running:
            return
        procs = [p for p in (getattr(self.pool, "_processes", None) or {}).values() if p.is_alive()]
        for p in procs:  # idle workers ignore it; busy ones checkpoint and return
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, STOP_SIGNAL)
        _, late = wait_futures(running, timeout=60)
        if late:
            for p in procs:
                p.kill()

    def _finish(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


class RayExecutor(Executor):
    """One Ray task per job (num_cpus=threads); a local Ray instance unless an address is given.

    The store must be on a filesystem every Ray node mounts at the same path, with working flock.
    """

    name = "ray"

    def __init__(self, workers: int | None = None, threads: int = 1, address: str | None = None):
        super().__init__(workers, threads)
        self.address = address
        self._owns_ray = False
        self._remote = None

    def _ray(self):
        try:
            import ray
        except ImportError:
            raise DatawallError("--executor ray needs Ray: pip install 'datawall[ray]'") from None
        return ray

    def _start(self, jobs: list[Job]) -> int:
        ray = self._ray()
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "logging_level": "ERROR", "configure_logging": True}
            try:
                if self.address:
                    ray.init(address=self.address, **kwargs)
                elif os.environ.get("RAY_ADDRESS"):
                    ray.init(**kwargs)  # the user pointed Ray at a cluster the usual way
                else:
                    # "local": a fresh instance of our own, never a cluster someone else started on this machine
                    # (ray.init() would attach to it and refuse num_cpus)
                    n = self.workers or max(1, cpu_count() // self.threads)
                    ray.init(address="local", num_cpus=n * self.threads, **kwargs)
            except ConnectionError as e:
                raise DatawallError(f"--address {self.address}: cannot reach a Ray cluster ({e})") from None
            self._owns_ray = True
        if self._remote is None:
            self._remote = ray.remote(num_cpus=self.threads, max_retries=0)(_work)
        if self.workers:
            return self.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1)) // self.threads)

    def _submit(self, store: RunStore, job: Job, dep_dirs: dict[str, str], quiet: bool):
        remote = self._remote.options(num_gpus=1) if _uses_cuda(job) else self._remote  # Ray sets CUDA_VISIBLE_DEVICES
        return remote.remote(str(store.root), job, dep_dirs, quiet, self.threads)

    def _wait(self, handles: list, timeout: float) -> list:
        ray = self._ray()
        ready, _ = ray.wait(handles, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
        return ready

    def _outcome(self, handle) -> tuple[str, dict]:
        return self._ray().get(handle)

    def _stop(self, handles: list) -> None:
        ray = self._ray()
        for h in handles:  # a KeyboardInterrupt in the task: training saves a checkpoint
            with contextlib.suppress(Exception):
                ray.cancel(h, force=False)
        _, late = ray.wait(handles, num_returns=len(handles), timeout=60) if handles else ([], [])
        for h in late:
            with contextlib.suppress(Exception):
                ray.cancel(h, force=True)

    def close(self) -> None:
        if self._owns_ray:
            self._ray().shutdown()
            self._owns_ray = False
            self._remote = None


def get_executor(name: str = "local", workers: int | None = None, address: str | None = None,
                 threads: int = 1) -> Executor:
    """The executor called `name` ("local" or "ray"); workers default to cores // threads."""
    if name == "local":
        if address:
            raise DatawallError("--address goes with --executor ray")
        return LocalExecutor(workers, threads)
    if name == "ray":
        return RayExecutor(workers, threads, address)
    raise DatawallError(f"--executor: unknown executor {name!r}; choose local or ray")
