"""Benchmarks as code: ``geoinv bench <task>`` reproduces every number in docs/benchmarks.md.

Each task runs all its methods side by side on held-out data in one run and writes
its section of the markdown file (between ``<!-- bench:<task> -->`` markers) with the
command, machine, date and versions, plus a JSON file of the raw numbers next to it.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import logging
import os
import platform
import re
from pathlib import Path
from typing import Callable

import torch

from geoinv.io._files import atomic_write_bytes

__all__ = ["TASKS", "run", "machine_info", "write_section", "markdown_table"]

log = logging.getLogger(__name__)


def machine_info() -> dict:
    """CPU model, core count, torch version/threads, date (UTC)."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from geoinv import __version__

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "geoinv": __version__,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Render ``rows`` as a markdown table; ``columns`` = (key, header, format)."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for r in rows:
        cells = []
        for key, _, fmt in columns:
            v = r.get(key)
            cells.append("–" if v is None else (format(v, fmt) if fmt else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_section(path: str | Path, task: str, body: str) -> None:
    """Replace (or append) the ``task`` section of a markdown file, atomically."""
    path = Path(path)
    start, end = f"<!-- bench:{task} -->", f"<!-- /bench:{task} -->"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery number below is produced by `geoinv bench <task>`.\n"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    atomic_write_bytes(path, text.encode())


def header(task: str, command: str, info: dict) -> str:
    """The provenance lines every section starts with."""
    return (
        f"## {task}\n\n"
        f"Command: `{command}`  \n"
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads), "
        f"Python {info['python']}, geoinv {info['geoinv']}  \n"
        f"Date: {info['date']}\n"
    )


#: task name -> private module of geoinv.bench defining ``run(quick, n_test, seed, progress) -> dict`` (or
#: ``module:function`` for another function of that signature)
TASKS = {
    "bunny-mnist": "_bunny",
    "prior": "_prior",
    "sphere": "_sphere",
    "climate": "_climate",
    "navier-stokes": "_navier_stokes",
    "navier-stokes-10": "_navier_stokes:run_noise_free",
    "navier-stokes-128": "_navier_stokes:run_fine",
}


def _task(task: str) -> Callable:
    import importlib

    if task not in TASKS:
        raise ValueError(f"unknown benchmark {task!r}; available: {', '.join(TASKS)}")
    module, _, name = TASKS[task].partition(":")
    try:
        return getattr(importlib.import_module(f"geoinv.bench.{module}"), name or "run")
    except ModuleNotFoundError as exc:
        raise ValueError(f"benchmark {task!r} is not available in this version ({exc})") from exc


def run(task: str, *, out: str | Path = "docs/benchmarks.md", quick: bool = False, n_test: int | None = None,
        seed: int = 0, progress: bool = True) -> dict:
    """Run benchmark ``task``, write its section of ``out`` and ``out``'s JSON sidecar.

    Returns the raw results dict.
    """
    fn = _task(task)
    info = machine_info()
    cmd = f"geoinv bench {task}" + (" --quick" if quick else "") + (f" --n {n_test}" if n_test else "")
    # pictures go into img/ beside the output file (its markdown links them as img/<name>.png)
    extra = {"img_dir": Path(out).parent / "img"} if "img_dir" in inspect.signature(fn).parameters else {}
    result = fn(quick=quick, n_test=n_test, seed=seed, progress=progress, **extra)
    body = header(task, cmd, info) + "\n" + result["markdown"]
    write_section(out, task, body)
    side = Path(out).with_name(f"bench-{task}.json")
    payload = {"task": task, "command": cmd, "machine": info, "rows": result["rows"]}
    atomic_write_bytes(side, json.dumps(payload, indent=1, default=float).encode())
    return payload
