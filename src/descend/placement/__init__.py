"""Where independent runs execute: worker processes on this machine or an existing Dask cluster.

:func:`run_tasks` runs a list of picklable tasks through one top-level
function and delivers the results as they finish; :class:`Placement` says
where: in this process, ``workers`` spawned processes (one compute thread
each by default, heartbeats, a killed worker's run retried) or
``dask=ADDRESS``.  Experiments (compare, ensembles, search) place their runs
here; this package imports nothing of theirs.
"""

from descend.placement.pool import InProcess, Outcome, Placement, WorkerLost
from descend.placement.run import open_pool, run_in, run_tasks
from descend.placement.threads import THREAD_VARIABLES, limit_threads, thread_environment, thread_settings

__all__ = ["THREAD_VARIABLES", "InProcess", "Outcome", "Placement", "WorkerLost", "limit_threads", "open_pool",
           "run_in", "run_tasks", "thread_environment", "thread_settings"]
