"""Command-line options derived from a command's config dataclass, so that every default and help text is
written once, and `--config FILE` (TOML or YAML) under the command line.

A field `batch_size: int = 16  # clips per rank and step` becomes `--batch-size` with default 16 and help
"Clips per rank and step." (the comment after a field, and comment lines right under it); `bool` fields
become `--flag/--no-flag`, `X | None` fields are optional, `list[...]` fields repeatable, `Literal[...]`
fields choices. A --config file sets fields by name (dashes or underscores); an option given on the
command line wins over the file, the file over the dataclass's defaults. Every command also refuses a
single-value option given twice, instead of silently keeping the last (`StrictTyper`).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import io
import json
import textwrap
import tokenize
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, Union

import typer
from typer.core import TyperCommand

from wtours_base.exits import exit_on_errors

# The output flags every command takes (wtours_base.report.OutputMode.of turns them into a mode).
QUIET = typer.Option(False, "--quiet", "-q", help="No progress bars (warnings, errors and the summary only).")
JSON = typer.Option(False, "--json", help="JSON on stdout for scripts, and nothing else there.")


class StrictCommand(TyperCommand):
    """A typer command that refuses an option taking one value when it is given more than once."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        given = args[:args.index("--")] if "--" in args else args
        for param in self.get_params(ctx):
            if param.param_type_name != "option" or param.multiple or param.count or param.is_flag:
                continue
            names = [n for n in param.opts + param.secondary_opts]
            times = sum(1 for a in given if a in names or any(a.startswith(n + "=") for n in names if n.startswith("--")))
            if times > 1:
                raise typer.BadParameter(f"given {times} times; it takes one value (repeat only options that "
                                         "take several)", ctx=ctx, param=param)
        return super().parse_args(ctx, args)


class StrictTyper(typer.Typer):
    """typer.Typer whose commands are StrictCommands."""

    def command(self, *args, cls=None, **kwargs):
        return super().command(*args, cls=cls or StrictCommand, **kwargs)


# ---------------------------------------------------------------------------------------------
# Field help and types


def field_help(config: type) -> dict[str, str]:
    """Each field's help text: the comment after it, continued by comment-only lines right under it."""
    helps: dict[str, str] = {}
    for cls in reversed(config.__mro__):
        if not dataclasses.is_dataclass(cls):
            continue
        source = textwrap.dedent(inspect.getsource(cls))
        comments: dict[int, tuple[str, bool]] = {}  # line -> (text, the line holds only the comment)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = (tok.string.lstrip("#").strip(), not tok.line[:tok.start[1]].strip())
        for node in ast.parse(source).body[0].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                row, parts = node.end_lineno, []
                if row in comments and not comments[row][1]:
                    parts.append(comments[row][0])
                    while row + 1 in comments and comments[row + 1][1]:
                        row += 1
                        parts.append(comments[row][0])
                text = " ".join(parts)
                helps[node.target.id] = (text[:1].upper() + text[1:] + ("" if text.endswith((".", ")")) else ".")
                                         if text else "")
    return helps


def _optional(hint: Any) -> tuple[Any, bool]:
    """(the type inside X | None, whether None is allowed)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _choices(hint: Any) -> tuple:
    """The values of a Literal field (or of a list of them)."""
    inner = _optional(hint)[0]
    if typing.get_origin(inner) is list:
        inner = (typing.get_args(inner) or (str,))[0]
    return typing.get_args(inner) if typing.get_origin(inner) is Literal else ()


def _splits(hint: Any) -> bool:
    """A list of numbers or choices: values can hold no comma, so '0,1,2' means three of them."""
    inner = _optional(hint)[0]
    args = typing.get_args(inner) if typing.get_origin(inner) is list else ()
    return bool(args) and (args[0] in (int, float) or typing.get_origin(args[0]) is Literal)


def _parse_list(given: Sequence[str], hint: Any, flag: str) -> list:
    """Command-line values of a list of numbers or choices, each possibly comma-separated, typed."""
    (item,) = typing.get_args(_optional(hint)[0])
    values = [v.strip() for text in given for v in str(text).split(",") if v.strip()]
    if item in (int, float):
        try:
            values = [item(v) for v in values]
        except ValueError:
            raise ValueError(f"{flag} takes {item.__name__}s (comma-separated or repeated), "
                             f"not {', '.join(given)!r}") from None
    return coerce(values, hint, flag)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """A value read from a config file as the field's type (ValueError naming `where` if it cannot be)."""
    inner, optional = _optional(hint)
    if value is None:
        if optional:
            return None
        raise ValueError(f"{where}: must not be empty")
    origin = typing.get_origin(inner)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            value = [value] if origin is list else value
        args = typing.get_args(inner)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"{where}: {len(args)} values, not {value!r}")
            return tuple(coerce(v, a, where) for v, a in zip(value, args))
        return origin(coerce(v, args[0] if args else Any, where) for v in value)
    if origin is Literal:
        if value not in typing.get_args(inner):
            raise ValueError(f"{where}: one of {', '.join(map(str, typing.get_args(inner)))}, not {value!r}")
        return value
    if inner is Any:
        return value
    if inner is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: true or false, not {value!r}")
        return value
    if inner is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if inner is Path and isinstance(value, (str, Path)):
        return Path(value)
    if isinstance(inner, type) and isinstance(value, inner) and not (inner is int and isinstance(value, bool)):
        return value
    raise ValueError(f"{where}: expected {getattr(inner, '__name__', inner)}, not {value!r}")


def load_config_file(path: Path, config: type, section: str | None = None, _chain: tuple[str, ...] = ()
                     ) -> dict[str, Any]:
    """Field values from a TOML or YAML file: top-level keys, or the table named `section` if the file has one
    (so one file can hold the settings of several commands). Unknown keys and wrong types are errors.
    `base = "NAME"` starts from the file NAME (same folder and suffix) and changes only what this file sets.
    A config file is data: `pipe:` values (webdataset runs them in a shell) are refused; type them on the
    command line if you mean them."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config file ({exc.strerror or exc})") from exc
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = tomllib.loads(text)
    except Exception as exc:  # tomllib and yaml raise their own error types
        raise ValueError(f"{path}: not valid {'YAML' if path.suffix.lower() in ('.yaml', '.yml') else 'TOML'} ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings")
    if section and isinstance(data.get(section), dict):
        data = data[section]
    base = data.pop("base", None)
    if base is not None and (not isinstance(base, str) or base != Path(base).name or base.startswith(".")
                             or not path.with_name(f"{base}{path.suffix}").is_file()):
        raise ValueError(f"{path}: base {base!r} is not a config file beside it")
    if base is not None and path.with_name(f"{base}{path.suffix}").resolve() in {Path(c) for c in (*_chain, str(path.resolve()))}:
        raise ValueError(f"{path}: base {base!r} leads back to itself")
    hints = typing.get_type_hints(config)
    fields = {f.name for f in dataclasses.fields(config) if f.init}
    values = (load_config_file(path.with_name(f"{base}{path.suffix}"), config, section, (*_chain, str(path.resolve())))
              if base else {})
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if any(isinstance(v, str) and v.strip().startswith("pipe:") for v in (value if isinstance(value, list) else [value])):
            raise ValueError(f"{path}: {key}: a pipe: URL runs a shell command, so a config file may not hold one; "
                             "give it on the command line if you mean it")
        if isinstance(value, dict) and name not in fields:
            continue  # another command's table
        if name not in fields:
            raise ValueError(f"{path}: unknown setting {key!r}; settings: {', '.join(sorted(fields))}")
        values[name] = coerce(value, hints[name], f"{path}: {key}")
    return values


# ---------------------------------------------------------------------------------------------
# The decorator


def _option_type(hint: Any) -> Any:
    """The annotation typer gets for a field type (None if typer cannot take it from the command line)."""
    inner, optional = _optional(hint)
    origin = typing.get_origin(inner)
    if origin is list:
        (item,) = typing.get_args(inner) or (str,)
        if _splits(inner):
            return list[str]  # split on commas and typed by the wrapper: --seeds 0,1,2 or --seeds 0 --seeds 1
        return list[item] if item in (str, Path) else None
    if origin is tuple:
        args = typing.get_args(inner)
        return inner if args and Ellipsis not in args and all(a in (str, int, float) for a in args) else None
    if origin is Literal or inner in (str, int, float, bool, Path):
        return typing.Optional[inner] if optional else inner
    if inner is dict:
        return str  # a JSON object on the command line: --method-options '{"pred_ratio": 0.3}'
    return None


def _parse_object(text: str, flag: str) -> dict:
    """A command-line JSON object (ValueError naming the flag if it is not one)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} takes a JSON object, e.g. '{{\"name\": 1}}': {exc.msg} in {text!r}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} takes a JSON object, not {text!r}")
    return value


def config_options(config: type, *, arguments: Sequence[str] = (), flags: dict[str, Sequence[str]] | None = None,
                   defaults: dict[str, Any] | None = None, exclude: Sequence[str] = (), helps: dict[str, str] | None = None,
                   section: str | None = None, panel: str | None = None, presets: Path | None = None) -> Callable:
    """Decorate `command(cfg, **other_options)`: the command line gets one option per field of `config`
    (`arguments`: fields taken as positional arguments; `flags`: other names, e.g. {'out': ['--out', '-o']};
    `defaults`: command-line defaults for fields without one; `exclude`: fields the command line does not
    set; `helps`: help texts for fields without a comment) plus `--config FILE`; then builds `config(...)`
    and calls the command with it. `section`: the table of a --config file read for this command; `presets`: a
    folder of named config files (`--config NAME` reads NAME.toml there when no file NAME exists)."""
    flags, defaults, helps = flags or {}, defaults or {}, {**field_help(config), **(helps or {})}
    hints = typing.get_type_hints(config)
    named = sorted(p.stem for p in presets.glob("*.toml")) if presets else []

    def decorate(command: Callable) -> Callable:
        resolved = typing.get_type_hints(command)
        own = [p.replace(annotation=resolved.get(p.name, p.annotation))
               for p in list(inspect.signature(command).parameters.values())[1:]]
        params, fields = [], []
        # A command's own options first, then shared keyword-only groups it inherits (e.g. the face detector's);
        # where every field is keyword-only (the eval configs) the order stays as declared.
        for f in sorted(dataclasses.fields(config), key=lambda f: f.kw_only):
            if not f.init or f.name in exclude:
                continue
            option_type = _option_type(hints[f.name])
            if option_type is None:
                raise TypeError(f"{config.__name__}.{f.name}: {hints[f.name]} cannot be a command-line option; "
                                "exclude it")
            has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else
                                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            if isinstance(default, dict):
                default = json.dumps(default)
            required = not has_default and f.name not in defaults
            text = helps.get(f.name, "")
            if text.split(":")[0].split(" ")[0].lower() in _choices(hints[f.name]):  # "object: tracked ..." stays lower
                text = text[:1].lower() + text[1:]
            text += " [required]" if required and f.name not in arguments else ""
            if f.name in arguments:  # a list argument's default is None to typer (an empty list to the config)
                spec = typer.Argument(None if required or isinstance(default, list) else default, help=text,
                                      show_default=not required, metavar=f.name.upper(), rich_help_panel=panel)
            else:
                names = flags.get(f.name, ["--" + f.name.replace("_", "-")])
                if _optional(hints[f.name])[0] is bool:
                    names = [f"{names[0]}/--no-{names[0][2:]}", *names[1:]]
                spec = typer.Option(None if required else default, *names, help=text, show_default=not required,
                                    rich_help_panel=panel)
            option_type = typing.Optional[option_type] if required else option_type
            params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=spec, annotation=option_type))
            fields.append((f.name, required, f))
        params.append(inspect.Parameter(
            "config_file", inspect.Parameter.KEYWORD_ONLY, annotation=typing.Optional[Path],
            default=typer.Option(None, "--config", help="TOML or YAML file of settings (field names as keys); "
                                 "options given on the command line override it." +
                                 (f" Named presets: {', '.join(named)}." if named else ""), rich_help_panel=panel)))
        params.append(inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))
        params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(command)
        def wrapper(**kwargs):
            ctx, config_file = kwargs.pop("ctx"), kwargs.pop("config_file")
            values = {}
            with exit_on_errors((ValueError,)):  # a bad file, a missing input, a value the config refuses
                if config_file and not config_file.exists() and presets and (presets / f"{config_file}.toml").is_file():
                    config_file = presets / f"{config_file}.toml"
                from_file = load_config_file(config_file, config, section) if config_file else {}
                for name, required, f in fields:
                    value = kwargs.pop(name)
                    if value is None and f.default_factory is not dataclasses.MISSING:
                        value = f.default_factory()
                    source = ctx.get_parameter_source(name)
                    if name in from_file and (source is None or source.name not in ("COMMANDLINE", "ENVIRONMENT")):
                        value = from_file[name]
                    elif _splits(hints[name]) and value is not None:  # typer gives strings, also for the default
                        value = _parse_list(value, hints[name], f"--{name.replace('_', '-')}")
                    elif isinstance(value, tuple) and typing.get_origin(_optional(hints[name])[0]) is list:
                        value = list(value)
                    elif isinstance(value, str) and _optional(hints[name])[0] is dict:
                        value = _parse_object(value, f"--{name.replace('_', '-')}")
                    if required and value in (None, [], ()):
                        what = f"argument {name.upper()}" if name in arguments else f"option --{name.replace('_', '-')}"
                        raise ValueError(f"missing {what} (or `{name}` in a --config file)")
                    values[name] = value
                values.update({k: v for k, v in from_file.items() if k not in values})  # fields only a file sets
                cfg = config(**values)
            return command(cfg, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}  # real types: typer resolves no strings
        del wrapper.__wrapped__  # typer must see the wrapper's signature, not the command's
        return wrapper

    return decorate
