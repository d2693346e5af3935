"""The load generator's message payload: who sent it, in which session, which sequence number, when.

A fixed binary header (so decoding costs little at thousands of messages per second) padded with
zero bytes up to the profile's payload size.  Messages from other publishers on the same topics
(anything without the magic) are counted as foreign, never as errors.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAGIC = b"MQLB"
_HEADER = struct.Struct("!4sBIQQH")  # magic, version, session, seq, send time ns, client id length
VERSION = 1
MAX_CLIENT_ID_BYTES = 256


@dataclass(frozen=True)
class Stamp:
    client_id: str
    session: int
    seq: int
    sent_ns: int


def header_size(client_id: str) -> int:
    return _HEADER.size + len(client_id.encode())


def encode(stamp: Stamp, size: int) -> bytes:
    """The payload for ``stamp``, at least ``size`` bytes long (the header alone if ``size`` is smaller)."""
    cid = stamp.client_id.encode()
    if len(cid) > MAX_CLIENT_ID_BYTES:
        raise ValueError(f"client id longer than {MAX_CLIENT_ID_BYTES} bytes")
    head = _HEADER.pack(MAGIC, VERSION, stamp.session, stamp.seq, stamp.sent_ns, len(cid)) + cid
    if size > len(head):
        return head + bytes(size - len(head))
    return head


def decode(payload: bytes) -> Stamp | None:
    """The stamp in ``payload``, or None when it is not a load generator message (or is truncated)."""
    if len(payload) < _HEADER.size or payload[:4] != MAGIC:
        return None
    _magic, version, session, seq, sent_ns, cid_len = _HEADER.unpack_from(payload)
    end = _HEADER.size + cid_len
    if version != VERSION or len(payload) < end:
        return None
    try:
        client_id = payload[_HEADER.size : end].decode()
    except UnicodeDecodeError:
        return None
    return Stamp(client_id, session, seq, sent_ns)
