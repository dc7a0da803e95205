"""Rendering a sender's batch in other processes, so that a large send uses more than the one core the
event loop's process can use.

Rendering (Liquid, CSS inlining, the text part) is pure and was 29% of a sending process's CPU: in a worker
thread it still shares that process's interpreter lock with the event loop, which claims, decides, speaks
SMTP and records answers (bench/sends.py). Here a batch of at least `RenderPool.threshold` renders goes to
`processes` child processes in as many chunks; smaller batches (a journey step's few sends, tests, previews)
stay in a thread, where a render costs no inter-process copy.

A child is started on first use and dies with its parent (a `kill -9` of the server leaves none behind); a
render that fails in a child comes back as the same RenderError; a child that dies makes the batch render
in the thread instead (and a new pool is started for the next one). Nothing a child does is durable: the
outbox's state is written by the parent only, so the exactly-once story (docs/messaging.md) is unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import multiprocessing
import os
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from lunogram_server.messaging.templates import Rendered, RenderError, SourceProblem, TemplateDefinition, render

Job = tuple[TemplateDefinition, str | None, dict[str, Any], dict[str, str]]
Result = Rendered | RenderError

_PR_SET_PDEATHSIG = 1


def render_jobs(jobs: Sequence[Job]) -> list[Result]:
    """Each job's message, or its RenderError: the simple path, in this process."""
    out: list[Result] = []
    for template, locale, context, snippets in jobs:
        try:
            out.append(render(template, locale, context, snippets))
        except RenderError as exc:
            out.append(exc)
    return out


def _render_in_child(jobs: Sequence[Job]) -> list[Rendered | SourceProblem]:
    """`render_jobs` in a child: a RenderError travels as its SourceProblem (an exception whose constructor
    takes other arguments than its message does not survive pickling)."""
    return [r.problem if isinstance(r, RenderError) else r for r in render_jobs(jobs)]


def _child_start(parent: int) -> None:
    """In each child: die with the parent, leave Ctrl-C and SIGTERM to it (it shuts the pool down).

    The death signal is sent when the thread that started the child ends: children are started by
    `submit`, which the event loop's thread calls, and that thread lives as long as the process."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the line above: nobody wants this child
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class RenderPool:
    """`await pool.render(jobs)`: the results in the jobs' order, rendered in child processes when the
    batch is large enough and `processes` > 0, else in a worker thread (`THREAD_AT` or more) or inline."""

    THREAD_AT = 16  # fewer renders than this cost less than a thread hand-off

    def __init__(self, processes: int, threshold: int = 64) -> None:
        self.processes = max(0, processes)
        self.threshold = max(1, threshold)
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            # spawn, not fork: the parent runs an event loop and threads, which a forked child would inherit
            # half-copied. A spawned child imports the parent's main module unless it is a package's
            # __main__ (`python -m lunogram_server`); the `lunogram` script guards its call to main()
            self._executor = ProcessPoolExecutor(
                max_workers=self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_start,
                initargs=(os.getpid(),),
            )
        return self._executor

    async def render(self, jobs: Sequence[Job]) -> list[Result]:
        if self.processes and len(jobs) >= self.threshold:
            try:
                return await self._in_children(jobs)
            except BrokenProcessPool:
                import structlog  # not at import: a child imports this module and never logs

                structlog.get_logger("lunogram.messaging").warning(
                    "a render process died: this batch renders in a thread, the next in a new pool"
                )
                self.close()
        if len(jobs) >= self.THREAD_AT:
            return await asyncio.to_thread(render_jobs, jobs)
        return render_jobs(jobs)

    async def _in_children(self, jobs: Sequence[Job]) -> list[Result]:
        pool = self._pool()
        loop = asyncio.get_running_loop()
        size = -(-len(jobs) // self.processes)  # one chunk per child: a chunk pickles its template once
        chunks = [list(jobs[at : at + size]) for at in range(0, len(jobs), size)]
        done = await asyncio.gather(*(loop.run_in_executor(pool, _render_in_child, chunk) for chunk in chunks))
        return [RenderError(r) if isinstance(r, SourceProblem) else r for chunk in done for r in chunk]

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
