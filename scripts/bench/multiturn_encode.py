"""Per-turn prompt-encoding cost over a multi-turn visual episode: mmrl's incremental conversation vs re-encoding the
whole history every turn (what a chat-template + processor call over all messages does).

Each turn brings ``--images`` new screenshots of ``--side`` px and a short text; the model's reply is a fixed 16-token
response. mmrl (:class:`mmrl.policies.vlm.chat.Conversation`) processes each turn's new images and tokenizes only the
new template text; the baseline renders the chat template over every message so far, processes every image so far and
tokenizes the whole text, each turn (the prompt that a stateless ``processor(text=..., images=...)`` call builds). Both
produce the same token ids (checked every turn); only the time differs. With ``--window k`` mmrl also builds the
windowed context (the last k images kept) each turn, as a policy with ``model.history_images=k`` does.

    python scripts/bench/multiturn_encode.py --turns 10 --images 1 --side 448 --repeats 3 --out runs/bench/multiturn.json

The image processor is Qwen2.5-VL's with its default pixel range (a 448 x 448 screenshot is 256 visual tokens), over
the tiny model's tokenizer and chat template (built offline with ``--model-dir`` if absent).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np


def encoder(model_dir: Path):
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from mmrl.models.tiny import build_tiny_qwen2_5_vl
    from mmrl.policies.vlm.chat import PromptEncoder

    if not (model_dir / "config.json").exists():
        build_tiny_qwen2_5_vl(model_dir)
    return PromptEncoder(AutoTokenizer.from_pretrained(model_dir), Qwen2VLImageProcessorPil())


def episode(enc, turns: int, images: int, side: int, window: int | None, rng: np.random.Generator) -> dict[str, list[float]]:
    """Seconds per turn for each approach, on one episode."""
    from mmrl.policies.vlm.chat import Conversation, user_message

    conv = Conversation(enc)
    messages: list[dict] = []
    seen: list[np.ndarray] = []
    reply = enc.tokenizer("click(120, 48) then type the name", add_special_tokens=False)["input_ids"][:15]
    reply = reply + [enc.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    out: dict[str, list[float]] = {"mmrl": [], "rerender": []}
    for t in range(turns):
        shots = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(images)]
        text = f"Turn {t}: the form shows {t} errors; fix the next one."
        start = time.perf_counter()
        conv.add_user(text, shots)
        if window is not None:
            conv.context(window)
        out["mmrl"].append(time.perf_counter() - start)
        seen += shots
        messages.append(user_message(text, images))
        start = time.perf_counter()
        full = enc.render(messages, add_generation_prompt=True)
        ids = enc.encode(full, [enc.process_image(im) for im in seen])  # every image so far, every turn
        out["rerender"].append(time.perf_counter() - start)
        if window is None:
            assert ids == conv.ids, f"turn {t}: the two encodings differ"
        conv.add_assistant(reply)
        messages.append({"role": "assistant", "content": enc.tokenizer.decode(reply[:-1], skip_special_tokens=False)})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--images", type=int, default=1, help="new images per turn")
    p.add_argument("--side", type=int, default=448, help="screenshot side in pixels")
    p.add_argument("--window", type=int, default=None, help="also build a history window of this many images")
    p.add_argument("--repeats", type=int, default=3, help="episodes; the median per turn is reported")
    p.add_argument("--model-dir", type=Path, default=Path("runs/tiny-qwen2_5_vl"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    enc = encoder(args.model_dir)
    rng = np.random.default_rng(0)
    runs = [episode(enc, args.turns, args.images, args.side, args.window, rng) for _ in range(args.repeats)]
    result = {
        "turns": args.turns, "images_per_turn": args.images, "side": args.side, "window": args.window,
        **{f"{k}_ms": [round(1000 * statistics.median(r[k][t] for r in runs), 2) for t in range(args.turns)]
           for k in ("mmrl", "rerender")},
    }  # fmt: skip
    for key in ("mmrl", "rerender"):
        ms = result[f"{key}_ms"]
        print(f"{key:9s} ms per turn: first {ms[0]:.1f}  last {ms[-1]:.1f}  total {sum(ms):.1f}   ({' '.join(map(str, ms))})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
