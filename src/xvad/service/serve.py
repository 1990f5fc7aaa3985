"""``xvad serve``: the cameras, the inference thread, the outbox and the HTTP API in one process (or
some of them: ``--cameras A,B`` watches only those, ``--no-api`` serves no HTTP, ``--api-only``
watches none), all on one database. SIGTERM or Ctrl-C drains and exits cleanly."""
from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)


def add_serve(sub: Any) -> None:
    p = sub.add_parser("serve", help="watch many cameras with one shared model; REST API, MQTT, webhooks",
                       description="Run the detection service from a YAML configuration (--config), or from "
                                   "--camera NAME=SOURCE flags with every camera on the defaults.")
    p.add_argument("--config", default=None, help="the service's YAML file (see `xvad config check`)")
    p.add_argument("--camera", action="append", default=[], metavar="NAME=SOURCE",
                   help="without --config: a camera (repeat for more); SOURCE is anything `xvad detect` takes")
    p.add_argument("--data", default=None, help="without --config: the data folder (database, media)")
    p.add_argument("--db", default=None, help="database URL (default: SQLite in the data folder)")
    p.add_argument("--host", default=None, help="HTTP address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default 8000)")
    p.add_argument("--cameras", default=None, help="watch only these cameras of the configuration (A,B)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-api", action="store_true", help="watch cameras, serve no HTTP")
    mode.add_argument("--api-only", action="store_true", help="serve the HTTP API, watch no camera")


def load(a: argparse.Namespace) -> Any:
    """The settings from ``--config`` or the quick flags."""
    from ..errors import ConfigError
    from .settings import load_settings, quick_settings

    if a.config:
        if a.camera:
            raise ConfigError("--camera: cameras come from the --config file; give one or the other")
        s = load_settings(a.config)
        updates = {k: v for k, v in (("database", a.db), ("host", a.host), ("port", a.port)) if v is not None}
        return s.model_copy(update=updates) if updates else s
    if not a.data:
        raise ConfigError("--data: give the data folder (or --config FILE)")
    return quick_settings(a.camera, data=a.data, db=a.db, host=a.host, port=a.port)


def run_serve(a: argparse.Namespace) -> int:
    from .notify import Notifier
    from .runtime import Service
    from .store.database import Database

    settings = load(a)
    db = Database(settings.db)
    db.migrate()
    notifier = Notifier(db, settings)
    only = [c.strip() for c in a.cameras.split(",") if c.strip()] if a.cameras else None
    service = None if a.api_only else Service(settings, db, only=only, notify=notifier)
    notifier.start()
    if service is not None:
        service.start()
        log.info("watching %d camera(s): %s", len(service.cameras), ", ".join(service.cameras))
    try:
        if a.no_api:
            _wait_for_signal()
        else:
            _serve_http(db, settings, service)
    finally:
        if service is not None:
            service.stop()
        notifier.stop()
        db.close()
    return 0


def _wait_for_signal() -> None:
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    while not done.wait(1.0):
        pass


def _serve_http(db: Any, settings: Any, service: Any) -> None:
    import uvicorn

    from .api import create_app

    app = create_app(db, settings, service)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                            proxy_headers=False)   # the peer is the proxy: trusted_proxies must see its address
    # uvicorn stops on SIGTERM / SIGINT, then raises the signal again once it has restored the handlers
    # it found: make those harmless, so that the service drains after it (the caller's finally)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: log.info("stopping"))
    print(f"xvad serve: http://{settings.host}:{settings.port} ({len(service.cameras) if service else 0} "
          "camera(s)); stop with Ctrl-C", flush=True)
    uvicorn.Server(config).run()       # returns on SIGTERM / SIGINT
