"""The MiniWoB++ adapter's cost over the raw MiniWoB env, and the oracle / random-click success table.

Overhead (default): two browsers side by side, ``envs.gui.miniwob.MiniWoBEnv`` and miniwob's own
``MiniWoBEnvironment`` (Debian's chromium and chromedriver for both), play the same episodes: the same seeds and the same
actions. The actions are the oracle's (``envs.gui.miniwob_oracle``), recorded once on the adapter as text; the raw env
gets them as MiniWoB action dicts built before any timing (the adapter's cost is the parsing and mapping, so the
adapter is timed from text). Each round plays every (task, seed) episode once per env, alternating which env goes first,
so background load hits both alike; the figure is the median over rounds of ``adapter time / raw time - 1`` (the goal
is <= 5%), beside the per-step times. On a loaded machine that ratio swings by several percent either way, so the
script also times the adapter's own work directly: its wall time minus the time spent inside the miniwob env it wraps
(same episodes, same process), per call and as a share of the raw env's time. Both envs must end every episode with
the same MiniWoB reward, else the script exits non-zero.

Success (``--success``): over ``--episodes`` seeds per task, the oracle's success rate and that of a policy clicking
uniformly at random (``--random-steps`` actions per episode), through the adapter.

Usage:
    python scripts/bench/miniwob_overhead.py --out runs/bench/miniwob_overhead.json
    python scripts/bench/miniwob_overhead.py --success --episodes 50
    python scripts/bench/miniwob_overhead.py --rounds 1 --seeds 2   # smoke test

Prints a markdown table; ``--out`` also writes the command, settings and figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from envs.gui.actions import parse_action  # noqa: E402
from envs.gui.miniwob import MiniWoBEnv  # noqa: E402
from envs.gui.miniwob_oracle import oracle_action, random_clicks, success_rate  # noqa: E402

TASKS = ["click-button", "click-link", "enter-text", "login-user", "click-checkboxes"]


class Timed:
    """The adapter's inner miniwob env, summing the seconds spent inside its ``reset`` and ``step``."""

    def __init__(self, raw) -> None:
        self.raw, self.seconds = raw, 0.0

    def __getattr__(self, name: str):
        return getattr(self.raw, name)

    def reset(self, **kwargs):
        start = time.perf_counter()
        try:
            return self.raw.reset(**kwargs)
        finally:
            self.seconds += time.perf_counter() - start

    def step(self, action):
        start = time.perf_counter()
        try:
            return self.raw.step(action)
        finally:
            self.seconds += time.perf_counter() - start


def record(env: MiniWoBEnv, task: str, seeds: list[int]) -> dict[int, list[str]]:
    """The oracle's action texts for each seed of ``task`` (played on the adapter)."""
    out = {}
    for seed in seeds:
        _, info = env.reset(seed=seed, options={"task": task})
        actions, done = [], False
        while not done:
            actions.append(oracle_action(task, info, env.frame))
            _, _, terminated, truncated, info = env.step(actions[-1])
            done = terminated or truncated
        out[seed] = actions
    return out


def raw_action(raw, text: str) -> dict:
    """MiniWoB's action dict for one action text (pixel coordinates: the raw env's own)."""
    a = parse_action(text)
    if a.kind == "click":
        return raw.create_action("CLICK_COORDS", coords=np.array([a.x, a.y], np.float32))
    if a.kind == "type":
        return raw.create_action("TYPE_TEXT", text=a.text)
    return raw.create_action("PRESS_KEY", key=raw.action_space_config.allowed_keys.index(f"<{a.key}>"))


def play_adapter(env: MiniWoBEnv, task: str, seed: int, actions: list[str]) -> float:
    """One episode on the adapter from text actions; MiniWoB's raw reward."""
    env.reset(seed=seed, options={"task": task})
    for text in actions:
        info = env.step(text)[4]
    return info["raw_reward"]


def play_raw(raw, seed: int, actions: list[dict]) -> float:
    """The same episode on the raw env from prepared action dicts."""
    raw.reset(seed=seed)
    for a in actions:
        info = raw.step(a)[4]
    return float(info["raw_reward"])


def overhead(args: argparse.Namespace) -> dict:
    from miniwob.environment import MiniWoBEnvironment

    os.environ["MINIWOB_CHROME_BINARY"] = shutil.which("chromium") or "chromium"
    os.environ["MINIWOB_CHROMEDRIVER"] = shutil.which("chromedriver") or "chromedriver"
    seeds = list(range(args.seeds))
    rows, ratios_by_task = [], {}
    for task in args.tasks:
        env = MiniWoBEnv(task=task, max_steps=20)
        raw = MiniWoBEnvironment(task)
        try:
            texts = record(env, task, seeds)
            inner = env._raw = Timed(env._raw)  # benchmark instrumentation: the adapter's own time = total - inner
            raws = {s: [raw_action(raw, t) for t in texts[s]] for s in seeds}
            steps = sum(len(v) for v in texts.values())
            t_ad, t_raw, ratios, t_own = [], [], [], []
            for r in range(args.rounds):
                times = {"adapter": 0.0, "raw": 0.0}
                inner.seconds = 0.0
                for i, seed in enumerate(seeds):
                    order = ["adapter", "raw"] if (r + i) % 2 == 0 else ["raw", "adapter"]
                    outcome = {}
                    for who in order:
                        start = time.perf_counter()
                        if who == "adapter":
                            outcome[who] = play_adapter(env, task, seed, texts[seed])
                        else:
                            outcome[who] = play_raw(raw, seed, raws[seed])
                        times[who] += time.perf_counter() - start
                    if outcome["adapter"] != outcome["raw"]:
                        sys.exit(f"{task} seed {seed}: adapter reward {outcome['adapter']} != raw {outcome['raw']}")
                t_own.append(times["adapter"] - inner.seconds)
                t_ad.append(times["adapter"])
                t_raw.append(times["raw"])
                ratios.append(times["adapter"] / times["raw"] - 1.0)
            eps = len(seeds)
            rows.append({
                "task": task, "episodes": eps * args.rounds, "steps_per_episode": steps / eps,
                "raw_ms_per_episode": 1e3 * statistics.median(t_raw) / eps,
                "adapter_ms_per_episode": 1e3 * statistics.median(t_ad) / eps,
                "raw_ms_per_step": 1e3 * statistics.median(t_raw) / (steps + eps),
                "adapter_ms_per_step": 1e3 * statistics.median(t_ad) / (steps + eps),
                "overhead_pct": 100 * statistics.median(ratios),
                "own_ms_per_step": 1e3 * statistics.median(t_own) / (steps + eps),
                "own_pct_of_raw": 100 * statistics.median(o / r for o, r in zip(t_own, t_raw)),
            })  # fmt: skip
            ratios_by_task[task] = ratios
        finally:
            env.close()
            raw.close()
    pooled = [statistics.median(r[i] for r in ratios_by_task.values()) for i in range(args.rounds)]
    print("| task | steps/episode | raw ms/call | adapter ms/call | overhead (wall) | adapter's own work per call |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['task']} | {row['steps_per_episode']:.1f} | {row['raw_ms_per_step']:.1f} | "
              f"{row['adapter_ms_per_step']:.1f} | {row['overhead_pct']:+.1f}% | "
              f"{row['own_ms_per_step']:.2f} ms ({row['own_pct_of_raw']:.1f}% of raw) |")  # fmt: skip
    overall = 100 * statistics.median(pooled)
    print(f"\noverall overhead (median over rounds of the per-task median): {overall:+.1f}%  (goal <= 5%)")
    return {"rows": rows, "overall_overhead_pct": overall}


def success(args: argparse.Namespace) -> dict:
    rows = []
    seeds = list(range(args.seed0, args.seed0 + args.episodes))
    for task in args.tasks:
        env = MiniWoBEnv(task=task, max_steps=args.random_steps)
        try:
            chance = success_rate(env, random_clicks(np.random.default_rng(0), (env.width, env.height)), seeds)
        finally:
            env.close()
        env = MiniWoBEnv(task=task, max_steps=20)
        try:
            oracle = success_rate(env, None, seeds)
        finally:
            env.close()
        rows.append({"task": task, "episodes": len(seeds), "oracle": oracle, "random_clicks": chance})
    print(f"| task | oracle (text actions) | random clicks ({args.random_steps} per episode) | episodes |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['task']} | {row['oracle']:.2f} | {row['random_clicks']:.2f} | {row['episodes']} |")
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=lambda s: s.split(","), default=TASKS, help="comma-separated task names")
    parser.add_argument("--seeds", type=int, default=10, help="overhead: episodes (seeds 0..n-1) per task and round")
    parser.add_argument("--rounds", type=int, default=5, help="overhead: rounds over every episode")
    parser.add_argument("--success", action="store_true", help="print the oracle / random-click success table")
    parser.add_argument("--episodes", type=int, default=50, help="success: episodes per task")
    parser.add_argument("--seed0", type=int, default=1000, help="success: first seed")
    parser.add_argument("--random-steps", type=int, default=5, help="success: random clicks per episode")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    figures = success(args) if args.success else overhead(args)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"command": shlex.join([Path(sys.executable).name, *sys.argv]), "machine": platform.platform(),
                "cpus": os.cpu_count(), "settings": vars(args) | {"out": str(args.out)}}  # fmt: skip
        args.out.write_text(json.dumps(meta | figures, indent=2, default=str))


if __name__ == "__main__":
    main()
