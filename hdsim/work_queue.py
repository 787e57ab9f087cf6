"""Grid points shared by worker processes through a database (SQLAlchemy URL); no torch.

A *study* is a named list of grid points (a sweep's ``(F, M)`` pairs, widths,
IMC conditions). Every worker process opens the same study on the same
database, claims points that are not done, computes them and records the
result. Any number of workers on any number of machines may share one study
on PostgreSQL; SQLite files serve the workers of one machine.

Tables (created on first use, safely when many workers start at once):

* ``hdsim_work_studies``: ``name`` (primary key), ``kind``, ``config`` (JSON of
  everything the results depend on; a worker with another config is refused),
  ``n_points``;
* ``hdsim_work_points``: primary key ``(study, key)``, ``idx`` (grid order),
  ``params`` (JSON), ``status`` (``queued`` / ``running`` / ``done``), ``owner``
  and ``lease_expires`` of the worker computing it, ``attempts`` (claims so
  far), ``result`` (JSON text) and ``finished_by``.

Lease rule. Claiming a point sets ``status = running``, ``owner`` and
``lease_expires = now + lease_s`` and adds one to ``attempts``. While the
point is computed a heartbeat thread renews the lease every ``lease_s / 3``
seconds, so a slow point stays with a live worker however long it takes. A
worker that dies (SIGKILL, power loss) stops renewing: once ``lease_expires``
has passed, the point is claimable again by any worker of the study, now or in
a later run (a worker with nothing left to claim waits for running points,
polling, until all are done). ``now`` is the database server's clock on
PostgreSQL (workers on several machines need not agree on the time) and the
local clock on SQLite.

Each result is written once: the row of a point is unique by its key, and
recording is ``UPDATE ... WHERE status <> 'done'``, so if a stalled worker
whose lease expired finishes after its replacement, its (identical) result is
dropped instead of replacing or duplicating the first. Finished results are
never rewritten; a rerun of a complete study computes nothing.

Claims on PostgreSQL select the next claimable point with ``FOR UPDATE SKIP
LOCKED`` (concurrent workers take different points without waiting); on every
backend the claim is a compare-and-set ``UPDATE`` whose ``WHERE`` repeats the
claimable condition, so two workers can never both win a point (on SQLite,
which has no row locks, the loser sees ``rowcount == 0`` and tries the next).

Concurrent creation. Workers started at the same instant on an empty database
would race in ``CREATE TABLE`` (PostgreSQL then fails with ``UniqueViolation``
on ``pg_type_typname_nsp_index``). Schema and study creation therefore run
under :func:`creation_lock`: a transaction-level advisory lock on PostgreSQL,
an ``flock`` on a file beside a SQLite database; other backends retry when
they lose the race. ``hdsim tune`` opens its Optuna storage under the same lock.

Example:
    >>> q = WorkQueue("sqlite://", "demo", lease_s=30)
    >>> q.ensure_study("toy", {"n": 2}, [("a", {"x": 1}), ("b", {"x": 2})])
    >>> p = q.claim(); p.key, p.params, p.attempts
    ('a', {'x': 1}, 1)
    >>> q.complete(p.key, {"y": 2}), q.complete(p.key, {"y": 3})  # written once
    (True, False)
    >>> q.counts()["done"], q.results()
    (1, {'a': {'y': 2}})
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from hdsim.errors import HdsimError

__all__ = ["WorkQueue", "Point", "check_url", "creation_lock", "redact_url", "storage_error", "stall_for_tests",
           "DEFAULT_LEASE_S"]

DEFAULT_LEASE_S = 60.0
# Key of the PostgreSQL advisory lock that serializes schema creation (any fixed 64-bit integer;
# the same for every hdsim process, distinct from what other applications are likely to use).
_PG_LOCK_KEY = 0x6864_7369_6D5F_7771 & 0x7FFF_FFFF_FFFF_FFFF  # "hdsim_wq"

QUEUED, RUNNING, DONE = "queued", "running", "done"
PG_CONNECT_TIMEOUT_S = 10


def redact_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (a malformed URL is returned without credentials)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a URL SQLAlchemy cannot parse: drop everything before '@'
        head, sep, tail = url.partition("://")
        return f"{head}{sep}***@{tail.rpartition('@')[2]}" if "@" in tail else url


def storage_error(what: str, url: str, e: BaseException) -> HdsimError:
    """A one-line :class:`HdsimError` for a database failure: the URL without its password and the
    first line of the driver's message (SQLAlchemy appends a background link on later lines)."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    try:
        from sqlalchemy.engine import make_url

        pw = make_url(url).password
    except Exception:  # noqa: BLE001
        pw = None
    if pw:
        text = text.replace(str(pw), "***")
    return HdsimError(f"storage: {what} {redact_url(url)!r}: {text}")


def check_url(name: str, url: str) -> None:
    """A SQLAlchemy URL whose dialect and driver are installed; a SQLite file's folder must exist.

    Raises:
        HdsimError: naming option ``name`` and the URL without its password.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if not isinstance(url, str) or not url.strip():
        raise HdsimError(f"{name}: give a database URL (e.g. sqlite:///hdsim.db or "
                         "postgresql+psycopg://user:pw@host/db)")
    shown = redact_url(url)
    try:
        u = make_url(url)
        u.get_dialect().import_dbapi()  # the driver itself: postgresql:// means psycopg2
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise HdsimError(f"{name}: not a usable database URL {shown!r} "
                         f"(expected e.g. sqlite:///hdsim.db or postgresql+psycopg://user:pw@host/db): "
                         f"{str(e).splitlines()[0]}") from None
    except ImportError as e:
        hint = ""
        if u.get_backend_name() == "postgresql":
            hint = "; pip install 'hdsim[postgres]' and use postgresql+psycopg://..."
        raise HdsimError(f"{name}: the database driver for {shown!r} is not installed ({e}){hint}") from None
    if u.get_backend_name() == "sqlite" and u.database not in (None, "", ":memory:"):
        folder = Path(u.database).expanduser().resolve().parent
        if not folder.is_dir():
            raise HdsimError(f"{name}: folder {folder} of the SQLite file does not exist")


def stall_for_tests(key: str, computed: int) -> None:
    """Test-only hook of the fault tests: with ``HDSIM_TEST_STALL_S`` set, a worker that has already
    computed ``HDSIM_TEST_STALL_AFTER`` (default 0) points or trials touches
    ``$HDSIM_TEST_STALL_DIR/<pid>.<key>`` and sleeps that many seconds before computing ``key``,
    holding its lease, so a test can SIGKILL it mid-point. Unset (always, outside tests): no-op."""
    seconds = os.environ.get("HDSIM_TEST_STALL_S")
    if not seconds or computed < int(os.environ.get("HDSIM_TEST_STALL_AFTER", "0")):
        return
    folder = os.environ.get("HDSIM_TEST_STALL_DIR")
    if folder:
        Path(folder, f"{os.getpid()}.{key}").touch()
    time.sleep(float(seconds))


def _is_pg(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite" or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database).expanduser().resolve()


@contextlib.contextmanager
def creation_lock(url: str, engine=None) -> Iterator[None]:
    """Serialize schema/study creation among all processes using the database ``url``.

    PostgreSQL: a session advisory lock (``pg_advisory_lock``) held on one
    connection for the duration of the block, so ``CREATE TABLE`` statements
    issued on other connections inside the block (Optuna's ``create_all``) are
    serialized too. SQLite file: ``flock`` on ``<file>.lock``. Others: no lock
    (callers retry a lost race).
    """
    if _is_pg(url):
        import sqlalchemy as sa

        own = engine is None
        eng = (sa.create_engine(url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S})
               if own else engine)
        try:
            with eng.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                    conn.commit()
        finally:
            if own:
                eng.dispose()
        return
    path = _sqlite_file(url)
    if path is None or not path.parent.is_dir():
        yield
        return
    import fcntl

    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Point:
    """A claimed grid point: ``key``, ``idx`` (grid order), ``params``, ``attempts`` (this claim included)."""

    key: str
    idx: int
    params: dict
    attempts: int


def _tables():
    import sqlalchemy as sa

    md = sa.MetaData()
    studies = sa.Table(
        "hdsim_work_studies", md,
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("config", sa.Text, nullable=False),
        sa.Column("n_points", sa.Integer, nullable=False),
    )
    points = sa.Table(
        "hdsim_work_points", md,
        sa.Column("study", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("status", sa.String(8), nullable=False, default=QUEUED),
        sa.Column("owner", sa.String(255)),
        sa.Column("lease_expires", sa.Float),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("result", sa.Text),
        sa.Column("finished_by", sa.String(255)),
        sa.Index("ix_hdsim_work_points_claim", "study", "status", "idx"),
    )
    return md, studies, points


class WorkQueue:
    """The points of one study in the database at ``url`` (see the module docstring for the rules).

    Args:
        url: SQLAlchemy URL (``postgresql+psycopg://user:pw@host/db``, ``sqlite:///file.db``).
        study: study name.
        lease_s: lease length in seconds (renewed every ``lease_s / 3`` while a point runs).
        owner: this worker's name in the table; default ``host:pid:random``.

    Raises:
        HdsimError: the URL is unusable or the database cannot be reached (one line, no password).
    """

    def __init__(self, url: str, study: str, *, lease_s: float = DEFAULT_LEASE_S, owner: str | None = None) -> None:
        import sqlalchemy as sa

        if not (isinstance(lease_s, (int, float)) and lease_s > 0):
            raise HdsimError(f"lease: must be a number of seconds > 0, got {lease_s!r}")
        if not study or not study.strip():
            raise HdsimError("study_name: must not be empty")
        self.url, self.study, self.lease_s = url, study, float(lease_s)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._pg = _is_pg(url)
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self._pg:  # an unreachable host is an error in seconds, not after the TCP timeout (minutes)
            kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        else:
            from sqlalchemy.engine import make_url

            if make_url(url).get_backend_name() == "sqlite":
                # writers queue on SQLite's file lock instead of failing after the 5 s default
                kwargs = {"connect_args": {"timeout": 60}}
                if make_url(url).database in (None, "", ":memory:"):
                    kwargs["poolclass"] = sa.pool.StaticPool  # one shared in-memory database
                    kwargs["connect_args"]["check_same_thread"] = False
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except Exception as e:  # noqa: BLE001 - bad URL or missing driver
            raise storage_error("cannot use", url, e) from None
        self._md, self._studies, self._points = _tables()
        self._create_schema()

    # ---- creation ---------------------------------------------------------------------------
    def _retrying(self, fn, what: str):
        """Run ``fn`` (a transaction); lost creation races and SQLite lock timeouts are retried."""
        import sqlalchemy as sa

        for attempt in range(8):
            try:
                return fn()
            except (sa.exc.IntegrityError, sa.exc.ProgrammingError, sa.exc.OperationalError) as e:
                msg = str(e).lower()
                race = any(s in msg for s in ("already exists", "duplicate", "unique", "database is locked"))
                if not race or attempt == 7:
                    raise storage_error(what, self.url, e) from None
                time.sleep(0.05 * (attempt + 1))
            except sa.exc.SQLAlchemyError as e:
                raise storage_error(what, self.url, e) from None

    def _create_schema(self) -> None:
        def create() -> None:
            with creation_lock(self.url, self.engine), self.engine.begin() as conn:
                self._md.create_all(conn)

        self._retrying(create, "cannot open")

    def ensure_study(self, kind: str, config: dict, points: list[tuple[str, dict]]) -> None:
        """Create the study with its ``points`` (``(key, params)`` in claim order) if absent, else
        check that it was created with the same ``kind``, ``config`` and keys.

        Raises:
            HdsimError: the study exists with another kind, config or grid.
        """
        import sqlalchemy as sa

        keys = [k for k, _ in points]
        if len(set(keys)) != len(keys):
            raise HdsimError("grid: duplicate points")
        want = json.dumps(config, sort_keys=True, default=str)

        def ensure() -> None:
            with creation_lock(self.url, self.engine), self.engine.begin() as conn:
                row = conn.execute(sa.select(self._studies).where(self._studies.c.name == self.study)).first()
                if row is None:
                    conn.execute(sa.insert(self._studies).values(name=self.study, kind=kind, config=want,
                                                                n_points=len(points)))
                    conn.execute(sa.insert(self._points), [
                        {"study": self.study, "key": k, "idx": i, "params": json.dumps(p, sort_keys=True),
                         "status": QUEUED, "attempts": 0} for i, (k, p) in enumerate(points)])
                    return
                where = f"study {self.study!r} in {redact_url(self.url)!r}"
                if row.kind != kind:
                    raise HdsimError(f"study_name: {where} is a {row.kind} study, not {kind}; "
                                     "use another --study-name")
                if row.config != want:
                    raise HdsimError(f"study_name: {where} was created with config {row.config}, not {want}; "
                                     "use another --study-name")
                have = [r.key for r in conn.execute(sa.select(self._points.c.key).where(
                    self._points.c.study == self.study).order_by(self._points.c.idx))]
                if have != keys:
                    raise HdsimError(f"study_name: {where} has another grid; use another --study-name")

        self._retrying(ensure, "cannot open study in")

    # ---- work -------------------------------------------------------------------------------
    def _now(self, conn) -> float:
        import sqlalchemy as sa

        if self._pg:  # the server's clock: workers on several machines share one time base
            return float(conn.execute(sa.text("SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8")).scalar())
        return time.time()

    def _claimable(self, now: float):
        import sqlalchemy as sa

        p = self._points.c
        return sa.and_(p.study == self.study,
                       sa.or_(p.status == QUEUED, sa.and_(p.status == RUNNING, p.lease_expires < now)))

    def claim(self) -> Point | None:
        """Lease the first claimable point in grid order (``None``: none claimable now)."""
        import sqlalchemy as sa

        p = self._points.c

        def attempt() -> Point | None | bool:
            with self.engine.begin() as conn:
                now = self._now(conn)
                q = sa.select(p.key, p.idx, p.params, p.attempts).where(self._claimable(now)).order_by(p.idx).limit(1)
                if self._pg:
                    q = q.with_for_update(skip_locked=True)
                row = conn.execute(q).first()
                if row is None:
                    return None
                res = conn.execute(sa.update(self._points).where(self._claimable(now), p.key == row.key).values(
                    status=RUNNING, owner=self.owner, lease_expires=now + self.lease_s, attempts=p.attempts + 1))
                if res.rowcount != 1:
                    return False  # another worker won this point between our select and update
                return Point(row.key, row.idx, json.loads(row.params), row.attempts + 1)

        while True:
            got = self._retrying(attempt, "cannot claim a point in")
            if got is not False:
                return got

    def renew(self, key: str) -> bool:
        """Extend this worker's lease on ``key``; ``False`` if the lease was lost (expired and retaken)."""
        import sqlalchemy as sa

        p = self._points.c

        def run() -> bool:
            with self.engine.begin() as conn:
                now = self._now(conn)
                res = conn.execute(sa.update(self._points).where(
                    p.study == self.study, p.key == key, p.owner == self.owner, p.status == RUNNING,
                ).values(lease_expires=now + self.lease_s))
                return res.rowcount == 1

        return self._retrying(run, "cannot renew a lease in")

    def complete(self, key: str, result: Any) -> bool:
        """Record ``result`` (JSON-serializable) for ``key`` unless one is recorded already;
        returns whether this call recorded it."""
        import sqlalchemy as sa

        p = self._points.c
        text = json.dumps(result, sort_keys=False)

        def run() -> bool:
            with self.engine.begin() as conn:
                res = conn.execute(sa.update(self._points).where(
                    p.study == self.study, p.key == key, p.status != DONE,
                ).values(status=DONE, result=text, finished_by=self.owner, lease_expires=None))
                return res.rowcount == 1

        return self._retrying(run, "cannot record a result in")

    def release(self, key: str) -> None:
        """Give a leased point back (``queued``) after a failure in this worker."""
        import sqlalchemy as sa

        p = self._points.c

        def run() -> None:
            with self.engine.begin() as conn:
                conn.execute(sa.update(self._points).where(
                    p.study == self.study, p.key == key, p.owner == self.owner, p.status == RUNNING,
                ).values(status=QUEUED, owner=None, lease_expires=None))

        self._retrying(run, "cannot release a point in")

    @contextlib.contextmanager
    def heartbeat(self, key: str) -> Iterator[None]:
        """Renew the lease on ``key`` every ``lease_s / 3`` s in a background thread during the block.

        A failed renewal (database briefly unreachable) is skipped, not fatal: the
        worst case is that the lease expires and another worker redoes the point.
        """
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.lease_s / 3):
                with contextlib.suppress(HdsimError):
                    self.renew(key)

        t = threading.Thread(target=beat, name=f"hdsim-lease-{key}", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()

    # ---- reading ----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Points per status (``queued``, ``running``, ``done``) and ``total``."""
        import sqlalchemy as sa

        p = self._points.c

        def run() -> dict[str, int]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(p.status, sa.func.count()).where(p.study == self.study)
                                    .group_by(p.status)).all()
            out = {QUEUED: 0, RUNNING: 0, DONE: 0}
            out.update({s: int(n) for s, n in rows})
            out["total"] = sum(out[s] for s in (QUEUED, RUNNING, DONE))
            return out

        return self._retrying(run, "cannot read")

    def results(self) -> dict[str, Any]:
        """``{key: result}`` of the done points, in grid order."""
        import sqlalchemy as sa

        p = self._points.c

        def run() -> dict[str, Any]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(p.key, p.result).where(p.study == self.study, p.status == DONE)
                                    .order_by(p.idx)).all()
            return {k: json.loads(r) for k, r in rows}

        return self._retrying(run, "cannot read")

    def points(self) -> list[dict]:
        """Every point's bookkeeping (``key``, ``status``, ``owner``, ``attempts``, ``finished_by``), grid order."""
        import sqlalchemy as sa

        p = self._points.c

        def run() -> list[dict]:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(p.key, p.status, p.owner, p.attempts, p.finished_by)
                                    .where(p.study == self.study).order_by(p.idx)).all()
            return [dict(r._mapping) for r in rows]

        return self._retrying(run, "cannot read")

    def close(self) -> None:
        self.engine.dispose()
