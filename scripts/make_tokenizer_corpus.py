"""Regenerate assets/tokenizer_corpus.txt, the text the tiny models' BPE tokenizer is trained on.

It mixes prompts and reference completions sampled from the envs (so their words are few tokens), answer formats the
rewards parse (tags, boxed, JSON boxes and actions, Qwen box tokens), numbers 0-1000 and a little plain prose.

    python scripts/make_tokenizer_corpus.py
"""

from __future__ import annotations

import random
from pathlib import Path

import envs

OUT = Path(__file__).resolve().parents[1] / "assets" / "tokenizer_corpus.txt"
SHAPES = ["circle", "square", "triangle", "shape", "shapes", "object", "objects", "circles", "squares", "triangles"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "gray", "colour", "color"]
PROSE = """The quick brown fox jumps over the lazy dog. A vision language model answers questions about images and video.
The agent looks at the screen, thinks step by step, and then acts. The robot picks up the cube and places it on the target.
Question: what is shown in the image? Options: (A) a cat (B) a dog (C) a bird (D) a car. The answer is (B).
You are a helpful assistant. Please answer the question. The image shows several coloured shapes on a white background.
Scroll down, press enter, go back, open the menu, close the window, select the option, drag the slider.
Solve the problem: 12 + 7 = 19, 3 * 4 = 12, 10 / 2 = 5, the total is 42. Therefore the final answer is \\boxed{42}."""


def env_lines(r: random.Random) -> list[str]:
    lines = []
    for difficulty in (1, 2, 3):
        env = envs.make("synthetic_vqa", task="mixed", difficulty=difficulty)
        for _ in range(300):
            obs, info = env.reset(seed=r.randrange(2**31))
            lines += [obs["text"], info["solution"]]
    return lines


def format_lines(r: random.Random) -> list[str]:
    lines = []
    for _ in range(200):
        x1, y1 = r.randint(0, 999), r.randint(0, 999)
        x2, y2 = x1 + r.randint(1, 300), y1 + r.randint(1, 300)
        lines += [
            f"<answer>[{x1}, {y1}, {x2}, {y2}]</answer>",
            f'{{"bbox_2d": [{x1}, {y1}, {x2}, {y2}], "label": "{r.choice(SHAPES)}"}}',
            f'{{"action": "click", "point": [{x1}, {y1}]}} {{"action": "type", "text": "{r.choice(COLOURS)}"}}',
            f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|> \\boxed{{{r.randint(0, 99)}}} \\frac{{1}}{{2}}",
        ]
    return lines


def main() -> None:
    r = random.Random(0)
    lines = env_lines(r) + format_lines(r) + PROSE.splitlines() * 20 + [str(d) for d in range(1001)]
    r.shuffle(lines)
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(lines)} lines to {OUT}")


if __name__ == "__main__":
    main()
