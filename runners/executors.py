"""Executors: run a list of tasks (:mod:`runners.tasks`) in this process (:class:`LocalExecutor`) or as Ray tasks
(:class:`RayExecutor`); a task waits for the tasks whose shards it reads."""

from __future__ import annotations

import os
from pathlib import Path

from . import shards as sh
from .tasks import Task, run_task, summary

REPO = Path(__file__).resolve().parent.parent


def _order(tasks: list[Task]) -> list[Task]:
    rank = {s: k for k, s in enumerate(sh.STAGES)}
    return sorted(tasks, key=lambda t: (rank[t.stage], t.shard))


class LocalExecutor:
    """Runs the tasks one after another in this process (no extra service)."""

    name = "local"

    def run(self, tasks: list[Task], done: dict[str, dict], on_result) -> None:
        for task in _order(tasks):
            res = run_task(task, *[done[d] for d in task.deps if d in done])
            done[task.key] = res
            on_result(res)


class RayExecutor:
    """Runs the tasks as Ray tasks: one GPU each when the device is CUDA, else ``cpus_per_task`` CPUs; a task
    whose worker died is retried (``max_retries``); a task waits for the tasks whose shards it reads."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cuda: bool = False,
                 cpus_per_task: int = 1, max_retries: int = 3):
        self.address, self.workers, self.cuda = address, workers, cuda
        self.cpus_per_task, self.max_retries = cpus_per_task, max_retries

    def _init(self):
        import ray

        if ray.is_initialized():
            return ray
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)}}
        if self.address:
            ray.init(address=self.address, runtime_env=env, log_to_driver=True)
        else:
            kw = {"num_gpus": self.workers} if self.cuda and self.workers else {}
            ray.init(num_cpus=(self.workers or os.cpu_count()) * (1 if self.cuda else self.cpus_per_task),
                     include_dashboard=False, runtime_env=env, **kw)
        return ray

    def run(self, tasks: list[Task], done: dict[str, dict], on_result) -> None:
        ray = self._init()
        res = {"num_gpus": 1, "num_cpus": 1} if self.cuda else {"num_cpus": self.cpus_per_task}
        remote = ray.remote(run_task).options(max_retries=self.max_retries, retry_exceptions=False, **res)
        refs, by_ref = {}, {}
        for task in _order(tasks):
            args = [refs.get(d, done.get(d)) for d in task.deps if d in refs or d in done]
            ref = remote.remote(task, *args)
            refs[task.key] = ref
            by_ref[ref] = task
        pending = list(by_ref)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            task = by_ref[ready[0]]
            try:
                result = ray.get(ready[0])
            except Exception as err:  # the worker died more than max_retries times, or Ray failed
                msg = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                sh.record_failure(task.paths(), task.describe(), msg)
                result = summary(task, error=msg)
            done[task.key] = result
            on_result(result)


def make_executor(cfg, cuda: bool):
    if cfg.executor == "local":
        return LocalExecutor()
    if cfg.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--executor ray needs the ray package: pip install -e '.[ray]' (or pip install ray)"
                             ) from None
        return RayExecutor(cfg.ray_address, cfg.workers, cuda, cpus_per_task=cfg.threads or 1)
    raise ValueError(f"--executor must be local or ray, not {cfg.executor!r}")
