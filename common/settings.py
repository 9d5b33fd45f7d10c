"""Layered settings: one nested tree per process, from flags > env > config file > defaults.

A settings tree is a :class:`LayeredSettings` (pydantic-settings) whose fields are
:class:`Section` models. Every key, wherever it comes from, is checked against the tree, so a
misspelt env var, file key or override is an error that names it rather than a silently ignored
knob::

    class GatewaySettings(LayeredSettings):
        model_config = SettingsConfigDict(env_prefix="AIML021_GATEWAY_", **TREE_CONFIG)
        server: ServerSettings = ServerSettings()

    GatewaySettings.load(Path("gateway.toml"), {"server": {"port": 0}})

Env names join the path with ``__`` after the prefix (``AIML021_GATEWAY_SERVER__PORT``). Config
files are TOML (``.toml``) or JSON (``.json``) with the same nesting (``[server]`` / ``port = 0``).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from common.errors import InvalidArgument

TREE_CONFIG = SettingsConfigDict(
    env_nested_delimiter="__",
    env_parse_none_str="null",
    extra="forbid",
    use_attribute_docstrings=True,
)
"""Config every settings tree shares (add ``env_prefix``)."""

_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("aiml021_settings_file", default=None)


class Section(BaseModel):
    """One nested section of a settings tree: unknown keys are errors; field docstrings are the
    descriptions (and the docs)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


def _named_sections(annotation: Any) -> type[BaseModel] | None:
    """The model class of a table of named sections (``dict[str, X]``), else None."""
    if get_origin(annotation) is dict:
        value = get_args(annotation)[1]
        if isinstance(value, type) and issubclass(value, BaseModel):
            return value
    return None


def _section_type(annotation: Any) -> type[BaseModel] | None:
    """The model class a field holds (``X`` or ``X | None``), else None."""
    if get_origin(annotation) is dict:
        return None
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def unknown_key(model: type[BaseModel], path: list[str]) -> str | None:
    """The first part of ``path`` (joined with dots) that ``model`` has no field for (in a
    table of named sections, ``dict[str, X]``, the part after the table's name is the entry's
    name: any name)."""
    named = False
    for i, part in enumerate(path):
        if named:
            named = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            return ".".join(path[: i + 1])
        table = _named_sections(field.annotation)
        if table is not None:
            model, named = table, True
            continue
        sub = _section_type(field.annotation)
        if sub is None:
            return ".".join(path[: i + 2]) if i + 1 < len(path) else None
        model = sub
    return None


def _file_paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[list[str]]:
    out: list[list[str]] = []
    for key, value in data.items():
        path = [*prefix, str(key)]
        if isinstance(value, Mapping) and value:
            out += _file_paths(value, tuple(path))
        else:
            out.append(path)
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The nested mapping in a TOML or JSON config file; errors name the file."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"config file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"config file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidArgument(f"config file {path}: top level must be a table/object")
    return data


class _CheckedEnv(EnvSettingsSource):
    """The environment, refusing variables under the prefix that name no setting (pydantic-
    settings ignores those) and retired names (they used to configure something)."""

    def __call__(self) -> dict[str, Any]:
        cls: type[LayeredSettings] = self.settings_cls  # type: ignore[assignment]
        prefix = self.env_prefix.upper()
        for name in sorted(os.environ):
            upper = name.upper()
            for old, new in cls.retired_env.items():
                if upper.startswith(old) and upper not in cls.foreign_env:
                    raise InvalidArgument(f"{name} is no longer read: use {new}")
            if upper.startswith(prefix):
                path = upper[len(prefix) :].lower().split(self.env_nested_delimiter or "__")
                bad = unknown_key(cls, path)
                if bad is not None:
                    raise InvalidArgument(f"{name}: unknown setting {bad!r}{cls.hint(bad)}")
        return super().__call__()


class _FileSource(PydanticBaseSettingsSource):
    """The config file :meth:`LayeredSettings.load` is reading (none otherwise)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole mapping

    def __call__(self) -> dict[str, Any]:
        return _FILE_DATA.get() or {}


class LayeredSettings(BaseSettings):
    """Base of a settings tree: init kwargs (flags) > env > config file > defaults."""

    retired_env: ClassVar[Mapping[str, str]] = {}
    """Env names or prefixes that no longer configure anything -> what to use instead."""
    foreign_env: ClassVar[frozenset[str]] = frozenset()
    """Env names under a retired prefix that belong to something else (left alone)."""
    renamed: ClassVar[Mapping[str, str]] = {}
    """Old dotted key -> new dotted key, quoted when an unknown key is one of them."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, _CheckedEnv(settings_cls), _FileSource(settings_cls)

    @classmethod
    def hint(cls, key: str) -> str:
        """`` (renamed to X)`` when ``key`` is a retired name, else ''."""
        new = cls.renamed.get(key)
        return f" (renamed to {new!r})" if new else ""

    @classmethod
    def env_name(cls, path: tuple[int | str, ...]) -> str:
        """The env var of a dotted path (``("server", "port")`` -> ``<PREFIX>SERVER__PORT``)."""
        prefix = cls.model_config.get("env_prefix") or ""
        return prefix + "__".join(str(p) for p in path).upper()

    @classmethod
    def load(
        cls, config_file: Path | None = None, overrides: Mapping[str, Any] | None = None
    ) -> Self:
        """The tree from ``overrides`` (nested, e.g. flags) > env > ``config_file`` > defaults.

        Raises :class:`InvalidArgument` naming the key (and its env var) that is unknown or
        invalid."""
        data = read_config_file(config_file) if config_file is not None else {}
        for path in _file_paths(data):
            bad = unknown_key(cls, path)
            if bad is not None:
                raise InvalidArgument(
                    f"config file {config_file}: unknown key {bad!r}{cls.hint(bad)}"
                )
        token = _FILE_DATA.set(data)
        try:
            return cls(**dict(overrides or {}))
        except ValidationError as exc:
            raise InvalidArgument(describe(cls, exc)) from None
        finally:
            _FILE_DATA.reset(token)


def describe(cls: type[LayeredSettings], exc: ValidationError) -> str:
    """One line per error: ``dotted.key (ENV_NAME): message``."""
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p != "__root__")
        if loc:
            key = ".".join(str(p) for p in loc)
            lines.append(f"{key} ({cls.env_name(loc)}): {_msg(err)}{cls.hint(key)}")
        else:
            lines.append(_msg(err))
    return "; ".join(lines)


def settings_rows(cls: type[LayeredSettings]) -> list[tuple[str, str, str, str]]:
    """(dotted key, env var, default, description) for every leaf of the tree, in order."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(model: type[BaseModel], prefix: tuple[str, ...]) -> None:
        for name, field in model.model_fields.items():
            path = (*prefix, name)
            sub = _section_type(field.annotation)
            if sub is not None:
                walk(sub, path)
                continue
            table = _named_sections(field.annotation)
            if table is not None:
                walk(table, (*path, "<name>"))
                continue
            default = field.get_default(call_default_factory=True)
            shown = "" if default is None else json.dumps(default, default=str)
            text = " ".join((field.description or "").split())
            rows.append((".".join(path), cls.env_name(path), shown, text))

    walk(cls, ())
    return rows


def settings_table(cls: type[LayeredSettings]) -> str:
    """The Markdown table of :func:`settings_rows` (what docs/ embeds)."""
    lines = ["| key | env var | default | meaning |", "|---|---|---|---|"]
    for key, env, default, text in settings_rows(cls):
        cell = f"`{default}`" if default else ""
        lines.append(f"| `{key}` | `{env}` | {cell} | {text.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _msg(err: Any) -> str:
    return str(err["msg"]).removeprefix("Value error, ")


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"server.port": 0, "tls.insecure": True}`` -> ``{"server": {"port": 0}, "tls": {...}}``."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        *parents, leaf = dotted.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def given(args: Any, flags: Mapping[str, str]) -> dict[str, Any]:
    """The nested overrides of the flags the user gave: ``flags`` maps argparse dest -> dotted
    key; a flag left at None was not given and overrides nothing."""
    values = {key: getattr(args, dest) for dest, key in flags.items()}
    return nest({k: v for k, v in values.items() if v is not None})


__all__ = [
    "TREE_CONFIG",
    "LayeredSettings",
    "Section",
    "describe",
    "given",
    "nest",
    "read_config_file",
    "settings_rows",
    "settings_table",
    "unknown_key",
]
