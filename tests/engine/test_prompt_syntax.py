"""AUTOMATIC1111's prompt syntax: weights, escapes, BREAK, editing, alternation, tags, and
how malformed prompts are read (with a warning each)."""

from __future__ import annotations

import pytest

from desktop.engine.prompt_syntax import BREAK, NetworkTag, Piece, extract_tags, parse_prompt


def _weights(text: str, steps: int = 1) -> list[tuple[str, float]]:
    parsed = parse_prompt(text, steps)
    return [(p.text, round(p.weight, 4)) for p in parsed.pieces if not p.brk]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a cat", [("a cat", 1.0)]),
        ("(cat)", [("cat", 1.1)]),
        ("((cat))", [("cat", 1.21)]),
        ("[cat]", [("cat", 0.9091)]),
        ("[[cat]]", [("cat", 0.8264)]),
        ("(cat:1.3)", [("cat", 1.3)]),
        ("(cat: 0.5 )", [("cat", 0.5)]),
        ("(cat:.5)", [("cat", 0.5)]),
        ("((cat:1.5) dog)", [("cat", 1.65), (" dog", 1.1)]),
        ("[(cat:2)]", [("cat", 1.8182)]),
        ("a (b) c", [("a ", 1.0), ("b", 1.1), (" c", 1.0)]),
        (r"\(cat\) \[dog\]", [("(cat) [dog]", 1.0)]),
        (r"a \\ b", [("a \\ b", 1.0)]),
        ("(masterpiece:1.2), best quality", [("masterpiece", 1.2), (", best quality", 1.0)]),
        ("", []),
    ],
)
def test_attention_weights_follow_a1111(text, expected):
    assert _weights(text) == expected
    assert parse_prompt(text).warnings == ()


def test_break_splits_pieces_at_any_depth():
    pieces = parse_prompt("a BREAK b (c BREAK d)").pieces
    assert pieces == (
        Piece("a ", 1.0),
        BREAK,
        Piece(" b ", 1.0),
        Piece("c ", 1.1),
        BREAK,
        Piece(" d", 1.1),
    )
    # Only the upper-case word counts.
    assert not any(p.brk for p in parse_prompt("a break b BREAKFAST").pieces)


def test_prompt_editing_switches_at_a_fraction_or_a_step():
    parsed = parse_prompt("a [cat:dog:0.5] in snow", steps=20)
    assert [(last, pieces[0].text) for last, pieces in parsed.schedule] == [
        (10, "a cat in snow"),
        (20, "a dog in snow"),
    ]
    assert parsed.scheduled
    by_step = parse_prompt("[cat:dog:4]", steps=20).schedule
    assert [last for last, _ in by_step] == [4, 20]
    added = parse_prompt("a house[, snow:0.25]", steps=8).schedule
    assert [(last, p[0].text) for last, p in added] == [(2, "a house"), (8, "a house, snow")]
    removed = parse_prompt("a house[, snow::0.5]", steps=8).schedule
    assert [(last, p[0].text) for last, p in removed] == [(4, "a house, snow"), (8, "a house")]


def test_alternation_takes_the_next_option_every_step():
    parsed = parse_prompt("a [cat|dog|fox]", steps=5)
    texts = [(last, pieces[0].text) for last, pieces in parsed.schedule]
    assert texts == [(1, "a cat"), (2, "a dog"), (3, "a fox"), (4, "a cat"), (5, "a dog")]


def test_weights_inside_editing_and_editing_inside_weights():
    parsed = parse_prompt("([(cat:1.5):dog:0.5])", steps=4)
    first, second = parsed.schedule
    assert [(p.text, round(p.weight, 3)) for p in first[1]] == [("cat", 1.65)]
    assert [(p.text, round(p.weight, 3)) for p in second[1]] == [("dog", 1.1)]


def test_nothing_scheduled_is_one_entry_for_all_steps():
    parsed = parse_prompt("(a) b", steps=30)
    assert len(parsed.schedule) == 1 and parsed.schedule[0][0] == 30 and not parsed.scheduled


def test_lora_tags_are_taken_out_with_their_strengths():
    parsed = parse_prompt("a cat, <lora:detail_tweaker:0.8>, <LORA:two:0.5:0.25> night")
    assert parsed.text == "a cat, ,  night"
    assert "<lora" not in "".join(p.text for p in parsed.pieces).lower()
    assert parsed.tags == (
        NetworkTag("lora", "detail_tweaker", 0.8, 0.8, "<lora:detail_tweaker:0.8>"),
        NetworkTag("lora", "two", 0.5, 0.25, "<LORA:two:0.5:0.25>"),
    )
    _, tags, _ = extract_tags("<lora:x:unet=0.3:te=0.7>")
    assert (tags[0].te, tags[0].unet) == (0.7, 0.3)
    _, tags, _ = extract_tags("<lora:plain>")
    assert (tags[0].name, tags[0].te, tags[0].unet) == ("plain", 1.0, 1.0)


@pytest.mark.parametrize(
    ("text", "expected", "warning"),
    [
        ("((cat", [("cat", 1.21)], "never closed"),
        ("(cat:abc)", [("cat:abc", 1.1)], "“abc” is not a number"),
        ("cat) dog", [("cat) dog", 1.0)], "closes nothing"),
        ("a] b", [("a] b", 1.0)], "closes nothing"),
        ("[cat:dog]", [("cat:dog", 0.9091)], "neither prompt editing"),
        ("cat AND dog", [("cat AND dog", 1.0)], "“AND”"),
        ("<lora:x:strong>", [], "“strong” is not a number"),
    ],
)
def test_malformed_prompts_are_read_like_a1111_with_a_warning(text, expected, warning):
    parsed = parse_prompt(text)
    assert _weights(text) == expected
    assert any(warning in w for w in parsed.warnings), parsed.warnings


def test_ctrl_up_and_down_change_the_weight_of_the_selection():
    from desktop.engine.prompt_syntax import adjust_weight

    text, start, end = adjust_weight("a red circle", 2, 5, 0.1)
    assert (text, text[start:end]) == ("a (red:1.1) circle", "red")
    text, start, end = adjust_weight(text, start, end, 0.1)
    assert text == "a (red:1.2) circle"
    # Selecting the whole group works too; back at 1.0 the brackets go.
    text, start, end = adjust_weight(text, start - 1, end + 5, -0.2)
    assert (text, text[start:end]) == ("a red circle", "red")
    # No selection: the word under the cursor.
    assert adjust_weight("a red circle", 8, 8, -0.1)[0] == "a red (circle:0.9)"
    assert adjust_weight("(a:0.95) b", 1, 2, 0.05)[0] == "a b"
    # Nothing to weight at the cursor: unchanged.
    assert adjust_weight("a , b", 2, 2, 0.1)[0] == "a , b"
    # The result parses to the weight shown.
    assert parse_prompt(adjust_weight("x y", 0, 1, 0.3)[0]).pieces[0] == Piece("x", 1.3)
