"""MQTT messages and signed webhooks for alert starts and ends and camera state, through the outbox.

Detection only writes a row to the database's outbox (:meth:`Notifier.__call__`); a background thread
claims due rows and delivers them, retrying with exponential backoff while the broker or the endpoint
is down, so a delivery problem never slows detection and no event is lost across restarts. Several
processes may share one outbox: a row is claimed atomically before it is sent.

MQTT topics (``PREFIX`` is ``mqtt.prefix``, default ``xvad``):
- ``PREFIX/available``: ``online`` / ``offline`` (retained; ``offline`` is also the will)
- ``PREFIX/cameras/<camera>/state``: ``online``, ``offline`` or ``stopped`` (retained)
- ``PREFIX/alerts`` and ``PREFIX/cameras/<camera>/alerts``: ``{"type": "start"|"end", "alert": {...}}``

Webhooks get the same JSON as an HTTP POST, with ``X-Xvad-Event`` and
``X-Xvad-Signature: sha256=<hex HMAC-SHA256 of the body with the webhook's secret>`` (when it has one).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

log = logging.getLogger(__name__)
BACKOFF = (1.0, 300.0)          # seconds before the first retry, and at most


def sign(secret: str, body: bytes) -> str:
    """The ``X-Xvad-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Notifier:
    """Puts events in the outbox and delivers them in the background (``start()`` / ``stop()``)."""

    def __init__(self, db: Any, settings: Any) -> None:
        self.db = db
        self.mqtt_settings = settings.mqtt
        self.webhooks = list(settings.webhooks or [])
        self.prefix = (settings.mqtt.prefix if settings.mqtt else "xvad").rstrip("/")
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._mqtt: Any = None

    # -- events in ---------------------------------------------------------------------------------
    def __call__(self, event: str, payload: dict) -> None:
        """Queue ``event`` ("alert_start", "alert_end" or "camera") for every target; never raises."""
        try:
            for kind, target, topic, body, retain in self._messages(event, payload):
                self.db.enqueue(kind, target, {"body": body, "retain": retain, "event": event}, topic=topic)
            self._wake.set()
        except Exception as exc:          # a full disk or a lost database must not stop detection
            log.warning("could not queue the %s notification: %s", event, exc)

    def _messages(self, event: str, payload: dict) -> list[tuple[str, str, str | None, str, bool]]:
        out: list[tuple[str, str, str | None, str, bool]] = []
        if event == "camera":
            body = payload.get("state", "offline")
            if self.mqtt_settings:
                out.append(("mqtt", "broker", f"{self.prefix}/cameras/{payload['camera']}/state", body, True))
            body = json.dumps({"type": "camera", **payload})
        else:
            body = json.dumps({"type": event.removeprefix("alert_"), "alert": payload})
            if self.mqtt_settings:
                out.append(("mqtt", "broker", f"{self.prefix}/alerts", body, False))
                out.append(("mqtt", "broker", f"{self.prefix}/cameras/{payload['camera']}/alerts", body, False))
        for hook in self.webhooks:
            out.append(("webhook", hook.url, None, body, False))
        return out

    # -- delivery ----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.mqtt_settings:
            self._connect_mqtt()
        self._thread = threading.Thread(target=self._main, name="xvad-notify", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._mqtt is not None:
            try:
                self._mqtt.publish(f"{self.prefix}/available", "offline", qos=1, retain=True).wait_for_publish(2)
            except Exception:         # the broker is gone: its will says offline
                pass
            self._mqtt.loop_stop()
            self._mqtt.disconnect()

    def _connect_mqtt(self) -> None:
        import paho.mqtt.client as mqtt

        s = self.mqtt_settings
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"xvad-{self.owner}")
        if s.username:
            client.username_pw_set(s.username, s.password)
        client.will_set(f"{self.prefix}/available", "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)

        def on_connect(c: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
            if not reason.is_failure:
                c.publish(f"{self.prefix}/available", "online", qos=1, retain=True)
                log.info("MQTT: connected to %s:%d", s.host, s.port)
                self._wake.set()

        client.on_connect = on_connect
        client.connect_async(s.host, s.port, keepalive=30)
        client.loop_start()                # paho reconnects by itself while the broker is down
        self._mqtt = client

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                rows = self.db.outbox_claim(self.owner, 50)
            except Exception as exc:
                log.warning("outbox: %s", exc)
                rows = []
            for row in rows:
                if self._stop.is_set():
                    break
                self._deliver(row)
            if not rows:
                self._wake.wait(1.0)
                self._wake.clear()

    def _deliver(self, row: dict) -> None:
        payload = row["payload"]
        try:
            if row["kind"] == "mqtt":
                self._publish(row["topic"], payload["body"], payload.get("retain", False))
            else:
                self._post(row["target"], payload["event"], payload["body"])
        except Exception as exc:
            delay = min(BACKOFF[0] * 2 ** row["attempts"], BACKOFF[1])
            when = datetime.now(timezone.utc) + timedelta(seconds=delay)
            self.db.outbox_failed(row["id"], " ".join(str(exc).split())[:300], when)
            log.info("outbox: %s to %s failed (%s); retry in %.0f s", row["kind"], row["target"], exc, delay)
            return
        self.db.outbox_sent(row["id"])

    def _publish(self, topic: str, body: str, retain: bool) -> None:
        client = self._mqtt
        if client is None or not client.is_connected():
            raise ConnectionError("not connected to the MQTT broker")
        info = client.publish(topic, body, qos=1, retain=retain)
        info.wait_for_publish(5)
        if not info.is_published():
            raise ConnectionError("the MQTT broker did not acknowledge the message")

    def _post(self, url: str, event: str, body: str) -> None:
        import httpx

        hook = next(h for h in self.webhooks if h.url == url)
        data = body.encode()
        headers = {"Content-Type": "application/json", "X-Xvad-Event": event}
        if hook.secret:
            headers["X-Xvad-Signature"] = sign(hook.secret, data)
        r = httpx.post(url, content=data, headers=headers, timeout=hook.timeout)
        if r.status_code >= 300:
            raise ConnectionError(f"HTTP {r.status_code}")
