"""`Session`: one live connection of one device through one front (gRPC stream or MQTT client).

Its own module because both the control core (which opens and closes sessions) and group
commit (which acks each session once per batch) need it, and neither should import the other.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Session:
    """One live connection of one device through one front."""

    device_id: str
    transport: str
    id: int
    opened_at: float = field(default_factory=time.time)
    sent_revision: int = -1  # revision of the last DesiredState handed to this session
    floor_set: bool = False  # first sequenced message of the session seen (gap handling, see ControlCore._store)
    closed: bool = False
