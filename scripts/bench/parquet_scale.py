"""GRPO on a large Parquet VQA file: peak memory and time to the first step, against a small file of the same rows.

Issue #12's acceptance: a generated Parquet VQA file of >= 500 MB with embedded images trains 2 GRPO steps with a
rollout batch of 64 and an eval of 256; its peak RSS and its time to the first step are reported (goal: under 2 GiB,
under 30 s). The files are written the way users' files are: by the Hugging Face ``datasets`` library
(``Dataset.from_generator`` with ``Sequence(Image())`` images, then ``to_parquet``, which writes row groups of up to
100 MB), in EasyR1's schema (``problem`` with an ``<image>`` mark, ``images``, ``answer``) or verl's (chat ``prompt``,
``images``, ``reward_model.ground_truth``). The images are uniform noise PNGs, which no codec compresses, so the file
really is the size asked for. Files are generated once under ``--dir`` (never committed) and reused when present.

For each file (the small one first, then the large one), two fresh subprocesses:

- ``load``: builds one ``dataset_vqa`` env on the file and resets it on ``--resets`` shuffled rows: the data's own cost
  (construction time, time per reset, peak RSS), with no model in the process;
- ``train``: ``mmrl train`` on a config written next to the files (the offline tiny Qwen2.5-VL, no warm-up, one torch
  thread, ``rollout.batch_size``, ``train.steps``, ``train.eval_size``; the held-out evaluation runs before the first
  step and after the last). Training visits random rows (the trainer draws random prompt seeds; ``shuffle: true``),
  each out of file order; the evaluation visits the first ``eval_size`` rows in file order unless ``--eval-shuffle``
  (then each of its rows is a visit out of order too: ~35 ms each on a 100 MB row group, see ``envs/vqa/parquet.py``). Peak RSS is the largest of the process tree's RSS sampled every 50 ms and the process's
  own ``ru_maxrss`` (``os.wait4``); the times are from the start of the process to the first ``metrics.jsonl`` row
  of the pre-RL evaluation (step 0) and of the first training step (step 1).

Usage:
    python scripts/bench/parquet_scale.py --out runs/bench/parquet_scale.json            # 520 MB vs 8 MB, the issue's run
    python scripts/bench/parquet_scale.py --large-mb 4 --small-mb 1 --batch-size 8 --eval-size 8 --steps 1  # smoke

Prints a markdown table and a JSON summary (``--out`` writes it: command, machine, settings, figures).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ("easyr1", "verl")
MIB = 1024 * 1024
SAMPLE_S = 0.05  # RSS sampling period of the measured process tree
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0"}


# ------------------------------------------------------------------------------------------------------------- data
def noise_rows(rows: int, side: int, seed: int, schema: str) -> Iterator[dict[str, Any]]:
    """``rows`` VQA rows in ``schema`` (EasyR1 or verl), one ``side`` x ``side`` noise PNG each (incompressible)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(rows):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)  # [H, W, 3] noise: PNG keeps every byte
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=1)  # level 1: noise does not compress anyway
        question = f"<image>Question {i}: what is the mean brightness of this picture, from 0 to 255?"
        answer = str(int(pixels.mean()))
        image = [{"bytes": buf.getvalue(), "path": None}]
        if schema == "easyr1":
            yield {"problem": question, "images": image, "answer": answer}
        else:
            yield {"data_source": "noise", "prompt": [{"role": "user", "content": question}], "images": image,
                   "ability": "vqa", "reward_model": {"style": "rule", "ground_truth": answer}}  # fmt: skip


def write_parquet(path: Path, megabytes: float, side: int, seed: int, schema: str) -> Path:
    """A Parquet file of about ``megabytes`` MB written by ``datasets`` (kept and reused: the name holds the settings)."""
    import datasets

    if path.is_file():
        return path
    rows = max(2, round(megabytes * 1e6 / (side * side * 3 + 200)))  # a noise PNG is ~side^2 x 3 bytes + headers
    image = datasets.Sequence(datasets.Image())
    if schema == "easyr1":
        features = datasets.Features({"problem": datasets.Value("string"), "images": image,
                                      "answer": datasets.Value("string")})  # fmt: skip
    else:
        message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
        features = datasets.Features({"data_source": datasets.Value("string"), "prompt": [message], "images": image,
                                      "ability": datasets.Value("string"),
                                      "reward_model": {"style": datasets.Value("string"),
                                                       "ground_truth": datasets.Value("string")}})  # fmt: skip
    datasets.disable_progress_bars()
    path.parent.mkdir(parents=True, exist_ok=True)
    cache = path.parent / f".cache_{path.stem}"  # datasets' Arrow cache: rows are written there, never all in memory
    ds = datasets.Dataset.from_generator(noise_rows, features=features, cache_dir=str(cache),
                                         gen_kwargs={"rows": rows, "side": side, "seed": seed, "schema": schema})  # fmt: skip
    tmp = path.with_suffix(".tmp")
    ds.to_parquet(str(tmp))
    del ds
    import shutil

    shutil.rmtree(cache, ignore_errors=True)
    tmp.rename(path)  # a killed generation never leaves a half-written file under the reused name
    return path


def parquet_layout(path: Path) -> dict[str, Any]:
    """Rows, row groups and the largest group's uncompressed size (what the reader's laziness depends on)."""
    import pyarrow.parquet as pq

    meta = pq.read_metadata(path)
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]
    return {"file_mib": path.stat().st_size / MIB, "rows": meta.num_rows, "row_groups": meta.num_row_groups,
            "max_group_mib": max(g.total_byte_size for g in groups) / MIB}  # fmt: skip


# ---------------------------------------------------------------------------------------------------- measurement
def vm_kib(pid: int | str, *keys: str) -> dict[str, int]:
    """Fields of ``/proc/<pid>/status`` in KiB (``VmRSS``: resident now; ``VmHWM``: peak resident)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name in keys:
            out[name] = int(line.split()[1])
    return out


def watch(metrics: Path | None, seen: dict[str, float], now: float) -> None:
    """Note ``now`` in ``seen`` for the first time ``metrics`` has its pre-RL evaluation row and its step-1 row."""
    if metrics is None or not metrics.is_file():
        return
    for line in metrics.read_text().splitlines():
        row = json.loads(line) if line.endswith("}") else {}  # a line being written is skipped
        key = "eval_before_rl_s" if row.get("step") == 0 and "eval/return" in row else None
        key = "first_step_s" if row.get("step") == 1 and "loss" in row else key
        if key is not None and key not in seen:
            seen[key] = now


def measure(cmd: list[str], timeout: float, metrics: Path | None = None) -> dict[str, Any]:
    """Run ``cmd``; its peak RSS (the sampled process tree's and its own ``ru_maxrss``), its wall time and, with
    ``metrics`` (a ``metrics.jsonl`` to watch), the seconds to its step-0 row (pre-RL evaluation) and step-1 row."""
    import psutil

    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **WORKER_ENV})  # fmt: skip
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or ()), daemon=True)
    reader.start()
    peak_tree, seen, status, usage = 0, {}, 0, None
    root = psutil.Process(proc.pid)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # not Popen.poll: wait4 also gives the child's rusage
        if pid:
            break
        try:
            tree = [root, *root.children(recursive=True)]
            peak_tree = max(peak_tree, sum(p.memory_info().rss for p in tree))
        except psutil.Error:  # the process (or a child) exited between the listing and the read
            pass
        watch(metrics, seen, time.perf_counter() - start)
        if time.perf_counter() - start > timeout:
            proc.kill()
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - start
    watch(metrics, seen, seconds)  # rows written after the last sample
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped above: Popen must not wait for it again
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited with {proc.returncode}:\n{''.join(output)[-4000:]}")
    maxrss = usage.ru_maxrss * 1024  # KiB on Linux
    return {"peak_rss_mib": max(peak_tree, maxrss) / MIB, "sampled_tree_peak_mib": peak_tree / MIB,
            "ru_maxrss_mib": maxrss / MIB, "seconds": seconds, **seen, "output": "".join(output)}  # fmt: skip


def load_worker(path: str, resets: int) -> dict[str, Any]:
    """In a fresh process: one env on ``path``, then ``resets`` resets on shuffled rows; times and RSS (MiB)."""
    import numpy as np

    sys.path.insert(0, str(ROOT))  # this tree's envs, as `python -m mmrl.cli` in ROOT imports this tree's mmrl
    import envs

    base = vm_kib("self", "VmRSS")["VmRSS"]
    start = time.perf_counter()
    env = envs.make("dataset_vqa", path=path, shuffle=True, seed=0, rewards={"accuracy": 1.0})
    built = time.perf_counter()
    after_build = vm_kib("self", "VmRSS", "VmHWM")
    seeds = np.random.default_rng(0).integers(0, 2**31 - 1, size=resets).tolist()  # as the trainer draws them
    for seed in seeds:
        env.reset(seed=seed)
    done = time.perf_counter()
    end = vm_kib("self", "VmRSS", "VmHWM")
    return {"rows": env.num_rows, "build_s": built - start, "reset_ms": 1000 * (done - built) / max(resets, 1),
            "rss_after_build_mib": (after_build["VmRSS"] - base) / 1024,
            "peak_rss_build_mib": after_build["VmHWM"] / 1024, "rss_after_resets_mib": (end["VmRSS"] - base) / 1024,
            "peak_rss_mib": end["VmHWM"] / 1024, "baseline_rss_mib": base / 1024}  # fmt: skip


def train_config(path: Path, data: Path, schema: str, tiny: Path, out_dir: Path, args: argparse.Namespace) -> Path:
    """The GRPO run on ``data``: the tiny model, no warm-up, one thread, the issue's batch, steps and eval size."""
    import yaml

    group = min(8, args.batch_size)
    cfg = {
        "name": path.stem, "seed": 0, "threads": 1,
        "model": {"path": str(tiny), "build_tiny": False},
        "env": {"id": "dataset_vqa", "kwargs": {"path": str(data), "shuffle": True, "seed": 0},
                "eval_kwargs": {"shuffle": args.eval_shuffle}},
        "rewards": {"accuracy": 1.0, "format_answer": 0.1},
        "rollout": {"temperature": 1.0, "max_new_tokens": 16, "batch_size": args.batch_size},
        "warmup": {"steps": 0},
        "algo": {"advantage": "grpo", "loss": "ppo_clip", "group_size": group,
                 "prompts_per_step": args.batch_size // group, "epochs": 1, "minibatch_size": args.batch_size},
        "train": {"steps": args.steps, "eval_every": 0, "eval_size": args.eval_size, "save_every": 0,
                  "rollouts_every": 0, "output_dir": str(out_dir), "overwrite": True},
    }  # fmt: skip
    if schema == "verl":
        cfg["env"]["kwargs"]["schema"] = "verl"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_file(label: str, data: Path, args: argparse.Namespace, tiny: Path) -> dict[str, Any]:
    """The ``load`` and ``train`` measurements of one file."""
    result: dict[str, Any] = {"label": label, "file": str(data), **parquet_layout(data)}
    load_cmd = [sys.executable, __file__, "--worker-load", str(data), "--resets", str(args.resets)]
    load = measure(load_cmd, args.timeout)
    result["load"] = json.loads(load["output"].strip().splitlines()[-1])
    config = train_config(args.dir / f"train_{label}.yaml", data, args.schema, tiny, args.dir / "runs", args)
    run_dir = args.dir / "runs" / config.stem
    metrics = run_dir / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    train = measure([sys.executable, "-m", "mmrl.cli", "train", str(config), "--no-progress"], args.timeout, metrics)
    summary = json.loads((run_dir / "summary.json").read_text())
    train.pop("output")
    result["train"] = {**train, "trainer_peak_rss_mib": summary.get("peak_rss_mib"), "steps": summary.get("steps")}
    print(f"{label}: {result['file_mib']:.1f} MiB, peak RSS {train['peak_rss_mib']:.0f} MiB, first step at "
          f"{train.get('first_step_s', float('nan')):.1f} s", file=sys.stderr, flush=True)  # fmt: skip
    return result


# ------------------------------------------------------------------------------------------------------------ report
def markdown(results: list[dict[str, Any]]) -> str:
    lines = ["| file | MiB | rows | row groups (largest MiB) | env build (s) | reset (ms) | env peak RSS (MiB) "
             "| train peak RSS (MiB) | pre-RL eval done (s) | first step (s) | total (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        load, train = r["load"], r["train"]
        lines.append(f"| {r['label']} | {r['file_mib']:.1f} | {r['rows']} | {r['row_groups']} ({r['max_group_mib']:.0f}) "
                     f"| {load['build_s']:.2f} | {load['reset_ms']:.1f} | {load['peak_rss_mib']:.0f} "
                     f"| {train['peak_rss_mib']:.0f} | {train.get('eval_before_rl_s', float('nan')):.1f} "
                     f"| {train.get('first_step_s', float('nan')):.1f} | {train['seconds']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    import pyarrow

    return {"nproc": len(os.sched_getaffinity(0)), "platform": platform.platform(), "python": platform.python_version(),
            "pyarrow": pyarrow.__version__, "loadavg_1min": os.getloadavg()[0]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--large-mb", type=float, default=520, help="size of the large file in MB (the issue: >= 500)")
    p.add_argument(
        "--small-mb", type=float, default=8, help="size of a small file of the same rows, compared (0: none)"
    )
    p.add_argument("--image-side", type=int, default=128, help="noise image side in pixels (128: ~49 kB of PNG a row)")
    p.add_argument("--schema", choices=SCHEMAS, default="easyr1", help="row schema of the generated files")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--dir", type=Path, default=ROOT / "runs" / "bench" / "parquet_scale", help="files, configs, runs")
    p.add_argument("--model", type=Path, default=None, help="a local tiny checkpoint (default: built once in --dir)")
    p.add_argument("--batch-size", type=int, default=64, help="rollout.batch_size (GRPO groups of up to 8)")
    p.add_argument("--eval-size", type=int, default=256, help="train.eval_size (before the first step and at the end)")
    p.add_argument("--steps", type=int, default=2, help="train.steps")
    p.add_argument("--eval-shuffle", action="store_true", help="evaluate on shuffled rows (default: the first rows)")
    p.add_argument("--resets", type=int, default=64, help="resets of the load measurement (shuffled rows)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measured process")
    p.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    p.add_argument("--worker-load", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker_load:
        print(json.dumps(load_worker(args.worker_load, args.resets)))
        return 0
    if args.large_mb <= 0 or args.small_mb < 0 or args.batch_size < 1 or args.eval_size < 1 or args.steps < 1:
        p.error("--large-mb, --batch-size, --eval-size and --steps must be positive, --small-mb >= 0")

    args.dir = args.dir.resolve()
    tiny = args.model.resolve() if args.model else args.dir / "tiny-qwen2_5_vl"
    if not (tiny / "config.json").is_file():  # built once, outside any measurement
        subprocess.run([sys.executable, "-m", "mmrl.cli", "build-tiny", str(tiny)], cwd=ROOT, check=True,
                       capture_output=True, env={**os.environ, **WORKER_ENV})  # fmt: skip
    files = {}
    for label, mb in (("small", args.small_mb), ("large", args.large_mb))[args.small_mb == 0 :]:
        name = f"{args.schema}_{mb:g}mb_side{args.image_side}_seed{args.seed}.parquet"
        start = time.perf_counter()
        files[label] = write_parquet(args.dir / name, mb, args.image_side, args.seed, args.schema)
        print(f"data {label}: {files[label]} ({files[label].stat().st_size / MIB:.1f} MiB, "
              f"{time.perf_counter() - start:.0f} s)", file=sys.stderr, flush=True)  # fmt: skip
    results = [run_file(label, path, args, tiny) for label, path in files.items()]
    table = markdown(results)
    summary = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "settings": {"schema": args.schema, "image_side": args.image_side, "batch_size": args.batch_size,
                     "eval_size": args.eval_size, "steps": args.steps, "resets": args.resets, "threads": 1,
                     "eval_shuffle": args.eval_shuffle},
        "goal": {"peak_rss_mib": 2048, "first_step_s": 30},
        "results": results,
        "table": table,
    }  # fmt: skip
    print(table)
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
