"""Names and labels users type, checked the same way by the CLI and SDK (before any I/O) and by the services.

Two rule sets: models follow the registry's (`[A-Za-z0-9._-]{1,255}`); devices and services are
DNS-label-like (at most 63 characters, starting with a letter or digit), because they become
certificate common names, MQTT topic levels and broker user names. This module imports nothing
of the server (no store, no crypto), so the command line stays quick to start.
"""

from __future__ import annotations

import re

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


def parse_label(text: str, what: str = "tag") -> tuple[str, str]:
    """Parse `key=value` (CLI syntax) into a pair; BadInput when malformed."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise BadInput(f"bad {what} {text!r}: expected KEY=VALUE")
    validate_labels({key: value}, what)
    return key, value


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """`NAME` or `NAME:VERSION` → (name, version or None)."""
    name, sep, version = ref.partition(":")
    validate_name(name)
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise BadInput(f"bad model reference {ref!r}: version must be a positive integer (NAME:VERSION)")
    return name, int(version)


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
    """Labels from `k=v` strings (or a dict), validated; raise BadInput naming the bad one."""
    pairs = items.items() if isinstance(items, dict) else [_split_label(s) for s in items]
    labels: dict[str, str] = {}
    for key, value in pairs:
        if not FLEET_LABEL_KEY_RE.match(key) or not FLEET_LABEL_VALUE_RE.match(value):
            raise BadInput(f"invalid label {key}={value}: keys and values use letters, digits, '.', '_', '-'")
        labels[key] = value
    return labels


def _split_label(text: str) -> tuple[str, str]:
    if text.count("=") != 1:
        raise BadInput(f"invalid label {text!r}: expected KEY=VALUE")
    key, value = text.split("=")
    return key.strip(), value.strip()


def parse_duration(text: str) -> int:
    """Seconds in '90s', '30m', '1h', '7d'; raise BadInput otherwise."""
    m = _DURATION_RE.match(text.strip()) if text else None
    if not m or int(m.group(1)) <= 0:
        raise BadInput(f"invalid duration {text!r}: use a positive number with s, m, h or d (e.g. 1h)")
    return int(m.group(1)) * _UNITS[m.group(2)]
