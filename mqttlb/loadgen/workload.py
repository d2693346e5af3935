"""Workload model: client profiles, churn distributions, and their two input forms.

* a profile spec string, ``NAME:COUNT[:key=value,...]``, e.g. ``heavy:4:rate=500,size=256,qos=0``,
  ``sensor:200:rate=0.2,qos=1,session=exp:30`` or ``sub:2``;
* a YAML workload file (the same fields, see ``docs/loadgen.md``).

Validation happens here, once; the engine trusts a ``Workload``.  Pure: no I/O except reading the
YAML text handed in.
"""

from __future__ import annotations

import ipaddress
import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mqttlb.commandline import plural
from mqttlb.yamlfile import parse_yaml_mapping

MAX_CLIENTS = 50_000
MAX_DURATION_S = 24 * 3600
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"


class WorkloadError(ValueError):
    """A workload spec or file that cannot be used; the message says what and where."""


class Churn(BaseModel):
    """Distribution of session lengths: a client disconnects after a draw and reconnects."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["exp", "uniform", "fixed"]
    a: float = Field(gt=0)  # exp: mean; uniform: low; fixed: length (seconds)
    b: float | None = None  # uniform: high

    @model_validator(mode="after")
    def _check(self) -> Churn:
        if self.kind == "uniform" and (self.b is None or self.b < self.a):
            raise ValueError("uniform churn needs low:high with high >= low")
        if self.kind != "uniform" and self.b is not None:
            raise ValueError(f"{self.kind} churn takes one number")
        return self

    @classmethod
    def parse(cls, text: str) -> Churn:
        """``exp:MEAN``, ``uniform:LOW:HIGH`` or ``fixed:SECONDS``."""
        parts = text.strip().split(":")
        try:
            numbers = [float(x) for x in parts[1:]]
        except ValueError:
            raise WorkloadError(f"churn {text!r}: numbers expected after the kind") from None
        if not parts[0] or len(numbers) not in (1, 2) or not all(math.isfinite(n) for n in numbers):
            raise WorkloadError(f"churn {text!r}: expected exp:MEAN, uniform:LOW:HIGH or fixed:SECONDS")
        try:
            return cls(kind=parts[0], a=numbers[0], b=numbers[1] if len(numbers) > 1 else None)  # type: ignore[arg-type]
        except ValidationError as exc:
            raise WorkloadError(f"churn {text!r}: {_first_error(exc)}") from None

    def draw(self, rng: random.Random) -> float:
        if self.kind == "exp":
            return rng.expovariate(1 / self.a)
        if self.kind == "uniform":
            assert self.b is not None
            return rng.uniform(self.a, self.b)
        return self.a

    def describe(self) -> str:
        return f"{self.kind}:{self.a:g}" + (f":{self.b:g}" if self.b is not None else "")


class Profile(BaseModel):
    """One group of identical clients."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=NAME_PATTERN)
    count: int = Field(ge=1, le=MAX_CLIENTS)
    role: Literal["pub", "sub"] = "pub"
    rate: float = Field(default=1.0, ge=0, le=100_000)  # messages/s per client (publishers)
    size: int = Field(default=64, ge=0, le=1_048_576)  # payload bytes (at least the stamp header)
    qos: Literal[0, 1] = 0
    echo: bool | None = None  # publisher subscribes to its own topic to check delivery; default: qos==1
    session: Churn | None = None  # None: stay connected for the whole run
    start: float = Field(default=0.0, ge=0)  # seconds after the run starts before the first connect
    pause: float = Field(default=0.5, ge=0, le=3600)  # seconds between a disconnect and the reconnect
    topic: str | None = None  # publishers: default <prefix>/<name>/<client id>; subscribers: <prefix>/#

    @field_validator("topic")
    @classmethod
    def _topic(cls, value: str | None) -> str | None:
        if value is not None and (not value or "\x00" in value or len(value.encode()) > 1024):
            raise ValueError("topic must be 1..1024 bytes without NUL")
        return value

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if self.role == "pub" and self.topic is not None and ("+" in self.topic or "#" in self.topic):
            raise ValueError("a publisher topic cannot contain wildcards")
        if self.role == "sub" and self.echo:
            raise ValueError("echo applies to publishers only")
        return self

    @property
    def checks_delivery(self) -> bool:
        return self.role == "pub" and (self.qos == 1 if self.echo is None else self.echo)

    def describe(self) -> str:
        if self.role == "sub":
            text = f"{self.name}: {self.count} subscriber(s), qos {self.qos}"
        else:
            text = (
                f"{self.name}: {self.count} publisher(s) x {self.rate:g} msg/s, {self.size} B, qos {self.qos}"
                + (", delivery-checked" if self.checks_delivery else "")
            )
        if self.session:
            text += f", session {self.session.describe()} s, pause {self.pause:g} s"
        if self.start:
            text += f", from t={self.start:g} s"
        return text


class Workload(BaseModel):
    """Everything one run needs.  ``duration`` bounds the run; ``seed`` makes it repeat."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    allow_remote: bool = False
    duration: float = Field(gt=0, le=MAX_DURATION_S)
    seed: int = 0
    connect_rate: float = Field(default=500.0, gt=0, le=100_000)  # connects/s, all clients together
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    keepalive: int = Field(default=60, ge=5, le=65535)
    max_pending_connects: int = Field(default=256, ge=1, le=10_000)  # connects in progress at once
    drain: float = Field(default=2.0, ge=0, le=60)  # max wait for echoes before a checked client leaves
    topic_prefix: str = Field(default="mqttlb/load", min_length=1, max_length=200)
    client_prefix: str = Field(default="lg", pattern=r"^[A-Za-z0-9_-]{1,40}$")
    progress_interval: float = Field(default=5.0, gt=0, le=3600)
    profiles: list[Profile] = Field(min_length=1)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if any(c in value for c in "+#\x00") or value.endswith("/"):
            raise ValueError("topic_prefix must not contain + # NUL or end with /")
        return value

    @model_validator(mode="after")
    def _check(self) -> Workload:
        total = sum(p.count for p in self.profiles)
        if total > MAX_CLIENTS:
            raise ValueError(f"{total} clients in all; at most {MAX_CLIENTS}")
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError(f"profile names must be unique, got {names}")
        if not self.allow_remote and not is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is not loopback; pass --allow-remote to load a remote broker")
        return self

    @property
    def total_clients(self) -> int:
        return sum(p.count for p in self.profiles)

    def describe(self) -> str:
        lines = [
            f"target {self.host}:{self.port}, duration {self.duration:g} s, seed {self.seed}, "
            f"connect rate {self.connect_rate:g}/s, {plural(self.total_clients, 'client')}"
        ]
        lines += [f"- {p.describe()}" for p in self.profiles]
        return "\n".join(lines)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(x) for x in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


_SPEC_KEYS = {"role", "rate", "size", "qos", "echo", "session", "start", "pause", "topic"}
#: Options only publishers have: a profile that sets one is a publisher.
PUBLISHER_KEYS = frozenset({"rate", "size", "echo"})
#: Name prefixes that say a profile's role (``sub:2``, ``pub-fast:3``).
ROLE_PREFIXES = ("pub", "sub")


def role_stated(name: str, keys: set[str] | frozenset[str]) -> bool:
    """Whether a profile named ``name`` with the options ``keys`` says what its clients do: ``role``
    given, a publisher option (:data:`PUBLISHER_KEYS`), or a name starting with ``pub`` or ``sub``.

    Names are free labels (there are no preset profiles), so ``nonsense:1`` or a misspelt ``sbu:2`` would
    otherwise silently become one publisher at the default 1 msg/s."""
    return "role" in keys or bool(PUBLISHER_KEYS & keys) or name.startswith(ROLE_PREFIXES)


def _refuse_unstated_role(where: str, profile: Profile, keys: set[str]) -> Profile:
    if role_stated(profile.name, keys):
        return profile
    raise WorkloadError(
        f"{where}: does not say what its clients do: add role=sub, or role=pub / rate=MSG_PER_S for "
        f"publishers, or start the name with 'pub' or 'sub' (names are free labels, not presets)"
    )


def parse_profile(spec: str) -> Profile:
    """Parse ``NAME:COUNT[:key=value,...]``.  A profile named ``sub`` (or ``sub...``) is a subscriber.

    Raises WorkloadError naming the spec: bad syntax or values, or a profile that does not say what its
    clients do (:func:`role_stated`)."""
    parts = spec.strip().split(":", 2)
    if len(parts) < 2 or not parts[0]:
        raise WorkloadError(f"profile {spec!r}: expected NAME:COUNT[:key=value,...]")
    name, count_text = parts[0], parts[1]
    try:
        count = int(count_text)
    except ValueError:
        raise WorkloadError(f"profile {spec!r}: COUNT must be an integer, got {count_text!r}") from None
    fields: dict[str, Any] = {
        "name": name,
        "count": count,
        "role": "sub" if name.startswith("sub") else "pub",
    }
    given_role: set[str] = set()
    if len(parts) == 3 and parts[2]:
        for item in parts[2].split(","):
            key, sep, value = item.partition("=")
            key = key.strip()
            given_role |= {key} & {"role"}
            if not sep or key not in _SPEC_KEYS:
                raise WorkloadError(
                    f"profile {spec!r}: bad option {item!r} (known: {', '.join(sorted(_SPEC_KEYS))})"
                )
            if key == "session":
                fields[key] = Churn.parse(value)
            elif key == "echo":
                if value not in ("0", "1", "true", "false"):
                    raise WorkloadError(f"profile {spec!r}: echo must be true/false")
                fields[key] = value in ("1", "true")
            elif key == "qos":
                if value.strip() not in ("0", "1"):
                    raise WorkloadError(f"profile {spec!r}: qos must be 0 or 1, got {value!r}")
                fields[key] = int(value)
            else:
                fields[key] = value.strip()
    try:
        profile = Profile.model_validate(fields)
    except ValidationError as exc:
        raise WorkloadError(f"profile {spec!r}: {_first_error(exc)}") from None
    return _refuse_unstated_role(f"profile {spec!r}", profile, set(fields) - {"name", "count", "role"} | given_role)


def build_workload(profiles: list[Profile], **settings: Any) -> Workload:
    try:
        return Workload(profiles=profiles, **settings)
    except ValidationError as exc:
        raise WorkloadError(f"workload: {_first_error(exc)}") from None


def load_workload_yaml(text: str, overrides: dict[str, Any] | None = None, source: str = "workload file") -> Workload:
    """A workload from YAML text; ``overrides`` (e.g. CLI flags) win over the file's top-level keys.

    Raises WorkloadError; YAML errors name ``source`` (the file's path) and the line."""
    data = parse_yaml_mapping(text, source, WorkloadError)
    profiles = data.get("profiles")
    if not isinstance(profiles, list) or not profiles:
        raise WorkloadError("workload file needs a non-empty 'profiles' list")
    parsed: list[Profile] = []
    for i, item in enumerate(profiles):
        if isinstance(item, str):
            parsed.append(parse_profile(item))
            continue
        if not isinstance(item, dict):
            raise WorkloadError(f"profiles[{i}] must be a mapping or a spec string")
        item = dict(item)
        if isinstance(item.get("session"), str):
            item["session"] = Churn.parse(item["session"])
        if "role" not in item and isinstance(item.get("name"), str) and item["name"].startswith("sub"):
            item["role"] = "sub"
        try:
            profile = Profile.model_validate(item)
        except ValidationError as exc:
            raise WorkloadError(f"profiles[{i}]: {_first_error(exc)}") from None
        parsed.append(_refuse_unstated_role(f"profiles[{i}] ({profile.name})", profile, set(item) - {"name", "count"}))
    settings = {k: v for k, v in data.items() if k != "profiles"}
    settings.update(overrides or {})
    return build_workload(parsed, **settings)
