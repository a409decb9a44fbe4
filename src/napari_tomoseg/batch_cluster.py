"""Where a batch runs: a dask scheduler given, SLURM workers, or local worker processes."""

from __future__ import annotations

import os

from .errors import TomosegError


def make_client(workers: int | None = None, scheduler: str | None = None,
                jobqueue: str | None = None):
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    if jobqueue:
        if jobqueue != "slurm":
            raise TomosegError("only --jobqueue slurm is supported (pip install napari-tomoseg[slurm]).")
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError as exc:
            raise TomosegError("--jobqueue slurm needs dask-jobqueue: pip install dask-jobqueue") from exc
        cluster = SLURMCluster(cores=1, processes=1, memory="16GB")
        cluster.scale(workers or 4)
        return Client(cluster)
    import torch

    n = workers or max(1, torch.cuda.device_count() or min(os.cpu_count() or 1, 4))
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    return Client(cluster)
