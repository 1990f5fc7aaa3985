"""The service's commands: ``xvad config check FILE``, ``xvad users add|token|list``, ``xvad audit
verify|export`` and ``xvad models list|rollback CAMERA``.

Every command that touches the service's state finds its database the same way as ``xvad serve``:
``--config FILE`` (the database of that configuration), or ``--db URL``, or ``--data DIR`` (the
SQLite file in that folder). The heavy modules are imported only when a command runs.
"""
from __future__ import annotations

import argparse
import getpass
import os
from typing import Any, Callable

__all__ = ["add_parser", "add_parsers", "add_state_options", "open_database", "run"]


def add_state_options(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` or ``--data DIR`` / ``--db URL``: where the service keeps its state."""
    g = p.add_argument_group("service state (one of)")
    g.add_argument("--config", metavar="FILE", help="the service's configuration (xvad.yaml)")
    g.add_argument("--data", metavar="DIR", help="the service's data folder (its SQLite database: DIR/xvad.db)")
    g.add_argument("--db", metavar="URL", help="database URL (sqlite:///FILE, postgresql://USER:PASS@HOST/DB)")


def state_settings(a: argparse.Namespace) -> Any:
    """The settings named by ``--config`` (or None) after checking the state options are consistent."""
    from ..errors import ConfigError

    if a.config and (a.data or a.db):
        raise ConfigError("--config: give either --config FILE or --data DIR / --db URL, not both")
    if not (a.config or a.data or a.db):
        raise ConfigError("no service state given: use --config FILE, --data DIR or --db URL")
    if a.config:
        from .settings import load_settings
        return load_settings(a.config)
    return None


def open_database(a: argparse.Namespace) -> Any:
    """The service's database (migrated to the newest schema) from ``--config`` / ``--db`` / ``--data``."""
    from .store import Database

    settings = state_settings(a)
    url = settings.db if settings is not None else (a.db or "sqlite:///" + os.path.join(os.path.abspath(a.data),
                                                                                          "xvad.db"))
    db = Database(url)
    db.migrate()
    return db


# -- xvad config ------------------------------------------------------------------------------
def add_config(sub: Any) -> None:
    p = sub.add_parser("config", help="check a service configuration file")
    actions = p.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="validate FILE; exit status 0 when it can be used",
                               description="Reads and validates the YAML configuration of `xvad serve`; "
                                           "a problem is reported on one line naming the file and the field.")
    check.add_argument("file")


def run_config(a: argparse.Namespace) -> int:
    from .settings import load_settings
    from .store import redact

    s = load_settings(a.file)
    names = ", ".join(c.name + ("" if c.enabled else " (disabled)") for c in s.cameras) or "none"
    print(f"{a.file}: ok: {len(s.cameras)} camera(s): {names}; database {redact(s.db or '')}; "
          f"data {s.data}; http {s.host}:{s.port}")
    return 0


# -- xvad users -------------------------------------------------------------------------------
def add_users(sub: Any) -> None:
    p = sub.add_parser("users", help="the service's users and API tokens",
                       description="Users of the service's API; secrets are kept only as argon2 hashes.")
    actions = p.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user (prompts for the password when --password is not given)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["admin", "reviewer", "viewer"])
    add.add_argument("--cameras", default=None, metavar="A,B", help="the only cameras this user may see")
    add.add_argument("--password", default=None, help="the password (default: asked for, twice)")
    add_state_options(add)
    token = actions.add_parser("token", help="issue a new API token; it is printed once, on the last line")
    token.add_argument("name")
    add_state_options(token)
    listing = actions.add_parser("list", help="list the users, their roles, cameras and live tokens")
    add_state_options(listing)


def _password(a: argparse.Namespace) -> str:
    from ..errors import ConfigError

    if a.password is not None:
        return a.password
    first = getpass.getpass(f"password for {a.name}: ")
    if getpass.getpass("again: ") != first:
        raise ConfigError("--password: the two passwords differ; nothing was changed")
    return first


def run_users(a: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from . import auth

    settings = state_settings(a)
    if a.action == "add":
        if not auth.NAME.match(a.name):
            raise ConfigError(f"user name {a.name!r}: use letters, digits, '_' and '-' (at most 64)")
        cameras = auth.parse_cameras(a.cameras)
        if settings is not None and cameras:
            unknown = [c for c in cameras if c not in {k.name for k in settings.cameras}]
            if unknown:
                raise ConfigError(f"--cameras: {unknown[0]!r} is not a camera of {a.config}")
        password = _password(a)
        db = open_database(a)
        try:
            u = auth.create_user(db, a.name, a.role, password, cameras)
        finally:
            db.close()
        print(f"user {u.name} added: {u.role}, cameras {', '.join(u.cameras) if u.cameras else 'all'}")
    elif a.action == "token":
        db = open_database(a)
        try:
            token = auth.issue_token(db, a.name)
        finally:
            db.close()
        print(f"new API token for {a.name} (shown only now; send it as 'Authorization: Bearer TOKEN'):")
        print(token)
    else:
        db = open_database(a)
        try:
            rows = auth.users(db)
        finally:
            db.close()
        if not rows:
            print("no users (add one with `xvad users add NAME --role admin`)")
        for r in rows:
            cams = ",".join(r["cameras"]) if r["cameras"] else "all"
            print(f"{r['name']:<20} {r['role']:<9} cameras {cams:<20} tokens {r['tokens']}"
                  + ("  (disabled)" if r["disabled"] else ""))
    return 0


# -- xvad audit -------------------------------------------------------------------------------
def add_audit(sub: Any) -> None:
    p = sub.add_parser("audit", help="verify or export the service's audit log",
                       description="The audit log is a chain of entries, each holding the SHA-256 of the one "
                                   "before it: verify walks it and names the first entry that was edited, deleted, "
                                   "inserted or moved.")
    actions = p.add_subparsers(dest="action", required=True)
    verify = actions.add_parser("verify", help="walk the chain; exit status 0 when intact, 1 when broken")
    add_state_options(verify)
    export = actions.add_parser("export", help="write the entries as JSON lines, oldest first")
    export.add_argument("--since", metavar="DATE", default=None,
                        help="only entries at or after DATE (YYYY-MM-DD or an ISO 8601 time; UTC unless it says)")
    export.add_argument("--out", metavar="FILE", default=None, help="write to FILE (atomically) instead of stdout")
    add_state_options(export)


def _since(text: str | None) -> Any:
    from datetime import datetime, timezone

    from ..errors import ConfigError

    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"--since {text!r}: not a date (use YYYY-MM-DD or an ISO 8601 time)") from None
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def _write_lines(db: Any, since: Any, out: str | None) -> int:
    import json
    import sys
    import tempfile

    from ..errors import ConfigError
    from . import audit

    if out is None:
        n = 0
        for e in audit.export(db, since):
            sys.stdout.write(json.dumps(e, sort_keys=True) + "\n")
            n += 1
        return n
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ConfigError(f"--out {out}: no such folder {folder}")
    fd, tmp = tempfile.mkstemp(prefix=".audit-", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            n = 0
            for e in audit.export(db, since):
                f.write(json.dumps(e, sort_keys=True) + "\n")
                n += 1
        os.replace(tmp, out)
    except BaseException:
        os.unlink(tmp)
        raise
    return n


def run_audit(a: argparse.Namespace) -> int:
    import sys

    from . import audit

    since = _since(getattr(a, "since", None))
    db = open_database(a)
    try:
        if a.action == "verify":
            v = audit.verify(db)
            if not v.ok:
                print(f"audit log broken at entry {v.first_bad}: {v.problem}")
                return 1
            print(f"audit log intact: {v.entries} entries")
            return 0
        n = _write_lines(db, since, a.out)
    finally:
        db.close()
    if a.out:
        print(f"{n} audit entries written to {a.out}", file=sys.stderr)
    return 0


# -- xvad models ------------------------------------------------------------------------------
def add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="a camera's model versions: list them, roll back",
                       description="Each camera runs its active model version (adopted by `xvad adapt`), else "
                                   "its configured model; a running service follows a change within seconds.")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the camera's versions, oldest first, and which one runs")
    listing.add_argument("camera")
    add_state_options(listing)
    back = actions.add_parser("rollback", help="go back to the version active before the current one was "
                                               "adopted, or to --to N (0: the configured model)")
    back.add_argument("camera")
    back.add_argument("--to", type=int, default=None, metavar="N", help="the version to run (0: the configured model)")
    add_state_options(back)


def cli_actor() -> str:
    """Who acts in a command's audit entries: the user running it on this machine."""
    try:
        return getpass.getuser()[:64] or "system"
    except (KeyError, OSError):           # no name for this uid (a container)
        return "system"


def run_models(a: argparse.Namespace) -> int:
    from . import versions

    db = open_database(a)
    try:
        versions.check_camera(db, a.camera)
        if a.action == "rollback":
            now = versions.rollback(db, a.camera, actor=cli_actor(), to=a.to)
            print(f"camera {a.camera} now runs {versions.version_name(now) or 'its configured model'}")
            return 0
        rows = versions.versions(db, a.camera)
    finally:
        db.close()
    running = next((r["name"] for r in rows if r["active"]), None)
    print(f"camera {a.camera} runs {running or 'its configured model'}; {len(rows)} adopted version(s)")
    if rows:
        print(f"{'version':<8} {'active':<6} {'created (UTC)':<20} {'by':<16} {'threshold':>9}  "
              f"{'checkpoint id':<14} note")
    for r in rows:
        threshold = "-" if r["threshold"] is None else f"{r['threshold']:.3f}"
        print(f"{r['name']:<8} {'yes' if r['active'] else '':<6} {r['created_at'][:19].replace('T', ' '):<20} "
              f"{r['created_by'][:16]:<16} {threshold:>9}  {r['checkpoint_id']:<14} {r['note']}")
    return 0


def add_serve(sub: Any) -> None:
    from .serve import add_serve as add
    add(sub)


def run_serve(a: argparse.Namespace) -> int:
    from .serve import run_serve as run
    return run(a)


PARSERS: dict[str, tuple[Callable[[Any], None], Callable[[argparse.Namespace], int]]] = {
    "serve": (add_serve, run_serve), "config": (add_config, run_config), "users": (add_users, run_users),
    "audit": (add_audit, run_audit), "models": (add_models, run_models)}


def add_parser(sub: Any, name: str) -> None:
    """Register the command ``name`` (serve, config, users, audit, models) on the ``xvad`` subparsers."""
    PARSERS[name][0](sub)


def add_parsers(sub: Any) -> None:
    """Register every service command on the ``xvad`` subparsers."""
    for name in PARSERS:
        add_parser(sub, name)


def run(a: argparse.Namespace) -> int:
    return PARSERS[a.command][1](a)
