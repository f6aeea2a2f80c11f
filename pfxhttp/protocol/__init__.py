"""The sans-IO protocol layer: bytes in, messages out; replies in, bytes out.

Nothing here performs I/O or imports an I/O library (trio, socket, httpx, yaml, structlog...): only pure
stdlib modules and :mod:`pfxhttp.errors`, which ``tests/test_layering.py`` enforces. The server's connection
loop feeds received bytes to a decoder and writes what the reply objects encode.

- :mod:`.netstring`: netstring framing (socketmap transport).
- :mod:`.socketmap`: socketmap_table(5) requests and replies.
- :mod:`.policy`: SMTPD_POLICY_README attribute blocks and replies.
- :mod:`.tcptable`: tcp_table(5) request lines and replies.

socketmap, policy and tcptable each have a ``parse_reply`` function; import it from its module, as
also ``tcptable.MAX_REPLY_LENGTH``, ``encode_text`` and ``decode_text``.
"""

from __future__ import annotations

from pfxhttp.protocol import netstring, policy, socketmap, tcptable
from pfxhttp.protocol.netstring import DEFAULT_MAX_LENGTH, NetstringDecoder
from pfxhttp.protocol.policy import (
    MAX_ACTION_LENGTH,
    PolicyDecoder,
    PolicyLimits,
    PolicyReply,
    PolicyRequest,
)
from pfxhttp.protocol.socketmap import (
    DEFAULT_MAX_REPLY_SIZE,
    SocketmapReply,
    SocketmapRequest,
    SocketmapStatus,
)
from pfxhttp.protocol.tcptable import TcpTableDecoder, TcpTableReply, TcpTableRequest, TcpTableStatus

__all__ = [
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_MAX_REPLY_SIZE",
    "MAX_ACTION_LENGTH",
    "NetstringDecoder",
    "PolicyDecoder",
    "PolicyLimits",
    "PolicyReply",
    "PolicyRequest",
    "SocketmapReply",
    "SocketmapRequest",
    "SocketmapStatus",
    "TcpTableDecoder",
    "TcpTableReply",
    "TcpTableRequest",
    "TcpTableStatus",
    "netstring",
    "policy",
    "socketmap",
    "tcptable",
]
