"""What the `pii` and `blocklist` guards find in text: e-mail addresses, phone numbers, IP addresses, card numbers
(Luhn-checked), IBANs (checksum-checked), common secrets, the operator's own patterns, listed words; each match
with its typed placeholder (pure).

Every detector's match is bounded in length (`REACH` characters at most), which is what lets a stream be checked
through a window of that size. A private key block is the one unbounded secret: its header is matched, and what
follows it is swallowed up to its footer (the stream's redactor keeps that state).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

REACH = 200  # the longest match any built-in detector makes (a JWT or connection string is cut there)

# name: (pattern, placeholder). Order matters where two could match at one place: the first that checks wins.
BUILTIN: dict[str, tuple[str, str]] = {
    "private_key": (r"-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----", "[SECRET]"),
    "jwt": (r"\beyJ[\w-]{8,80}\.eyJ[\w-]{8,100}\.[\w-]{8,}", "[SECRET]"),
    "openai_key": (r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,160}", "[SECRET]"),
    "aws_key": (r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "[SECRET]"),
    "connection_string": (
        r"\b(?i:AccountKey|SharedAccessKey|Password|Pwd)=[^;\s\"']{6,120}",
        "[SECRET]",
    ),
    "azure_key": (r"\b[0-9a-f]{32}\b|\b[A-Za-z0-9]{84}\b", "[SECRET]"),
    "email": (r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,5}\.[A-Za-z]{2,24}\b", "[EMAIL]"),
    "iban": (r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", "[IBAN]"),
    "card": (r"\b\d(?:[ -]?\d){12,18}\b", "[CARD]"),
    "ip": (
        r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"
        r"|(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])",
        "[IP]",
    ),
    # A separator after the area code: a bare run of digits (an order number, a year) is not a phone number.
    "phone": (r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]\d{3,4}[ .-]?\d{3,4}\b", "[PHONE]"),
}
KINDS = {
    "email": ("email",),
    "phone": ("phone",),
    "ip": ("ip",),
    "card": ("card",),
    "iban": ("iban",),
    "secret": ("private_key", "jwt", "openai_key", "aws_key", "connection_string", "azure_key"),
}
PRIVATE_KEY_END = re.compile(r"-----END [A-Z ]{0,20}PRIVATE KEY-----")
# What every built-in match holds somewhere (a digit, an @, a key's prefix, a long run of letters and digits...):
# text without any of it cannot match, and looking for it costs a fraction of the full scan.
BUILTIN_TRIGGER = r"[\d@=]|sk-|eyJ|AKIA|ASIA|-----|[0-9a-fA-F]:[0-9a-fA-F]{1,4}:|[A-Za-z0-9]{32}"
TRIGGER_REACH = 32  # the longest text a trigger needs: its start may be that far before a new piece


@dataclass(frozen=True)
class Found:
    start: int
    end: int
    placeholder: str
    name: str  # the detector's: never the text it matched


class Detector:
    """Every pattern of one guard in one regex of named groups: one pass over the text finds them all. `trigger`,
    where known, is a cheap regex that any match's text contains."""

    def __init__(self, patterns: Mapping[str, tuple[str, str]], trigger: str | None = None) -> None:
        self.placeholders = {name: placeholder for name, (_, placeholder) in patterns.items()}
        self.regex = re.compile("|".join(f"(?P<{name}>{pattern})" for name, (pattern, _) in patterns.items()))
        self.trigger = re.compile(trigger) if trigger is not None else None

    def find(self, text: str, start: int = 0, stop: int | None = None) -> Iterator[Found]:
        """The matches in `text` from `start` on; with `stop`, only those that start before it (tried position by
        position: a stream's window asks about its few newly checkable characters, not the whole window again)."""
        position, search, match_at = start, self.regex.search, self.regex.match
        while stop is None or position < stop:
            # Without `stop`: the next match anywhere; with it, one starting exactly here. Either way a match that
            # fails its check (a number whose Luhn digit is wrong) is passed whole: no phone number is read into it.
            at = search(text, position) if stop is None else match_at(text, position)
            if at is None:
                if stop is None:
                    return
                position += 1
                continue
            found = self._found(at)
            if found is None:
                position = at.end()
                continue
            yield found
            position = found.end

    def _found(self, match: re.Match[str]) -> Found | None:
        name = match.lastgroup
        assert name is not None
        if not _checks(name, match.group()):
            return None
        return Found(match.start(), match.end(), self.placeholders[name], name)

    def redact(self, text: str) -> tuple[str, list[Found]]:
        """The whole `text` with every match replaced (a private key block up to its footer), and what was found."""
        out, found, at = [], list(self.find(text)), 0
        kept = []
        for item in found:
            if item.start < at:
                continue
            end = item.end
            if item.name == "private_key":
                footer = PRIVATE_KEY_END.search(text, item.end)
                end = footer.end() if footer else len(text)
            out += [text[at : item.start], item.placeholder]
            kept.append(item)
            at = end
        out.append(text[at:])
        return "".join(out), kept


def pii_detector(kinds: Sequence[str], own: Mapping[str, str]) -> Detector:
    """The `pii` guard's detectors: the built-in `kinds`, then the operator's patterns (name -> regex), whose
    placeholder is the name in capitals."""
    chosen = {name: BUILTIN[name] for kind in kinds for name in KINDS[kind]}
    ordered = {name: chosen[name] for name in BUILTIN if name in chosen}
    ordered |= {_group(name): (pattern, f"[{name.upper()}]") for name, pattern in own.items()}
    return Detector(ordered, None if own else BUILTIN_TRIGGER)  # the operator's patterns: no trigger is known


def blocklist_detector(words: Sequence[str]) -> Detector:
    """Words and phrases, matched case-insensitively on word boundaries (spaces match any run of spaces)."""
    alternatives = sorted((r"\s+".join(map(re.escape, word.split())) for word in words), key=len, reverse=True)
    return Detector({"blocked": (rf"(?<!\w)(?i:{'|'.join(alternatives)})(?!\w)", "[BLOCKED]")})


def luhn(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """The ISO 13616 check: the country and check digits moved to the end, letters as numbers, mod 97 is 1."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in moved)) % 97 == 1


def _checks(name: str, text: str) -> bool:
    if name == "card":
        digits = re.sub(r"[ -]", "", text)
        return 13 <= len(digits) <= 19 and luhn(digits)
    if name == "iban":
        return iban_valid(text)
    return True


def _group(name: str) -> str:
    """An operator's pattern name as a regex group name."""
    return "own_" + re.sub(r"\W", "_", name)
