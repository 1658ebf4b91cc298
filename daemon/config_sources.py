"""Where configuration comes from, read defensively: YAML files and `BASISD_*` environment variables.

Everything here turns bad input into `ConfigProblem`s that name the file (with its line, or its byte offset)
or the environment variable, and never quotes a value that may be a secret or that the input could make
arbitrarily large (an alias bomb expands 1 KB of YAML to gigabytes). `daemon.config` validates what is read.
"""

from __future__ import annotations

import json
import os
import stat
import types
from collections.abc import Mapping
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from daemon.errors import ConfigError, ConfigProblem
from daemon.settings import Settings, StrategyParams, StrategySettings

ENV_PREFIX = "BASISD_"
ENV_DELIMITER = "__"
# BASISD_ variables that are not settings, so never refused: the market-data cache directory (daemon.data.cache),
# tracebacks on errors (daemon.cli, BASISD_DEBUG=1), and the installer's own options (deploy/install.sh), which
# an operator may have exported in the same shell. A new one must be added here, or every command refuses it.
ENV_NOT_SETTINGS = frozenset({"BASISD_CACHE_DIR", "BASISD_DEBUG", "BASISD_ROOT", "BASISD_PYTHON"})

MAX_CONFIG_BYTES = 1 << 20  # the largest shipped file is 2 KB: a megabyte is a wrong file, not a config
MAX_YAML_DEPTH = 32  # the settings nest 4 deep; deeper is a mistake, or an attempt on the parser's recursion
MAX_SHOWN_CHARS = 80  # of an input value quoted in a message


def shorten(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    """`text`, cut to `limit` characters with an ellipsis: no message grows with its input."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- files -------------------------------------------------------------------------------------------------


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _file_problem(path: os.PathLike[str] | str, message: str) -> ConfigError:
    return ConfigError([ConfigProblem(str(path), "(file)", message)])


def read_config_bytes(path: os.PathLike[str] | str) -> bytes:
    """The bytes of a config file. Opened without blocking (a FIFO would hang the reader, and SIGHUP with it),
    and refused unless it is a regular file of at most `MAX_CONFIG_BYTES` (a device never ends)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _file_problem(path, "file not found") from None
    except OSError as exc:
        raise _file_problem(path, f"cannot be read: {exc.strerror or exc}") from None
    except ValueError:  # os.open refuses a path with a NUL in it
        raise _file_problem(shorten(repr(str(path))), "is not a possible path (it contains a NUL)") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _file_problem(path, f"is {_file_kind(info.st_mode)}, not a config file")
        raw = b""
        while len(raw) <= MAX_CONFIG_BYTES:
            chunk = os.read(fd, MAX_CONFIG_BYTES + 1 - len(raw))
            if not chunk:
                break
            raw += chunk
    except OSError as exc:
        raise _file_problem(path, f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise _file_problem(path, f"is larger than {MAX_CONFIG_BYTES} bytes: not a config file")
    return raw


def decode_config(path: os.PathLike[str] | str, raw: bytes) -> str:
    """UTF-8 text, or a problem naming the first byte that is not (a Latin-1 `é` in a comment, a binary file)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        where = f"line {line}, column {column}"
        raise _file_problem(path, f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} ({where}); "
                                  "save the file as UTF-8") from None


class _ConfigLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses aliases and deep nesting.

    An alias (`*name`) makes the loaded value a graph whose expansion grows exponentially with the file
    (a 1.3 KB "billion laughs" is gigabytes to validate or print); no config needs one, so none is allowed."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not allowed in a config file: write the value out",
                event.start_mark)
        if self._depth >= MAX_YAML_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested more than {MAX_YAML_DEPTH} levels deep",
                self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def parse_yaml(path: os.PathLike[str] | str, text: str) -> Any:
    """The document in `text`; every way parsing can fail is a problem naming the file (and line, where known)."""
    loader = None
    try:
        loader = _ConfigLoader(text)  # its reader already refuses control characters (a binary file that is UTF-8)
        return loader.get_single_data()
    except yaml.reader.ReaderError as exc:  # a control character: a binary file, or one pasted by mistake
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise ConfigError([ConfigProblem(str(path), f"line {line}, column {column}",
                                         f"not valid YAML: control character #x{character:04x} is not allowed")]) \
            from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(syntax)"
        problem = " ".join((getattr(exc, "problem", None) or str(exc)).split())  # one line per problem
        raise ConfigError([ConfigProblem(str(path), where, f"not valid YAML: {shorten(problem, 200)}")]) from None
    except (ValueError, RecursionError) as exc:
        # A scalar the constructor cannot build: an integer of 5,000 digits, a date such as 2024-13-45.
        raise _file_problem(path, f"not valid YAML: {shorten(' '.join(str(exc).split()), 200)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_yaml(path: os.PathLike[str] | str) -> dict[str, Any]:
    """Read a YAML mapping, turning every way it can fail into a `ConfigError` that names the file."""
    data = parse_yaml(path, decode_config(path, read_config_bytes(path)))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(str(path), "(top level)",
                                         f"expected a mapping of keys, found {type(data).__name__}")])
    bad = [k for k in data if not isinstance(k, str)]
    if bad:
        raise ConfigError([ConfigProblem(str(path), "(top level)",
                                         f"keys must be names, found {shorten(repr(k), 40)}") for k in bad[:5]])
    return data


# --- the settings' shape, walked by key --------------------------------------------------------------------


def _unwrap(annotation: Any) -> Any:
    """The type under `Annotated[...]` and `X | None`."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def step(annotation: Any, part: str, indexes: bool = True) -> tuple[Any, FieldInfo | None] | None:
    """The type (and field, for a model's) that key `part` reaches inside `annotation`; None if it reaches none.
    `strategy.params` is a free mapping in the root that becomes `StrategyParams`: it is walked as one. Without
    `indexes` a list is not entered (the environment sets one as a whole)."""
    t = _unwrap(annotation)
    if _is_model(t):
        field = t.model_fields.get(part)
        if field is None:
            return None
        if t is StrategySettings and part == "params":
            return StrategyParams, field
        return field.annotation, field
    origin = get_origin(t)
    if origin in (dict, Mapping):
        return get_args(t)[1], None
    if indexes and origin is tuple and part.isdigit():
        return get_args(t)[0], None
    return None


def field_at(model: type[BaseModel], loc: list[str]) -> FieldInfo | None:
    """The field that `loc` (a dotted key, split) names in `model`, if it names one."""
    annotation: Any = model
    field = None
    for part in loc:
        found = step(annotation, part)
        if found is None:
            return None
        annotation, field = found
    return field


def known_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys a model allows at `loc` (empty where any key is allowed, or nothing can follow)."""
    annotation: Any = model
    for part in loc:
        found = step(annotation, part)
        if found is None:
            return []
        annotation = found[0]
    t = _unwrap(annotation)
    return list(t.model_fields) if _is_model(t) else []


def _is_complex(annotation: Any) -> bool:
    """Whether pydantic-settings reads the variable as JSON (a section, a mapping or a list), as it decides."""
    t = _unwrap(annotation)
    return _is_model(t) or get_origin(t) in (dict, Mapping, tuple, list, set, frozenset)


# --- the environment ----------------------------------------------------------------------------------------


def env_source_name(name: str) -> str:
    return f"environment variable {name}"


def _env_variable_problem(name: str, value: str) -> ConfigProblem | None:
    """Why `name` is not a setting, or its value cannot be read as one (the value itself is never quoted: the
    variable may hold a secret)."""
    parts = name.upper()[len(ENV_PREFIX):].lower().split(ENV_DELIMITER)
    annotation: Any = Settings
    for depth, part in enumerate(parts):
        here = parts[:depth]
        found = step(annotation, part, indexes=False) if part else None
        if found is None:
            options = known_keys(Settings, here)
            if not part:
                why = f"'{ENV_DELIMITER}' must separate two names" if here else f"no name follows {ENV_PREFIX}"
            elif here and not options:
                why = f"{'.'.join(here)} is set as a whole (a JSON value), not key by key"
            else:
                why = f"no {'key' if here else 'section'} {part!r}" + (f" (one of: {', '.join(options)})"
                                                                        if options else "")
            return ConfigProblem(env_source_name(name), ".".join(here) or "(name)",
                                 f"not a setting: {why}; check the spelling (a misspelt override is never applied)")
        annotation = found[0]
    if _is_complex(annotation):
        try:
            json.loads(value)
        except ValueError as exc:
            problem = exc.msg if isinstance(exc, json.JSONDecodeError) else "not JSON"
            where = f" at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else ""
            return ConfigProblem(env_source_name(name), ".".join(parts),
                                 f"not valid JSON ({problem}{where}): a section, mapping or list is set as JSON, "
                                 "e.g. BASISD_METRICS='{\"port\": 9500}', or key by key (BASISD_METRICS__PORT=9500)")
    return None


def environment_problems(environ: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    """Every `BASISD_*` variable that maps to no setting, or whose JSON cannot be read. Refused rather than
    ignored: a misspelt override of a risk limit silently not applied is how real money is lost."""
    environ = os.environ if environ is None else environ
    problems = []
    for name in sorted(environ):
        upper = name.upper()
        if upper.startswith(ENV_PREFIX) and upper not in ENV_NOT_SETTINGS:
            problem = _env_variable_problem(name, environ[name])
            if problem is not None:
                problems.append(problem)
    return problems


def env_name_for(loc: list[str], environ: Mapping[str, str] | None = None) -> str | None:
    """The environment variable that set `loc`, or a section holding it, if one did (the environment wins)."""
    environ = os.environ if environ is None else environ
    upper_names = {k.upper(): k for k in environ}
    for depth in range(len(loc), 0, -1):
        name = ENV_PREFIX + ENV_DELIMITER.join(loc[:depth]).upper()
        if name in upper_names:
            return upper_names[name]
    return None


def env_names_inside(loc: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """The environment variables that set something inside section `loc` (a check of the whole section may be
    about any of them)."""
    environ = os.environ if environ is None else environ
    if not loc:
        return []
    inside = ENV_PREFIX + ENV_DELIMITER.join(loc).upper() + ENV_DELIMITER
    return sorted(k for k in environ if k.upper().startswith(inside))
