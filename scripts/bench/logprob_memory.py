"""Peak memory and time of the learner's log-prob pass with and without scoring only response positions.

The tiny Qwen2.5-VL gets a real-size vocabulary (its embeddings and LM head resized to Qwen2.5-VL's 151,936 entries),
then ``VLMPolicy.log_prob`` runs with entropy, forward and backward, on a batch of image prompts with short responses:

- ``response``: a :class:`~mmrl.types.Batch` (what the learner passes): the LM head runs from the first response
  column on (``logits_to_keep``);
- ``full``: the same ids as bare model inputs: every position is scored, as before this optimisation.

Each variant runs in its own subprocess (peak RSS is per process, ``ru_maxrss``); the baseline is the same process's
RSS after building its inputs, so the figure is what the pass itself adds.

Usage:
    python scripts/bench/logprob_memory.py --image 448 --response 64 --batch 8 --out runs/bench/logprob_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

QWEN_VOCAB = 151_936  # Qwen2.5-VL's vocabulary size


def worker(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from mmrl.models import load_policy
    from mmrl.trainer.loop import peak_rss_mib
    from mmrl.types import Batch

    torch.set_num_threads(1)
    policy = load_policy(args.model_dir, device="cpu", max_pixels=args.image * args.image)
    policy.model.resize_token_embeddings(QWEN_VOCAB, mean_resizing=False)  # new rows: plain random init
    rng = np.random.default_rng(0)
    text_ids = policy.tokenizer("<answer>There are three red squares</answer>", add_special_tokens=False)["input_ids"]
    seqs, masks, vision = [], [], []
    for _ in range(args.batch):
        conv = policy.conversation()
        conv.add_user("How many shapes are there?", [rng.integers(0, 256, (args.image, args.image, 3), dtype=np.uint8)])
        response = rng.choice(text_ids, args.response).tolist()
        seqs.append(conv.ids + response)
        masks.append([0] * len(conv.ids) + [1] * args.response)
        vision.append(conv.vision)
    inputs, mask = policy.make_inputs(seqs, masks, vision)
    B = len(seqs)
    batch = Batch(inputs, mask, torch.zeros_like(mask), torch.zeros(B), torch.zeros(B), torch.zeros(B).long())
    target = batch if args.variant == "response" else inputs
    base = peak_rss_mib()
    start = time.perf_counter()
    logp, m, entropy = policy.log_prob(target, with_entropy=True)
    ((logp * mask).sum() + (entropy * mask).sum()).backward()
    seconds = time.perf_counter() - start
    return {"variant": args.variant, "seconds": seconds, "added_peak_mib": peak_rss_mib() - base,
            "seq_len": int(inputs["input_ids"].shape[1]), "response_tokens": args.response, "batch": B}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", type=int, default=448, help="image side in pixels (448 -> 256 visual tokens)")
    p.add_argument("--response", type=int, default=64, help="response tokens per sequence")
    p.add_argument("--batch", type=int, default=8, help="sequences per pass")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--model-dir", default=None, help="tiny checkpoint (built in a temp dir when absent)")
    p.add_argument("--variant", choices=("response", "full"), help=argparse.SUPPRESS)  # worker mode
    args = p.parse_args()
    if args.variant:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if model_dir is None:
            from mmrl.models.tiny import build_tiny_qwen2_5_vl

            model_dir = str(build_tiny_qwen2_5_vl(Path(tmp) / "tiny"))
        results = []
        for variant in ("response", "full"):
            cmd = [sys.executable, __file__, "--variant", variant, "--model-dir", model_dir, "--image", str(args.image),
                   "--response", str(args.response), "--batch", str(args.batch)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| scored positions | sequence length | peak memory added (MiB) | forward + backward (s) |")
    print("|---|---|---|---|")
    for r in results:
        what = f"responses only ({r['response_tokens']} per sequence)" if r["variant"] == "response" else "every position"
        print(f"| {what} | {r['seq_len']} | {r['added_peak_mib']:.0f} | {r['seconds']:.2f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
