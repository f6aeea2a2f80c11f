"""Drive real Postfix 3.7 (Debian bookworm): postmap here, a private master + smtpd in postfix_smtpd.

API (nothing here reads /etc/postfix; every run has its own config directory):

* ``make_postfix_config_dir(tmp, **params) -> Path`` writes ``tmp/postfix/main.cf``.
* ``await postmap_query(key, mapspec, *, config_dir, timeout=20) -> PostmapResult(returncode, stdout,
  stderr)`` runs ``postmap -c DIR -q KEY MAPSPEC``; ``.outcome`` (FOUND/NOT_FOUND/ERROR) and ``.value``.
* ``postfix_available()`` and ``HarnessError`` serve both halves.
* Re-exported from tests/postfix_smtpd.py (see its docstring for the smtpd facts): ``private_smtpd``,
  ``PrivateSmtpd``, ``PolicyStage``, ``SmtpStep``, ``SmtpReply``, ``SmtpTransaction``, ``ReceivedMessage``,
  ``postfix_reachable_dir``, ``grant_postfix_access``.

postmap 3.7.11, observed (``socketmap:inet:HOST:PORT:NAME`` and ``socketmap:unix:PATH:NAME`` alike)::

    server reply            exit  stdout     stderr
    OK value                0     value\\n   -
    OK + space, no value    0     \\n        warnings "empty string result is not allowed" and
                                             "should return NO RESULT in case of NOT FOUND"
    OK (no space)           1     -          -  (same as NOTFOUND)
    NOTFOUND                1     -          -
    TEMP reason             1     -          "warning: ... socketmap server temporary error: reason"
                                             + "fatal: table socketmap:...: query error: ..."
    TIMEOUT reason          1     -          "... socketmap server timeout error: reason" + fatal
    PERM reason             1     -          "... socketmap server permanent error: reason" + fatal
    any other status        1     -          "... socketmap server unknown error: ..." + fatal
    close without reply     1     -          "lookup error: unexpected disconnect" + fatal; the request is
                                             sent twice (Postfix reconnects and retries once)
    connection refused      1     -          "connect to ...: Connection refused" + fatal
    no reply at all         1     -          after 100 s (hard-wired): "lookup error: time limit exceeded"
                                             + fatal; hence the ``timeout`` argument

The exit code cannot tell "not found" from a lookup error; ``outcome`` also looks for ``fatal:``. Every fatal
exit takes 1 s (Postfix sleeps before exiting on a fatal error). The text after ``query error:`` is a stale
errno ("Operation now in progress"): never assert on it.

Keys: postmap sends the key byte for byte. Socketmap is a pattern-type table, so postmap does NOT fold case
(it folds only fixed-string tables such as hash:). Leading, inner and trailing spaces, tabs, quotes,
backslashes, ``,`` ``:`` ``<>`` ``""``, newlines, the empty key and UTF-8 all reach the server unchanged, so
pass keys exactly as the server must see them. Exceptions: the key ``-`` makes postmap read keys from stdin
(refused here), and with ``smtputf8_enable = yes`` (default) postmap itself refuses a non-UTF-8 key.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

SBIN = Path("/usr/sbin")
DAEMON_DIR = Path("/usr/lib/postfix/sbin")
POSTMAP = SBIN / "postmap"
MASTER = DAEMON_DIR / "master"
REQUIRED_BINARIES = (POSTMAP, MASTER, DAEMON_DIR / "smtpd", DAEMON_DIR / "trivial-rewrite")

ParamValue = str | int | bool | Sequence[str]


def postfix_available() -> bool:
    """True when every Postfix binary the harness runs is installed."""
    return all(os.access(path, os.X_OK) for path in REQUIRED_BINARIES)


class HarnessError(RuntimeError):
    """The harness could not set up or drive Postfix (not an assertion about the code under test)."""


# --------------------------------------------------------------------------------------------- postmap


class PostmapOutcome(enum.Enum):
    FOUND = "found"
    NOT_FOUND = "not found"
    ERROR = "lookup error"


@dataclass(frozen=True)
class PostmapResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def outcome(self) -> PostmapOutcome:
        if self.returncode == 0:
            return PostmapOutcome.FOUND
        if self.returncode == 1 and "fatal:" not in self.stderr:
            return PostmapOutcome.NOT_FOUND
        return PostmapOutcome.ERROR

    @property
    def value(self) -> str | None:
        """The value printed for a found key (postmap appends one newline), else None."""
        return self.stdout.removesuffix("\n") if self.returncode == 0 else None


def _render_param(name: str, value: ParamValue) -> str:
    if not name.isidentifier():
        raise ValueError(f"not a Postfix parameter name: {name!r}")
    if isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, int | str):
        text = str(value)
    else:
        text = ", ".join(value)
    if "\n" in text or "\r" in text:
        raise ValueError(f"parameter {name} must be one line")
    return f"{name} = {text}\n"


def make_postfix_config_dir(tmp: Path, **params: ParamValue) -> Path:
    """Write ``tmp/postfix/main.cf`` (minimal defaults updated by ``params``) and return that directory.

    Nothing is read from /etc/postfix. ``params`` values: str, int, bool (yes/no) or a list (joined by ", ").
    """
    config_dir = tmp / "postfix"
    config_dir.mkdir(parents=True, exist_ok=True)
    # compatibility_level silences the backwards-compatibility warnings that would clutter stderr.
    merged: dict[str, ParamValue] = {"compatibility_level": "3.6", "myhostname": "harness.test"}
    merged.update(params)
    _write_aged(config_dir / "main.cf", "".join(_render_param(k, v) for k, v in merged.items()))
    return config_dir


def _write_aged(path: Path, text: str) -> None:
    """Write a config file dated a minute back: Postfix re-reads (300 ms naps) a file modified within the
    last second or so, in case a writer is still busy (dict_load_file), which costs up to 2 s per start."""
    path.write_text(text)
    stamp = path.stat().st_mtime - 60
    os.utime(path, (stamp, stamp))


async def postmap_query(
    key: str,
    mapspec: str,
    *,
    config_dir: Path,
    timeout: float = 20,  # postmap alone would wait 100 s for a silent server
) -> PostmapResult:
    """Run ``postmap -c CONFIG_DIR -q KEY MAPSPEC``; raise trio.TooSlowError after ``timeout`` seconds."""
    if key == "-":
        raise ValueError("postmap -q - reads keys from stdin; the key '-' cannot be queried this way")
    with trio.fail_after(timeout):
        proc = await trio.run_process(
            [str(POSTMAP), "-c", str(config_dir), "-q", key, mapspec],
            stdin=b"",
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return PostmapResult(
        proc.returncode,
        proc.stdout.decode("utf-8", "surrogateescape"),
        proc.stderr.decode("utf-8", "surrogateescape"),
    )
