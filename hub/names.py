"""Names, labels, model references, deploy targets and durations users type: one grammar each.

The CLI and SDK check input with these before any I/O, and the services check it again with
the same functions, so a command and the REST API accept and refuse exactly the same things.
Two name rule sets: models follow the registry's (`[A-Za-z0-9._-]{1,255}`); devices and services
are DNS-label-like (at most 63 characters, starting with a letter or digit), because they become
certificate common names, MQTT topic levels and broker user names. This module imports nothing
of the server (no store, no crypto), so the command line stays quick to start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

from hub.errors import BadInput

# ---- models (registry) ----

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
MAX_LABEL_VALUE = 4096


def validate_name(name: object, what: str = "model name") -> str:
    """Return `name` if it matches `[A-Za-z0-9._-]{1,255}`, else raise BadInput saying why."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:57] + "..."
        raise BadInput(f"bad {what} {shown!r}: use 1-255 characters from A-Z a-z 0-9 . _ -")
    return name


def validate_labels(labels: object, what: str = "tag") -> dict[str, str]:
    """Check a {key: value} dict of tags or properties; return it with string values."""
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise BadInput(f"{what}s must be an object of key: value strings")
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.fullmatch(key):
            raise BadInput(f"bad {what} key {key!r}: use 1-255 characters from A-Z a-z 0-9 . _ - /")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or "\n" in value:
            raise BadInput(f"bad {what} value for {key!r}: a single-line string of at most {MAX_LABEL_VALUE} chars")
    return dict(labels)


def split_key_value(text: str, refused: str) -> tuple[str, str]:
    """The one `KEY=VALUE` grammar (tags, properties, labels): split at the first '='.

    BadInput `"{refused} 'TEXT': expected KEY=VALUE"` when there is no '=' or no key; each caller
    then checks the characters its kind of pair allows.
    """
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BadInput(f"{refused} {text!r}: expected KEY=VALUE")
    return key, value


def parse_label(text: str, what: str = "tag") -> tuple[str, str]:
    """Parse a model tag or property `key=value` (CLI syntax) into a pair; BadInput when malformed."""
    key, value = split_key_value(text, f"bad {what}")
    validate_labels({key: value}, what)
    return key, value


class ModelRef(NamedTuple):
    """`NAME` or `NAME:VERSION` as users type it; version None means the latest."""

    name: str
    version: int | None = None

    @classmethod
    def parse(cls, text: object) -> ModelRef:
        """Parse `NAME[:VERSION]`; BadInput naming the reference when the name or version is wrong."""
        if not isinstance(text, str) or not text:
            raise BadInput(f"bad model reference {text!r}: expected NAME or NAME:VERSION")
        name, sep, version = text.partition(":")
        validate_name(name)
        if not sep:
            return cls(name)
        if not version.isdigit() or int(version) < 1:
            raise BadInput(f"bad model reference {text!r}: version must be a positive integer (NAME:VERSION)")
        return cls(name, int(version))

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}:{self.version}"


def parse_model_ref(ref: str) -> ModelRef:
    """`NAME` or `NAME:VERSION` → ModelRef(name, version or None); see `ModelRef.parse`."""
    return ModelRef.parse(ref)


# ---- devices and services (fleet, deployments) ----

FLEET_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
FLEET_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
FLEET_LABEL_VALUE_RE = re.compile(r"^[A-Za-z0-9._-]{0,63}$")
_DURATION_RE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def validate_fleet_name(kind: str, name: str) -> str:
    """Return `name` if it is a valid device/service name, else raise BadInput naming it."""
    if not FLEET_NAME_RE.match(name or ""):
        raise BadInput(
            f"invalid {kind} name {name!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def parse_labels(items: list[str] | dict[str, str]) -> dict[str, str]:
    """Device labels from `k=v` strings (or a dict), validated; raise BadInput naming the bad one."""
    pairs = items.items() if isinstance(items, dict) else [_split_label(s) for s in items]
    labels: dict[str, str] = {}
    for key, value in pairs:
        if not FLEET_LABEL_KEY_RE.match(key) or not FLEET_LABEL_VALUE_RE.match(value):
            raise BadInput(f"invalid label {key}={value}: keys and values use letters, digits, '.', '_', '-'")
        labels[key] = value
    return labels


def _split_label(text: str) -> tuple[str, str]:
    if not isinstance(text, str):
        raise BadInput(f"invalid label {text!r}: expected KEY=VALUE")
    key, value = split_key_value(text, "invalid label")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class Target:
    """What a deploy target selects: one device by name, or every device carrying all of `labels`."""

    device: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


TARGET_SYNTAX = "DEVICE or KEY=VALUE[,KEY=VALUE...]"


def parse_target(text: object) -> Target:
    """Parse a deploy target (`--target`): a device name, or comma-separated `KEY=VALUE` labels.

    Every comma must sit between two terms: an empty term (a leading, trailing or doubled comma)
    is refused naming its position (1-based character), as is a bad device name or label.
    """
    if not isinstance(text, str) or not text.strip():
        raise BadInput(f"a target is required (--target {TARGET_SYNTAX})")
    if "=" not in text:
        return Target(device=validate_fleet_name("target device", text.strip()))
    terms = text.split(",")
    offset = 0
    for index, term in enumerate(terms):
        if not term.strip():
            if index < len(terms) - 1:  # the comma that ends this empty term
                where = f"before the comma at position {offset + len(term) + 1}"
            else:  # a trailing comma: the one that began this term
                where = f"after the comma at position {offset}"
            raise BadInput(f"invalid target {text!r}: empty label {where}; expected {TARGET_SYNTAX}")
        offset += len(term) + 1
    return Target(labels=parse_labels(terms))


def parse_duration(text: str) -> int:
    """Seconds in '90s', '30m', '1h', '7d'; raise BadInput otherwise."""
    m = _DURATION_RE.match(text.strip()) if text else None
    if not m or int(m.group(1)) <= 0:
        raise BadInput(f"invalid duration {text!r}: use a positive number with s, m, h or d (e.g. 1h)")
    return int(m.group(1)) * _UNITS[m.group(2)]


# An enrollment token is a bearer secret until used: short by default, and never valid for long.
DEFAULT_TOKEN_TTL_S = 3600
MAX_TOKEN_TTL_S = 30 * 86400


def check_token_lifetime(seconds: int) -> int:
    """`seconds` if it is a lifetime an enrollment token may have (1 s to 30 days); BadInput otherwise."""
    if not 0 < seconds <= MAX_TOKEN_TTL_S:
        raise BadInput(
            f"enrollment token lifetime (expires) must be 1 s to 30 days ({MAX_TOKEN_TTL_S} s), got {seconds} s"
        )
    return seconds


def parse_token_lifetime(text: str, option: str = "--expires") -> int:
    """Seconds in an enrollment token lifetime ('15m', '1h', '2d'), at most 30 days; BadInput naming `option`."""
    seconds = parse_duration(text)
    if seconds > MAX_TOKEN_TTL_S:
        raise BadInput(f"{option} {text!r}: an enrollment token may live at most 30d ({MAX_TOKEN_TTL_S} s)")
    return seconds
