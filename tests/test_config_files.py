"""Configuration files and values around the loader: the shipped example documents every key, unreadable and non-
UTF-8 files, a UTF-8 BOM, Go durations, and where find_config looks."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pfxhttp.config import (
    DEFAULT_SEARCH_PATH,
    ListenKind,
    blocks,
    entries,
    find_config,
    listen,
    load_config,
    loader,
    parse_duration,
    serversection,
)
from pfxhttp.errors import ConfigError, ConfigErrors, Location
from tests.test_config import MINIMAL, REPO


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "pfxhttp.yml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_config(path).server.listen[0].port == 0


def test_example_config_loads_cleanly_and_documents_every_key() -> None:
    path = REPO / "etc" / "pfxhttp.yml"
    config = load_config(path)
    assert config.warnings == ()
    assert config.source == str(path)
    assert config.socket_maps and config.policy_services and len(config.server.listen) == 3
    text = path.read_text()
    documented = (
        *loader.TOP_KEYS,
        *loader.TOP_DEFERRED,
        *serversection.SERVER_KEYS,
        *serversection.SERVER_DEFERRED,
        *serversection.LOGGING_KEYS,
        *serversection.HTTP_CLIENT_KEYS,
        *serversection.HTTP_CLIENT_DEFERRED,
        *serversection.TLS_KEYS,
        *listen.LISTEN_KEYS,
        *listen.LISTEN_DEFERRED,
        *entries.ENTRY_KEYS,
        *blocks.WORKER_POOL_KEYS,
        *blocks.RESPONSE_CACHE_KEYS,
        *blocks.CACHE_KEYS,
        *blocks.CIRCUIT_BREAKER_KEYS,
        *blocks.METRICS_KEYS,
        *(kind.value for kind in ListenKind),
    )
    missing = [key for key in documented if key not in text]
    assert missing == []


def test_load_config_reports_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yml")
    bad = tmp_path / "bad.yml"
    bad.write_bytes(b"server:\n  x: \xff\n")
    with pytest.raises(ConfigErrors) as info:
        load_config(bad)
    assert info.value.errors[0].location == Location(str(bad), 2, 6)


# Durations: Go's time.ParseDuration syntax, plus bare numbers meaning seconds.
@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1h2m3.5s", 3723.5),
        ("250us", 250e-6),
        ("250\u00b5s", 250e-6),
        ("10ns", 10e-9),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("0", 0.0),
        ("+3s", 3.0),
        (" 2m ", 120.0),
        (10, 10.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "10", "s", "1x", "1s2", "-5s", "1 s", ".s", True, None, [1], float("nan")]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ConfigError, match=r"duration|negative"):
        parse_duration(value)


@given(
    st.integers(0, 1000),
    st.integers(0, 59),
    st.integers(0, 59),
    st.integers(0, 999),
    st.integers(0, 999),
)
def test_parse_duration_sums_its_parts(h: int, m: int, s: int, ms: int, us: int) -> None:
    expected = h * 3600 + m * 60 + s + ms / 1000 + us / 1_000_000
    assert parse_duration(f"{h}h{m}m{s}s{ms}ms{us}us") == pytest.approx(expected)


# find_config: explicit path, else the search order.
def test_find_config_explicit(tmp_path: Path) -> None:
    path = tmp_path / "my.yml"
    path.write_text(MINIMAL)
    assert find_config(str(path)) == path
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(str(tmp_path / "missing.yml"))
    with pytest.raises(ConfigError, match="not a file"):
        find_config(str(tmp_path))


def test_default_search_path_matches_upstream() -> None:
    assert [str(p) for p in DEFAULT_SEARCH_PATH] == [
        "/usr/local/etc/pfxhttp/pfxhttp.yml",
        "/etc/pfxhttp/pfxhttp.yml",
        "$HOME/.pfxhttp/pfxhttp.yml",
        "pfxhttp.yml",
    ]


def test_find_config_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The order for any user but root (for root, see tests/test_config_trust.py). 1000: some user, not root.
    system = tmp_path / "usr-local" / "pfxhttp.yml"
    etc = tmp_path / "etc" / "pfxhttp.yml"
    home = tmp_path / "home"
    cwd = tmp_path / "cwd"
    for directory in (system.parent, etc.parent, home / ".pfxhttp", cwd):
        directory.mkdir(parents=True)
    search = (system, etc, Path("$HOME/.pfxhttp/pfxhttp.yml"), Path("pfxhttp.yml"))
    monkeypatch.setattr(loader, "DEFAULT_SEARCH_PATH", search)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)

    with pytest.raises(ConfigError) as info:
        find_config(None, euid=1000)
    assert str(home / ".pfxhttp" / "pfxhttp.yml") in str(info.value)  # lists the expanded paths
    assert str(etc) in str(info.value)

    (cwd / "pfxhttp.yml").write_text(MINIMAL)
    assert find_config(None, euid=1000) == Path("pfxhttp.yml")
    (home / ".pfxhttp" / "pfxhttp.yml").write_text(MINIMAL)
    assert find_config(None, euid=1000) == home / ".pfxhttp" / "pfxhttp.yml"
    etc.write_text(MINIMAL)
    assert find_config(None, euid=1000) == etc
    system.write_text(MINIMAL)
    assert find_config(None, euid=1000) == system

    monkeypatch.delenv("HOME")  # no HOME: that entry is skipped, not searched as a literal "$HOME"
    assert all("$HOME" not in str(p) for p in loader.search_path(euid=1000))
