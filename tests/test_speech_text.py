"""Sentences found in text that streams in, and text written out the way it should be spoken."""

from __future__ import annotations

import pytest

from wis_wyoming.engine.speech_text import (
    ReplySplitter,
    SentenceSplitter,
    SpeechPart,
    first_phrase,
    spoken,
)


def split_sentences(text: str) -> list[str]:
    splitter = SentenceSplitter()
    sentences = splitter.push(text)
    rest = splitter.flush()
    return [*sentences, rest] if rest else sentences


REPLY = "Dr. Smith arrives at 7:05. The price is 3.50 dollars! Is J. R. R. Tolkien here? No. 5 is."


def test_sentences_end_at_stops_but_not_at_abbreviations_initials_or_decimals():
    assert split_sentences(REPLY) == [
        "Dr. Smith arrives at 7:05.",
        "The price is 3.50 dollars!",
        "Is J. R. R. Tolkien here?",
        "No. 5 is.",
    ]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_text_in_pieces_gives_the_same_sentences_as_whole_text(size):
    splitter = SentenceSplitter()
    sentences = []
    for index in range(0, len(REPLY), size):
        sentences += splitter.push(REPLY[index : index + size])
    rest = splitter.flush()
    assert [*sentences, *([rest] if rest else [])] == split_sentences(REPLY)


def test_a_sentence_is_given_out_only_once_the_next_has_begun():
    splitter = SentenceSplitter()
    assert splitter.push("It costs 3.") == []  # "3." may be "3.5"
    assert splitter.push("5 euros. Th") == ["It costs 3.5 euros."]
    assert splitter.flush() == "Th"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. Smith and Mr. Jones", "Doctor Smith and Mister Jones"),
        ("It is 21°C and 70°F", "It is 21 degrees Celsius and 70 degrees Fahrenheit"),
        ("Battery at 45%", "Battery at 45 percent"),
        ("Wake me at 7:05 or 10:30, not 12:00", "Wake me at 7 oh 5 or 10 30, not 12 o'clock"),
        ("No. 5 please. No. Thanks", "number 5 please. No. Thanks"),
        ("The car does 60 km/h", "The car does 60 kilometers per hour"),
    ],
)
def test_abbreviations_units_and_clock_times_are_written_out(text, expected):
    assert spoken(text) == expected


def test_other_languages_are_left_to_espeak():
    assert spoken("Dr. Müller kommt um 7:05", "de_DE") == "Dr. Müller kommt um 7:05"


@pytest.mark.parametrize(
    ("sentence", "parts"),
    [
        ("The living room lights are now on.", ("The living room lights", "are now on.")),
        ("Good night, all the lights are off.", ("Good night,", "all the lights are off.")),
        ("I have set a timer for ten minutes.", ("I have set a timer", "for ten minutes.")),
        ("Your next meeting starts at two.", ("Your next meeting starts", "at two.")),
        ("Turn it off.", None),  # too short to cut
        ("Please remember the umbrella tomorrow morning.", None),  # nowhere natural to cut
    ],
)
def test_a_sentence_is_cut_after_its_first_phrase(sentence, parts):
    assert first_phrase(sentence) == parts


@pytest.mark.parametrize("size", [1, 3, 8, 1000])
def test_a_reply_in_pieces_is_spoken_in_the_same_parts_and_its_first_phrase_early(size):
    reply = "The living room lights are now on. It is 21°C inside. Anything else?"
    whole = ReplySplitter()
    expected = [*whole.push(reply), *whole.flush()]
    assert expected[:2] == [
        SpeechPart("The living room lights", False, True, opens=True),
        SpeechPart("are now on.", False, False),
    ]
    assert [p.pause_before for p in expected[2:]] == [True, True]
    streamed, splitter, head_at = [], ReplySplitter(), None
    for index in range(0, len(reply), size):
        streamed += splitter.push(reply[index : index + size])
        if head_at is None and streamed:
            head_at = index + size
    assert [*streamed, *splitter.flush()] == expected
    if size < len(reply):  # the first phrase is out before its sentence has ended
        assert head_at is not None and head_at < reply.index(".") + 1
