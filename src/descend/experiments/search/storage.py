"""Optuna storage for ``descend search``: SQLite by default, any RDB URL at scale.

- **Heartbeats**: every worker's running trial records a heartbeat every
  ``heartbeat`` seconds; a trial whose heartbeat is older than the grace
  period (3 heartbeats) belongs to a dead worker.  It is marked FAIL and
  re-queued once (Optuna's retry callback, ``max_retry=1``), with the same
  parameters and ticket.
- **Atomic queue on SQLite**: workers take trials from Optuna's queue of
  WAITING trials.  Optuna's pop reads the trial, then flips it to RUNNING;
  PostgreSQL's ``SELECT ... FOR UPDATE`` makes that atomic, but SQLite ignores
  ``FOR UPDATE`` and pysqlite starts its transaction only at the write, so two
  workers can both pop the same trial.  Every SQLite transaction therefore
  starts with ``BEGIN IMMEDIATE`` (SQLAlchemy's documented pysqlite recipe):
  transactions are serialized, and a popped trial is popped once.
- **Tickets**: every unit of work of a search (a grid cell, one of the N
  random points, one of the N hill-climbing or TPE trials) is a WAITING trial
  enqueued once by the coordinator, with user attribute ``ticket``.  A ticket
  is done when one of its trials finished (COMPLETE, PRUNED, or FAIL with an
  ``error`` such as a divergence); resuming re-queues only the others.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections import Counter
from datetime import datetime

from descend.errors import DescendError

OPTUNA_MISSING = 'hyperparameter search needs Optuna: pip install "descend[search]"'
GRACE_HEARTBEATS = 3


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise DescendError(OPTUNA_MISSING) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def retry_callback(max_retry: int = 1):
    """Optuna's retry-once callback, under its name in the installed version."""
    import optuna.storages as st

    cls = getattr(st, "RetryHeartbeatStaleTrialCallback", None) or st.RetryFailedTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "experimental" / renamed-class notices
        return cls(max_retry=max_retry)


def _serialize_sqlite(engine) -> None:
    """Start every SQLite transaction with BEGIN IMMEDIATE (reads included)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, connection_record):  # noqa: ARG001
        dbapi_connection.isolation_level = None  # pysqlite emits no BEGIN of its own
        cursor = dbapi_connection.cursor()
        # Write-ahead log: a commit appends to the log without an fsync of the database (crash-safe;
        # a power cut may lose the last commits, which a resume redoes).
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened before the listeners existed are dropped


def make_storage(url: str, heartbeat: int, *, create_tables: bool = True):
    """An RDBStorage with heartbeats, the retry-once callback and (SQLite) serialized transactions."""
    optuna = import_optuna()
    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": 300}} if sqlite else {"pool_pre_ping": True}
    kwargs = {"engine_kwargs": engine_kwargs, "heartbeat_interval": int(heartbeat),
              "grace_period": int(heartbeat) * GRACE_HEARTBEATS}
    signature = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    callback_arg = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in signature
                    else "failed_trial_callback")
    kwargs[callback_arg] = retry_callback(1)
    if not create_tables and "skip_table_creation" in signature:
        kwargs["skip_table_creation"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat_interval is an "experimental" argument
            storage = optuna.storages.RDBStorage(url, **kwargs)
    except ImportError as exc:
        raise DescendError(f"storage {safe_url(url)}: its database driver is missing ({exc}); for PostgreSQL: "
                           f'pip install "descend[search]" (psycopg2-binary)') from None
    except Exception as exc:  # sqlalchemy.exc.ArgumentError / OperationalError: bad URL or unreachable server
        raise DescendError(f"storage {safe_url(url)}: cannot open it: {str(exc).splitlines()[0]}") from None
    if sqlite:
        _serialize_sqlite(storage.engine)
    return storage


def safe_url(url: str) -> str:
    """The storage URL with any password hidden, for messages and files."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def has_password(url: str) -> bool:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).password is not None
    except Exception:
        return False


def ticket_trials(study, deepcopy: bool = False) -> list:
    """The study's trials that belong to a ticket (surplus trials excluded)."""
    return [t for t in study.get_trials(deepcopy=deepcopy) if t.user_attrs.get("ticket") is not None]


def is_done(trial) -> bool:
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get("error") is not None)


def ticket_status(study) -> dict[int, str]:
    """ticket -> "done" | "pending" (WAITING or RUNNING) | "lost" (only killed / interrupted attempts)."""
    from optuna.trial import TrialState

    status: dict[int, str] = {}
    rank = {"lost": 0, "pending": 1, "done": 2}
    for t in ticket_trials(study):
        if is_done(t):
            s = "done"
        elif t.state in (TrialState.WAITING, TrialState.RUNNING):
            s = "pending"
        else:
            s = "lost"
        ticket = int(t.user_attrs["ticket"])
        if ticket not in status or rank[s] > rank[status[ticket]]:
            status[ticket] = s
    return status


def state_counts(study) -> Counter:
    return Counter(t.state.name for t in ticket_trials(study))


def _fail_and_retry(study, trials) -> list[int]:
    """Mark ``trials`` (RUNNING) FAIL and re-queue each once, as Optuna does for stale trials."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    failed = []
    for t in trials:
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                failed.append(t._trial_id)
        except UpdateFinishedTrialError:
            pass  # another process failed or finished it first
    callback = retry_callback(1)
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        numbers.append(frozen.number)
        if frozen.user_attrs.get("ticket") is not None:
            callback(study, frozen)
    return numbers


def fail_orphans(study) -> list[int]:
    """Fail every RUNNING trial now and re-queue each once (the retry callback).

    Only for a study no live worker can be using (the coordinator holds the run
    directory's lock): its RUNNING trials were left by a crash, and waiting
    for their heartbeats to go stale would only delay the resume.
    """
    from optuna.trial import TrialState

    return _fail_and_retry(study, study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _fail_silent(study, grace: float) -> list[int]:
    """RUNNING trials that never recorded a heartbeat and started more than ``grace`` seconds ago.

    Optuna's check skips a trial without any heartbeat, so a worker killed
    between taking a trial and its first heartbeat would leave it RUNNING
    forever.  Its start time stands in for the missing heartbeat.
    """
    import sqlalchemy
    from optuna.trial import TrialState

    backend = getattr(study._storage, "_backend", study._storage)
    engine = getattr(backend, "engine", None)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if engine is None or not running:
        return []
    with engine.connect() as conn:
        beating = {row[0] for row in conn.execute(sqlalchemy.text("SELECT trial_id FROM trial_heartbeats"))}
    now = datetime.now()
    silent = [t for t in running if t._trial_id not in beating and t.datetime_start is not None
              and (now - t.datetime_start).total_seconds() > grace]
    return _fail_and_retry(study, silent) if silent else []


def fail_stale(study) -> None:
    """Optuna's heartbeat check (stale RUNNING trials -> FAIL, re-queued once), plus trials that died
    before their first heartbeat."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optuna.storages.fail_stale_trials(study)
    interval = study._storage.get_heartbeat_interval() if hasattr(study._storage, "get_heartbeat_interval") else None
    if interval:
        _fail_silent(study, GRACE_HEARTBEATS * interval)
