"""Cost of recomputing an action chunk's log-prob (the learner's pass) against sampling the chunk (the actor's chain).

For each sampler (Flow-Noise, Flow-SDE, DDPM) the policy is built through its family exactly as ``mmrl train`` builds
it, for a state observation and an action chunk ``[H, A]``; a batch of ``--batch`` observations is then

- **sampled**: ``policy.act`` (encode, the K-step denoising chain: K sequential expert calls);
- **recomputed**: ``policy.log_prob`` on the learner view of the same steps (encode, then what the estimator needs:
  Flow-Noise and DDPM every recorded transition in one batched expert call over ``N * K`` rows, Flow-SDE only the one
  stochastic step of each chain), forward only (as the old log-prob and the ratio's numerator are computed) and
  forward + backward (one learner minibatch).
 The recomputed log-probs are checked equal to the sampled ones
(1e-5) before anything is timed, and the expert's calls are counted (calls and rows each way: a figure that does not
depend on the machine's load). The figure is ``recompute / sample`` (goal: <= 1.3), the median of ``--repeats``
alternating timings (so that load from other processes hits both alike).

Usage:
    python scripts/bench/flow_logprob_cost.py --out runs/bench/flow_logprob_cost.json
    python scripts/bench/flow_logprob_cost.py --batch 8 --repeats 3 --sizes 128   # smoke test
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from mmrl.config import load_config
from mmrl.policies import base
from mmrl.types import Step, Trajectory

SAMPLERS = {  # name -> policy overrides
    "flow_noise": ["policy.kind=flow", "policy.kwargs.estimator=flow_noise"],
    "flow_sde": ["policy.kind=flow", "policy.kwargs.estimator=flow_sde"],
    "ddpm": ["policy.kind=diffusion", "policy.kwargs.sampler=ddpm"],
}


def build(sampler: str, hidden: int, steps: int, chunk: int, state_dim: int, action_dim: int) -> Any:
    """The sampler's policy, built by its family, for a ``Box(state_dim)`` observation and a ``[chunk, action_dim]``
    action chunk in ``[-1, 1]``."""
    overrides = [*SAMPLERS[sampler], f"policy.kwargs.chunk={chunk}", f"policy.kwargs.steps={steps}",
                 f"policy.kwargs.hidden=[{hidden},{hidden}]", "policy.kwargs.granularity=action"]  # fmt: skip
    cfg = load_config(None, overrides)
    obs_space = gym.spaces.Box(-1.0, 1.0, (state_dim,), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (chunk, action_dim), np.float32)
    return base.build(cfg, obs_space, act_space)


def expert_calls(policy: Any, fn: Any) -> tuple[int, int]:
    """``(calls, rows)`` of the action expert while ``fn()`` runs."""
    seen = [0, 0]

    def hook(module: Any, args: Any) -> None:
        seen[0] += 1
        seen[1] += int(args[0].shape[0])

    handle = policy.model.sampler.expert.register_forward_pre_hook(hook)
    try:
        fn()
    finally:
        handle.remove()
    return seen[0], seen[1]


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(policy: Any, batch: int, state_dim: int, repeats: int, seed: int) -> dict[str, float]:
    """Median seconds of one sample, one forward recompute and one forward + backward recompute of ``batch`` steps."""
    torch.manual_seed(seed)
    observations = list(np.random.default_rng(seed).uniform(-1, 1, (batch, state_dim)).astype(np.float32))
    params = base.SamplingParams(temperature=1.0)
    actions = policy.act(observations, params)
    trajs = [Trajectory([Step(o, a.env_action, a.logp, a.record)], group_id=i, final_observation=o)
             for i, (o, a) in enumerate(zip(observations, actions))]  # fmt: skip
    view = policy.learner_view(policy.collate(trajs))
    with torch.no_grad():
        logp, mask, _ = policy.log_prob(view)
    err = float(((logp - view.old_logp) * mask).abs().max())
    if err > 1e-5:
        raise SystemExit(f"recomputed log-probs differ from the sampled ones by {err:.2e}")

    def forward() -> None:
        with torch.no_grad():
            policy.log_prob(view)

    def backward() -> None:
        lp, m, _ = policy.log_prob(view)
        (lp * m).sum().backward()

    counts = {
        "sample": expert_calls(policy, lambda: policy.act(observations, params)),
        "recompute": expert_calls(policy, forward),
    }
    rows: dict[str, list[float]] = {"sample_s": [], "recompute_s": [], "recompute_backward_s": []}
    for _ in range(repeats):  # alternate, so that load from other processes hits all three alike
        rows["sample_s"].append(timed(lambda: policy.act(observations, params)))
        rows["recompute_s"].append(timed(forward))
        rows["recompute_backward_s"].append(timed(backward))
    out = {k: statistics.median(v) for k, v in rows.items()}
    out["ratio"] = out["recompute_s"] / out["sample_s"]
    out["ratio_backward"] = out["recompute_backward_s"] / out["sample_s"]
    out["max_logp_error"] = err
    for k, (calls, n) in counts.items():
        out[f"{k}_expert_calls"], out[f"{k}_expert_rows"] = calls, n
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samplers", default="flow_noise,flow_sde,ddpm", help="comma-separated: " + ", ".join(SAMPLERS))
    p.add_argument("--sizes", default="128,1024", help="expert hidden widths (two layers each), comma-separated")
    p.add_argument("--steps", type=int, default=10, help="K denoising steps per chunk")
    p.add_argument("--chunk", type=int, default=8, help="H actions per chunk")
    p.add_argument("--action-dim", type=int, default=7, help="A action dims")
    p.add_argument("--state-dim", type=int, default=32, help="observation vector size")
    p.add_argument("--batch", type=int, default=64, help="observations per sample / steps per recompute")
    p.add_argument("--repeats", type=int, default=20, help="timed repetitions (median)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = []
    for hidden in [int(s) for s in a.sizes.split(",")]:
        for name in a.samplers.split(","):
            policy = build(name, hidden, a.steps, a.chunk, a.state_dim, a.action_dim)
            r = measure(policy, a.batch, a.state_dim, a.repeats, seed=0)
            results.append({"sampler": name, "hidden": hidden, **r})
    print(
        "| sampler | expert width | sample ms | recompute ms | ratio | recompute + backward ms | ratio | expert calls "
        "(rows), sample / recompute |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['sampler']} | {r['hidden']} | {1e3 * r['sample_s']:.2f} | {1e3 * r['recompute_s']:.2f} | "
              f"{r['ratio']:.2f}x | {1e3 * r['recompute_backward_s']:.2f} | {r['ratio_backward']:.2f}x | "
              f"{r['sample_expert_calls']} ({r['sample_expert_rows']}) / {r['recompute_expert_calls']} "
              f"({r['recompute_expert_rows']}) |")  # fmt: skip
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        facts = {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine()}
        a.out.write_text(json.dumps({"command": shlex.join(sys.argv), "settings": vars(a) | {"out": str(a.out)},
                                     "machine": facts, "results": results}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
