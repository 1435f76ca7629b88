"""Responses that stream from disk under the ASGI server without holding the whole body.

Django's ASGI handler reads a synchronous iterator (a FileResponse, a
generator) into a list before it sends the first byte: a multi-gigabyte
model or data file would sit in memory whole. These hand Django an
asynchronous iterator instead, which reads one block at a time in a worker
thread.
"""

from asgiref.sync import sync_to_async
from django.http import FileResponse

_END = object()


async def in_thread(iterable):
    """An async iterator over a blocking one: each step runs in a worker thread, one block in memory at a time."""
    iterator = iter(iterable)
    step = sync_to_async(next, thread_sensitive=False)
    try:
        while (block := await step(iterator, _END)) is not _END:
            yield block
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=False)()


class FileStream(FileResponse):
    """A FileResponse (headers, Content-Length, attachment name) whose blocks are read as they are sent."""

    def _set_streaming_content(self, value):
        super()._set_streaming_content(value)
        if not self.is_async:
            super(FileResponse, self)._set_streaming_content(in_thread(self._iterator))
