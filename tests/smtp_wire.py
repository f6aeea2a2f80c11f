"""The SMTP side of the Postfix harness, no Postfix involved: a client and the sink behind smtpd.

* ``run_dialogue(stream, replies, ...)`` is the client half of one SMTP session (RFC 5321): EHLO,
  [XCLIENT + EHLO], MAIL, each RCPT, DATA, QUIT; every reply is appended to ``replies`` as a ``SmtpReply``.
* ``SmtpSink`` is the server behind ``smtpd_proxy_filter``: it accepts everything and records each message as
  a ``ReceivedMessage`` (dot-unstuffed, CRLF kept).
* ``LineReader``, ``read_reply``, ``xtext`` and ``dot_stuff`` are the wire details both halves share.

tests/postfix_smtpd.py runs smtpd between the two.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import trio

from tests.postfix_harness import HarnessError

MAX_LINE = 64 * 1024  # one SMTP line; far above RFC 5321's 1000 so nothing legitimate trips it
MAX_MESSAGE = 16 * 1024 * 1024


class LineReader:
    """CRLF line reader over a trio stream; returns None at EOF."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def readline(self) -> bytes | None:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > MAX_LINE:
                raise HarnessError("SMTP line too long")
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line.rstrip(b"\r\n")


class SmtpStep(enum.StrEnum):
    GREETING = "GREETING"
    EHLO = "EHLO"
    XCLIENT = "XCLIENT"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    MESSAGE = "MESSAGE"  # the reply to the final "." of the message
    QUIT = "QUIT"


@dataclass(frozen=True)
class SmtpReply:
    step: SmtpStep
    command: str  # the line sent ("" for the greeting, "." for the end of the message)
    code: int
    text: str  # the reply lines without their codes, joined by "\n"


@dataclass(frozen=True)
class ReceivedMessage:
    """A message as the sink got it from smtpd (dot-unstuffed, CRLF kept)."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    data: bytes

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """Header fields in order, continuation lines unfolded (RFC 5322 section 2.2.3)."""
        head = self.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
        fields: list[list[str]] = []
        for line in head.split("\r\n"):
            if line[:1] in (" ", "\t") and fields:
                fields[-1][1] += " " + line.strip()
            elif ":" in line:
                name, value = line.split(":", 1)
                fields.append([name.strip(), value.strip()])
        return tuple((name, value) for name, value in fields)

    def header(self, name: str) -> tuple[str, ...]:
        return tuple(v for k, v in self.headers if k.lower() == name.lower())


@dataclass(frozen=True)
class SmtpTransaction:
    replies: tuple[SmtpReply, ...]
    message: ReceivedMessage | None  # set when the sink received the message

    def codes(self, step: SmtpStep | str) -> tuple[int, ...]:
        return tuple(r.code for r in self.replies if r.step == step)

    def reply(self, step: SmtpStep | str) -> SmtpReply:
        """The first reply of ``step``; KeyError if the dialogue never got there."""
        for r in self.replies:
            if r.step == step:
                return r
        raise KeyError(step)


async def read_reply(reader: LineReader) -> tuple[int, str] | None:
    texts: list[str] = []
    for _ in range(1000):  # RFC 5321 4.2.1 multiline reply: "NNN-" lines then one "NNN " line
        raw = await reader.readline()
        if raw is None:
            return None
        line = raw.decode("utf-8", "surrogateescape")
        if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
            raise HarnessError(f"malformed SMTP reply line {line!r}")
        texts.append(line[4:])
        if line[3:4] != "-":
            return int(line[:3]), "\n".join(texts)
    raise HarnessError("SMTP reply with too many lines")


def xtext(value: str) -> str:
    """XCLIENT values are xtext (RFC 3461 section 4): '+', '=' and non-printables become +HH."""
    return "".join(
        chr(b) if 33 <= b <= 126 and b not in (ord("+"), ord("=")) else f"+{b:02X}" for b in value.encode()
    )


def dot_stuff(data: bytes) -> bytes:
    """Normalise line ends to CRLF and dot-stuff (RFC 5321 section 4.5.2), ending with CRLF."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)


class SmtpSink:
    """The SMTP server behind ``smtpd_proxy_filter``: accepts everything and records each message."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.messages: list[ReceivedMessage] = []
        self._log = log  # where a failed sink session is noted (the instance's Postfix log)

    async def handle(self, stream: trio.SocketStream) -> None:
        # An exception escaping a handler would stop serve_tcp and with it the whole instance: keep it here.
        try:
            await self._serve(stream)
        except (trio.BrokenResourceError, HarnessError) as exc:
            self._log(f"harness sink: {exc!r}")

    async def _serve(self, stream: trio.SocketStream) -> None:
        async with stream:
            reader = LineReader(stream)
            await stream.send_all(b"220 sink.harness.test ESMTP\r\n")
            mail_from, rcpts = "", list[str]()
            for _ in range(10_000):
                raw = await reader.readline()
                if raw is None:
                    return
                line = raw.decode("utf-8", "surrogateescape")
                verb = line[:4].upper()
                if verb in ("EHLO", "HELO"):
                    await stream.send_all(b"250-sink.harness.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                elif verb == "MAIL":
                    mail_from, rcpts = line.partition("<")[2].partition(">")[0], []
                    await stream.send_all(b"250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    rcpts.append(line.partition("<")[2].partition(">")[0])
                    await stream.send_all(b"250 2.1.5 Ok\r\n")
                elif verb == "DATA":
                    await stream.send_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    data = await self._read_data(reader)
                    if data is None:
                        return  # smtpd aborts the proxy connection when it rejects the message itself
                    self.messages.append(ReceivedMessage(mail_from, tuple(rcpts), data))
                    await stream.send_all(b"250 2.0.0 Ok: queued by sink\r\n")
                elif verb == "QUIT":
                    await stream.send_all(b"221 2.0.0 Bye\r\n")
                    return
                else:  # RSET, NOOP, ...
                    await stream.send_all(b"250 2.0.0 Ok\r\n")

    @staticmethod
    async def _read_data(reader: LineReader) -> bytes | None:
        data = bytearray()
        while len(data) <= MAX_MESSAGE:
            line = await reader.readline()
            if line is None:
                return None
            if line == b".":
                return bytes(data)
            data += (line[1:] if line.startswith(b".") else line) + b"\r\n"
        raise HarnessError("sink: message too large")


async def run_dialogue(
    stream: trio.SocketStream,
    replies: list[SmtpReply],
    mail_from: str,
    rcpt_to: Sequence[str],
    body: bytes,
    helo: str,
    mail_params: str,
    xclient: Mapping[str, str] | None,
) -> None:
    """The client half of one SMTP session; see ``PrivateSmtpd.send_mail`` for when it stops early.

    ``body`` is already dot-stuffed and CRLF-terminated (``dot_stuff``); each reply is appended to ``replies``
    as it arrives. Returns when the session ends or smtpd closes the connection.
    """
    reader = LineReader(stream)

    async def say(step: SmtpStep, command: str, payload: bytes | None = None) -> int:
        if step is not SmtpStep.GREETING:
            await stream.send_all(payload if payload is not None else command.encode() + b"\r\n")
        reply = await read_reply(reader)
        if reply is None:
            return 0  # smtpd closed the connection
        replies.append(SmtpReply(step, command, *reply))
        return reply[0]

    if await say(SmtpStep.GREETING, "") != 220 or await say(SmtpStep.EHLO, f"EHLO {helo}") != 250:
        return
    if xclient:
        attrs = " ".join(f"{name.upper()}={xtext(value)}" for name, value in xclient.items())
        # XCLIENT_README: a successful XCLIENT restarts the session with a new 220 greeting.
        if await say(SmtpStep.XCLIENT, f"XCLIENT {attrs}") != 220:
            return
        if await say(SmtpStep.EHLO, f"EHLO {helo}") != 250:
            return
    params = f" {mail_params}" if mail_params else ""
    if await say(SmtpStep.MAIL, f"MAIL FROM:<{mail_from}>{params}") // 100 != 2:
        await say(SmtpStep.QUIT, "QUIT")
        return
    accepted = [await say(SmtpStep.RCPT, f"RCPT TO:<{rcpt}>") // 100 == 2 for rcpt in rcpt_to]
    if any(accepted) and await say(SmtpStep.DATA, "DATA") == 354:
        await say(SmtpStep.MESSAGE, ".", body + b".\r\n")
    await say(SmtpStep.QUIT, "QUIT")
