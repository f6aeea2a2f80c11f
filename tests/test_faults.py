"""Fault injection: more than 10,000 lookups through the real daemon against a backend that misbehaves on purpose.

The daemon runs in-process (``start_daemon``) with real listeners; 64 concurrent client connections speak
socketmap and policy on the wire, as Postfix does (one connection, one request after another). Their entries
point at the fault server of tests/faultserver.py (plain and over TLS), at a port where nothing listens, at an
https:// port that answers in plain text, and at TLS servers whose certificate the daemon must refuse
(unknown CA, wrong host name). Partway through, the fault backends restart on the same port, three times.

Every reply is judged against what the fault server did for that request (its ``records``), per the contract
of docs/design.md: a fault of the backend or the network must give TEMP/TIMEOUT/PERM (socketmap) or the error
action (policy); never NOTFOUND, an OK with a wrong value, or another policy action (REJECT, 5NN, OK ...).
A correct answer must come back as OK with the right value, NOTFOUND / DUNNO, or the backend's action; or,
when it reached the daemon after its 0.3 s deadline (the clients, the daemon and the backends share one trio
loop on two cores), as TIMEOUT / the error action, which the suite only accepts from a lookup that did take
the deadline. The tally (what the backend did x the reply) is printed; ``pytest -s`` shows it.

The small tests at the end pin the faults this suite found in the daemon (all fixed), each as small as it gets:
an unsolicited response on an idle keep-alive connection, a status line that is not HTTP (RTSP/, ICE/, a NUL),
and a 0xx status whose body llhttp still delivers.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import trio
import trustme

from pfxhttp.protocol.netstring import encode as netstring
from tests.conftest import connect, read_netstring, start_daemon
from tests.faultplan import (
    BODY_CAP,
    DEFAULT_WEIGHTS,
    LENIENT_STATUS_LINES,
    Fault,
    plan_for,
    right_value,
)
from tests.faultrun import (
    LOOKUPS_PER_CLIENT,
    POLICY_CLIENTS,
    RESTART_AT,
    RESTART_DOWNTIME,
    SEED,
    SOCKETMAP_CLIENTS,
    Reply,
    Run,
    Target,
    fault_label,
    first,
    judge,
    map_config,
    policy_request,
    start_backends,
    tally_table,
)
from tests.faultserver import FaultServer


async def test_no_fault_yields_a_mail_losing_reply(nursery: trio.Nursery, tmp_path: Path) -> None:
    started = time.monotonic()
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with trio.fail_after(100):
        backends = await start_backends(nursery, ca)
        urls = {t.value: backends.url(t, "/map") for t in Target}
        policy_urls = {f"p_{t.value}": backends.url(t, "/policy") for t in Target}
        tls = f"  tls: {{enabled: true, root_ca: '{ca_file}'}}\n"
        daemon = await start_daemon(nursery, map_config(urls, policy_urls, tls))
        assert daemon.server.runtime.client.max_body_size == BODY_CAP  # the huge bodies are sized on it
        run = Run(daemon)
        total = (SOCKETMAP_CLIENTS + POLICY_CLIENTS) * LOOKUPS_PER_CLIENT

        async def restarts() -> None:
            for fraction in RESTART_AT:
                for _ in range(100_000):
                    if len(run.lookups) >= fraction * total:
                        break
                    await trio.sleep(0.01)
                for server in backends.planned():
                    await server.restart(RESTART_DOWNTIME)

        async with trio.open_nursery() as clients:
            clients.start_soon(restarts)
            for i in range(SOCKETMAP_CLIENTS):
                clients.start_soon(run.socketmap_client, i)
            for i in range(POLICY_CLIENTS):
                clients.start_soon(run.policy_client, i)
        # Still serving after all that: the right answer for a key the plan answers.
        key = next(
            f"after-{i}@x" for i in range(1000) if plan_for(SEED, f"after-{i}@x").fault is Fault.ANSWER
        )
        async with await connect(daemon.address("socket_map")) as stream:
            await stream.send_all(netstring(f"faulty {key}".encode()))
            assert await read_netstring(stream) == f"OK {right_value(key)}"

    tally: Counter[tuple[str, Reply]] = Counter()
    broken: list[str] = []
    off_contract: list[str] = []
    mismatched: list[str] = []
    for lookup in run.lookups:
        records = backends.records(lookup)
        label = fault_label(lookup, records)
        tally[(label, lookup.reply)] += 1
        planned = plan_for(SEED, lookup.key).fault
        if records and any(f is not planned and f is not Fault.RESTART for f in records):
            mismatched.append(f"{lookup.key}: planned {planned.value}, records {records}")
        invariant, contract = judge(lookup, records)
        line = (
            f"{lookup.protocol} {lookup.target.value} {lookup.key} {backends.details(lookup.key) or [label]}"
            f" -> {lookup.text!r} (at {lookup.began} s, took {lookup.took:.3f} s)"
        )
        if not invariant:
            broken.append(line)
        elif not contract:
            off_contract.append(line)
    restarts_done = backends.faulty.restarts + backends.tls_faulty.restarts
    print(
        f"\n{len(run.lookups)} lookups in {time.monotonic() - started:.1f} s; backend restarts: {restarts_done}"
    )
    print(tally_table(tally))
    print("(TIMEOUT / error-action in an answer row: the answer reached the daemon after its deadline)")
    variants: Counter[str] = Counter()
    for server in backends.planned():
        variants.update({f"{fault.value}/{name}": n for (fault, name), n in server.variants.items()})
    print("flavours served (retries included):", ", ".join(f"{k} {n}" for k, n in sorted(variants.items())))

    assert len(run.lookups) == total >= 10_000
    assert not mismatched, "fault server records disagree with its plan:\n  " + first(mismatched)
    assert not broken, (
        f"{len(broken)} replies lose or misroute mail (a fault gave NOTFOUND, a wrong OK or a non-error "
        "action; an answer came back wrong; or EOF/hang):\n  " + first(broken)
    )
    assert not off_contract, f"{len(off_contract)} replies off the contract table:\n  " + first(off_contract)
    # Not vacuous: every fault kind was met through both protocols, right answers came back, and the TLS and
    # restart faults really happened.
    for fault in DEFAULT_WEIGHTS:
        for protocol in ("socketmap", "policy"):
            met = [
                lk for lk in run.lookups if lk.protocol == protocol and fault in (backends.records(lk) or [])
            ]
            assert met, f"{fault.value} never met over {protocol}"
    assert tally[(Fault.ANSWER.value, Reply.RIGHT)] > 1000
    assert tally[(Fault.NOT_FOUND.value, Reply.NOTFOUND)] > 300
    assert backends.faulty.restarts == backends.tls_faulty.restarts == len(RESTART_AT)
    assert backends.tls_untrusted.handshake_failures > 0 and not backends.tls_untrusted.records
    assert backends.tls_mismatch.handshake_failures > 0 and not backends.tls_mismatch.records
    assert backends.tls_garbage.accepted > 0 and backends.tls_faulty.records


async def small_run(nursery: trio.Nursery, weights: Mapping[Fault, float], keys: int, pause: float) -> str:
    """``keys`` lookups per protocol, one after another on one connection each, against a fault server with
    ``weights``; returns the broken replies, one per line (empty if none)."""
    server = FaultServer(SEED, weights=dict(weights))
    await nursery.start(server.serve)
    config = map_config({"faulty": server.url("/map")}, {"p_faulty": server.url("/policy")})
    run = Run(await start_daemon(nursery, config))
    streams: dict[str, trio.abc.Stream | None] = {"socketmap": None, "policy": None}
    with trio.fail_after(30):
        for i in range(keys):
            key = f"s{i}@faulty.fault.test"
            streams["socketmap"] = await run.lookup(
                streams["socketmap"], "socketmap", Target.FAULTY, "", key, netstring(f"faulty {key}".encode())
            )
            await trio.sleep(pause)
            key = f"p{i}@faulty.fault.test"
            streams["policy"] = await run.lookup(
                streams["policy"], "policy", Target.FAULTY, "p_faulty", key, policy_request(key, 0, i)
            )
            await trio.sleep(pause)
        for stream in streams.values():
            if stream is not None:
                await stream.aclose()
    broken = [
        f"{lk.protocol} {lk.key} {server.details.get(lk.key)} -> {lk.text!r}"
        for lk in run.lookups
        if not judge(lk, server.records.get(lk.key, []))[0]
    ]
    return "\n".join(broken)


async def test_unsolicited_response_is_never_the_next_answer(nursery: trio.Nursery) -> None:
    # Each answer is followed 50 ms later by a second response (a wrong value, a 404, or no value); the next
    # lookup on the same pooled connection comes 100 ms after its predecessor.
    broken = await small_run(nursery, {Fault.UNSOLICITED: 1}, keys=6, pause=0.1)
    assert not broken, "a stale response answered a later request:\n" + broken


async def test_status_line_that_is_not_http_is_temp(nursery: trio.Nursery) -> None:
    broken = await small_run(nursery, {Fault.LENIENT_STATUS: 1}, keys=2 * len(LENIENT_STATUS_LINES), pause=0)
    assert not broken, "a status line that is not HTTP/1.x gave an answer:\n" + broken


async def test_status_below_100_is_not_an_interim_response(nursery: trio.Nursery) -> None:
    broken = await small_run(nursery, {Fault.BOGUS_INTERIM: 1}, keys=6, pause=0)
    assert not broken, "a 0xx response's body answered the lookup:\n" + broken
