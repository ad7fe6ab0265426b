"""One database, always: FiftyOne attaches to any ``mongod`` that another
FiftyOne process started, whatever directory it serves. When that is not the
directory this process is configured for (``FIFTYONE_DATABASE_DIR``, set by
``.venv/ncl.env``), datasets would be read from and written to the other
directory, and seem to vanish when that process exits and a new ``mongod``
starts on the configured one. :func:`check_database` refuses that, saying how
to fix it, before anything connects.

FiftyOne also races with itself: processes that connect for the first time
at the same moment each start a ``mongod`` on the same directory; one wins
the directory's lock and the others fail with ``ServiceListenTimeout``
(measured here: 3 of 4 processes started together, e.g. the tests and
``make demo`` launched at once). :func:`serialize_database_start` makes the
first connection of each process wait its turn on a file lock, so the later
ones find the winner's service and attach to it.
"""
import contextlib
import fcntl
import functools
import os

START_LOCK = "fiftyone-ncl-start.lock"


class DatabaseMismatchError(RuntimeError):
    """FiftyOne would use a mongod serving another directory than configured."""


def _dbpath(cmdline):
    for flag in ("--dbpath",):
        if flag in cmdline and cmdline.index(flag) + 1 < len(cmdline):
            return cmdline[cmdline.index(flag) + 1]
    return None


def _running_services():
    """The FiftyOne database services of this user FiftyOne would attach to,
    in the order it tries them."""
    import fiftyone.service.util as fosu

    return list(fosu.find_processes_by_args(["--51-service", "db", "--multi"]))


def check_database():
    """Raises :class:`DatabaseMismatchError` when FiftyOne is (or would be)
    connected to a ``mongod`` serving another directory than its
    ``database_dir``; does nothing with ``database_uri`` (a server you run)."""
    import fiftyone as fo
    import fiftyone.core.odm.database as food

    if fo.config.database_uri:
        return
    want = os.path.realpath(os.path.expanduser(fo.config.database_dir))
    service = getattr(food, "_db_service", None)
    if service is not None and getattr(service, "child", None) is not None:
        procs = [service.child]  # already connected: that is the one in use
    else:
        procs = _running_services()[:1]  # the one FiftyOne would attach to
    for proc in procs:
        try:
            cmdline = proc.cmdline()
        except Exception:  # pylint: disable=broad-except
            continue
        dbpath = _dbpath(cmdline)
        if dbpath is None or os.path.realpath(dbpath) == want:
            continue
        raise DatabaseMismatchError(
            "FiftyOne would use the MongoDB that process %d runs on %s, but this process is configured "
            "for %s (FIFTYONE_DATABASE_DIR / database_dir): its datasets would live in the other "
            "directory and vanish when that process exits. Use one directory everywhere: run the other "
            "process with the same settings (`. .venv/ncl.env` first, or `make app`), or "
            "`export FIFTYONE_DATABASE_DIR=%s` here, or stop process %d"
            % (proc.pid, dbpath, want, dbpath, proc.pid)
        )


@contextlib.contextmanager
def _start_lock(database_dir):
    """An exclusive ``flock`` on a file in the database directory (released
    by the kernel if the process dies, so a crash cannot leave it held)."""
    try:
        os.makedirs(database_dir, exist_ok=True)
        f = open(os.path.join(database_dir, START_LOCK), "a")
    except OSError:  # a directory we cannot write: FiftyOne's own start, unserialized
        yield
        return
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def serialize_database_start():
    """Makes this process's first connection to FiftyOne's embedded MongoDB
    (starting ``mongod`` or attaching to a running one, and the migration
    check that follows) hold a lock shared by every process on the same
    ``database_dir``. Does nothing for a ``database_uri`` (a server you run)
    or once this process is connected. Idempotent."""
    import fiftyone.core.odm.database as food

    if not getattr(food.establish_db_conn, "_ncl_serialized", False):
        food.establish_db_conn = _serialized(food.establish_db_conn, food)


def _serialized(establish, state):
    """``establish(config)`` taking the start lock of ``config.database_dir``
    when it would start (or look for) a database service: no URI, no service
    in ``state._db_service`` and no port inherited from a parent process."""

    @functools.wraps(establish)
    def establish_db_conn(config):
        starts_service = (
            config.database_uri is None
            and getattr(state, "_db_service", None) is None
            and not os.environ.get("FIFTYONE_PRIVATE_DATABASE_PORT")
        )
        if not starts_service:
            return establish(config)
        with _start_lock(os.path.realpath(os.path.expanduser(config.database_dir))):
            return establish(config)

    establish_db_conn._ncl_serialized = True
    return establish_db_conn
