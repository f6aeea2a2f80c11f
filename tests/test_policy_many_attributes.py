"""A policy request is bounded by bytes, not by its number of attributes: the real daemon answers a block of
1,000 short attributes (unknown to Postfix's list, ignored by whatever does not use them) like any other."""

from __future__ import annotations

import trio

from tests.conftest import Daemon, connect, read_policy_reply


async def test_daemon_answers_a_request_of_a_thousand_attributes(daemon: Daemon) -> None:
    attributes = {f"x_attr_{n}": f"value-{n}" for n in range(1000)}
    attributes["recipient"] = "reject@example.com"  # the test backend answers by recipient
    block = "".join(f"{name}={value}\n" for name, value in attributes.items()).encode() + b"\n"
    assert 20_000 < len(block) < 30_000
    with trio.fail_after(10):
        async with await connect(daemon.address("policy_service")) as stream:
            await stream.send_all(block)
            assert await read_policy_reply(stream) == "action=REJECT 5.7.1 rejected by policy\n\n"
            # The connection stays usable: the next (short) request on it is answered too.
            await stream.send_all(b"recipient=dunno@example.com\n\n")
            assert await read_policy_reply(stream) == "action=DUNNO\n\n"
