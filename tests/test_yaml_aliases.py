"""YAML aliases and ``<<`` merges are bounded: a few hundred bytes of nested anchors cannot make the loader walk
millions of nodes (a "billion laughs"), and the refusal names the alias that crossed the bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from pfxhttp.config import parse_config
from pfxhttp.config.yamlnodes import MAX_ALIAS_NODES
from pfxhttp.errors import ConfigErrors
from tests.conftest import pfxhttp_check

LISTEN = "server:\n  listen:\n    - {type: tcp, address: 127.0.0.1, port: 0}\n"


def merge_bomb(levels: int, fan: int) -> str:
    """Each anchor merges the previous one ``fan`` times: the last stands for about fan**levels keys."""
    lines = ["a0: &a0 {k0: 1, k1: 2}"]
    for level in range(1, levels + 1):
        previous = ", ".join([f"*a{level - 1}"] * fan)
        lines.append(f"a{level}: &a{level} {{<<: [{previous}]}}")
    lines.append(f"server:\n  <<: *a{levels}\n  listen: []")
    return "\n".join(lines) + "\n"


async def test_check_refuses_a_merge_bomb_with_its_position(tmp_path: Path) -> None:
    # The file of the review: 494 bytes standing for 8**8 merged keys (it took a minute and 741 MB).
    path = tmp_path / "pfxhttp.yml"
    path.write_text(merge_bomb(8, 8))
    assert path.stat().st_size < 500
    result = await pfxhttp_check(path, timeout=60)  # liveness only: the bound makes it a fraction of a second
    assert result.returncode == 78
    assert result.stderr.decode().splitlines() == [
        f"pfxhttp: {path}:7:15: YAML aliases expand to more than {MAX_ALIAS_NODES} nodes here "
        "(nested anchors and '<<' merges multiply)"
    ]


def test_plain_aliases_in_a_list_are_bounded_too() -> None:
    lines = ["l0: &l0 [a, b, c, d, e, f, g, h, i, j]"]
    for level in range(1, 8):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 10)}]")
    with pytest.raises(ConfigErrors) as info:
        parse_config("\n".join(lines) + "\n", "pfxhttp.yml")
    [error] = info.value.errors
    assert "YAML aliases expand to more than" in error.render()
    assert error.location is not None and error.location.line == 6


def test_a_thousand_entries_merging_one_block_still_load() -> None:
    block = "x-map: &map\n  target: https://api.example.com/map\n  value_field: a.b\n  query: {a: b, c: d}\n"
    entries = "".join(f"  m{n}:\n    <<: *map\n" for n in range(1000))
    with pytest.raises(ConfigErrors) as info:  # only the helper key itself is unknown
        parse_config(LISTEN + block + "socket_maps:\n" + entries, "pfxhttp.yml")
    assert [e.render() for e in info.value.errors] == ["pfxhttp.yml:4:1: at key x-map: unknown key"]
    entries_only = "socket_maps:\n  defaults: &map\n    value_field: a.b\n" + "".join(
        f"  m{n}:\n    <<: *map\n    target: https://api.example.com/m{n}\n" for n in range(1000)
    )
    config = parse_config(LISTEN + entries_only, "pfxhttp.yml")
    assert len(config.socket_maps) == 1000
    assert config.socket_maps["m999"].value_field == "a.b"


def test_recursive_merge_is_still_reported() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_config(LISTEN + "socket_maps:\n  m: &m\n    target: https://h/x\n    <<: *m\n", "pfxhttp.yml")
    assert any("recursive '<<' merge" in e.render() for e in info.value.errors)
