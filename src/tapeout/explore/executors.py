"""Where batches of designs are evaluated: `local` (this process, or worker processes over every
core) and `ray` (a Ray cluster: the one `address` names, else a local one started for the run).

Work is shipped in batches of designs (`search.batch` each), so per-task overhead stays small:
each worker lowers the space's workloads once and keeps its designs' silicon. Results come back
as batches finish, in any order; the driver stores each whole batch. ray is imported only here,
and only when asked for.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import socket
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol

from tapeout.errors import TapeoutError
from tapeout.explore.evaluate import Evaluator, Result
from tapeout.explore.knobs import Value
from tapeout.explore.space import Space

Chunk = list[dict[str, Value]]
CONNECT_TIMEOUT_S = 3.0  # a Ray address that does not answer within this is refused
INSTALL = "the ray executor needs Ray: pip install 'tapeout[ray]'"
_EVALUATOR: Evaluator | None = None  # a worker process's evaluator (inherited on fork)


class Executor(Protocol):
    workers: int

    def run(
        self, chunks: Sequence[Chunk]
    ) -> Iterator[tuple[int, list[Result]]]: ...  # (chunk index, results)
    def close(self) -> None: ...


def _evaluate(chunk: Chunk) -> list[Result]:
    assert _EVALUATOR is not None
    return _EVALUATOR.evaluate_batch(chunk)


class Local:
    """This process when `workers` is 1, else `workers` processes forked with the workloads
    already lowered."""

    def __init__(self, space: Space, workers: int | None = None) -> None:
        global _EVALUATOR
        self.workers = max(1, workers or os.cpu_count() or 1)
        _EVALUATOR = Evaluator(space)
        self._pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            context = multiprocessing.get_context("fork")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)

    def run(self, chunks: Sequence[Chunk]) -> Iterator[tuple[int, list[Result]]]:
        if self._pool is None:
            for i, chunk in enumerate(chunks):
                yield i, _evaluate(chunk)
            return
        futures: dict[Future[list[Result]], int] = {
            self._pool.submit(_evaluate, c): i for i, c in enumerate(chunks)
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=lambda f: futures[f]):
                yield futures[f], f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def reachable(address: str) -> None:
    """Refuse, within seconds, a Ray address (HOST:PORT) nothing answers at."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise TapeoutError(
            f"--ray-address {address!r}: expected HOST:PORT of a Ray cluster's head (or 'auto')"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise TapeoutError(
            f"--ray-address {address}: cannot reach a Ray cluster there within {CONNECT_TIMEOUT_S:g} s ({exc})"
        ) from None


class RayExecutor:
    """One actor per worker, each holding the space's lowered workloads; at most two batches in
    flight per actor."""

    def __init__(self, space: Space, workers: int | None = None, address: str | None = None) -> None:
        try:
            ray: Any = importlib.import_module("ray")  # the one place ray is imported
        except ImportError as exc:
            raise TapeoutError(f"{INSTALL} ({exc})") from exc
        if address not in (None, "auto"):
            reachable(address)
            # Ray retries a silent head for about 20 s; a bounded wait makes a wrong address fail fast.
            os.environ.setdefault("RAY_gcs_server_port_wait_time_s", str(int(CONNECT_TIMEOUT_S)))
            os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        self._ray: Any = ray
        self._started = not ray.is_initialized()
        if self._started:
            kwargs: dict[str, Any] = (
                {"address": address} if address else {"num_cpus": workers or os.cpu_count()}
            )
            try:
                ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False, **kwargs)
            except (ConnectionError, RuntimeError) as exc:
                reason = str(exc).strip().splitlines()[0]
                raise TapeoutError(
                    f"--ray-address {address}: cannot join a Ray cluster there ({reason})"
                ) from None
        self.workers = max(1, workers or int(ray.cluster_resources().get("CPU", 1)))
        actor = ray.remote(num_cpus=1)(_Actor)
        self._actors = [actor.remote(space) for _ in range(self.workers)]

    def run(self, chunks: Sequence[Chunk]) -> Iterator[tuple[int, list[Result]]]:
        ray = self._ray
        queue = list(enumerate(chunks))[::-1]
        running: dict[Any, tuple[int, int]] = {}  # ref -> (chunk, actor)
        load = [0] * len(self._actors)

        def submit() -> None:
            for a, actor in enumerate(self._actors):
                while queue and load[a] < 2:
                    i, chunk = queue.pop()
                    running[actor.evaluate.remote(chunk)] = (i, a)
                    load[a] += 1

        submit()
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            i, a = running.pop(done[0])
            load[a] -= 1
            submit()
            yield i, ray.get(done[0])

    def close(self) -> None:
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started:
            self._ray.shutdown()


class _Actor:
    def __init__(self, space: Space) -> None:
        self._evaluator = Evaluator(space)

    def evaluate(self, chunk: Chunk) -> list[Result]:
        return self._evaluator.evaluate_batch(chunk)


def executor(kind: str, space: Space, workers: int | None = None, address: str | None = None) -> Executor:
    if kind == "local":
        if address is not None:
            raise TapeoutError("--ray-address goes with --executor ray")
        return Local(space, workers)
    if kind == "ray":
        return RayExecutor(space, workers, address)
    raise TapeoutError(f"--executor {kind!r}: known: local, ray")
