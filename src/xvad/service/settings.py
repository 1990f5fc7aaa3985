"""The configuration of ``xvad serve``: the YAML file (or the ``--camera`` flags) validated by pydantic.

Every problem is one :class:`~xvad.errors.ConfigError` line naming the file, the field and what is
wrong (``xvad.yaml: cameras[1].fps: must be greater than 0``). Relative paths in a file (data folder,
model, file sources) are taken from the file's folder, so a config means the same from any directory.
"""
from __future__ import annotations

import ipaddress
import os
import re
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ..errors import ConfigError, XvadError

__all__ = ["CameraSettings", "ConsoleSettings", "MqttSettings", "ServiceSettings", "WebhookSettings", "load_settings",
           "quick_settings"]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")   # safe in paths, MQTT topics, URLs and SQL


class _FieldProblem(ValueError):
    """A problem found by a validator that belongs to a field below the one being validated."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


def _base(info: ValidationInfo) -> Optional[str]:
    return (info.context or {}).get("base")


def _resolve(path: str, info: ValidationInfo) -> str:
    base = _base(info)
    path = os.path.expanduser(path)
    return os.path.normpath(os.path.join(base, path)) if base and not os.path.isabs(path) else path


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class MqttSettings(_Strict):
    """The MQTT broker alerts and camera states are published to."""

    host: str = Field(min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    username: Optional[str] = None
    password: Optional[str] = None
    prefix: str = Field("xvad", pattern=r"^[A-Za-z0-9_/-]+$")   # topics: PREFIX/alerts, PREFIX/cameras/NAME/...


class WebhookSettings(_Strict):
    """An HTTP endpoint that receives each alert start and end as signed JSON."""

    url: str = Field(pattern=r"^https?://\S+$")
    secret: Optional[str] = None          # HMAC-SHA256 key of the X-Xvad-Signature header
    timeout: float = Field(5.0, gt=0)


class ConsoleSettings(_Strict):
    """The review console: its sessions, login throttle and optional single sign-on behind a proxy."""

    session_hours: float = Field(default=8, gt=0)     # a session ends this long after its login
    idle_minutes: float = Field(default=30, gt=0)     # or after this long without a request
    secure_cookies: bool = False                      # Secure cookies even on plain HTTP (TLS ends at a proxy)
    login_failures: int = Field(default=5, ge=1)      # failures within 15 minutes before logins are slowed down
    trusted_proxy_header: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9-]+$")   # e.g. X-Remote-User
    trusted_proxies: list[str] = ["127.0.0.1", "::1"]   # addresses (or networks) that may send that header

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for i, text in enumerate(v):
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise _FieldProblem(f"[{i}]", f"{text!r} is not an IP address or network") from None
        return v


class CameraSettings(_Strict):
    """One camera: its source, the model and detection settings, its alert media and retention, its purpose."""

    name: str
    source: str
    source_options: dict[str, str] = {}   # FFmpeg options for opening the source
    loop: bool = False                    # a file source starts over at its end (tests, demos)
    realtime: bool = True                 # a file source is played at its own rate, as a camera would send it
    model: Optional[str] = None           # checkpoint file; None: the shipped model
    fps: Optional[float] = Field(None, gt=0)        # None: the model's rate
    window: Optional[int] = Field(None, gt=0)       # None: the model's
    stride: int = Field(2, gt=0)
    threshold: Optional[float] = Field(None, ge=0, le=1)   # None: the model's recorded threshold, else 0.5
    alert: str = "3/5"                    # k/n: an alert needs k of the last n windows above threshold
    pre_roll: float = Field(5.0, ge=0)    # seconds of video kept before the alert starts
    post_roll: float = Field(5.0, ge=0)   # and after it ends
    retention_media_days: Optional[float] = Field(30, gt=0)     # None: keep
    retention_records_days: Optional[float] = Field(365, gt=0)  # None: keep
    purpose: str = ""                     # why this camera is watched (GDPR records of processing)
    enabled: bool = True
    explain: bool = True                  # Grad-CAM explanation of each alert

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError(f"{v!r} is not a safe camera name (letters, digits, '_' and '-', "
                             "starting with a letter or digit, at most 64)")
        return v

    @field_validator("source", mode="before")
    @classmethod
    def _source_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v   # `source: 0` is a webcam

    @field_validator("source_options", mode="before")
    @classmethod
    def _options_text(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: str(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else x for k, x in v.items()}
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: Optional[str], info: ValidationInfo) -> Optional[str]:
        if v is None:
            return None
        path = _resolve(v, info)
        if not os.path.isfile(path):
            raise ValueError(f"{v}: no such model file")
        return path

    @field_validator("alert")
    @classmethod
    def _alert(cls, v: str) -> str:
        from ..stream.policy import parse_alert

        try:
            k, n = parse_alert(v)
        except XvadError as exc:
            raise ValueError(str(exc)) from None
        return f"{k}/{n}"

    @model_validator(mode="after")
    def _check_source(self, info: ValidationInfo) -> CameraSettings:
        from ..video import parse_source

        try:
            spec = parse_source(self.source, self.source_options)
        except XvadError as exc:
            raise _FieldProblem("source", str(exc)) from None
        if spec.kind == "file":
            path = _resolve(spec.url, info)
            if not os.path.isfile(path):
                raise _FieldProblem("source", f"{self.source}: no such file")
            self.source = path
        return self

    @property
    def k_n(self) -> tuple[int, int]:
        k, n = self.alert.split("/")
        return int(k), int(n)


class ServiceSettings(_Strict):
    """The whole service: where it keeps its state, where it listens, what it tells, which cameras."""

    data: str = "xvad-data"               # the data folder: SQLite database, alert media
    db: Optional[str] = None              # SQLAlchemy URL; None: sqlite:///DATA/xvad.db
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    mqtt: Optional[MqttSettings] = None
    webhooks: list[WebhookSettings] = []
    disk_min_free_mb: float = Field(500, ge=0)   # below this, alert media are no longer written
    console: ConsoleSettings = ConsoleSettings()
    cameras: list[CameraSettings] = []
    audit_retention_days: float = Field(400, ge=183)   # at least six months, and longer than any camera's media
    inference_threads: Optional[int] = Field(None, ge=1)   # threads of the shared backbone; None: half the cores
    engine: Literal["auto", "torch", "openvino"] = "auto"   # what runs the backbone (xvad.models.engine)

    @field_validator("data")
    @classmethod
    def _data(cls, v: str, info: ValidationInfo) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return os.path.abspath(_resolve(v, info))

    @field_validator("db")
    @classmethod
    def _db(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not re.match(r"^(sqlite|postgresql)(\+\w+)?://", v):
            raise ValueError(f"{v!r} is not a database URL (sqlite:///FILE or postgresql://USER@HOST/DB)")
        if v is not None and v.startswith("postgresql://"):
            v = "postgresql+psycopg://" + v[len("postgresql://"):]      # psycopg 3, not SQLAlchemy's default
        return v

    @field_validator("cameras")
    @classmethod
    def _unique(cls, cameras: list[CameraSettings]) -> list[CameraSettings]:
        seen: dict[str, int] = {}
        for i, c in enumerate(cameras):
            if c.name in seen:
                raise _FieldProblem(f"[{i}].name", f"{c.name!r} is already the name of cameras[{seen[c.name]}]")
            seen[c.name] = i
        return cameras

    @field_validator("audit_retention_days")
    @classmethod
    def _audit_longer(cls, v: float, info: ValidationInfo) -> float:
        for i, c in enumerate(info.data.get("cameras") or []):
            if c.retention_media_days is not None and c.retention_media_days >= v:
                raise ValueError(f"must be longer than every camera's media retention: cameras[{i}] ({c.name}) "
                                 f"keeps media {c.retention_media_days:g} days")
        return v

    @model_validator(mode="after")
    def _default_db(self) -> ServiceSettings:
        if self.db is None:
            self.db = "sqlite:///" + os.path.join(self.data, "xvad.db")
        return self

    def camera(self, name: str) -> CameraSettings:
        """The camera called ``name`` (a ConfigError naming the known ones otherwise)."""
        for c in self.cameras:
            if c.name == name:
                return c
        raise ConfigError(f"no camera {name!r} (cameras: {', '.join(c.name for c in self.cameras) or 'none'})")


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_WORDING = [("Input should be", "must be"), ("Extra inputs are not permitted", "unknown key"),
            ("Field required", "missing (required)"), ("String should", "must"), ("List should", "must"),
            ("Value error, ", "")]


def _problem(exc: ValidationError, origin: str) -> ConfigError:
    """The first validation error as one line: ``ORIGIN: FIELD.PATH: problem (and N more)``."""
    errors = exc.errors()
    e = errors[0]
    loc = tuple(x for x in e["loc"] if not (isinstance(x, str) and x.startswith("function-")))
    cause = (e.get("ctx") or {}).get("error")
    where = _where(loc)
    message = e["msg"]
    if isinstance(cause, _FieldProblem):
        where = where + cause.path if cause.path.startswith("[") else (f"{where}.{cause.path}" if where
                                                                       else cause.path)
        message = str(cause)
    for old, new in _WORDING:
        message = message.replace(old, new)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return ConfigError(f"{origin}: {where or 'top level'}: {message}{more}".replace("\n", " "))


def _validate(raw: Any, origin: str, base: Optional[str]) -> ServiceSettings:
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: top level: must be a mapping of settings, not {type(raw).__name__}")
    try:
        return ServiceSettings.model_validate(raw, context={"base": base})
    except ValidationError as exc:
        raise _problem(exc, origin) from None


def load_settings(path: str) -> ServiceSettings:
    """Read and validate the YAML configuration ``path``; a one-line ConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such configuration file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: {at}YAML syntax error: {problem}".replace("\n", " ")) from None
    return _validate({} if raw is None else raw, path, os.path.dirname(os.path.abspath(path)))


def quick_settings(cameras: list[str], data: str, host: Optional[str] = None, port: Optional[int] = None,
                   db: Optional[str] = None) -> ServiceSettings:
    """The settings of the flag form ``--camera NAME=SOURCE ... --data DIR``: every camera with the defaults
    (and the service's defaults for what is None)."""
    entries = []
    for text in cameras:
        name, sep, source = text.partition("=")
        if not sep or not name.strip() or not source.strip():
            raise ConfigError(f"--camera {text!r}: expected NAME=SOURCE")
        entries.append({"name": name.strip(), "source": source.strip()})
    given = {"host": host, "port": port, "db": db}
    raw = {"data": data, **{k: v for k, v in given.items() if v is not None}, "cameras": entries}
    return _validate(raw, "--camera/--data", os.getcwd())
