"""Text as it should be spoken: sentences found as text streams in, abbreviations and symbols
written out.

Piper reads through espeak-ng, which already says numbers well ("21" twenty-one, "3.5" three
point five, "1,250" one thousand two hundred and fifty, "21st" twenty-first), but reads "Dr."
as "D R" and "°C" as nothing, and ends a sentence at every full stop, "Dr. Smith" included. An
LLM's reply also arrives a few tokens at a time, and each sentence should be spoken as soon as
it is complete, not when the reply ends. So sentences are cut here, where an abbreviation, an
initial or a decimal point is not taken for the end of one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Abbreviations that do not end a sentence, and how they are read (English).
ABBREVIATIONS = {
    "mr": "Mister",
    "mrs": "Missus",
    "ms": "Miz",
    "dr": "Doctor",
    "prof": "Professor",
    "st": "Saint",
    "jr": "Junior",
    "sr": "Senior",
    "vs": "versus",
    "etc": "et cetera",
    "approx": "approximately",
    "no": "number",
    "e.g": "for example",
    "i.e": "that is",
    "a.m": "A M",
    "p.m": "P M",
}
# Only before a number do these read as a word ("No. 5"), and "No." elsewhere ends a sentence.
_BEFORE_NUMBER = {"no"}
_UNITS = [
    (re.compile(r"(?<=\d)\s*°\s*C\b"), " degrees Celsius"),
    (re.compile(r"(?<=\d)\s*°\s*F\b"), " degrees Fahrenheit"),
    (re.compile(r"(?<=\d)\s*°"), " degrees"),
    (re.compile(r"(?<=\d)\s*%"), " percent"),
    (re.compile(r"(?<=\d)\s*km/h\b"), " kilometers per hour"),
    (re.compile(r"(?<=\d)\s*mph\b"), " miles per hour"),
    (re.compile(r"(?<=\d)\s*kWh\b"), " kilowatt hours"),
    (re.compile(r"(?<=\d)\s*kW\b"), " kilowatts"),
    (re.compile(r"(?<=\d)\s*W\b"), " watts"),
    (re.compile(r"(?<=\d)\s*km\b"), " kilometers"),
    (re.compile(r"(?<=\d)\s*cm\b"), " centimeters"),
    (re.compile(r"(?<=\d)\s*mm\b"), " millimeters"),
    (re.compile(r"(?<=\d)\s*kg\b"), " kilograms"),
]
_ABBREVIATION = re.compile(
    r"\b(" + "|".join(re.escape(a) for a in sorted(ABBREVIATIONS, key=len, reverse=True)) + r")\.",
    re.IGNORECASE,
)
# "7:05" and "10:30": espeak reads the colon as a pause; a clock time is read as "ten thirty",
# and "7:05" as "seven oh five".
_CLOCK = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s)|\n\s*\n|[。！？]")


def _clock(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes == 0:
        return f"{hours} o'clock" if hours <= 12 else f"{hours} hundred"
    return f"{hours} oh {minutes}" if minutes < 10 else f"{hours} {minutes}"


def spoken(text: str, language: str = "en") -> str:
    """`text` as Piper should read it: abbreviations, units and clock times written out
    (English voices; other languages are left to espeak)."""
    text = re.sub(r"\s+", " ", text).strip()
    if not language.lower().startswith("en"):
        return text
    text = _CLOCK.sub(_clock, text)

    def expand(match: re.Match[str]) -> str:
        key = match.group(1).lower()
        following = text[match.end() :].lstrip()
        if key in _BEFORE_NUMBER and not following[:1].isdigit():
            return match.group(0)
        return ABBREVIATIONS[key]

    text = _ABBREVIATION.sub(expand, text)
    for pattern, words in _UNITS:
        text = pattern.sub(words, text)
    return text


def _ends_sentence(text: str, end: int) -> bool:
    """Whether the stop at text[end - 1] ends a sentence (not "Dr.", "J.", "3." of "3.5")."""
    if text[end - 1] != ".":
        return True
    word = re.search(r"([\w.]+)\.$", text[:end])
    if word is None:
        return True
    token = word.group(1)
    following = text[end:].lstrip()
    key = token.lower()
    if key in ABBREVIATIONS and not (key in _BEFORE_NUMBER and not following[:1].isdigit()):
        return False
    # An initial ("J. R. R. Tolkien") does not end one either.
    return not (len(token) == 1 and token.isalpha() and token.isupper())


class SentenceSplitter:
    """Complete sentences out of text that arrives in pieces (an LLM's tokens, Wyoming's
    synthesize-chunk events). A sentence is complete once the text after its end has started:
    "3." may yet be "3.5", "No." may be "No. 5", and "Dr." is not an end at all."""

    def __init__(self) -> None:
        self._pending = ""

    def push(self, text: str) -> list[str]:
        self._pending += text
        sentences = []
        start = 0
        for match in _SENTENCE_END.finditer(self._pending):
            end = match.end()
            if not self._pending[end:].strip():
                break  # what follows decides: "No. 5" goes on, "No. Thanks" does not
            if not _ends_sentence(self._pending, match.start() + 1):
                continue
            sentence = self._pending[start:end].strip()
            if sentence:
                sentences.append(sentence)
            start = end
        self._pending = self._pending[start:]
        return sentences

    @property
    def pending(self) -> str:
        """Text after the last complete sentence."""
        return self._pending

    def flush(self) -> str | None:
        """What is left once the text has ended: the last sentence, if any."""
        rest, self._pending = self._pending.strip(), ""
        return rest or None


# Words a phrase starts with: a sentence may be cut before one of them with its melody intact.
PHRASE_STARTERS = frozenset({
    "and", "but", "or", "so", "because", "while", "when", "if", "that", "which", "who",
    "is", "are", "was", "were", "will", "would", "can", "could", "has", "have", "had",
    "to", "in", "on", "at", "for", "with", "from", "of", "by", "about", "after", "before",
})  # fmt: skip
MIN_REST_WORDS = 2
MAX_PHRASE_WORDS = 30  # a first "phrase" longer than this is no phrase: the sentence goes whole


def _phrase_cut(words: list[str]) -> int | None:
    """Where a sentence's first phrase ends: after the first comma (two words in, at least),
    or before the first word that starts a phrase (three words in), whichever comes first,
    with at least two words after it. Only the words seen so far decide, so text that is still
    arriving is cut where the whole sentence would be."""
    for index in range(2, min(len(words) - MIN_REST_WORDS + 1, MAX_PHRASE_WORDS + 1)):
        after_comma = words[index - 1].endswith((",", ";", ":"))
        starter = index >= 3 and re.sub(r"\W", "", words[index]).lower() in PHRASE_STARTERS
        if after_comma or starter:
            return index
    return None


def first_phrase(sentence: str) -> tuple[str, str] | None:
    """The sentence cut after its first phrase ("The living room lights | are now on."), or
    None where there is nowhere natural to cut."""
    words = sentence.split()
    cut = _phrase_cut(words)
    return None if cut is None else (" ".join(words[:cut]), " ".join(words[cut:]))


@dataclass(frozen=True)
class SpeechPart:
    text: str
    pause_before: bool  # a sentence after the first: the sentence silence goes before it
    phrase: bool  # the first phrase of a reply: its trailing silence is cut to a short pause
    opens: bool = False  # the reply's first part: its first audio is what a listener waits for


class ReplySplitter:
    """A reply, whole or arriving in pieces, as the parts it is spoken in: sentence by sentence,
    and with `quick_start` the first sentence as its first phrase and the rest. Piper's time
    grows with the length of the text, so a short first part brings the first audio sooner; in
    a stream the first phrase is spoken as soon as it is known, before its sentence ends. Whole
    and streamed text give the same parts."""

    def __init__(self, quick_start: bool = True) -> None:
        self.quick_start = quick_start
        self._sentences = SentenceSplitter()
        self._spoken_sentences = 0
        self._head_words: int | None = None  # words of the first sentence already spoken

    def push(self, text: str) -> list[SpeechPart]:
        parts = [part for sentence in self._sentences.push(text) for part in self._parts(sentence)]
        if self.quick_start and self._spoken_sentences == 0 and self._head_words is None:
            # Only the sentence's first words can hold its first phrase: a long stream without
            # a stop is not split again and again.
            pending = self._sentences.pending[: 40 * (MAX_PHRASE_WORDS + MIN_REST_WORDS)]
            complete = pending.split() if pending[-1:].isspace() else pending.split()[:-1]
            cut = _phrase_cut(complete[: MAX_PHRASE_WORDS + MIN_REST_WORDS])
            if cut is not None:
                self._head_words = cut
                parts.append(SpeechPart(" ".join(complete[:cut]), False, True, opens=True))
        return parts

    def flush(self) -> list[SpeechPart]:
        rest = self._sentences.flush()
        return self._parts(rest) if rest else []

    def _parts(self, sentence: str) -> list[SpeechPart]:
        self._spoken_sentences += 1
        if self._spoken_sentences > 1:
            return [SpeechPart(sentence, True, False)]
        words = sentence.split()
        if self._head_words is not None:
            return [SpeechPart(" ".join(words[self._head_words :]), False, False)]
        phrase = first_phrase(sentence) if self.quick_start else None
        if phrase is None:
            return [SpeechPart(sentence, False, False, opens=True)]
        return [SpeechPart(phrase[0], False, True, opens=True), SpeechPart(phrase[1], False, False)]
