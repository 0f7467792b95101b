"""Shell completion scripts, generated from the argparse tree so they never drift from it.

bash: a ``complete -F`` function that knows, for each command path (``list``, ``tasks list``,
``agents invoke``), its sub-verbs, its flags, which flags take a value and that value's choices.
Task names are completed by running ``taskctl list -o name`` (with the ``-n`` already typed).
zsh: the same function through zsh's ``bashcompinit``.
"""

from __future__ import annotations

import argparse
import shlex

# Verbs whose positional argument is a task (or execution) name.
NAME_VERBS = {"describe", "get", "show", "executions", "execs", "history", "logs", "log", "pause", "pauseSchedule",
              "pause-schedule", "suspend", "resume", "resumeSchedule", "resume-schedule", "unpause", "delete",
              "cancel", "rm", "run", "trigger", "run-now"}
FILE_FLAGS = {"-f", "--filename", "--kubeconfig", "--config", "--save"}


def _walk(parser: argparse.ArgumentParser, path: str, table: dict[str, dict]) -> None:
    subs: list[str] = []
    opts: list[str] = []
    valued: dict[str, list[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                subs.append(name)
                _walk(child, f"{path} {name}".strip(), table)
        elif action.option_strings:
            opts.extend(action.option_strings)
            if action.nargs != 0:
                for flag in action.option_strings:
                    valued[flag] = [str(c) for c in action.choices] if action.choices else []
    table[path] = {"subs": subs, "opts": sorted(set(opts)), "valued": valued}


def _case(table: dict[str, dict], key: str) -> str:
    arms = []
    for path, entry in sorted(table.items()):
        words = entry[key]
        if isinstance(words, dict):
            words = sorted(words)
        label = shlex.quote(path) if path else '""'
        arms.append(f"    {label}) echo {shlex.quote(' '.join(words))} ;;")
    return "\n".join(arms)


def bash(parser: argparse.ArgumentParser, prog: str = "taskctl") -> str:
    table: dict[str, dict] = {}
    _walk(parser, "", table)
    choices: dict[str, list[str]] = {}
    for entry in table.values():
        for flag, values in entry["valued"].items():
            if values:
                choices[flag] = values
    choice_arms = "\n".join(f"    {shlex.quote(flag)}) echo {shlex.quote(' '.join(values))} ;;"
                            for flag, values in sorted(choices.items()))
    status_words = "Active Paused Pending Queued Running Succeeded Failed Invalid"
    fn = "_" + prog.replace("-", "_")
    return f"""# {prog} completion for bash (zsh: use `{prog} completion zsh`)
{fn}_subs() {{
  case "$1" in
{_case(table, "subs")}
    *) echo "" ;;
  esac
}}
{fn}_opts() {{
  case "$1" in
{_case(table, "opts")}
    *) echo "" ;;
  esac
}}
{fn}_valued() {{
  case "$1" in
{_case(table, "valued")}
    *) echo "" ;;
  esac
}}
{fn}_choices() {{
  case "$1" in
{choice_arms}
    --status) echo "{status_words}" ;;
    *) echo "" ;;
  esac
}}
{fn}() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="" path="" ns="" i w skip=0 positional=0
  [ "$COMP_CWORD" -gt 0 ] && prev="${{COMP_WORDS[COMP_CWORD-1]}}"
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="${{COMP_WORDS[i]}}"
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$w" in
      -n|--namespace) ns="${{COMP_WORDS[i+1]}}"; skip=1; continue ;;
      -*) case " $({fn}_valued "$path") " in *" $w "*) skip=1 ;; esac; continue ;;
    esac
    case " $({fn}_subs "$path") " in
      *" $w "*) path="${{path:+$path }}$w" ;;
      *) positional=$((positional + 1)) ;;
    esac
  done
  case " {' '.join(sorted(FILE_FLAGS))} " in
    *" $prev "*) COMPREPLY=( $(compgen -f -- "$cur") ); return 0 ;;
  esac
  case " $({fn}_valued "$path") " in
    *" $prev "*) COMPREPLY=( $(compgen -W "$({fn}_choices "$prev")" -- "$cur") ); return 0 ;;
  esac
  if [[ "$cur" == -* ]]; then
    COMPREPLY=( $(compgen -W "$({fn}_opts "$path")" -- "$cur") ); return 0
  fi
  local subs; subs="$({fn}_subs "$path")"
  if [ -n "$subs" ]; then
    COMPREPLY=( $(compgen -W "$subs" -- "$cur") ); return 0
  fi
  case " {' '.join(sorted(NAME_VERBS))} " in
    *" ${{path##* }} "*)
      local names; names="$({prog} list -o name ${{ns:+-n "$ns"}} 2>/dev/null)"
      COMPREPLY=( $(compgen -W "$names" -- "$cur") ); return 0 ;;
  esac
  return 0
}}
complete -o default -F {fn} {prog}
complete -o default -F {fn} kubectl-task
"""


def zsh(parser: argparse.ArgumentParser, prog: str = "taskctl") -> str:
    return f"""#compdef {prog} kubectl-task
# {prog} completion for zsh, through zsh's bash completion layer
autoload -U +X bashcompinit && bashcompinit
{bash(parser, prog)}"""
