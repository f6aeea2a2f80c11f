"""The commands ``pfxhttp demo`` prints work as printed, through the real clients: the ``postmap -q`` lines on a
machine where Postfix is installed without a main.cf (as ``./dev test`` leaves it), and ``pfxhttp query``,
whose output is one line."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import trio

from tests.conftest import pfxhttp_process
from tests.postfix_harness import postfix_available
from tests.test_cli import unused_port_pair

EXPECTED = {  # the printed key -> (exit status, standard output) of postmap -q
    "office@example.com": (0, b"alice@example.com,bob@example.com\n"),
    "nobody@example.com": (1, b""),
    "alice@example.com": (0, b"example.com/alice/\n"),
    "example.org": (0, b"example.org\n"),
}


@pytest.mark.skipif(
    not postfix_available(), reason="Debian's postfix is not installed (./dev test installs it)"
)
async def test_printed_postmap_and_query_commands_work_as_printed(tmp_path: Path) -> None:
    port = unused_port_pair()
    out = tmp_path / "demo.out"
    with trio.fail_after(60):
        async with pfxhttp_process("demo", "--port", str(port), output=out, merge_stdout=True) as process:
            while b"Press Ctrl-C" not in out.read_bytes():  # bounded by fail_after
                assert process.poll() is None, out.read_text()
                await trio.sleep(0.05)
            lines = out.read_text().splitlines()
            postmaps = [shlex.split(line.split("#")[0]) for line in lines if " -q " in line]
            assert [argv[-2] for argv in postmaps] == list(EXPECTED)
            for argv in postmaps:
                assert Path(argv[0]).name == "postmap"
                ran = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
                assert (ran.returncode, ran.stdout) == EXPECTED[argv[-2]], ran.stderr
                assert ran.stderr == b""  # no warning either (main.cf missing, compatibility ...)
            printed = next(line for line in lines if "query aliases office" in line)
            query = await trio.run_process(
                shlex.split(printed.split("#")[0]), capture_stdout=True, check=False
            )
            assert query.stdout == b"OK alice@example.com,bob@example.com\n"
            process.terminate()
            assert await process.wait() == 0
    config_line = next(line for line in lines if "Config in use:" in line)
    assert not Path(config_line.rsplit(" ", 1)[1]).parent.exists()  # its main.cf went with the demo
