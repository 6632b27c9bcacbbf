"""Shell completion scripts for bash and zsh, written from the argparse parser.

:func:`describe` reads what completion needs from the parser (commands, options, which
take a value, their choices, which name a file or a directory); :func:`bash` and
:func:`zsh` render it. A new command or flag is completed without touching this module.
Values that name something only a running system knows (a revision, a run) are left to
the user.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROG = "fastdowntime"
_WORD = re.compile(r"[A-Za-z0-9][-A-Za-z0-9_.]*|--?[A-Za-z0-9][-A-Za-z0-9_]*")
_FILES = {"FILE": "file", "PATH": "file", "GLOB": "file", "DIR": "dir"}
_HELP_CHARS = 70


@dataclass(frozen=True)
class Value:
    """What an option's value or a positional is: one of ``choices``, a ``file`` or ``dir``
    (``kind``), or free text named ``metavar``."""

    metavar: str
    choices: tuple[str, ...] = ()
    kind: str = ""


@dataclass(frozen=True)
class Option:
    """A flag: its names, its help, and its value (None: it takes none)."""

    names: tuple[str, ...]
    help: str
    value: Value | None
    repeats: bool = False


@dataclass(frozen=True)
class Positional:
    """A positional argument; ``many``: it may be given more than once."""

    value: Value
    help: str
    optional: bool = False
    many: bool = False


@dataclass(frozen=True)
class Command:
    """A subcommand, or (``name`` empty) the top level."""

    name: str
    help: str
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...] = ()


def describe(parser: argparse.ArgumentParser) -> tuple[Command, tuple[Command, ...]]:
    """The top level and every subcommand of ``parser``, in the parser's order."""
    top = _command("", "", parser)
    commands: list[Command] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                commands.append(_command(name, helps.get(name, ""), sub))
    return top, tuple(commands)


def _command(name: str, text: str, parser: argparse.ArgumentParser) -> Command:
    options: list[Option] = []
    positionals: list[Positional] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if action.option_strings:
            takes = action.nargs != 0
            options.append(Option(tuple(_words(action.option_strings)), _help(action.help),
                                  _value(action) if takes else None,
                                  isinstance(action, argparse._AppendAction)))
        else:
            positionals.append(Positional(_value(action), _help(action.help),
                                          optional=action.nargs == "?",
                                          many=action.nargs in ("+", "*")))
    return Command(name, _help(text), tuple(options), tuple(positionals))


def _value(action: argparse.Action) -> Value:
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    choices = tuple(_words(str(c) for c in action.choices)) if action.choices else ()
    return Value(metavar, choices, _FILES.get(metavar, ""))


def _words(words: Iterable[str]) -> list[str]:
    """``words``, each checked to be safe in a shell script unquoted."""
    checked = list(words)
    for word in checked:
        if not _WORD.fullmatch(word):
            raise ValueError(f"{word!r} cannot be completed: not a plain word")
    return checked


def _help(text: str | None) -> str:
    """A help text on one line, cut to a width a completion menu shows."""
    line = " ".join((text or "").split()).replace("%%", "%")
    if len(line) <= _HELP_CHARS:
        return line
    return line[:_HELP_CHARS - 3].rsplit(" ", 1)[0] + "..."


# --- bash ---------------------------------------------------------------------------


def bash(parser: argparse.ArgumentParser) -> str:
    """A bash completion script (``complete -F``) for ``parser``."""
    top, commands = describe(parser)
    valued = [name for option in top.options if option.value for name in option.names]
    lines = [
        f"# bash completion for {PROG}: `{PROG} completion bash` writes it from the parser.",
        f"# Install: {PROG} completion bash > ~/.local/share/bash-completion/completions/"
        f"{PROG}",
        "",
        f"_{PROG}_files() {{ compopt -o filenames 2>/dev/null; "
        'COMPREPLY=($(compgen -f -- "$cur")); }',
        f"_{PROG}_dirs() {{ compopt -o filenames 2>/dev/null; "
        'COMPREPLY=($(compgen -d -- "$cur")); }',
        "",
        f"_{PROG}() {{",
        '    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}',
        '    local command="" options="" words="" files="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        "        case ${COMP_WORDS[i]} in",
        *([f"            {'|'.join(valued)}) ((i++)) ;;"] if valued else []),
        "            -*) ;;",
        "            *) command=${COMP_WORDS[i]}; break ;;",
        "        esac",
        "    done",
        "    case $command in",
        *_bash_case('""', top, [c.name for c in commands]),
    ]
    for command in commands:
        lines += _bash_case(command.name, command, [])
    lines += [
        "        *) return ;;",
        "    esac",
        '    if [[ $cur == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$options" -- "$cur"))',
        '    elif [[ -n $words ]]; then',
        '        COMPREPLY=($(compgen -W "$words" -- "$cur"))',
        f'    elif [[ $files == file ]]; then _{PROG}_files',
        f'    elif [[ $files == dir ]]; then _{PROG}_dirs',
        "    fi",
        "}",
        "",
        f"complete -F _{PROG} {PROG}",
        "",
    ]
    return "\n".join(lines)


def _bash_case(label: str, command: Command, names: Sequence[str]) -> list[str]:
    """One ``case`` branch: the command's options, its words, how each value completes."""
    words = list(names)
    files = ""
    for positional in command.positionals:
        words += positional.value.choices
        files = files or positional.value.kind
    lines = [f"        {label})",
             f'            options="{" ".join(n for o in command.options for n in o.names)}"',
             f'            words="{" ".join(words)}" files="{files}"',
             "            case $prev in"]
    for option in command.options:
        if option.value is None:
            continue
        pattern = "|".join(option.names)
        if option.value.choices:
            lines.append(f'                {pattern}) COMPREPLY=($(compgen -W '
                         f'"{" ".join(option.value.choices)}" -- "$cur")); return ;;')
        elif option.value.kind:
            lines.append(f"                {pattern}) _{PROG}_{option.value.kind}s; return ;;")
        else:
            lines.append(f"                {pattern}) return ;;")
    lines += ["            esac", "            ;;"]
    return lines


# --- zsh ------------------------------------------------------------------------------


def zsh(parser: argparse.ArgumentParser) -> str:
    """A zsh completion function (``#compdef``) for ``parser``: autoloaded from ``$fpath``
    as ``_fastdowntime``, or sourced (it then registers itself with ``compdef``)."""
    top, commands = describe(parser)
    lines = [
        f"#compdef {PROG}",
        f"# zsh completion for {PROG}: `{PROG} completion zsh` writes it from the parser.",
        f"# Install: {PROG} completion zsh > ~/.zfunc/_{PROG} and, in ~/.zshrc before "
        "compinit, fpath=(~/.zfunc $fpath)",
        "",
    ]
    for command in commands:
        lines += [f"_{PROG}_{_ident(command.name)}() {{", "    _arguments -s \\",
                  *_zsh_specs(command), "}", ""]
    lines += [
        f"_{PROG}() {{",
        "    local curcontext=$curcontext state state_descr line ret=1",
        "    typeset -A opt_args",
        "    _arguments -C \\",
        *[f"        {spec} \\" for option in top.options for spec in [_zsh_option(option)]],
        "        '1:command:->command' \\",
        "        '*:: :->argument' && ret=0",
        "    case $state in",
        "        command)",
        "            local -a commands",
        "            commands=(",
        *[f"                {_quote(f'{c.name}:{c.help}')}" for c in commands],
        "            )",
        f"            _describe -t commands '{PROG} command' commands && ret=0 ;;",
        "        argument)",
        f"            curcontext=${{curcontext%:*:*}}:{PROG}-$words[1]:",
        "            case $words[1] in",
        *[f"                {c.name}) _{PROG}_{_ident(c.name)} && ret=0 ;;" for c in commands],
        "            esac ;;",
        "    esac",
        "    return ret",
        "}",
        "",
        f'if [[ $funcstack[1] == _{PROG} ]]; then',
        f'    _{PROG} "$@"',
        "else",
        f"    compdef _{PROG} {PROG}",
        "fi",
        "",
    ]
    return "\n".join(lines)


def _zsh_specs(command: Command) -> list[str]:
    specs = [_zsh_option(option) for option in command.options]
    for index, positional in enumerate(command.positionals, start=1):
        where = "*" if positional.many else f"{index}:" if positional.optional else f"{index}"
        specs.append(_quote(f"{where}:{_message(positional.value)}:"
                            f"{_zsh_action(positional.value)}"))
    return [f"        {spec}" + (" \\" if i < len(specs) - 1 else "")
            for i, spec in enumerate(specs)]


def _zsh_option(option: Option) -> str:
    """One ``_arguments`` spec: ``'(-c --config)'{-c,--config}'[help]:FILE:_files'``."""
    text = f"[{_bracketed(option.help)}]" if option.help else ""
    if option.value is not None:
        text += f":{_message(option.value)}:{_zsh_action(option.value)}"
    if len(option.names) == 1:
        return _quote(("*" if option.repeats else "") + option.names[0] + text)
    prefix = ("*" if option.repeats else "(- *)" if "--help" in option.names
              else f"({' '.join(option.names)})")
    return _quote(prefix) + "{" + ",".join(option.names) + "}" + _quote(text)


def _zsh_action(value: Value) -> str:
    if value.choices:
        return f"({' '.join(value.choices)})"
    return {"file": "_files", "dir": "_files -/"}.get(value.kind, " ")


def _message(value: Value) -> str:
    return value.metavar.replace("\\", "\\\\").replace(":", "\\:")


def _bracketed(text: str) -> str:
    return text.replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")


def _quote(text: str) -> str:
    """``text`` in single quotes for the shell."""
    return "'" + text.replace("'", "'\\''") + "'"


def _ident(name: str) -> str:
    return name.replace("-", "_")


__all__ = ["Command", "Option", "Positional", "Value", "bash", "describe", "zsh"]
