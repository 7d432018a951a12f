"""The GUI action grammar: round trips, the JSON form, every malformed text an ActionParseError, hostile text in time.

Expected actions are written out by hand (not produced by the parser); the round trip is checked on random actions
drawn by hypothesis, whose strings include quotes, backslashes, newlines and non-ASCII characters.
"""

from __future__ import annotations

import doctest
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs.gui.actions as actions_module
from envs.gui.actions import KEYS, ActionParseError, GuiAction, format_action, parse_action

BUDGET_S = 0.05  # complexity guard (see tests/rewards/test_rewards_hostile_timing.py): linear parsing takes ~5 ms
TRIES = 3

VALID: list[tuple[str, GuiAction]] = [
    ("click(12, 30)", GuiAction("click", x=12.0, y=30.0)),
    ("click(12.5,-3)", GuiAction("click", x=12.5, y=-3.0)),
    ("  Click ( .5 , 1e2 )\n", GuiAction("click", x=0.5, y=100.0)),
    ("<think>the Save button is top left</think><answer>click(7, 8)</answer>", GuiAction("click", x=7.0, y=8.0)),
    ('type("hello world")', GuiAction("type", text="hello world")),
    ('type ( "say \\"hi\\" \\\\o/" )', GuiAction("type", text='say "hi" \\o/')),
    ('type("")', GuiAction("type", text="")),
    ('type("two\nlines")', GuiAction("type", text="two\nlines")),
    ('press("Enter")', GuiAction("press", key="Enter")),
    ('press("return")', GuiAction("press", key="Enter")),
    ("press(tab)", GuiAction("press", key="Tab")),
    ('press("arrowdown")', GuiAction("press", key="ArrowDown")),
    ('press("Esc")', GuiAction("press", key="Escape")),
    ("scroll(0, 100)", GuiAction("scroll", dx=0.0, dy=100.0)),
    ("scroll(-40.5, +2)", GuiAction("scroll", dx=-40.5, dy=2.0)),
]

JSON_FORMS: list[tuple[str, GuiAction]] = [
    ('{"action": "click", "point": [10, 20]}', GuiAction("click", x=10.0, y=20.0)),
    ('{"action": "click", "coordinate": [10.5, 20]}', GuiAction("click", x=10.5, y=20.0)),
    ('{"action": "tap", "bbox": [0, 0, 10, 20]}', GuiAction("click", x=5.0, y=10.0)),  # a box: its centre
    ("[{'action': 'click', 'point_2d': [3, 4]}]", GuiAction("click", x=3.0, y=4.0)),  # GUI-R1 list, Python quotes
    ('<answer>{"action": "type", "text": "a \\"b\\""}</answer>', GuiAction("type", text='a "b"')),
    ('{"action": "input_text", "input_text": "x"}', GuiAction("type", text="x")),
    ('{"action": "press", "key": "enter"}', GuiAction("press", key="Enter")),
    ('{"action": "key", "key": "Backspace"}', GuiAction("press", key="Backspace")),
    ('{"action": "scroll", "dx": 0, "dy": -30}', GuiAction("scroll", dx=0.0, dy=-30.0)),
    ('{"action": "scroll", "direction": "down"}', GuiAction("scroll", dx=0.0, dy=actions_module.SCROLL_STEP)),
    ('{"action": "scroll", "direction": "left"}', GuiAction("scroll", dx=-actions_module.SCROLL_STEP, dy=0.0)),
    ('```json\n{"action": "click", "point": [1, 2]}\n```', GuiAction("click", x=1.0, y=2.0)),
]

MALFORMED = [
    "",
    "   \n ",
    "hello",
    "click",
    "click()",
    "click(1)",
    "click(1, 2, 3)",
    "click(1 2)",
    "click(x, y)",
    "click(1, 2) and then type",
    "I will click(1, 2)",
    "click(1,, 2)",
    "click(nan, 1)",
    "click(inf, 1)",
    "click(1e999, 2)",
    "click(" + "1" * 31 + ", 2)",
    "click[1, 2]",
    "double_click(1, 2)",
    "type()",
    "type(hello)",
    "type('single quotes')",
    'type("unclosed)',
    'type("bad escape \\n")',
    'type("a" "b")',
    'type("a") extra',
    'press("F13")',
    'press("")',
    "press(1)",
    "scroll(1)",
    "scroll(down)",
    "<answer>click(1, 2)",
    "click(1, 2)</answer>",
    "<answer></answer>",
    '{"action": "click"}',
    '{"action": "click", "point": [1]}',
    '{"action": "type"}',
    '{"action": "press", "key": "hyperspace"}',
    '{"action": "scroll", "direction": "sideways"}',
    '{"action": "drag", "start_point": [1, 2]}',
    '[{"action": "click", "point": [1, 2]}, {"action": "click", "point": [3, 4]}]',
    '{"action": "click", "point": [NaN, 1]}',
    "[1, 2]",
    "{not json",
]


@pytest.mark.parametrize(("text", "want"), VALID + JSON_FORMS, ids=[t for t, _ in VALID + JSON_FORMS])
def test_parse(text: str, want: GuiAction) -> None:
    assert parse_action(text) == want


@pytest.mark.parametrize(("text", "want"), VALID + JSON_FORMS, ids=[t for t, _ in VALID + JSON_FORMS])
def test_tagged_and_untagged_agree(text: str, want: GuiAction) -> None:
    if "<answer>" not in text:
        assert parse_action(f"<think>plan</think>\n<answer>\n{text}\n</answer>") == want


@pytest.mark.parametrize("text", MALFORMED)
def test_malformed_is_a_one_line_parse_error(text: str) -> None:
    with pytest.raises(ActionParseError) as err:
        parse_action(text)
    msg = str(err.value)
    assert msg and "\n" not in msg and len(msg) < 200


def test_non_text_is_a_parse_error() -> None:
    for value in (None, 3, b"click(1, 2)", ["click(1, 2)"]):
        with pytest.raises(ActionParseError):
            parse_action(value)  # type: ignore[arg-type]


CANONICAL = [
    (GuiAction("click", x=12.0, y=30.0), "click(12, 30)"),
    (GuiAction("click", x=0.25, y=-7.5), "click(0.25, -7.5)"),
    (GuiAction("type", text='a "q" \\ b'), 'type("a \\"q\\" \\\\ b")'),
    (GuiAction("press", key="PageDown"), 'press("PageDown")'),
    (GuiAction("scroll", dx=0.0, dy=-100.0), "scroll(0, -100)"),
]


@pytest.mark.parametrize(("action", "text"), CANONICAL, ids=[t for _, t in CANONICAL])
def test_format_is_the_canonical_text(action: GuiAction, text: str) -> None:
    assert format_action(action) == text


_finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30)
_actions = st.one_of(
    st.builds(lambda x, y: GuiAction("click", x=x, y=y), _finite, _finite),
    st.builds(lambda s: GuiAction("type", text=s), st.text(max_size=40)),
    st.builds(lambda k: GuiAction("press", key=k), st.sampled_from(KEYS)),
    st.builds(lambda x, y: GuiAction("scroll", dx=x, dy=y), _finite, _finite),
)


@settings(max_examples=300, deadline=None)
@given(_actions)
def test_round_trip(action: GuiAction) -> None:
    text = format_action(action)
    assert parse_action(text) == action
    assert parse_action(f"<answer>{text}</answer>") == action


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_arbitrary_text_parses_or_raises_the_parse_error(text: str) -> None:
    try:
        action = parse_action(text)
    except ActionParseError:
        return
    assert action.kind in actions_module.KINDS


def test_invalid_actions_cannot_be_built() -> None:
    with pytest.raises(ValueError):
        GuiAction("drag", x=1.0, y=2.0)
    with pytest.raises(ValueError):
        GuiAction("click", x=1.0)


HOSTILE = {
    "100k spaces": " " * 100_000,
    "50k nested parens": "(" * 50_000 + ")" * 50_000,
    "click + 50k parens": "click" + "(" * 50_000,
    "click( + 100k spaces": "click(" + " " * 100_000,
    "click + 100k spaces + (": "click" + " " * 100_000 + "(1, 2",
    "click(1, + 100k digits": "click(1, " + "9" * 100_000 + ")",
    "unclosed quote, 100k chars": 'type("' + "a" * 100_000,
    "unclosed quote, 50k escapes": 'type("' + '\\"' * 50_000,
    "quote + 100k backslashes": 'type("' + "\\" * 100_001 + '")',
    "type( + 100k spaces": "type(" + " " * 100_000,
    "press + 100k letters": "press(" + "a" * 100_000,
    "50k [": "[" * 50_000,
    "50k {": "{" * 50_000,
    "tagged 50k [": "<answer>" + "[" * 50_000 + "</answer>",
    "50k open tags": "<answer>" * 12_000 + "click(1, 2)",
    "nested JSON objects": '{"action": ' * 20_000,
    "20k clicks": "click(1, 2)" * 20_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_text_is_rejected_quickly(text: str) -> None:
    best = float("inf")
    for _ in range(TRIES):
        start = time.perf_counter()
        with pytest.raises(ActionParseError):
            parse_action(text)
        best = min(best, time.perf_counter() - start)
        if best < BUDGET_S or best > 10 * BUDGET_S:
            break
    assert best < BUDGET_S, f"{best * 1000:.1f} ms"


def test_long_valid_text_is_parsed_quickly() -> None:
    text = "x" * 100_000 + 'q\\"' * 1000
    start = time.perf_counter()
    assert parse_action(format_action(GuiAction("type", text=text))).text == text
    assert time.perf_counter() - start < 10 * BUDGET_S


def test_doctests() -> None:
    assert doctest.testmod(actions_module, raise_on_error=True).attempted >= 2
