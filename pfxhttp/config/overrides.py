"""Environment overrides: ``PFXHTTP_SERVER__LOGGING__LEVEL=debug`` sets ``server.logging.level`` over the file.

Naming. ``PFXHTTP_`` followed by the key path, its levels joined by ``__`` (two underscores: key names hold
single ones), in upper case (matched in any case). The entries of ``socket_maps`` and ``policy_services`` are
user-named, and environment variable names hold only letters, digits and ``_``; so an entry is named by its
name with every character other than an ASCII letter or digit written as ``_``, in any case:
``PFXHTTP_SOCKET_MAPS__VIRTUAL_ALIAS_MAPS__TARGET`` sets ``socket_maps.virtual_alias_maps.target`` and
``PFXHTTP_POLICY_SERVICES__SENDER_LOGIN__ERROR_ACTION`` that of ``policy_services.sender-login``. Only entries
the file has (and ``defaults``) can be named: the variable cannot tell a new entry's exact spelling. Names
that the rule maps to the same word (``demo-map`` and ``demo_map``) are ambiguous, an error when named. The
listeners of ``server.listen`` are named by their index: ``PFXHTTP_SERVER__LISTEN__0__PORT``.

Values. An override sets one scalar key (a list or mapping key such as ``query`` cannot be set). The value is
read as one plain YAML scalar, so ``true``, ``10s``, ``23450`` and ``0660`` mean what they mean in the file;
the empty string is null, which means "not set"; a value in quotes is a quoted YAML string (``'"true"'`` is
text). The value replaces the file's (or adds the key, and any mapping above it), then the loader checks it
like any other, and its errors name the variable instead of a file position.

Blocks of an entry (``cache``, ``jwt_auth`` ...) are replaced whole by an entry that sets them, so a variable
that would create such a block in an entry that inherits it from ``defaults`` is an error (the other keys of
the defaults' block would silently go), except for ``enabled``, which turns the inherited block off.

A ``PFXHTTP_`` variable that names no key (a stray ``PFXHTTP_BIN`` of some wrapper script, a variable for an
entry the file no longer has) is never silently ignored: ``pfxhttp check`` reports it as an error
(``strict``), and the daemon, which must not stop over a variable it does not read, starts and warns, naming
the nearest variable that does set a key. A variable that names a key but cannot set it (a mapping key, a
value in broken quotes, a block it would replace) stays an error everywhere. The node tree is changed copy on
write, so a mapping shared through a YAML anchor changes only where the override points.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from pfxhttp.config.entries import ALIASES, DEFAULTS_KEY, POLICY_ONLY_KEYS
from pfxhttp.config.keytree import Key, Shape, key_tree, leaf_paths
from pfxhttp.config.model import EntryKind
from pfxhttp.config.yamlnodes import EnvMark, Problems, describe, env_location, is_null, join, suggest
from pfxhttp.errors import ConfigError

PREFIX = "PFXHTTP_"
SEPARATOR = "__"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"


@dataclass(frozen=True, slots=True)
class Override:
    variable: str
    value: str


def overrides_from(environ: Mapping[str, str]) -> tuple[Override, ...]:
    """The ``PFXHTTP_`` variables of ``environ``, in name order (so errors come in a stable order)."""
    return tuple(Override(name, value) for name, value in sorted(environ.items()) if name.startswith(PREFIX))


def entry_word(name: str) -> str:
    """How an entry name is written in a variable: ``sender-login`` -> ``SENDER_LOGIN``."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def variable_for(*path: str) -> str:
    """The variable that sets a key path: ``variable_for("server", "logging", "level")``."""
    return PREFIX + SEPARATOR.join(entry_word(part) for part in path)


def apply_overrides(
    root: MappingNode, overrides: Sequence[Override], problems: Problems, *, strict: bool = False
) -> tuple[MappingNode, tuple[str, ...]]:
    """``root`` with every override applied, and the names of the variables applied. Problems are recorded
    in ``problems``; an override with a problem changes nothing. A variable that names no key is a warning,
    or with ``strict`` (``pfxhttp check``) an error."""
    tree = key_tree()
    applied: list[str] = []
    paths: dict[str, str] = {}
    original = root
    for override in overrides:
        walk = _Walk(override)
        try:
            changed = walk.block(root, tree, override.variable[len(PREFIX) :])
            if walk.path in paths:
                walk.fail(f"sets the same key as {paths[walk.path]}")
        except ConfigError as exc:
            if not walk.names_no_key:
                problems.errors.append(exc)
                continue
            nearest = exc.suggestion or nearest_variable(override.variable, original)
            if strict:
                problems.errors.append(
                    ConfigError(exc.message, location=exc.location, path=exc.path, suggestion=nearest)
                )
            else:
                hint = f" (the nearest that does: {nearest})" if nearest else ""
                problems.warn_variable(override.variable, f"names no configuration key; ignored{hint}")
            continue
        root = changed
        paths[walk.path] = override.variable
        applied.append(override.variable)
    return root, tuple(applied)


def nearest_variable(variable: str, root: Node) -> str | None:
    """The variable closest to ``variable`` (difflib's ratio) of those that set a single key of the file
    ``root``: its entries and listeners, and every key the file may have."""
    listeners = lookup(root, "server")
    listen = lookup(listeners, "listen")
    count = len(listen.value) if isinstance(listen, SequenceNode) else 1
    names: list[str] = []
    for path, key in leaf_paths(key_tree()):
        if key.shape is Shape.IGNORED or not key.accepts_scalar():
            continue
        section, _, rest = path.partition(".*.")
        if rest:
            entries = [*mapping_keys(lookup(root, section)), DEFAULTS_KEY]
            names += [variable_for(section, entry, *rest.split(".")) for entry in entries]
        elif "[]." in path:
            head, _, tail = path.partition("[].")
            names += [variable_for(*head.split("."), str(n), *tail.split(".")) for n in range(count)]
        else:
            names.append(variable_for(*path.split(".")))
    close = difflib.get_close_matches(variable.upper(), sorted(set(names)), n=1, cutoff=0.0)
    return close[0] if close else None


@dataclass(slots=True)
class _Walk:
    """Resolves one variable name against the key tree and the file's nodes, level by level."""

    override: Override
    names_no_key: bool = False  # set when the variable names no key that could be set (not a wrong value)
    path: str = ""  # the key path resolved so far
    consumed: str = PREFIX  # the part of the variable name resolved so far
    # In an entry (not `defaults`): the blocks its section's `defaults` gives, which the entry inherits.
    inherited: frozenset[str] = frozenset()

    def fail(self, message: str, suggestion: str | None = None, *, names_no_key: bool = False) -> NoReturn:
        self.names_no_key = names_no_key
        raise ConfigError(
            message, location=env_location(self.override.variable), path=self.path, suggestion=suggestion
        )

    def step(self, name: str, word: str) -> None:
        self.path = join(self.path, name)
        self.consumed += word + SEPARATOR

    def block(self, node: Node | None, key: Key, rest: str) -> MappingNode:
        inherited, self.inherited = self.inherited, frozenset()  # for the entry's own keys only
        word, _, after = rest.partition(SEPARATOR)
        child = next((k for k in key.keys if k.name.upper() == word.upper()), None)
        if child is None:
            self.path = join(self.path, word.lower())
            if self.path.startswith(EntryKind.SOCKET_MAP.value) and word.lower() in POLICY_ONLY_KEYS:
                self.fail(f"'{word.lower()}' is only for policy_services", names_no_key=True)
            self.fail(
                "unknown key" if word else "names no key",
                self._respell(key, node, word, after),
                names_no_key=True,
            )
        self.step(child.name, word)
        if child.shape is Shape.IGNORED:
            self.fail("not supported by this version yet; the environment cannot set it")
        if child.off and _canonical(child.name) in inherited and lookup(node, child.name) is None:
            self._refuse_replacing(child.name, word, after)
        if child.shape is Shape.VALUE:
            if after:
                self.fail(f"a single value has no key {after.lower()!r}", names_no_key=True)
            if not child.accepts_scalar():
                self.fail("takes a mapping; the environment sets single values only")
            value: Node = self.scalar()
        else:
            if not after:
                what = "list of listeners" if child.shape is Shape.LISTENERS else "mapping"
                self.fail(f"is a {what}: the variable must go on to one of its keys", names_no_key=True)
            value = self.container(lookup(node, child.name), child, after)
        return with_key(node, child.name, value, self.override.variable)

    def container(self, node: Node | None, key: Key, rest: str) -> Node:
        kinds: tuple[type[Node], ...] = (
            (MappingNode, SequenceNode) if key.shape is Shape.LISTENERS else (MappingNode,)
        )
        if node is not None and not is_null(node) and not isinstance(node, kinds):
            self.fail(
                f"the file gives {describe(node)} here, not a mapping: the environment cannot set keys in it"
            )
        if key.shape is Shape.ENTRIES:
            return self.entries(node, key, rest)
        if key.shape is Shape.LISTENERS:
            return self.listeners(node, key, rest)
        return self.block(node, key, rest)

    def entries(self, node: Node | None, key: Key, rest: str) -> MappingNode:
        names = {*mapping_keys(node), DEFAULTS_KEY}
        upper = rest.upper()
        matches = [n for n in names if upper == entry_word(n) or upper.startswith(entry_word(n) + SEPARATOR)]
        if not matches:
            word = rest.partition(SEPARATOR)[0]
            close = suggest(word.upper(), sorted(entry_word(n) for n in names))
            hint = self.consumed + close + rest[len(word) :] if close else None
            self.path = join(self.path, word.lower())
            self.fail(
                f"no {key.name} entry is named so (entries: {', '.join(sorted(names))})",
                hint,
                names_no_key=True,
            )
        longest = max(len(entry_word(n)) for n in matches)
        best = sorted(n for n in matches if len(entry_word(n)) == longest)
        if len(best) > 1:
            self.fail(
                f"the variable matches the entries {', '.join(best)}: rename one of them to set it here"
            )
        name = best[0]
        self.step(name, rest[:longest])
        after = rest[longest + len(SEPARATOR) :]
        if not after:
            self.fail("is an entry: the variable must go on to one of its keys", names_no_key=True)
        entry = lookup(node, name)
        if entry is not None and not is_null(entry) and not isinstance(entry, MappingNode):
            self.fail(f"the file gives {describe(entry)} here, not a mapping")
        if name != DEFAULTS_KEY:
            defaults = _pairs(lookup(node, DEFAULTS_KEY))
            self.inherited = frozenset(
                _canonical(k) for k, value in defaults if isinstance(value, MappingNode)
            )
        value = self.block(entry, Key(name, Shape.BLOCK, "", keys=key.keys), after)
        return with_key(node, name, value, self.override.variable)

    def listeners(self, node: Node | None, key: Key, rest: str) -> Node:
        word, _, after = rest.partition(SEPARATOR)
        example = variable_for("server", "listen", "0", "port")
        if not word.isdigit():
            self.fail(f"a listener is named by its index, as in {example}", names_no_key=True)
        index = int(word)
        items: list[Node] = []
        if isinstance(node, SequenceNode):
            items = list(node.value)
        elif isinstance(node, MappingNode):  # the first releases' single listener
            items = [node]
        if index >= len(items):
            self.fail(f"there is no listener {index}: the file has {len(items)}", names_no_key=True)
        self.path = f"{self.path}[{index}]"
        self.consumed += word + SEPARATOR
        if not after:
            self.fail(
                f"is a listener: the variable must go on to one of its keys, as in {example}",
                names_no_key=True,
            )
        item = items[index]
        if not isinstance(item, MappingNode):
            self.fail(f"the file gives {describe(item)} here, not a mapping")
        changed = self.block(item, Key("", Shape.BLOCK, "", keys=key.keys), after)
        if not isinstance(node, SequenceNode):
            return changed
        items[index] = changed
        return SequenceNode(node.tag, items, node.start_mark, node.end_mark, flow_style=node.flow_style)

    def _refuse_replacing(self, name: str, word: str, after: str) -> None:
        """A block (cache, jwt_auth ...) set in an entry replaces the one of ``defaults`` whole. A variable
        that would create one in an entry that inherits it would silently drop every other key of the
        defaults' block (the credentials of a jwt_auth, the ttl of a cache): only ``enabled`` (turning the
        block off for this entry) means the same either way."""
        if after.upper() == "ENABLED":
            return
        section = self.path.split(".", 1)[0]
        in_defaults = f"{PREFIX}{entry_word(section)}{SEPARATOR}DEFAULTS{SEPARATOR}{word}{SEPARATOR}{after}"
        self.fail(
            f"the entry inherits {name} from defaults and has none of its own; a {name} created here would "
            f"replace the defaults' one whole: write {name} into the entry, or set the key in defaults",
            in_defaults,
        )

    def scalar(self) -> ScalarNode:
        text = self.override.value
        mark = EnvMark(self.override.variable)
        if text[:1] in ("'", '"'):
            try:
                node = yaml.compose(text, Loader=yaml.SafeLoader)
            except yaml.YAMLError:
                node = None
            if not isinstance(node, ScalarNode):
                # The value is not quoted back: it may be a secret (client_secret, a password).
                self.fail("the value starts with a quote but is not one quoted YAML string")
            return ScalarNode(_STR_TAG, node.value, mark, mark, style=node.style)
        # The tag a plain scalar gets in the file (YAML 1.1 with PyYAML's safe resolver): int, bool, null ...
        tag: str = Resolver().resolve(ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]
        return ScalarNode(tag, text, mark, mark)

    def _respell(self, key: Key, node: Node | None, word: str, after: str) -> str | None:
        """The corrected variable name: the closest key at this level, or upstream's single-underscore
        spelling (``PFXHTTP_SERVER_LOGGING_LEVEL``) written with ``__``."""
        rest = word + (SEPARATOR + after if after else "")
        respelled = _single_underscores(key, node, rest.upper())
        if respelled is not None:
            return self.consumed + respelled
        close = suggest(word.lower(), [k.name for k in key.keys if k.shape is not Shape.IGNORED])
        return self.consumed + close.upper() + rest[len(word) :] if close else None


def _canonical(name: str) -> str:
    """An entry key's model field: ``oidc_auth`` and ``backend_oidc_auth`` are one block."""
    return ALIASES[name][0] if name in ALIASES else name


def _single_underscores(key: Key, node: Node | None, text: str) -> str | None:
    """``text`` (upper case, levels joined by ``_`` as upstream's viper did) re-read with ``__`` between
    levels, if it names a scalar key; None otherwise."""
    text = text.replace(SEPARATOR, "_")
    if key.shape is Shape.ENTRIES:
        choices = [
            (entry_word(name), Key(name, Shape.BLOCK, "", keys=key.keys)) for name in mapping_keys(node)
        ]
    elif key.shape is Shape.LISTENERS:
        index = text.partition("_")[0]
        choices = [(index, Key(index, Shape.BLOCK, "", keys=key.keys))] if index.isdigit() else []
    else:
        choices = [(child.name.upper(), child) for child in key.keys]
    for word, child in choices:
        if text == word and child.accepts_scalar():
            return word
        if text.startswith(word + "_") and child.shape not in (Shape.VALUE, Shape.IGNORED):
            below = _single_underscores(child, _child_node(key, node, child.name), text[len(word) + 1 :])
            if below is not None:
                return word + SEPARATOR + below
    return None


def _child_node(key: Key, node: Node | None, name: str) -> Node | None:
    if key.shape is Shape.LISTENERS:
        items = node.value if isinstance(node, SequenceNode) else [node]
        return items[int(name)] if name.isdigit() and int(name) < len(items) else None
    return lookup(node, name)


def _pairs(node: Node | None, seen: frozenset[int] = frozenset()) -> Iterator[tuple[str, Node]]:
    """A mapping's keys and values as the loader sees them: explicit ones first, then ``<<`` merged ones
    (a recursive merge, which the loader reports, is not followed)."""
    if not isinstance(node, MappingNode) or id(node) in seen:
        return
    merged: list[Node] = []
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE_TAG:
            merged.extend(value_node.value if isinstance(value_node, SequenceNode) else [value_node])
        elif isinstance(key_node, ScalarNode):
            yield str(key_node.value), value_node
    for source in merged:
        yield from _pairs(source, seen | {id(node)})


def lookup(node: Node | None, key: str) -> Node | None:
    return next((value for name, value in _pairs(node) if name == key), None)


def mapping_keys(node: Node | None) -> list[str]:
    return list(dict.fromkeys(name for name, _ in _pairs(node)))


def with_key(node: Node | None, key: str, value: Node, variable: str) -> MappingNode:
    """A copy of mapping ``node`` (or a new mapping) whose explicit ``key`` is ``value``: an explicit key wins
    over a merged one, as in the loader."""
    if not isinstance(node, MappingNode):
        mark = EnvMark(variable)
        return MappingNode(_MAP_TAG, [(ScalarNode(_STR_TAG, key, mark, mark), value)], mark, mark)
    pairs = list(node.value)
    for index, (key_node, _) in enumerate(pairs):
        if key_node.tag != _MERGE_TAG and isinstance(key_node, ScalarNode) and key_node.value == key:
            pairs[index] = (key_node, value)
            break
    else:
        mark = EnvMark(variable)
        pairs.append((ScalarNode(_STR_TAG, key, mark, mark), value))
    return MappingNode(node.tag, pairs, node.start_mark, node.end_mark, flow_style=node.flow_style)
