"""One database, always: FiftyOne attaches to any ``mongod`` that another
FiftyOne process started, whatever directory it serves. When that is not the
directory this process is configured for (``FIFTYONE_DATABASE_DIR``, set by
``.venv/ncl.env``), datasets would be read from and written to the other
directory, and seem to vanish when that process exits and a new ``mongod``
starts on the configured one. :func:`check_database` refuses that, saying how
to fix it, before anything connects.
"""
import os


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
