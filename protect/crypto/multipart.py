"""A multipart/form-data parser that hands file bytes on without copying them.

Werkzeug's ``MultipartDecoder`` copies every byte of a file part four times
(into its buffer, out as a slice, into ``bytes``, into the file) and runs a
regular expression over each chunk: for a large upload that was the largest
Python cost on the request path. Here the decoder still reads everything that
has structure (preamble, part headers, form fields, the end of every part,
epilogue) with all its checks and limits; only the middle of a file part goes
around it. There the body is read into one reused buffer, the delimiter is
looked for with ``bytearray.find`` (C speed), and every byte that cannot belong
to a delimiter is written to the file straight from the buffer.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import IO, Any

from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData, State

ReadInto = Callable[[memoryview], int]


class StreamingMultiPartParser(MultiPartParser):
    """``MultiPartParser`` whose file parts skip the decoder between their ends.

    The file's ``write()`` receives memoryviews of a buffer that is reused
    right after: it must copy what it keeps (``EncryptedUpload`` does).
    """

    def parse(self, stream: IO[bytes], boundary: bytes, content_length: int | None
              ) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
        decoder = MultipartDecoder(boundary, self.max_form_memory_size, max_parts=self.max_form_parts)
        delimiter = b"--" + boundary
        # Room for a whole delimiter held back from the previous read, with plenty to spare.
        buffer = bytearray(max(self.buffer_size, 4 * len(delimiter)))
        view = memoryview(buffer)
        readinto = _readinto(stream)
        fields: list[tuple[str, str]] = []
        files: list[tuple[str, FileStorage]] = []
        part: Field | File | None = None
        container: Any = None
        field_size = 0
        # The events are handled as in MultiPartParser.parse; only NeedData differs.
        while True:
            event = decoder.next_event()
            if isinstance(event, NeedData):
                if isinstance(part, File) and decoder.state is State.DATA:
                    more = _pump(decoder, readinto, buffer, view, delimiter, container.write)
                else:
                    n = readinto(view)
                    more = n > 0
                    if more:
                        decoder.receive_data(bytes(view[:n]))
                if not more:
                    decoder.receive_data(None)
            elif isinstance(event, Epilogue):
                return self.cls(fields), self.cls(files)
            elif isinstance(event, Field):
                part, field_size, container = event, 0, []
            elif isinstance(event, File):
                part, container = event, self.start_file_streaming(event, content_length)
            elif isinstance(event, Data):
                if isinstance(part, Field):
                    field_size += len(event.data)
                    if self.max_form_memory_size is not None and field_size > self.max_form_memory_size:
                        raise RequestEntityTooLarge()
                    container.append(event.data)
                    if not event.more_data:
                        value = b"".join(container).decode(self.get_part_charset(part.headers), "replace")
                        fields.append((part.name, value))
                elif isinstance(part, File):
                    container.write(event.data)
                    if not event.more_data:
                        container.seek(0)
                        files.append((part.name, FileStorage(container, part.filename, part.name,
                                                             headers=part.headers)))


def _pump(decoder: MultipartDecoder, readinto: ReadInto, buffer: bytearray, view: memoryview,
          delimiter: bytes, write: Callable[[memoryview], Any]) -> bool:
    """Moves a file part's bytes from the body to ``write`` around the decoder.

    Returns True once the decoder holds the bytes from the first possible
    delimiter on (it decides whether the part ends there), False when the
    body ended first (the decoder then holds what was left).
    """
    # A delimiter is a line break (CRLF, or a lone CR or LF, which werkzeug
    # accepts too) and ``delimiter``; bytes before the first occurrence of
    # ``delimiter`` less two cannot be part of one. Without an occurrence, a
    # delimiter cut by the end of the read can only be in the last ``keep`` bytes.
    keep = len(delimiter) + 2
    held = len(decoder.buffer)  # what the decoder held back: at most ``keep`` bytes
    buffer[:held] = decoder.buffer
    del decoder.buffer[:]
    while n := readinto(view[held:]):
        end = held + n
        found = buffer.find(delimiter, 0, end)
        safe = max(found - 2 if found >= 0 else end - keep, 0)
        if safe:
            write(view[:safe])
        if found >= 0:
            decoder.receive_data(bytes(view[safe:end]))
            return True
        tail = bytes(view[safe:end])
        buffer[:len(tail)] = tail
        held = len(tail)
    decoder.receive_data(bytes(view[:held]))
    return False


def _readinto(stream: IO[bytes]) -> ReadInto:
    readinto = getattr(stream, "readinto", None)
    if readinto is not None:
        return readinto

    def read_and_copy(view: memoryview) -> int:  # WSGI promises only read()
        data = stream.read(len(view))
        view[:len(data)] = data
        return len(data)
    return read_and_copy
