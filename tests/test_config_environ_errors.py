"""Environment overrides that go wrong: errors naming the variable, variables that name no key (a warning for the
daemon, an error for check), keys set twice, ambiguous entry names, and every single-value key having a variable."""

from __future__ import annotations

import pytest

from pfxhttp.backend.compile import check_entry
from pfxhttp.config import LogLevel, parse_config
from pfxhttp.config.keytree import Shape, key_tree, leaf_paths
from pfxhttp.config.overrides import variable_for
from pfxhttp.config.report import check_report
from pfxhttp.config.yamlnodes import EnvironmentLocation
from pfxhttp.errors import ConfigErrors
from tests.test_config_environ import FILE, errors, parse


def env(variable: str, path: str, message: str) -> str:
    return f"environment variable {variable}: at key {path}: {message}"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "PFXHTTP_SERVER__LOGING__LEVEL",
            "debug",
            env(
                "PFXHTTP_SERVER__LOGING__LEVEL",
                "server.loging",
                "unknown key (did you mean 'PFXHTTP_SERVER__LOGGING__LEVEL'?)",
            ),
        ),
        (
            "PFXHTTP_SERVER_LOGGING_LEVEL",  # upstream's spelling (viper, '.' -> '_')
            "debug",
            env(
                "PFXHTTP_SERVER_LOGGING_LEVEL",
                "server_logging_level",
                "unknown key (did you mean 'PFXHTTP_SERVER__LOGGING__LEVEL'?)",
            ),
        ),
        (
            "PFXHTTP_SOCKET_MAPS_DEMO_MAP_VALUE_FIELD",
            "x",
            env(
                "PFXHTTP_SOCKET_MAPS_DEMO_MAP_VALUE_FIELD",
                "socket_maps_demo_map_value_field",
                "unknown key (did you mean 'PFXHTTP_SOCKET_MAPS__DEMO_MAP__VALUE_FIELD'?)",
            ),
        ),
        (
            "PFXHTTP_",
            "x",
            "environment variable PFXHTTP_: names no key (did you mean 'PFXHTTP_SERVER__WORKERS'?)",
        ),
        (
            "PFXHTTP_SERVER__LOGGING",
            "x",
            env(
                "PFXHTTP_SERVER__LOGGING",
                "server.logging",
                "is a mapping: the variable must go on to one of its keys "
                "(did you mean 'PFXHTTP_SERVER__LOGGING__JSON'?)",
            ),
        ),
        (
            "PFXHTTP_SERVER__LOGGING__LEVEL__X",
            "x",
            env(
                "PFXHTTP_SERVER__LOGGING__LEVEL__X",
                "server.logging.level",
                "a single value has no key 'x' (did you mean 'PFXHTTP_SERVER__LOGGING__LEVEL'?)",
            ),
        ),
        (
            "PFXHTTP_SERVER__CHROOT",
            "/x",
            env(
                "PFXHTTP_SERVER__CHROOT",
                "server.chroot",
                "not supported by this version yet; the environment cannot set it",
            ),
        ),
        (
            "PFXHTTP_SOCKET_MAPS__DEMO_MAP__QUERY",
            "x",
            env(
                "PFXHTTP_SOCKET_MAPS__DEMO_MAP__QUERY",
                "socket_maps.demo_map.query",
                "takes a mapping; the environment sets single values only",
            ),
        ),
        (
            "PFXHTTP_SOCKET_MAPS__DEMO_MAPS__TARGET",
            "http://h/",
            env(
                "PFXHTTP_SOCKET_MAPS__DEMO_MAPS__TARGET",
                "socket_maps.demo_maps",
                "no socket_maps entry is named so (entries: defaults, demo_map) "
                "(did you mean 'PFXHTTP_SOCKET_MAPS__DEMO_MAP__TARGET'?)",
            ),
        ),
        (
            "PFXHTTP_SOCKET_MAPS__DEMO_MAP",
            "x",
            env(
                "PFXHTTP_SOCKET_MAPS__DEMO_MAP",
                "socket_maps.demo_map",
                "is an entry: the variable must go on to one of its keys "
                "(did you mean 'PFXHTTP_SOCKET_MAPS__DEMO_MAP__TARGET'?)",
            ),
        ),
        (
            "PFXHTTP_SOCKET_MAPS__DEMO_MAP__ERROR_ACTION",
            "DEFER",
            env(
                "PFXHTTP_SOCKET_MAPS__DEMO_MAP__ERROR_ACTION",
                "socket_maps.demo_map.error_action",
                "'error_action' is only for policy_services "
                "(did you mean 'PFXHTTP_SOCKET_MAPS__DEMO_MAP__ERROR_FIELD'?)",
            ),
        ),
        (
            "PFXHTTP_SERVER__LISTEN__PORT",
            "1",
            env(
                "PFXHTTP_SERVER__LISTEN__PORT",
                "server.listen",
                "a listener is named by its index, as in PFXHTTP_SERVER__LISTEN__0__PORT "
                "(did you mean 'PFXHTTP_SERVER__LISTEN__1__PORT'?)",
            ),
        ),
        (
            "PFXHTTP_SERVER__LISTEN__2__PORT",
            "1",
            env(
                "PFXHTTP_SERVER__LISTEN__2__PORT",
                "server.listen",
                "there is no listener 2: the file has 2 (did you mean 'PFXHTTP_SERVER__LISTEN__1__PORT'?)",
            ),
        ),
        (
            "PFXHTTP_SERVER__TLS__ENABLED",
            "'unterminated",
            env(
                "PFXHTTP_SERVER__TLS__ENABLED",
                "server.tls.enabled",
                "the value starts with a quote but is not one quoted YAML string",  # a secret, maybe
            ),
        ),
        # The value is checked like the file's; the error names the variable.
        (
            "PFXHTTP_SERVER__HTTP_CLIENT__TIMEOUT",
            "forever",
            env(
                "PFXHTTP_SERVER__HTTP_CLIENT__TIMEOUT",
                "server.http_client.timeout",
                "invalid duration 'forever': expected a Go duration such as 500ms, 10s, 1m30s or 1h2m3.5s "
                "(units ns, us, ms, s, m, h), or a plain number meaning seconds",
            ),
        ),
        (
            "PFXHTTP_SERVER__LOGGING__LEVEL",
            "verbose",
            env(
                "PFXHTTP_SERVER__LOGGING__LEVEL",
                "server.logging.level",
                "unknown log level 'verbose'",
            ),
        ),
        (
            "PFXHTTP_SOCKET_MAPS__DEMO_MAP__CACHE__MAX_ENTRIES",
            "5",
            env(
                "PFXHTTP_SOCKET_MAPS__DEMO_MAP__CACHE__MAX_ENTRIES",
                "socket_maps.demo_map.cache",
                "missing required key 'ttl'",
            ),
        ),
    ],
)
def test_override_errors_name_the_variable(variable: str, value: str, expected: str) -> None:
    assert errors({variable: value}) == [expected]


# The daemon (not strict) starts over a variable that names no key, with a warning naming the nearest one.
NAMES_NO_KEY = [
    ("PFXHTTP_BIN", "/usr/local/bin/pfxhttp", "PFXHTTP_SERVER__LOGGING__JSON"),  # a wrapper script's
    ("PFXHTTP_SERVER__LOGING__LEVEL", "debug", "PFXHTTP_SERVER__LOGGING__LEVEL"),
    ("PFXHTTP_SOCKET_MAPS__OLD_MAP__TARGET", "http://h/", "PFXHTTP_SOCKET_MAPS__DEMO_MAP__TARGET"),
    ("PFXHTTP_SERVER__LISTEN__7__PORT", "1", "PFXHTTP_SERVER__LISTEN__1__PORT"),
    ("PFXHTTP_SERVER__LOGGING", "debug", "PFXHTTP_SERVER__LOGGING__JSON"),
]


@pytest.mark.parametrize(("variable", "value", "nearest"), NAMES_NO_KEY)
def test_the_daemon_warns_about_a_variable_that_names_no_key(variable: str, value: str, nearest: str) -> None:
    config = parse({variable: value, "PFXHTTP_SERVER__LOGGING__LEVEL": "debug"}, strict=False)
    assert config.warnings == (
        f"environment variable {variable}: names no configuration key; ignored (the nearest that does: {nearest})",
    )
    assert config.overrides == ("PFXHTTP_SERVER__LOGGING__LEVEL",)  # the others still apply
    assert config.server.logging.level is LogLevel.DEBUG
    assert errors({variable: value})[0].endswith(f"(did you mean '{nearest}'?)")  # pfxhttp check: an error


def test_the_daemon_still_refuses_a_variable_that_names_a_key_it_cannot_set() -> None:
    for variable, value in (
        ("PFXHTTP_SOCKET_MAPS__DEMO_MAP__QUERY", "x"),  # a mapping key
        ("PFXHTTP_SERVER__HTTP_CLIENT__TIMEOUT", "forever"),  # a wrong value
        ("PFXHTTP_SERVER__TLS__ENABLED", "'unterminated"),
    ):
        assert len(errors({variable: value}, strict=False)) == 1, variable


def test_a_key_set_twice_and_ambiguous_entry_names() -> None:
    text = FILE.replace("  demo_map:", "  demo-map: {target: http://h/}\n  demo_map:")
    assert errors(
        {
            "PFXHTTP_SERVER__LOGGING__LEVEL": "debug",
            "PFXHTTP_Server__Logging__Level": "error",
            "PFXHTTP_SOCKET_MAPS__DEMO_MAP__TARGET": "http://x/",
        },
        text,
    ) == [
        env(
            "PFXHTTP_SOCKET_MAPS__DEMO_MAP__TARGET",
            "socket_maps",
            "the variable matches the entries demo-map, demo_map: rename one of them to set it here",
        ),
        env(
            "PFXHTTP_Server__Logging__Level",
            "server.logging.level",
            "sets the same key as PFXHTTP_SERVER__LOGGING__LEVEL",
        ),
    ]


def test_file_errors_come_first_and_warnings_name_the_variable() -> None:
    text = FILE.replace("port: 23450}", "port: 23450, colour: red}")
    assert errors({"PFXHTTP_SERVER__LOGGING__LEVEL": "loud"}, text) == [
        "pfxhttp.yml:3:52: at key server.listen[0].colour: unknown key",
        env("PFXHTTP_SERVER__LOGGING__LEVEL", "server.logging.level", "unknown log level 'loud'"),
    ]
    config = parse({"PFXHTTP_SERVER__LISTEN__0__MODE": "0600", "PFXHTTP_SERVER__HTTP_CLIENT__TIMEOUT": "5s"})
    assert config.warnings == (
        "server.listen[0].mode (environment variable PFXHTTP_SERVER__LISTEN__0__MODE): only used by unix "
        "listeners; ignored",
    )


def test_an_entry_value_from_the_environment_carries_its_variable_to_later_checks() -> None:
    variable = "PFXHTTP_SOCKET_MAPS__DEMO_MAP__VALUE_FIELD"
    with pytest.raises(ConfigErrors) as info:
        parse_config(FILE, "pfxhttp.yml", entry_check=check_entry, environ={variable: "$[["})
    (error,) = info.value.errors
    assert error.location == EnvironmentLocation(variable, 1, 1)
    assert error.render().startswith(
        f"environment variable {variable}: at key socket_maps.demo_map.value_field: "
    )
    record = check_report(None, info.value)["errors"][0]
    assert (record["file"], record["line"], record["variable"]) == (None, None, variable)
    assert check_report(None, info.value)["file"] is None


def test_every_single_value_key_has_a_variable() -> None:
    # Walk the key tree: the variable of every scalar key reaches that key (its value may still be wrong).
    tree = key_tree()
    entry = {"socket_maps": "demo_map", "policy_services": "sender-login"}
    checked = 0
    for path, key in leaf_paths(tree):
        if key.shape is Shape.IGNORED or not key.accepts_scalar():
            continue
        parts = path.replace("[]", ".0").split(".")
        if parts[0] in entry:
            parts[1] = entry[parts[0]]
        dotted = ".".join(parts).replace("listen.0", "listen[0]")
        variable = variable_for(*parts)
        try:
            config = parse({variable: "1"})
        except ConfigErrors as exc:
            assert all(e.path.startswith(dotted.rsplit(".", 1)[0]) for e in exc.errors), (variable, exc)
            assert all(e.message != "unknown key" for e in exc.errors), variable
        else:
            assert config.overrides == (variable,)
        checked += 1
    assert checked > 70
