"""The engine's stdout protocol: one JSON object per line (schema in __init__)."""

import json
import math
import time


class EngineError(Exception):
    """A failure a person can act on: `code` names it, `message` says what to change."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Cancelled(BaseException):
    """Raised from the SIGTERM handler; a BaseException so no library `except Exception` swallows it."""


def _clean(value):
    # json.dumps writes NaN/Infinity, which is not JSON; a diverged loss is reported as null.
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class Reporter:
    """Writes protocol lines to `stream` (rank 0 only) and hands each to the tracker `sinks`."""

    def __init__(self, stream, is_main=True):
        self.stream = stream
        self.is_main = is_main
        self.sinks = []

    def emit(self, type_, **fields):
        line = _clean({"type": type_, **fields, "ts": round(time.time(), 3)})
        if not self.is_main:
            return line
        self.stream.write(json.dumps(line) + "\n")
        self.stream.flush()
        for sink in self.sinks:
            sink.handle(line)
        return line

    def message(self, text, level="info"):
        return self.emit("message", level=level, text=text)
