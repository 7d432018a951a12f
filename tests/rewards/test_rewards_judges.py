"""Judges: generative judge parsing, prompts and batching (scripted engines and the tiny VLM through
``mmrl.policies.vlm.judge.PolicyEngine``), Math-Shepherd step scores (``mmrl.policies.vlm.judge.VLMStepScorer``) against
one forward pass per prefix, process-reward aggregation and splitting, fuzzing, registration, and the import rule:
``rewards`` never imports ``mmrl.policies`` (nor torch)."""

from __future__ import annotations

import ast
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from mmrl.policies.vlm.chat import VISION_SPECIAL_TOKENS
from mmrl.policies.vlm.judge import PolicyEngine, VLMStepScorer
from rewards import GenerativeJudge, ProcessRewardJudge, register_judge, registry
from rewards.judges import parse_score, parse_verdict, reasoning_text, split_steps

FUZZ = settings(max_examples=1_000, deadline=None, database=None, suppress_health_check=list(HealthCheck))


class ScriptedEngine:
    """A fake judge engine: replies from a fixed list (cycled), recording every call's prompts and images."""

    def __init__(self, replies: list[object]) -> None:
        self.replies = replies
        self.calls: list[tuple[list[str], list[list[object]]]] = []

    def __call__(self, prompts: list[str], images: list[list[object]]) -> list[object]:
        self.calls.append((list(prompts), list(images)))
        start = sum(len(p) for p, _ in self.calls[:-1])
        return [self.replies[(start + k) % len(self.replies)] for k in range(len(prompts))]


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (56, 56, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------------------------
# GenerativeJudge with a scripted engine
# ---------------------------------------------------------------------------------------------------------------------

SCORE_CASES = [
    ("<score>7</score>", 0.7),
    ("<score> 10 </score>", 1.0),
    ("<score>0</score>", 0.0),
    ("<score>2.5</score>", 0.25),
    ("Score: 11", 0.0),  # out of range
    ("<score>-1</score>", 0.0),
    ("Score: 7/10", 0.7),
    ("Score: 7/5", 0.0),  # "out of 5" is not this judge's range
    ("The first score is 3. **Final score:** 6", 0.6),  # the last one counts
    ("<score>4</score> then Score: 9", 0.4),  # a tag wins over the phrase
    ("<score>seven</score> Score: 9", 0.0),  # an unparseable tag is not rescued by the phrase
    ("nan", 0.0),
    ("<score>nan</score>", 0.0),
    ("Score: inf", 0.0),
    ("", 0.0),
    ("1e309", 0.0),
    ("<score>1e309</score>", 0.0),
    ("Score: 1e1", 0.0),  # exponents are not scores
    ("<score>\u0667</score>", 0.7),  # Arabic-Indic seven
    ("Score: \uff18", 0.8),  # full-width eight
    ("x" * 100_000 + "<score>5</score>", 0.5),
    ("<score>" + "9" * 100_000 + "</score>", 0.0),
    ("Score: " * 20_000, 0.0),
    (None, 0.0),
]


@pytest.mark.parametrize(("reply", "expected"), SCORE_CASES)
def test_score_parsing(reply: object, expected: float) -> None:
    judge = GenerativeJudge(ScriptedEngine([reply]))
    [value] = judge(["<answer>3</answer>"], question=["How many?"], answer=["3"])
    assert isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0
    assert value == pytest.approx(expected, abs=1e-12)


def test_score_range_is_normalised() -> None:
    assert parse_score("<score>3</score>", (1, 5)) == 0.5
    assert parse_score("<score>0</score>", (1, 5)) == 0.0  # below range
    assert parse_score("Score: 5/5", (1, 5)) == 1.0
    with pytest.raises(ValueError, match="score_range"):
        GenerativeJudge(ScriptedEngine([""]), score_range=(5, 5))


def test_prompt_holds_question_reference_candidate_and_images_pass_through() -> None:
    engine = ScriptedEngine(["<score>8</score>"])
    judge = GenerativeJudge(engine, batch_size=2)
    imgs = [[_image(0)], [], [_image(1), _image(2)], [_image(3)], [_image(4)]]
    completions = [f"<think>secret-{i}</think><answer>cand-{i}</answer>" for i in range(5)]
    completions[3] = "<think>x</think><answer></answer>"  # empty answer: never sent, scores 0
    out = judge(
        completions,
        question=[f"question-{i}" for i in range(5)],
        answer=[f"ref-{i}" for i in range(5)],
        images=imgs,
    )
    assert out == [0.8, 0.8, 0.8, 0.0, 0.8]
    assert [len(p) for p, _ in engine.calls] == [2, 2]  # one engine call per chunk of batch_size
    sent = [i for i in range(5) if i != 3]
    prompts = [p for call, _ in engine.calls for p in call]
    images = [im for _, call in engine.calls for im in call]
    for i, prompt, row in zip(sent, prompts, images):
        assert f"question-{i}" in prompt and f"ref-{i}" in prompt and f"cand-{i}" in prompt
        assert "secret" not in prompt  # candidate="answer": the extracted answer, not the reasoning
        assert len(row) == len(imgs[i]) and all(a is b for a, b in zip(row, imgs[i]))


def test_candidate_completion_mode_and_defaults() -> None:
    engine = ScriptedEngine(["<score>5</score>"])
    judge = GenerativeJudge(engine, candidate="completion", max_chars=20)
    long = "<think>" + "r" * 100 + "</think><answer>42</answer>"
    assert judge([long], prompt=[[{"role": "user", "content": "conv question"}]]) == [0.5]
    [prompt] = engine.calls[0][0]
    assert "conv question" in prompt  # TRL conversational prompt, no reference column
    assert "Reference answer: (none)" in prompt
    assert long[-20:] in prompt and long[-21:] not in prompt  # the last max_chars characters only
    assert engine.calls[0][1] == [[]]  # no images column: no images
    with pytest.raises(ValueError, match="unknown field"):
        GenerativeJudge(engine, template="{question} {nope}")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("<verdict>same</verdict>", 1.0),
        ("<verdict>Different</verdict>", 0.0),
        ("Reasoning...\nVerdict: **Same.**", 1.0),
        ("Same", 1.0),
        ("not the same", 0.0),
        ("same different", 0.0),
        ("<verdict>same</verdict> <verdict>different</verdict>", 0.0),  # the last verdict counts
        ("", 0.0),
        ("x" * 100_000, 0.0),
    ],
)
def test_compare_mode_verdicts(reply: str, expected: float) -> None:
    engine = ScriptedEngine([reply])
    judge = GenerativeJudge(engine, mode="compare")
    assert judge(["<answer>4</answer>"], question=["2+2?"], answer=["4"]) == [expected]
    [prompt] = engine.calls[0][0]
    assert "Reference answer: 4" in prompt and "Candidate answer: 4" in prompt and "<verdict>same" in prompt


def test_compare_mode_custom_verdicts_and_missing_reference() -> None:
    judge = GenerativeJudge(ScriptedEngine(["A", "(B)", "C"]), mode="compare", verdicts={"A": 1.0, "B": 0.0})
    assert judge(["x", "y", "z"], answer=["r"] * 3) == [1.0, 0.0, 0.0]
    assert parse_verdict("<verdict>A</verdict>", {"a": 1.0}) == 1.0
    with pytest.raises(ValueError, match="ground-truth"):
        judge(["x"], question=["q"])  # compare needs a reference: a dataset bug, not model text
    with pytest.raises(ValueError, match="verdict values"):
        GenerativeJudge(ScriptedEngine([""]), mode="compare", verdicts={"same": 2.0})


def test_engine_reply_count_is_checked() -> None:
    judge = GenerativeJudge(lambda prompts, images: ["<score>1</score>"])
    with pytest.raises(ValueError, match="2 prompts"):
        judge(["a", "b"])


# ---------------------------------------------------------------------------------------------------------------------
# GenerativeJudge through the tiny VLM policy
# ---------------------------------------------------------------------------------------------------------------------


class GenerateSpy:
    """Wraps ``policy.generate``: records prompts and generations; optionally forces greedy decoding to ``script``."""

    def __init__(self, policy, script: list[int] | None = None) -> None:
        self.policy, self.original, self.script = policy, policy.generate, script
        self.prompts: list[list[list[int]]] = []
        self.generations: list[list] = []
        self.step = 0

    def boost(self, module, args, output):
        output[:, -1, self.script[min(self.step, len(self.script) - 1)]] += 1e4
        self.step += 1
        return output

    def __call__(self, prompts, vision, params):
        self.prompts.append([list(p) for p in prompts])
        self.step = 0
        handle = self.policy.model.lm_head.register_forward_hook(self.boost) if self.script else None
        try:
            gens = self.original(prompts, vision, params)
        finally:
            if handle is not None:
                handle.remove()
        self.generations.append(gens)
        return gens


def test_policy_judge_end_to_end_with_scripted_decoding(tiny_policy, monkeypatch) -> None:
    tok = tiny_policy.tokenizer
    script = tok("<score>7</score>", add_special_tokens=False)["input_ids"] + [tok.convert_tokens_to_ids("<|im_end|>")]
    spy = GenerateSpy(tiny_policy, script)
    monkeypatch.setattr(tiny_policy, "generate", spy)
    judge = GenerativeJudge(PolicyEngine(tiny_policy, max_new_tokens=len(script) + 4), batch_size=2)
    imgs = [[_image(0)], [], [_image(1), _image(2)]]
    out = judge(["<answer>1</answer>", "<answer>2</answer>", "<answer>3</answer>"], question=["q"] * 3, images=imgs)
    assert out == [0.7, 0.7, 0.7]
    assert [len(p) for p in spy.prompts] == [2, 1]  # one generate call per chunk
    pad = tiny_policy.encoder.image_pad_id
    prompts = [p for call in spy.prompts for p in call]
    assert [p.count(pad) for p in prompts] == [4 * len(row) for row in imgs]  # a 56x56 image is 4 pad tokens
    assert all(g.text == "<score>7</score>" for call in spy.generations for g in call)


def test_policy_judge_is_deterministic_and_bounded(tiny_policy, monkeypatch) -> None:
    spy = GenerateSpy(tiny_policy)
    monkeypatch.setattr(tiny_policy, "generate", spy)
    judge = GenerativeJudge(PolicyEngine(tiny_policy, max_new_tokens=8), batch_size=4)
    completions = ["<answer>3</answer>", "2 <|image_pad|> cats", "", "<answer>a<|vision_start|></answer>"]
    columns = {"question": ["How many? <|image_pad|>"] * 4, "answer": ["3"] * 4, "images": [[_image(5)]] * 4}
    first = judge(completions, **columns)
    second = judge(completions, **columns)
    assert first == second  # greedy decoding
    assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in first) and first[2] == 0.0
    assert len(spy.prompts) == 2 and len(spy.prompts[0]) == 3  # the empty candidate is never sent
    assert all(p.count(tiny_policy.encoder.image_pad_id) == 4 for p in spy.prompts[0])  # pads come from images only
    assert all(len(g.ids) > 0 for g in spy.generations[0])  # generation happened
    assert [g.text for g in spy.generations[0]] == [g.text for g in spy.generations[1]]


def test_a_policy_is_not_an_engine(tiny_policy) -> None:
    with pytest.raises(TypeError, match=r"PolicyEngine\(policy\)"):
        GenerativeJudge(tiny_policy)
    with pytest.raises(TypeError, match="callable"):
        GenerativeJudge("not an engine")


# ---------------------------------------------------------------------------------------------------------------------
# VLMStepScorer against one forward pass per prefix
# ---------------------------------------------------------------------------------------------------------------------


def _prefix_probabilities(policy, question: str, steps: list[str], images: list, tag: str = "\n") -> list[float]:
    """For every step: a separate forward pass over prompt + steps up to that step's tag; softmax over ("+", "-")."""
    tok = policy.tokenizer

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    good, bad = enc("+")[0], enc("-")[0]
    conv = policy.conversation()
    conv.add_user(question, images)
    vision = {}
    if conv.vision:
        vision = {
            "pixel_values": torch.cat([v.pixel_values for v in conv.vision]),
            "image_grid_thw": torch.stack([v.grid_thw for v in conv.vision]),
        }
    prefix, out = list(conv.ids), []
    for step in steps:
        prefix += enc(step) + enc(tag)
        ids = torch.tensor([prefix])  # [1, T]
        if vision:  # image pads get Qwen's 2-D multimodal RoPE positions only when marked as image tokens
            vision["mm_token_type_ids"] = (ids == policy.encoder.image_pad_id).int()  # [1, T]
        with torch.no_grad():
            last = policy.model(input_ids=ids, **vision).logits[0, -1].double()  # [V]
        lg, lb = float(last[good]), float(last[bad])
        m = max(lg, lb)
        out.append(math.exp(lg - m) / (math.exp(lg - m) + math.exp(lb - m)))
    return out


STEPS = ["Step 1: I count the red squares.", "Step 2: there are two.", "Step 3: plus one circle", "so 3."]


@pytest.mark.parametrize("n_images", [0, 1, 2])
def test_step_scorer_matches_prefix_forward_passes(tiny_policy, n_images: int) -> None:
    images = [_image(10 + k) for k in range(n_images)]
    scorer = VLMStepScorer(tiny_policy, step_tag="\n", good="+", bad="-")
    got = scorer("How many shapes?", STEPS, images)
    want = _prefix_probabilities(tiny_policy, "How many shapes?", STEPS, images)
    assert len(got) == len(STEPS)
    assert all(0.0 <= v <= 1.0 for v in got)
    assert got == pytest.approx(want, abs=1e-5)
    assert max(want) - min(want) > 1e-4  # the steps differ, so a misplaced position would be caught


def test_step_scorer_sees_the_image(tiny_policy) -> None:
    scorer = VLMStepScorer(tiny_policy)
    a = scorer("How many shapes?", STEPS, [_image(1)])
    b = scorer("How many shapes?", STEPS, [_image(2)])
    assert max(abs(x - y) for x, y in zip(a, b)) > 1e-7


def test_step_scorer_edge_cases(tiny_policy) -> None:
    scorer = VLMStepScorer(tiny_policy)
    assert scorer("q", [], []) == []
    prompt_len = len(scorer.layout("q", [], [])[0])
    first = tiny_policy.tokenizer("a b c d e", add_special_tokens=False)["input_ids"]
    short = VLMStepScorer(tiny_policy, max_length=prompt_len + len(first) + 2)  # + tag + trailing token
    scores = short("q", ["a b c d e", "f g h"], [])
    assert len(scores) == 2 and scores[1] == 0.0 and 0.0 <= scores[0] <= 1.0  # the step that does not fit: minimum
    with pytest.raises(ValueError, match="one token"):
        VLMStepScorer(tiny_policy, good="+-+-a good label")
    prm = ProcessRewardJudge(scorer, aggregate="min")
    want = _prefix_probabilities(tiny_policy, "How many?", STEPS, [_image(3)])
    completion = "<think>" + "\n".join(STEPS) + "</think><answer>3</answer>"
    assert prm([completion, ""], question=["How many?"] * 2, images=[[_image(3)], []]) == pytest.approx(
        [min(want), 0.0], abs=1e-5
    )


# ---------------------------------------------------------------------------------------------------------------------
# ProcessRewardJudge: aggregation and splitting
# ---------------------------------------------------------------------------------------------------------------------


class FixedScorer:
    """A step scorer returning fixed per-step values (cycled), recording its inputs."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.calls: list[tuple[str, list[str], list]] = []

    def __call__(self, question: str, steps: list[str], images: list) -> list[float]:
        self.calls.append((question, steps, images))
        return [self.values[k % len(self.values)] for k in range(len(steps))]


@pytest.mark.parametrize(
    ("aggregate", "expected"), [("min", 0.5), ("mean", (0.9 + 0.5 + 0.8) / 3), ("last", 0.8), ("product", 0.36)]
)
def test_aggregates_against_hand_numbers(aggregate: str, expected: float) -> None:
    scorer = FixedScorer([0.9, 0.5, 0.8])
    prm = ProcessRewardJudge(scorer, aggregate=aggregate)
    img = _image(0)
    out = prm(
        ["<think>Step 1: a\nStep 2: b\nStep 3: c</think><answer>x</answer>", ""],
        question=["Q", "Q"],
        images=[[img], [img]],
    )
    assert out == pytest.approx([expected, 0.0], abs=1e-12)
    assert len(scorer.calls) == 1  # a completion without steps is not scored
    question, steps, images = scorer.calls[0]
    assert question == "Q" and steps == ["Step 1: a", "Step 2: b", "Step 3: c"] and images[0] is img


def test_step_scores_are_sanitised() -> None:
    prm = ProcessRewardJudge(FixedScorer([0.4, math.nan, math.inf, 1.5, -0.1, 1.0]), aggregate="mean")
    assert prm.step_scores(["a\nb\nc\nd\ne\nf"]) == [[0.4, 0.0, 0.0, 0.0, 0.0, 1.0]]
    with pytest.raises(ValueError, match="3 steps"):
        ProcessRewardJudge(lambda q, s, i: [1.0])(["a\nb\nc"])
    with pytest.raises(ValueError, match="aggregate"):
        ProcessRewardJudge(FixedScorer([1.0]), aggregate="max")


def test_custom_splitter_and_cap() -> None:
    scorer = FixedScorer([1.0])
    prm = ProcessRewardJudge(scorer, split=lambda text: text.split(";"), max_steps=2)
    prm(["a; b ;; c"])
    assert scorer.calls[0][1] == ["a", "b\nc"]


@pytest.mark.parametrize(
    ("text", "mode", "expected"),
    [
        ("Step 1: a\nStep 2: b\nStep 3: c", "auto", ["Step 1: a", "Step 2: b", "Step 3: c"]),
        ("Intro.\nStep 1: a\nmore a\n\nStep 2: b", "auto", ["Intro.", "Step 1: a\nmore a", "Step 2: b"]),
        ("**Step 1:** x\n## Step 2. y\nstep 3) z", "auto", ["**Step 1:** x", "## Step 2. y", "step 3) z"]),
        ("First\nstill first\n\n  \nSecond", "auto", ["First\nstill first", "Second"]),
        ("line1\nline2\n\n", "auto", ["line1", "line2"]),
        ("the step 1: inline\nnext", "auto", ["the step 1: inline", "next"]),
        ("Step 1: only one marker", "auto", ["Step 1: only one marker"]),
        ("single", "auto", ["single"]),
        ("", "auto", []),
        (" \n\n \t", "auto", []),
        ("a\n\nb", "lines", ["a", "b"]),
        ("a\nb", "paragraphs", ["a\nb"]),
        ("Step 1: a\n\nb\nStep 2: c", "steps", ["Step 1: a\n\nb", "Step 2: c"]),
        ("a\r\nb", "lines", ["a", "b"]),
        ("a\r\n\r\nb\r\nc", "paragraphs", ["a", "b\r\nc"]),
    ],
)
def test_split_steps_hand_cases(text: str, mode: str, expected: list[str]) -> None:
    assert split_steps(text, mode) == expected


def test_split_cap_and_reasoning_text() -> None:
    assert split_steps("a\nb\nc\nd", "lines", max_steps=2) == ["a", "b\nc\nd"]
    assert len(split_steps("x\n" * 50_000)) == 64
    assert reasoning_text("<think>Step 1: a</think><answer>3</answer>") == "Step 1: a"
    assert reasoning_text("<think>open ended") == "open ended"
    assert reasoning_text("prompt opened it</think><answer>3</answer>") == "prompt opened it"
    assert reasoning_text("plain text") == "plain text"
    with pytest.raises(ValueError, match="split mode"):
        split_steps("a", "words")


# ---------------------------------------------------------------------------------------------------------------------
# Fuzzing
# ---------------------------------------------------------------------------------------------------------------------

PIECES = [
    "<score>", "</score>", "Score:", "score is ", "**", "7", "11", "-3", "0.5", "/", "10", "1e309", "nan", "inf",
    "\u0667", "\uff18", "<verdict>", "</verdict>", "Verdict:", "same", "different", "<think>", "</think>", "<answer>",
    "</answer>", "Step 1:", "step 22.", "## Step 3)", "\n", "\n\n", "\r\n", " ", "\t", "<|image_pad|>", "9" * 40, "x",
]  # fmt: skip
texts = st.one_of(st.text(max_size=200), st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
unit_or_junk = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 1.0))


def _finite_unit(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and 0.0 <= value <= 1.0


@FUZZ
@given(
    text=texts,
    values=st.lists(unit_or_junk, min_size=1, max_size=5),
    aggregate=st.sampled_from(["min", "mean", "last", "product"]),
)
def test_fuzz_parsers_and_splitter(text: str, values: list[float], aggregate: str) -> None:
    assert _finite_unit(parse_score(text)) and _finite_unit(parse_score(text, (1.0, 5.0)))
    assert parse_verdict(text) in (0.0, 1.0)
    for mode in ("auto", "steps", "paragraphs", "lines"):
        steps = split_steps(text, mode, max_steps=5)
        assert len(steps) <= 5 and all(s and s == s.strip() for s in steps)
        assert "".join("".join(steps).split()) == "".join(text.split())  # nothing but whitespace is lost
    [reward] = ProcessRewardJudge(FixedScorer(values), aggregate=aggregate)([text])
    assert _finite_unit(reward)
    [judged] = GenerativeJudge(ScriptedEngine([text]))([text], answer=["3"])
    assert _finite_unit(judged)


# ---------------------------------------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def registered():
    """Names registered by a test, removed from the registry afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        registry._REGISTRY.pop(name, None)
        registry.RANGES.pop(name, None)


def test_register_judge_in_registry_and_composite(registered) -> None:
    registered += ["_test_judge", "_test_bad_judge"]
    fn = register_judge("_test_judge", GenerativeJudge(ScriptedEngine(["<score>7</score>"])))
    assert rewards.get("_test_judge") is fn and registry.RANGES["_test_judge"] == (0.0, 1.0)
    assert "Range [0, 1]" in (fn.__doc__ or "")
    total, parts = rewards.composite({"_test_judge": 1.0, "accuracy": 1.0})(
        ["<answer>3</answer>", "<answer>4</answer>"], question=["q", "q"], answer=["3", "3"]
    )
    assert total == pytest.approx([1.7, 0.7]) and parts["_test_judge"] == [0.7, 0.7]
    register_judge("_test_bad_judge", lambda completions, **kw: [math.nan, 2.0, -1.0, 0.5])
    assert rewards.get("_test_bad_judge")(["a"] * 4) == [0.0, 0.0, 0.0, 0.5]  # out of bounds -> the minimum
    # a later run's judge replaces an earlier judge of the same name; built-in rewards cannot be shadowed
    again = register_judge("_test_judge", GenerativeJudge(ScriptedEngine(["<score>2</score>"])))
    assert rewards.get("_test_judge") is again and again(["<answer>3</answer>"]) == [0.2]
    with pytest.raises(ValueError, match="taken by a built-in reward"):
        register_judge("accuracy", GenerativeJudge(ScriptedEngine([""])))
    assert rewards.get("accuracy").__name__ == "accuracy"


# ---------------------------------------------------------------------------------------------------------------------
# Imports flow one way: rewards is plain functions, the model side lives in mmrl.policies.vlm.judge
# ---------------------------------------------------------------------------------------------------------------------

REWARDS_DIR = Path(rewards.__file__).parent
POLICY_IMPORT_LINE = re.compile(r"^\s*(?:>>>\s*)?(?:import|from)\s+mmrl\.policies\b", re.M)  # code or doctest line


def test_vision_tokens_are_the_policys() -> None:
    """rewards spells the vision special tokens out (it may not import the policy): they must stay the policy's."""
    assert rewards.VISION_TOKENS == VISION_SPECIAL_TOKENS
    assert rewards.strip_vision_tokens("a" + "b".join(VISION_SPECIAL_TOKENS) + "c") == "abbbbc"


def test_import_rewards_is_light() -> None:
    """A fresh interpreter: ``import rewards`` loads no torch, no transformers and no ``mmrl.policies`` module."""
    code = (
        "import sys, rewards\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers')"
        " or m == 'mmrl.policies' or m.startswith('mmrl.policies.'))\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == ""


def _imported_modules(path: Path) -> list[str]:
    """Every module an ``import`` statement in ``path`` names (lazy, TYPE_CHECKING and ``from x import y`` alike)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def test_rewards_sources_never_import_mmrl_policies() -> None:
    sources = sorted(REWARDS_DIR.rglob("*.py"))
    assert len(sources) > 5
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not POLICY_IMPORT_LINE.search(text), f"{path.name}: {POLICY_IMPORT_LINE.search(text)}"
        assert not [m for m in _imported_modules(path) if m.startswith("mmrl.policies")], path.name
    # the judge module imports nothing from mmrl at all (model judges plug in as callables)
    assert not [m for m in _imported_modules(REWARDS_DIR / "judges.py") if m.split(".")[0] == "mmrl"]
