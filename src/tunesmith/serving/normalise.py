"""Text normalisation for the built-in content filter: the one step before any term or phrase
is matched (``serving/lexicon.py``).

``normalise`` folds the cheap, common disguises into plain lower-case words separated by single
spaces, so that the lexicon's patterns can be written once, for plain English:

- Unicode compatibility forms (NFKC: full-width letters, ligatures, mathematical letters),
  case (``casefold``), zero-width characters and soft hyphens;
- Cyrillic and Greek look-alike letters, inside words that also hold Latin letters
  (``kіll`` with a Cyrillic ``і``); whole words in another script are left alone;
- leetspeak inside words that hold letters (``k1ll``, ``$uicide``, ``s3x``); numbers alone
  (``2024``, ``$100``) are left alone;
- ``!`` or ``|`` between letters read as ``i`` (``k!ll``);
- single letters spelled out with one repeated separator (``k i l l``, ``k.i.l.l``,
  ``k-i-l-l``, three letters or more) joined into a word;
- apostrophes dropped (``i'm`` -> ``im``, ``don't`` -> ``dont``), every other punctuation mark
  a word break.

Everything it does not undo is listed in ``docs/CONTENT_FILTER.md``. Pure and fast: pure-ASCII
text skips the Unicode steps, and the regular expressions are compiled once, at import.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Final

_INVISIBLE: Final = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"), None)
_QUOTES: Final = {ord(c): "'" for c in "\u2018\u2019\u201b\u02bc\u02b9\u0060\u00b4\u2032"}

# Cyrillic and Greek letters that look like Latin ones (after casefold).
_LOOKALIKES: Final = str.maketrans(
    {
        **dict(zip("аеорсухкмтнвіјѕԁ", "aeopcyxkmthbijsd", strict=True)),  # Cyrillic
        **dict(zip("αεοριυκντχ", "aeopiukvtx", strict=True)),  # Greek
        "ɡ": "g",  # Latin script g
    }
)
_LOOKALIKE_SCRIPTS: Final = re.compile(r"[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f\u0261]")
# Anchored at word starts: each word is tried once, so long runs stay linear.
_MIXED_SCRIPT: Final = re.compile(
    r"(?<!\w)\w*(?:[a-z][\u0370-\u03ff\u0400-\u04ff\u0500-\u052f\u0261]"
    r"|[\u0370-\u03ff\u0400-\u04ff\u0500-\u052f\u0261][a-z])\w*"
)

_LEET: Final = str.maketrans("013457@$", "oieastas")
# A pattern that begins with a character class lets ``re`` skip ahead in C to the few places
# where it could match; the slower patterns run only after a cheap check says they may match.
_LEET_RUN: Final = re.compile(r"[013457@$]+")
_BANG_AS_I: Final = re.compile(r"(?<=[a-z])[!|](?=[a-z])")
# A single letter between separators, twice: where a spelled-out word may be.
_SPELLED_HINT: Final = re.compile(r"[ .\-_*+/~][a-z][ .\-_*+/~][a-z](?![a-z])")
# Three or more single letters with the same separator between each: "k i l l", "k.i.l.l".
_SPELLED_OUT: Final = re.compile(r"(?<![a-z])[a-z]([ .\-_*+/~])[a-z](?:\1[a-z])+(?![a-z])")
_ASCII_PUNCTUATION: Final = str.maketrans(dict.fromkeys(string.punctuation, " "))
_PUNCTUATION: Final = re.compile(r"[^\w\s]|_")


def _unleet(match: re.Match[str]) -> str:
    """A run of leet characters next to a letter (``k1ll``, ``$uicide``) becomes letters; a
    number standing alone (``2024``, ``$100``) stays."""
    text, start, end = match.string, match.start(), match.end()
    if (start > 0 and text[start - 1].isalpha()) or (end < len(text) and text[end].isalpha()):
        return match.group().translate(_LEET)
    return match.group()


def _unspell(match: re.Match[str]) -> str:
    return match.group()[::2]  # letters sit at even offsets: "k.i.l.l" -> "kill"


def _unmix(match: re.Match[str]) -> str:
    return match.group().translate(_LOOKALIKES)


def normalise(text: str) -> str:
    """``"I'll K.I.L.L  y0u!!"`` -> ``"ill kill you"``: lower-case words, single spaces."""
    is_ascii = text.isascii()
    if is_ascii:
        text = text.lower()
    else:
        text = unicodedata.normalize("NFKC", text).casefold()
        text = text.translate(_INVISIBLE).translate(_QUOTES)
        if _LOOKALIKE_SCRIPTS.search(text):
            text = _MIXED_SCRIPT.sub(_unmix, text)
    if "!" in text or "|" in text:
        text = _BANG_AS_I.sub("i", text)
    text = _LEET_RUN.sub(_unleet, text)
    if _SPELLED_HINT.search(text):
        text = _SPELLED_OUT.sub(_unspell, text)
    text = text.replace("'", "")
    text = text.translate(_ASCII_PUNCTUATION) if is_ascii else _PUNCTUATION.sub(" ", text)
    return " ".join(text.split())
