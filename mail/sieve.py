"""Sieve: validation with a real parser, the rule editor's script, the auto-responder's script.

Every script is parsed with ``sievelib`` before it is saved; a script it refuses is refused
with its message (unknown commands, unloaded extensions, syntax errors). Then every folder
and address argument of the parsed commands (``fileinto``, ``redirect``, ``vacation :from``
and ``:addresses``, ``notify``) is checked as rule mode checks it, so a raw script cannot
file into ``../x`` or redirect to a malformed address; the error names the line. The parser
keeps its state in a module global, so parsing is serialised with a lock.

Rules (the portal's rule editor and the API) are plain data::

    {"name": "Newsletters", "match": "any",
     "conditions": [{"field": "from", "op": "contains", "value": "news@"}],
     "actions": [{"type": "fileinto", "folder": "News"}, {"type": "stop"}]}

fields: from, to (To and Cc), subject, header (with "header"), size (op over/under, value like
``100K``); ops: contains, is, matches; actions: fileinto (folder), redirect (address, copy),
discard, mark_read, stop.
"""

from __future__ import annotations

import re
import threading
from email.utils import parseaddr
from typing import Any

import sievelib.parser as sievelib_parser
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from sievelib.parser import Parser

from . import validators

MAX_SCRIPT = 65536
MAX_RULES = 100
MAX_CONDITIONS = 20
MAX_ACTIONS = 10
MAX_VALUE = 500

FIELDS = ("from", "to", "subject", "header", "size")
TEXT_OPS = ("contains", "is", "matches")
SIZE_OPS = ("over", "under")
ACTIONS = ("fileinto", "redirect", "discard", "mark_read", "stop")
_SIZE = re.compile(r"^[0-9]{1,9}[KMG]?$")
_lock = threading.Lock()


# sievelib keeps no line numbers on the commands it builds. While we parse (under _lock) the
# command factory it calls is wrapped to stamp each command with the lexer's current line,
# so an argument error can name its line.
_parsing: list[Parser] = []
_make_command = sievelib_parser.get_command_instance


def _command_with_line(*args: Any, **kwargs: Any) -> Any:
    command = _make_command(*args, **kwargs)
    command.ums_line = _parsing[-1].lexer.curlineno() if _parsing else 0
    return command


sievelib_parser.get_command_instance = _command_with_line


def parse_error(script: str) -> str | None:
    """Why a raw script is refused (syntax, or a folder/address argument that fails the
    checks rule mode applies), or None when it is valid."""
    with _lock:
        parser = Parser()
        _parsing.append(parser)
        try:
            ok = parser.parse(script.encode("utf-8"))
        except Exception as exc:  # the parser raises on some malformed input
            return str(exc) or exc.__class__.__name__
        finally:
            _parsing.pop()
        if not ok:
            return str(getattr(parser, "error", "invalid script"))
        commands = list(parser.result)
    return argument_error(commands)


# --------------------------------------------------------------------------- arguments
# Every argument that names a folder or an address is checked exactly as rule mode checks
# it. The commands the parser knows are listed here; ``include`` and ``mailboxexists`` are
# unknown to it and so refused as syntax. A value built from variables (``${name}``) cannot
# be checked before delivery and is refused.


def _unquote(raw: str) -> str:
    """The value of a Sieve string token: quoted (with \\ escapes) or ``text:`` block."""
    if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
        return re.sub(r"\\(.)", r"\1", raw[1:-1], flags=re.S)
    if raw.startswith("text:"):
        lines = raw.split("\n")[1:]
        if lines and lines[-1].strip() == ".":
            lines = lines[:-1]
        return "\n".join(line[1:] if line.startswith("..") else line for line in lines)
    return raw


def _folder(value: str) -> None:
    validators.validate_folder(value)


def _address(value: str) -> None:
    validators.normalise_address(value)


def _from_address(value: str) -> None:
    """``vacation :from``/``notify :from``: an address, optionally as ``Name <address>``."""
    validators.no_control_characters(value)
    if "<" in value:
        _name, value = parseaddr(value)
        if not value:
            raise ValidationError(_("Enter an address of the form Name <name@example.com>."))
    validators.normalise_address(value)


def _mailto(value: str) -> None:
    """``notify`` method: only ``mailto:`` to one valid address."""
    if not value.lower().startswith("mailto:"):
        raise ValidationError(_("Only mailto: notifications are allowed."))
    validators.normalise_address(value[len("mailto:") :].split("?", 1)[0])


# command -> (argument, where the parser keeps it, check)
_CHECKED: dict[str, tuple[tuple[str, str, Any], ...]] = {
    "fileinto": (("mailbox", "arguments", _folder),),
    "redirect": (("address", "arguments", _address),),
    "vacation": (
        ("from", "extra_arguments", _from_address),
        ("addresses", "extra_arguments", _address),
    ),
    "notify": (("from", "extra_arguments", _from_address), ("method", "arguments", _mailto)),
}


def _walk(commands: list[Any]) -> Any:
    for command in commands:
        yield command
        yield from _walk(list(command.children))


def argument_error(commands: list[Any]) -> str | None:
    """The first folder or address argument of parsed ``commands`` that fails its check."""
    for command in _walk(commands):
        for argument, where, check in _CHECKED.get(command.name, ()):
            raw = getattr(command, where).get(argument)
            if raw is None:
                continue
            for item in raw if isinstance(raw, list) else [raw]:
                value = _unquote(item)
                try:
                    if "${" in value:
                        raise ValidationError(
                            _("a value built from variables cannot be checked; use a literal.")
                        )
                    check(value)
                except ValidationError as exc:
                    return _("line %(line)d: %(command)s %(argument)s “%(value)s”: %(error)s") % {
                        "line": getattr(command, "ums_line", 0),
                        "command": command.name,
                        "argument": argument,
                        "value": value[:80].encode("unicode_escape").decode(),
                        "error": exc.messages[0],
                    }
    return None


def validate_script(script: object, field: str = "script") -> str:
    """A raw Sieve script, refused with the parser's message when invalid."""
    if not isinstance(script, str):
        raise ValidationError({field: _("Enter the script as text.")})
    if len(script) > MAX_SCRIPT:
        raise ValidationError({field: _("A script can be at most 64 KB long.")})
    if any((ord(ch) < 32 and ch not in "\r\n\t") or ord(ch) == 127 for ch in script):
        raise ValidationError({field: _("A script cannot contain control characters.")})
    if not script.strip():
        raise ValidationError({field: _("Enter a Sieve script.")})
    error = parse_error(script)
    if error:
        raise ValidationError({field: _("Invalid Sieve script: %(error)s") % {"error": error}})
    return script


def quote(value: str) -> str:
    """A Sieve quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValidationError(_("Enter a value for %(what)s.") % {"what": what})
    if len(value) > MAX_VALUE:
        raise ValidationError(
            _("A value can be at most %(max)d characters long.") % {"max": MAX_VALUE}
        )
    validators.no_control_characters(value)
    return value


def _clean_condition(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError(_("Each condition must be an object."))
    unknown = set(raw) - {"field", "op", "value", "header"}
    if unknown:
        raise ValidationError(
            _("Unknown condition keys: %(keys)s.") % {"keys": ", ".join(sorted(map(str, unknown)))}
        )
    field = raw.get("field")
    if field not in FIELDS:
        raise ValidationError(
            _("A condition's field must be one of %(values)s.") % {"values": ", ".join(FIELDS)}
        )
    op = raw.get("op")
    if field == "size":
        if op not in SIZE_OPS:
            raise ValidationError(_("A size condition needs op “over” or “under”."))
        value = raw.get("value")
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not _SIZE.match(value.upper()):
            raise ValidationError(_("Enter a size such as 500K, 10M or 1G."))
        return {"field": field, "op": op, "value": value.upper()}
    if op not in TEXT_OPS:
        raise ValidationError(
            _("A condition's op must be one of %(values)s.") % {"values": ", ".join(TEXT_OPS)}
        )
    cleaned = {"field": field, "op": op, "value": _text(raw.get("value"), field)}
    if field == "header":
        cleaned["header"] = validators.validate_header_name(raw.get("header"))
    return cleaned


def _clean_action(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError(_("Each action must be an object."))
    kind = raw.get("type")
    if kind not in ACTIONS:
        raise ValidationError(
            _("An action's type must be one of %(values)s.") % {"values": ", ".join(ACTIONS)}
        )
    allowed = {"fileinto": {"folder"}, "redirect": {"address", "copy"}}.get(kind, set())
    unknown = set(raw) - {"type"} - allowed
    if unknown:
        raise ValidationError(
            _("Unknown action keys: %(keys)s.") % {"keys": ", ".join(sorted(map(str, unknown)))}
        )
    if kind == "fileinto":
        return {"type": kind, "folder": validators.validate_folder(raw.get("folder"))}
    if kind == "redirect":
        copy = raw.get("copy", False)
        if not isinstance(copy, bool):
            raise ValidationError(_("“copy” must be true or false."))
        return {
            "type": kind,
            "address": validators.normalise_address(raw.get("address")),
            "copy": copy,
        }
    return {"type": kind}


def clean_rules(rules: object, field: str = "rules") -> list[dict[str, Any]]:
    """Validate rule-editor data; errors name the rule number."""
    if not isinstance(rules, list):
        raise ValidationError({field: _("Enter a list of rules.")})
    if len(rules) > MAX_RULES:
        raise ValidationError({field: _("At most %(max)d rules.") % {"max": MAX_RULES}})
    cleaned: list[dict[str, Any]] = []
    for number, rule in enumerate(rules, start=1):
        try:
            if not isinstance(rule, dict):
                raise ValidationError(_("A rule must be an object."))
            unknown = set(rule) - {"name", "match", "conditions", "actions"}
            if unknown:
                raise ValidationError(
                    _("Unknown rule keys: %(keys)s.")
                    % {"keys": ", ".join(sorted(map(str, unknown)))}
                )
            name = rule.get("name", "")
            if not isinstance(name, str) or len(name) > 100:
                raise ValidationError(_("A rule name is text of at most 100 characters."))
            validators.no_control_characters(name)
            match = rule.get("match", "all")
            if match not in ("all", "any"):
                raise ValidationError(_("“match” must be “all” or “any”."))
            conditions = rule.get("conditions") or []
            actions = rule.get("actions") or []
            if not isinstance(conditions, list) or len(conditions) > MAX_CONDITIONS:
                raise ValidationError(
                    _("Conditions must be a list of at most %(max)d.") % {"max": MAX_CONDITIONS}
                )
            if not isinstance(actions, list) or not actions or len(actions) > MAX_ACTIONS:
                raise ValidationError(
                    _("Give between 1 and %(max)d actions.") % {"max": MAX_ACTIONS}
                )
            cleaned.append(
                {
                    "name": name,
                    "match": match,
                    "conditions": [_clean_condition(c) for c in conditions],
                    "actions": [_clean_action(a) for a in actions],
                }
            )
        except ValidationError as exc:
            raise ValidationError(
                {
                    field: _("Rule %(number)d: %(error)s")
                    % {"number": number, "error": exc.messages[0]}
                }
            ) from exc
    return cleaned


def _test(condition: dict[str, Any]) -> str:
    field, op, value = condition["field"], condition["op"], condition["value"]
    if field == "size":
        return f"size :{op} {value}"
    headers = {
        "from": quote("from"),
        "to": "[" + quote("to") + ", " + quote("cc") + "]",
        "subject": quote("subject"),
    }.get(field) or quote(condition["header"])
    return f"header :{op} {headers} {quote(value)}"


def _command(action: dict[str, Any]) -> str:
    kind = action["type"]
    if kind == "fileinto":
        return f"fileinto {quote(action['folder'])};"
    if kind == "redirect":
        copy = ":copy " if action.get("copy") else ""
        return f"redirect {copy}{quote(action['address'])};"
    if kind == "mark_read":
        return 'addflag "\\\\Seen";'
    return f"{kind};"


def render_rules(rules: list[dict[str, Any]]) -> str:
    """The Sieve script of (already cleaned) rules."""
    needs: list[str] = []
    for rule in rules:
        for action in rule["actions"]:
            extension = {"fileinto": "fileinto", "mark_read": "imap4flags"}.get(action["type"])
            if action["type"] == "redirect" and action.get("copy"):
                extension = "copy"
            if extension and extension not in needs:
                needs.append(extension)
    lines = ["# Generated by the UMS rule editor; saving the rules replaces this script."]
    if needs:
        lines.append("require [" + ", ".join(quote(n) for n in needs) + "];")
    for rule in rules:
        lines.append("")
        if rule["name"]:
            lines.append(f"# {rule['name']}")
        body = ["    " + _command(a) for a in rule["actions"]]
        tests = [_test(c) for c in rule["conditions"]]
        if not tests:
            lines.extend(line.strip() for line in body)
            continue
        joined = tests[0] if len(tests) == 1 else f"{rule['match']}of ({', '.join(tests)})"
        lines.append(f"if {joined} {{")
        lines.extend(body)
        lines.append("}")
    return "\n".join(lines) + "\n"


def render_vacation(
    *,
    subject: str,
    body: str,
    days: int,
    address: str,
    start: Any = None,
    end: Any = None,
) -> str:
    """The auto-responder as Sieve: never to lists, bulk or automatic mail, once per sender
    per ``days``, only between the optional dates."""
    needs = ["vacation"]
    if start or end:
        needs += ["date", "relational"]
    lines = [
        "# Auto-responder generated by UMS.",
        "require [" + ", ".join(quote(n) for n in needs) + "];",
        "if anyof (exists " + quote("list-id") + ", exists " + quote("list-unsubscribe")
        + ", header :contains " + quote("precedence") + " [" + quote("bulk") + ", "
        + quote("list") + ", " + quote("junk") + "], header :matches "
        + quote("auto-submitted") + " " + quote("auto-*") + ") {",
        "    stop;",
        "}",
    ]  # fmt: skip
    dates = []
    if start:
        dates.append(f'currentdate :value "ge" "date" {quote(start.isoformat())}')
    if end:
        dates.append(f'currentdate :value "le" "date" {quote(end.isoformat())}')
    vacation = (
        f"vacation :days {int(days)} :addresses [{quote(address)}] :subject {quote(subject)} "
        f"{quote(body)};"
    )
    if dates:
        lines.append(f"if allof ({', '.join(dates)}) {{")
        lines.append("    " + vacation)
        lines.append("}")
    else:
        lines.append(vacation)
    return "\n".join(lines) + "\n"
