"""The content-addressed run store: one directory per job, a file lock per run, and an SQLite index.

Layout of STORE (default `$DATAWALL_HOME` or `~/.datawall`):

    runs/<kind>-<key>/   job.json (kind, version, config, deps), the kind's files, result.json, DONE (last)
    locks/<kind>-<key>.lock
    index.sqlite         runs: key, kind, config, status, metrics, timestamps, studies that use the run

The run directories are the truth; the index is a cache of them (plus which studies used which run) that
`sync()` rebuilds, so a process killed between writing DONE and updating the index loses nothing, and an
index that is not a readable SQLite database is moved aside (index.sqlite.corrupt-<time>) and rebuilt.
Only the process that drives a study writes the index; workers touch nothing but their run directory.

A finished run whose result.json is missing, not JSON, or lacks what readers index (`result_problem`) is a
broken cache entry, not an error: its key says exactly what it computes, so the file is moved aside
(result.json.corrupt-<time>), DONE removed, and the run computed again from its own checkpoint, with a
warning on stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
import traceback
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from datawall.atomic import atomic_write_json, atomic_write_text
from datawall.errors import DatawallError
from datawall.study.jobs import KINDS, Job
from datawall.study.locks import RunLock, holder, is_locked

STATUSES = ("queued", "running", "done", "failed", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    version TEXT NOT NULL,
    config TEXT NOT NULL,
    deps TEXT NOT NULL,
    status TEXT NOT NULL,
    metrics TEXT,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    studies TEXT NOT NULL DEFAULT '[]'
);
"""


# sqlite's names for "this file is not (or no longer) a database": the index is then rebuilt
CORRUPT_INDEX = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


def default_root() -> Path:
    """$DATAWALL_HOME, else ~/.datawall."""
    return Path(os.environ.get("DATAWALL_HOME") or Path.home() / ".datawall")


class RunStore:
    """Run directories named by job hash, their locks, and the index that lists them."""

    def __init__(self, root: str | Path | None = None):
        # absolute: workers (and Ray nodes) get this path, whatever their working directory
        self.root = (Path(root) if root is not None else default_root()).expanduser().absolute()
        self.runs_dir = self.root / "runs"
        self.locks_dir = self.root / "locks"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.locks_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatawallError(f"run store {self.root}: cannot create it ({e.strerror})") from None
        self.index_path = self.root / "index.sqlite"
        self._schema_ready = False  # created on first use: workers, which never touch the index, never open it
        self.warn: Callable[[str], None] = _warn  # repairs are announced here (one line each)

    # --- directories, locks, results -------------------------------------------------------------------

    def dir_for(self, job: Job) -> Path:
        """STORE/runs/<kind>-<key>."""
        return self.runs_dir / job.name

    def lock_for(self, job: Job) -> RunLock:
        """The (not yet acquired) lock guarding the job's run directory."""
        return RunLock(self.locks_dir / f"{job.name}.lock")

    def is_done(self, job: Job) -> bool:
        """Whether the job's run finished (its DONE marker exists)."""
        return (self.dir_for(job) / "DONE").exists()

    def result(self, job: Job) -> dict | None:
        """The finished run's result.json, or None when it has not finished.

        A result that is unreadable or lacks what readers index is moved aside and the run marked unfinished
        (so None: the executor recomputes it, resuming from its checkpoint).
        """
        if not self.is_done(job):
            return None
        result, problem = read_result(job.kind, job.config, self.dir_for(job))
        if problem is None:
            return result
        with self.lock_for(job):
            if not self.is_done(job):
                return None  # another process discarded it while we waited
            result, problem = read_result(job.kind, job.config, self.dir_for(job))
            if problem is None:
                return result  # recomputed while we waited
            self._discard_result(job, problem)
        return None

    def _discard_result(self, job: Job, problem: str) -> None:
        """Move a bad result.json aside and remove DONE (the caller holds the run's lock)."""
        run_dir = self.dir_for(job)
        path = run_dir / "result.json"
        kept = ""
        if path.exists():
            aside = _aside(path)
            os.replace(path, aside)
            kept = f"; moved it to {aside.name}"
        (run_dir / "DONE").unlink(missing_ok=True)
        self.warn(f"{path} {problem}{kept}; computing the run again (it resumes from its checkpoint)")

    def execute(self, job: Job, dep_dirs: dict[str, Path], quiet: bool = True) -> tuple[str, dict]:
        """Run the job under its lock (waiting for another holder), or reuse it: ("done"|"reused", result).

        Called in the worker process. Writes job.json first, error.txt on failure, result.json and DONE last.
        """
        run_dir = self.dir_for(job)
        with self.lock_for(job):
            if (run_dir / "DONE").exists():  # finished while we waited on the lock
                result, problem = read_result(job.kind, job.config, run_dir)
                if problem is None:
                    return "reused", result
                self._discard_result(job, problem)
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "error.txt").unlink(missing_ok=True)
            if not (run_dir / "job.json").exists():
                atomic_write_json(run_dir / "job.json", job_record(job))
            try:
                result = KINDS[job.kind].run(job.config, run_dir, dep_dirs, quiet)
            except Exception as e:
                atomic_write_text(run_dir / "error.txt", traceback.format_exc())
                if isinstance(e, DatawallError):
                    raise
                raise DatawallError(f"{type(e).__name__}: {e}") from e
            if not (run_dir / "result.json").exists():
                atomic_write_json(run_dir / "result.json", result)
            if not (run_dir / "DONE").exists():
                atomic_write_text(run_dir / "DONE", "")
            return "done", result

    # --- the index --------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.index_path, timeout=60, isolation_level=None)
        except sqlite3.Error as e:
            raise DatawallError(f"{self.index_path}: cannot open the run index ({e})") from None
        conn.row_factory = sqlite3.Row
        return conn

    def _db(self) -> closing[sqlite3.Connection]:
        if not self._schema_ready:
            self._open_index()
        return _Tx(self._connect())

    def _index_problem(self) -> str | None:
        """Create the schema if needed; why the index is not a usable database (None when it is)."""
        try:
            with closing(self._connect()) as conn:
                conn.executescript(SCHEMA)
                check = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", None) in CORRUPT_INDEX:
                return str(e)
            raise DatawallError(f"{self.index_path}: cannot use the run index ({e})") from None
        return None if check == ["ok"] else "; ".join(check[:3])

    def _open_index(self) -> None:
        """First use of the index: an unreadable one is moved aside and rebuilt from the run directories."""
        problem = self._index_problem()
        if problem is None:
            self._schema_ready = True
            return
        with RunLock(self.root / "index.lock"):  # two drivers noticing at once: only one moves it aside
            problem = self._index_problem()
            if problem is None:  # the other one rebuilt it while we waited
                self._schema_ready = True
                return
            aside = _aside(self.index_path)
            os.replace(self.index_path, aside)
            for suffix in ("-journal", "-wal", "-shm"):  # sqlite's side files belong to the bad database
                side = self.index_path.with_name(self.index_path.name + suffix)
                if side.exists():
                    os.replace(side, aside.with_name(aside.name + suffix))
            if self._index_problem() is not None:
                raise DatawallError(f"{self.index_path}: cannot create a fresh run index")
            self._schema_ready = True
            self.sync()
        self.warn(f"{self.index_path} was not a readable SQLite database ({problem}); moved it to {aside.name} "
                  "and rebuilt the index from the run directories (which studies used each run is not kept "
                  "in them, so that is lost)")

    def record(self, job: Job, status: str, result: dict | None = None, error: str | None = None,
               study: str | None = None) -> None:
        """Upsert the job's index row with its status (and final metrics or error), adding `study` to it."""
        assert status in STATUSES, status
        now = time.time()
        metrics = json.dumps(KINDS[job.kind].summary(result)) if result is not None else None
        with self._db() as db:
            row = db.execute("SELECT studies, metrics, created, finished FROM runs WHERE key=?",
                             (job.key,)).fetchone()
            studies = json.loads(row["studies"]) if row else []
            if study and study not in studies:
                studies.append(study)
            db.execute(
                "INSERT OR REPLACE INTO runs (key, kind, version, config, deps, status, metrics, error, created, "
                "updated, finished, studies) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (job.key, job.kind, KINDS[job.kind].version, json.dumps(job.config), json.dumps(list(job.deps)),
                 status, metrics if metrics is not None else (row["metrics"] if row else None), error,
                 row["created"] if row else now, now,
                 now if status == "done" and not (row and row["finished"]) else (row["finished"] if row else None),
                 json.dumps(studies)))

    def sync(self) -> None:
        """Bring the index in line with the run directories (finished, running and unindexed runs)."""
        rows = {r["key"]: r for r in self._rows()}
        for run_dir in sorted(self.runs_dir.iterdir()) if self.runs_dir.exists() else []:
            rec = _read_json(run_dir / "job.json")
            if not _is_job_record(rec, run_dir.name):
                continue  # not a run directory of this store (or its job.json is damaged): nothing to index
            key, row = rec["key"], rows.get(rec["key"])
            status = self._fs_status(run_dir, row["status"] if row else "interrupted")
            if row is not None and row["status"] == status and (status != "done" or row["metrics"]):
                continue
            result, error = None, _error_line(run_dir) if status == "failed" else None
            if status == "done":
                result, problem = read_result(rec["kind"], rec["config"], run_dir)
                if problem is not None:  # listed as failed; the next study or ladder that needs it recomputes it
                    status, error = "failed", f"result.json {problem}; the next run that needs it recomputes it"
                    if row is not None and row["status"] == status and row["error"] == error:
                        continue
            now = time.time()
            with self._db() as db:
                db.execute(
                    "INSERT OR REPLACE INTO runs (key, kind, version, config, deps, status, metrics, error, created,"
                    " updated, finished, studies) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (key, rec["kind"], rec["version"], json.dumps(rec["config"]), json.dumps(rec["deps"]), status,
                     json.dumps(KINDS[rec["kind"]].summary(result)) if result is not None
                     else (row["metrics"] if row else None), error,
                     row["created"] if row else (run_dir / "job.json").stat().st_mtime, now,
                     (run_dir / "DONE").stat().st_mtime if status == "done" else None,
                     row["studies"] if row else "[]"))

    def _fs_status(self, run_dir: Path, indexed: str) -> str:
        """done if DONE exists, running if locked, failed if error.txt; else what the index says (running there
        means its process died: interrupted)."""
        if (run_dir / "DONE").exists():
            return "done"
        if is_locked(self.locks_dir / f"{run_dir.name}.lock"):
            return "running"
        if (run_dir / "error.txt").exists():
            return "failed"
        return "interrupted" if indexed in ("running", "done") else indexed

    def _rows(self) -> list[sqlite3.Row]:
        with self._db() as db:
            return db.execute("SELECT * FROM runs ORDER BY created").fetchall()

    def list(self, kind: str | None = None, status: str | None = None, study: str | None = None) -> list[dict]:
        """Every indexed run (after sync), oldest first, optionally filtered."""
        self.sync()
        out = []
        for r in self._rows():
            row = self._row_dict(r)
            if (kind and row["kind"] != kind) or (status and row["status"] != status) or \
                    (study and study not in row["studies"]):
                continue
            out.append(row)
        return out

    def _row_dict(self, r: sqlite3.Row) -> dict:
        name = f"{r['kind']}-{r['key']}"
        status = r["status"]
        run_dir = self.runs_dir / name
        if status == "queued" and is_locked(self.locks_dir / f"{name}.lock"):
            status = "running"
        return {"key": r["key"], "name": name, "kind": r["kind"], "version": r["version"], "status": status,
                "dir": str(run_dir), "exists": run_dir.exists(), "config": json.loads(r["config"]),
                "deps": json.loads(r["deps"]), "metrics": json.loads(r["metrics"]) if r["metrics"] else {},
                "error": r["error"], "created": r["created"], "updated": r["updated"], "finished": r["finished"],
                "studies": json.loads(r["studies"])}

    def find(self, ref: str) -> dict:
        """The run named by a key, a unique key prefix (4+ hex digits) or a directory name <kind>-<key>."""
        self.sync()
        ref = ref.strip().rstrip("/").split("/")[-1]
        key = ref.split("-", 1)[1] if "-" in ref else ref
        if len(key) < 4:
            raise DatawallError(f"run {ref!r}: give at least 4 characters of its key")
        rows = [r for r in self._rows() if r["key"].startswith(key)]
        if not rows:
            raise DatawallError(f"no run {ref!r} in {self.root} (see `datawall runs list`)")
        if len(rows) > 1:
            raise DatawallError(f"run {ref!r} is ambiguous: {', '.join(r['key'] for r in rows[:5])}")
        return self._row_dict(rows[0])

    def show(self, ref: str) -> dict:
        """Everything about one run: its index row, result, files and (while running) who runs it."""
        row = self.find(ref)
        run_dir = Path(row["dir"])
        row["result"] = None
        if row["status"] == "done":
            row["result"], problem = read_result(row["kind"], row["config"], run_dir)
            if problem is not None:
                row["status"], row["error"] = "failed", f"result.json {problem}; the next run that needs it " \
                                                        "recomputes it"
        row["files"] = sorted(p.name + ("/" if p.is_dir() else "") for p in run_dir.iterdir()) \
            if run_dir.exists() else []
        row["holder"] = holder(self.locks_dir / f"{row['name']}.lock") if row["status"] == "running" else None
        row["progress"] = KINDS[row["kind"]].progress(row["config"], run_dir) \
            if row["status"] != "done" and run_dir.exists() else None
        if row["status"] == "failed" and (run_dir / "error.txt").exists():
            row["traceback"] = (run_dir / "error.txt").read_text()
        return row

    def gc(self, dry_run: bool = False) -> dict:
        """Delete unfinished run directories no live process holds, stale locks and leftovers of finished runs,
        and index rows whose directories are gone. Returns what was (or, dry_run, would be) removed."""
        self.sync()
        removed_dirs, running, freed = [], [], 0
        for run_dir in sorted(self.runs_dir.iterdir()):
            if not run_dir.is_dir():
                continue
            if (run_dir / "DONE").exists():
                for junk in [*run_dir.glob(".checkpoint.*"), *run_dir.glob(".*.tmp"), run_dir / "error.txt"]:
                    if junk.exists():
                        freed += _size(junk)
                        if not dry_run:
                            _remove(junk)
                continue
            lock = RunLock(self.locks_dir / f"{run_dir.name}.lock")
            if not lock.acquire(blocking=False, record=False):
                running.append(run_dir.name)
                continue
            try:
                if (run_dir / "DONE").exists():  # finished between our check and the lock
                    continue
                freed += _size(run_dir)
                removed_dirs.append(run_dir.name)
                if not dry_run:
                    shutil.rmtree(run_dir)
            finally:
                lock.release()
        removed_locks = []
        for path in sorted(self.locks_dir.glob("*.lock")):
            if (self.runs_dir / path.stem).is_dir() and path.stem not in removed_dirs:
                continue
            lock = RunLock(path)
            if lock.acquire(blocking=False, record=False):
                removed_locks.append(path.name)
                if not dry_run:
                    lock.unlink()
                lock.release()
        gone = set(removed_dirs)
        names = [f"{r['kind']}-{r['key']}" for r in self._rows()]
        removed_rows = [n for n in names if n in gone or not (self.runs_dir / n).exists()]
        if not dry_run and removed_rows:
            with self._db() as db:
                db.executemany("DELETE FROM runs WHERE key=?", [(n.split("-", 1)[1],) for n in removed_rows])
        return {"dry_run": dry_run, "removed_dirs": removed_dirs, "removed_rows": removed_rows,
                "removed_locks": removed_locks, "running": running, "freed_bytes": freed}


class _Tx(closing):
    """A connection used as `with`: one transaction, committed on success, always closed."""

    def __enter__(self) -> sqlite3.Connection:
        conn = super().__enter__()
        conn.execute("BEGIN IMMEDIATE")
        return conn

    def __exit__(self, exc_type, *exc) -> None:
        try:
            self.thing.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            super().__exit__(exc_type, *exc)


def job_record(job: Job) -> dict:
    """What job.json holds: enough to re-index the run and to show what it computed."""
    return {"kind": job.kind, "version": KINDS[job.kind].version, "key": job.key, "config": job.config,
            "deps": list(job.deps)}


def _read_json(path: Path):
    """The JSON value in a file; None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, IsADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _is_job_record(rec, dir_name: str) -> bool:
    """Whether a job.json value can be indexed: the fields job_record writes, naming this directory."""
    return (isinstance(rec, dict) and rec.get("kind") in KINDS and isinstance(rec.get("key"), str)
            and dir_name == f"{rec['kind']}-{rec['key']}" and isinstance(rec.get("version"), str)
            and isinstance(rec.get("config"), dict) and isinstance(rec.get("deps"), list))


# What readers of a finished run's result index, per kind: fields that must be numbers, and fields that may be
# absent or null but are numbers when present. (Analysis and reports read these without further checks.)
NUMBERS = {
    "pretrain": (("params", "params_non_embedding", "tokens", "unique_tokens", "epochs", "flops", "wall_seconds"),
                 ("train_loss", "eval_loss", "accuracy", "ci_low", "ci_high")),
}
THINK_ROW = ("accuracy", "ci_low", "ci_high", "tokens_per_query", "flops_per_query", "dollars_per_query")


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _json_kind(v) -> str:
    if v is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(type(v), "a number")


def result_problem(kind: str, config: dict, result) -> str | None:
    """What is wrong with a finished run's result.json value, in a few words (None when readers can use it)."""
    if not isinstance(result, dict):
        return f"holds {_json_kind(result)}, not a JSON object"
    required, optional = NUMBERS.get(kind, ((), ()))
    if kind == "pretrain" and config.get("data", {}).get("task") and config.get("eval_problems", 0) > 0:
        required = (*required, "accuracy")  # a task world's run is scored; studies read its accuracy
    for key in required:
        if key not in result:
            return f"has no {key!r}"
    for key in (*required, *optional):
        v = result.get(key)
        if not (_is_number(v) or (v is None and key not in required)):
            return f"has {key!r} = {json.dumps(v)[:40]}, not a number"
    if kind == "think":
        strategies = result.get("strategies")
        if not isinstance(strategies, dict) or not strategies:
            return "has no 'strategies' object"
        for name, rows in strategies.items():
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                return f"has strategies.{name} that is not a list of objects"
            for r in rows:
                if not isinstance(r.get("n"), int) or isinstance(r.get("n"), bool) or not all(
                        _is_number(r.get(k)) or r.get(k) is None for k in THINK_ROW):
                    return f"has a malformed row in strategies.{name}"
    return None


def read_result(kind: str, config: dict, run_dir: Path) -> tuple[dict | None, str | None]:
    """A finished run's result and None, or None and what is wrong with its result.json."""
    path = run_dir / "result.json"
    try:
        result = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "is missing"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"is not readable JSON ({str(e).splitlines()[0][:60]})"
    problem = result_problem(kind, config, result)
    return (None, problem) if problem else (result, None)


def _aside(path: Path) -> Path:
    """A fresh name beside path to move a damaged file to: NAME.corrupt-<UTC time>[-N]."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for i in range(1000):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{i}" if i else ""))
        if not aside.exists():
            return aside
    raise DatawallError(f"{path}: too many damaged copies beside it; remove some")


def _warn(message: str) -> None:
    """One warning line on stderr, through the shared console so live views stay intact."""
    from datawall.progress import stderr

    stderr.print(f"warning: {message}", markup=False, highlight=False, soft_wrap=True)


def _error_line(run_dir: Path) -> str | None:
    try:
        lines = [x for x in (run_dir / "error.txt").read_text().splitlines() if x.strip()]
    except FileNotFoundError:
        return None
    return lines[-1] if lines else None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
