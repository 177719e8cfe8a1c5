"""A stand-in for the `nvtx` package that records every push and pop (tests put its folder first on PYTHONPATH).

Each event is one JSON line appended to $FAKE_NVTX_LOG: {"op": "push", "domain", "message", "category"
(the category's name), "payload", "thread"} or {"op": "pop", "domain", "thread"}. Domains are `Domain`
instances, as the real package's are when a tool is attached, so code that checks for that records too.
"""

from __future__ import annotations

import json
import os
import threading
from functools import cache

_LOCK = threading.Lock()


def _log(event: dict) -> None:
    path = os.environ.get("FAKE_NVTX_LOG")
    if path:
        with _LOCK, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**event, "thread": threading.get_ident()}) + "\n")


class EventAttributes:
    def __init__(self, message, category, payload) -> None:
        self.message, self.category, self.payload = message, category, payload


class Domain:
    def __init__(self, name: str) -> None:
        self.name = name
        self._categories: dict[str, int] = {}

    def get_category_id(self, name: str) -> int:
        return self._categories.setdefault(name, len(self._categories) + 1)

    def get_event_attributes(self, message=None, color=None, category=None, payload=None) -> EventAttributes:
        return EventAttributes(message, category, payload)

    def push_range(self, attributes: EventAttributes) -> None:
        names = {v: k for k, v in self._categories.items()}
        _log(
            {
                "op": "push",
                "domain": self.name,
                "message": attributes.message,
                "category": names.get(attributes.category),
                "payload": attributes.payload,
            }
        )

    def pop_range(self) -> None:
        _log({"op": "pop", "domain": self.name})


@cache
def get_domain(name: str | None = None) -> Domain:
    return Domain(name or "NVTX")


def start_range(*_args, **_kwargs) -> None:
    return None


def end_range(*_args, **_kwargs) -> None:
    return None
