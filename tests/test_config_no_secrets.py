"""Config errors never quote what carries credentials: a target's userinfo, query and fragment, or a rendered
payload (API keys live there, and ``pfxhttp check`` output lands in terminals, CI logs and tickets)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pfxhttp.config.values import shown_target
from tests.conftest import pfxhttp_check

SECRET = "sk-live-0123456789abcdef"

CONFIG = f"""\
server:
  listen:
    - {{kind: socket_map, type: tcp, address: 127.0.0.1, port: 0}}
socket_maps:
  badport:
    target: "https://apiuser:{SECRET}@api.example.com:99999/v1/x?apikey={SECRET}"
  blanks:
    target: "https://api.example.com/v1/a b?token={SECRET}#{SECRET}"
  origin:
    target: "https://{{{{ key }}}}.example.com/v1?apikey={SECRET}"
  unclosed:
    target: "https://api.example.com/v1/{{{{ key ?apikey={SECRET}"
  statement:
    target: "https://api.example.com/v1/{{% if key %}}?apikey={SECRET}"
  payload:
    target: https://api.example.com/v1/x
    payload: '{{"apikey": "{SECRET}", "key": {{{{ key }}}}}}'
"""


async def test_check_reports_every_error_without_quoting_secrets(tmp_path: Path) -> None:
    path = tmp_path / "pfxhttp.yml"
    path.write_text(CONFIG)
    result = await pfxhttp_check(path)
    assert result.returncode == 78
    output = result.stderr.decode()
    assert SECRET not in output
    lines = output.splitlines()
    assert lines[:5] == [
        f"pfxhttp: {path}:6:13: at key socket_maps.badport.target: target "
        "'https://...@api.example.com:99999/v1/x?...' has an invalid port",
        f"pfxhttp: {path}:8:13: at key socket_maps.blanks.target: target "
        "'https://api.example.com/v1/a b?...' must be an http:// or https:// URL without blanks",
        f"pfxhttp: {path}:10:13: at key socket_maps.origin.target: target 'https://{{{{ key }}}}.example.com/v1?...': "
        "scheme, host and port must be written literally; a template expression may only follow them, in the "
        "path or query (after the '/' or '?' that ends the host)",
        f"pfxhttp: {path}:12:13: at key socket_maps.unclosed.target: target "
        "'https://api.example.com/v1/{{ key ?...' has an unclosed template expression ('{{' without '}}')",
        f"pfxhttp: {path}:14:13: at key socket_maps.statement.target: target "
        "'https://api.example.com/v1/{% if key %}?...': only {{ expression }} templates are allowed in a URL",
    ]
    # The JSON parser's own words (position included) vary with its version; the rendered payload is not quoted.
    assert lines[5].startswith(
        f"pfxhttp: {path}:17:14: at key socket_maps.payload.payload: payload does not render to valid JSON ("
    )
    assert lines[5].endswith(
        ") for sample values with quotes and backslashes, such as the key "
        """'sample "quoted" \\\\ <key>@example.com': write {{ key | tojson }} for a JSON string"""
    )
    assert len(lines) == 6


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com/v1/{{ key }}", "https://api.example.com/v1/{{ key }}"),
        ("https://u:p@h:8443/p?k=v#f", "https://...@h:8443/p?..."),
        ("http://a@b@h/p", "http://...@h/p"),  # userinfo runs to the authority's last '@'
        ("http://h/p#frag", "http://h/p#..."),
        ("http://h/p?", "http://h/p?..."),
        ("user:pass@h/p?k=v", None),  # no scheme: nothing is quoted at all
    ],
)
def test_shown_target_keeps_origin_and_path_only(url: str, shown: str | None) -> None:
    assert shown_target(url) == shown


def test_target_without_a_scheme_is_not_quoted(tmp_path: Path) -> None:
    from pfxhttp.config import parse_config
    from pfxhttp.errors import ConfigErrors

    text = CONFIG.split("socket_maps:")[0] + textwrap.dedent(
        f"""\
        socket_maps:
          m:
            target: "{SECRET}:x@api.example.com/v1?apikey={SECRET}"
        """
    )
    with pytest.raises(ConfigErrors) as info:
        parse_config(text, "pfxhttp.yml")
    rendered = [error.render() for error in info.value.errors]
    assert rendered == ["pfxhttp.yml:6:13: at key socket_maps.m.target: target must use http:// or https://"]
