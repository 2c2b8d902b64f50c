"""Running evaluations on Dask distributed, with a progress bar and a results log.

:func:`client` opens a ``distributed.Client``: on an existing scheduler
(``--scheduler tcp://HOST:PORT``) or on a ``LocalCluster`` of ``workers`` single-threaded
worker processes (default: one per CPU of the machine; nothing to start). Yosys, the Amaranth
simulator and the golden models are the tasks.

:func:`stream` waits on futures as they complete and hands each result (or the exception of a
failed task) to a callback, so that results are written as each point finishes; a
:class:`Progress` bar (tqdm) shows points done, running and failed.

:class:`Log` is the results file: one JSON record per line, appended and flushed as each point
finishes; a killed run leaves every finished record (a torn last line is ignored), which is
what ``--resume`` reads.
"""

import json
import os
import sys

__all__ = ["client", "stream", "Progress", "Log", "error_text"]


def client(scheduler=None, workers=None):
    """A ``distributed.Client`` on ``scheduler`` or on a new ``LocalCluster`` of ``workers``
    processes (default ``os.cpu_count()``), one thread each, its logs silenced below CRITICAL
    (a failing task is reported in its point's record, not as a worker traceback). Close it (and its cluster) when
    done: ``with client(...) as c:``."""
    from distributed import Client, LocalCluster
    if scheduler:
        return Client(scheduler)
    n = workers or os.cpu_count() or 1
    if n < 1:
        raise ValueError(f"workers must be >= 1, not {n}")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=50)
    return _Owned(Client(cluster), cluster)


class _Owned:
    """A client that also closes the LocalCluster it was made for."""

    def __init__(self, c, cluster):
        self.client, self.cluster = c, cluster

    def __getattr__(self, name):
        return getattr(self.client, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.client.close()
        self.cluster.close()


def error_text(exc):
    """One line for a failed task: exception type and message (first line)."""
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}".rstrip(": ")


class Progress:
    """A tqdm bar over ``total`` points: ``done``, ``running`` (tasks on the workers) and
    ``failed`` in its postfix. ``enabled=False`` prints nothing (tests)."""

    def __init__(self, total, desc, enabled=True, initial=0):
        self.failed, self.bar = 0, None
        if enabled:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=desc, unit="pt",
                            file=sys.stderr, dynamic_ncols=True)

    def update(self, failed=False, running=0):
        self.failed += bool(failed)
        if self.bar is not None:
            self.bar.set_postfix(running=running, failed=self.failed, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _running(c):
    try:
        return sum(len(v) for v in c.processing().values())
    except Exception:                                   # an old scheduler: no figure
        return 0


def stream(c, futures, on_result, progress=None):
    """Call ``on_result(key, value, error)`` for every future of ``futures`` (``{key: future}``)
    as it completes (``error``: one line, ``value`` None, when the task raised). Returns the
    number of failures."""
    from distributed import as_completed
    keys = {f.key: k for k, f in futures.items()}
    failed = 0
    for fut in as_completed(list(futures.values())):
        key = keys[fut.key]
        try:
            value, err = fut.result(), None
        except Exception as exc:                        # the task's own exception
            value, err = None, error_text(exc)
            failed += 1
        on_result(key, value, err)
        if progress is not None:
            progress.update(failed=err is not None, running=_running(c))
        fut.release()
    return failed


class Log:
    """Append-only JSON-lines results file."""

    def __init__(self, path, resume=False):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.records = self.read(path) if resume else {}
        if not resume:
            path.write_text("")

    @staticmethod
    def read(path):
        """``{id: record}`` of every complete line of ``path`` (the last record of an id wins)."""
        out = {}
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:                # a line torn by a kill
                continue
            out[rec["id"]] = rec
        return out

    def append(self, record):
        self.records[record["id"]] = record
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
