"""Memory and construction time of K ``dataset_vqa`` envs over one Parquet file: one shared table vs one per env.

``envs/vqa/dataset.py`` keeps one parsed, read-only table per data file and process (``_TABLES``), so K envs over one
file hold its rows once. The benchmark builds K envs (``envs.make("dataset_vqa", ...)``) on a generated Parquet file of
VQA rows with embedded PNG bytes (the Hugging Face ``datasets`` image struct ``{"bytes": ..., "path": None}``):

- ``shared``: the current code, K envs built one after the other;
- ``per_env``: ``_TABLES`` cleared before each construction, so every env parses the file and keeps its own rows,
  which is exactly what every env did before the cache (the cache then holds only the last env's table, which that
  env holds anyway).

The images are uniform noise, so PNG cannot compress them and the file's size is about rows x side^2 x 3 bytes.

Each (variant, K) runs in two fresh subprocesses. Each first builds one env on a separate 2-row file and drops its
table (a warm-up, the same in both variants: no figure counts a first env's one-time costs, lazy imports and Arrow's
thread pool); the figures are what the K envs add after that:

- ``rss``: RSS growth over the constructions (``VmRSS`` of ``/proc/self/status`` before and after, after a
  ``gc.collect()``), the same after handing Arrow's free pool pages back to the OS (``release_unused()``: mimalloc keeps
  the pages of a parse's transient buffers, ~100 MiB after parsing the default file, memory no env holds), the peak RSS
  above the baseline (``VmHWM``, reset through ``/proc/self/clear_refs`` just before; it equals the RSS added while
  the pool keeps its pages), and the wall time of the K constructions; then every env is reset with the same seeds and
  its observations digested;
- ``traced``: the same constructions under ``tracemalloc``: Python-allocated bytes still alive afterwards, and the
  traced peak (tracemalloc slows the parse, so the times come from the ``rss`` run). Arrow's buffers are not traced,
  only the Python objects the rows become (no Arrow buffer outlives the parse: ``arrow_allocated_mib`` is 0).

Correctness: within a run all K envs must give the same observations for the same seeds, and both variants the same
digest; the script exits non-zero otherwise.

Usage:
    python scripts/bench/dataset_env_memory.py --out runs/bench/dataset_env_memory.json
    python scripts/bench/dataset_env_memory.py --rows 8 --image-side 32 --envs 1,2   # smoke test

Prints a markdown table and writes the command, machine facts, settings and figures to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ("shared", "per_env")
MODES = ("rss", "traced")
RESET_SEEDS = (0, 1, 2)  # positions of the shuffled order each env shows (a seed names a question)
ENV_KWARGS: dict[str, Any] = {"shuffle": True, "seed": 0, "rewards": {"accuracy": 1.0}}  # same for every env
MIB = 1024 * 1024
WORKER_ENV = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}  # fmt: skip


# ------------------------------------------------------------------------------------------------------------- data
def write_parquet(path: Path, rows: int, side: int, seed: int) -> None:
    """``rows`` VQA rows ``{prompt, images: [{"bytes": PNG, "path": None}], answer}`` of ``side`` x ``side`` noise."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(seed)
    prompts, images, answers = [], [], []
    for i in range(rows):
        pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)  # [H, W, 3] noise: PNG keeps every byte
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        prompts.append(f"Question {i}: what is the mean brightness of this picture, from 0 to 255?")
        images.append([{"bytes": buf.getvalue(), "path": None}])
        answers.append(str(int(pixels.mean())))
    image_struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])  # HF datasets' Image feature
    table = pa.table({"prompt": pa.array(prompts, pa.string()), "images": pa.array(images, pa.list_(image_struct)),
                      "answer": pa.array(answers, pa.string())})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


# ----------------------------------------------------------------------------------------------------------- worker
def proc_status_kib(*keys: str) -> dict[str, int]:
    """Fields of ``/proc/self/status`` in KiB (``VmRSS``: resident now; ``VmHWM``: peak resident since reset)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name = line.split(":", 1)[0]
        if name in keys:
            out[name] = int(line.split()[1])
    return out


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False when the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def obs_digest(obs: dict[str, Any]) -> str:
    """Digest of an observation: its text and every image's shape, dtype and pixels."""
    h = hashlib.sha256(obs["text"].encode())
    for img in obs["images"]:
        h.update(repr((img.shape, str(img.dtype))).encode())
        h.update(img.tobytes())
    return h.hexdigest()[:16]


def worker(data: str, warmup: str, variant: str, k: int, mode: str) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet  # noqa: F401  (the env imports it lazily: here, so no figure counts the module)

    import envs
    import envs.vqa.dataset as dataset

    # warm-up, the same in both variants: one env on a 2-row file, then its table dropped, so that no figure counts the
    # one-time costs of a first env (lazy imports of the reward functions, Arrow's thread pool); the pages Arrow's pool
    # keeps after that tiny parse are handed back too, so the baseline holds no free pool memory
    envs.make("dataset_vqa", path=warmup, **ENV_KWARGS)
    dataset._TABLES.clear()
    pool = pa.default_memory_pool()
    pool.release_unused()

    def build() -> list[Any]:
        built = []
        for _ in range(k):
            if variant == "per_env":
                dataset._TABLES.clear()  # the previous behaviour: every env parses the file and keeps its own rows
            built.append(envs.make("dataset_vqa", path=data, **ENV_KWARGS))
        return built

    gc.collect()
    result: dict[str, Any] = {"variant": variant, "envs": k, "mode": mode}
    if mode == "traced":
        import tracemalloc

        tracemalloc.start()
        built = build()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result.update(traced_retained_mib=current / MIB, traced_peak_mib=peak / MIB)
    else:
        before = proc_status_kib("VmRSS")["VmRSS"]
        result["peak_reset"] = reset_peak_rss()
        start = time.perf_counter()
        built = build()
        seconds = time.perf_counter() - start
        gc.collect()
        after = proc_status_kib("VmRSS", "VmHWM")
        arrow_allocated = pa.total_allocated_bytes()  # Arrow buffers still alive (0: the rows are Python objects)
        # Arrow's pool (mimalloc) keeps the pages of a parse's freed buffers for reuse: RSS that no env holds
        pool.release_unused()
        released = proc_status_kib("VmRSS")["VmRSS"]
        result.update(rss_added_mib=(after["VmRSS"] - before) / 1024, peak_rss_added_mib=(after["VmHWM"] - before) / 1024,
                      rss_added_pool_released_mib=(released - before) / 1024, arrow_allocated_mib=arrow_allocated / MIB,
                      seconds=seconds, rows=built[0].num_rows)  # fmt: skip
        # correctness: every env shows the same observations for the same seeds, in either variant
        digests = [[obs_digest(env.reset(seed=s)[0]) for s in RESET_SEEDS] for env in built]
        assert all(d == digests[0] for d in digests), f"{variant}: envs disagree on reset observations: {digests}"
        result["obs_digest"] = hashlib.sha256("".join(digests[0]).encode()).hexdigest()[:16]
    result["tables"] = len({id(env.rows) for env in built})  # distinct row tables held: 1 shared, K per env
    return result


def run_worker(data: Path, warmup: Path, variant: str, k: int, mode: str, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", variant, "--worker-envs", str(k), "--worker-mode", mode,
           "--file", str(data), "--worker-warmup", str(warmup)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **WORKER_ENV})  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"worker {variant} K={k} {mode} failed:\n{proc.stdout}{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------------------------ report
def machine() -> dict[str, Any]:
    import numpy
    import pyarrow

    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "pyarrow": pyarrow.__version__, "numpy": numpy.__version__,
            "arrow_memory_pool": pyarrow.default_memory_pool().backend_name}  # fmt: skip


def summarize(runs: list[dict[str, Any]], traced: dict[str, Any]) -> dict[str, Any]:
    """One (variant, K): the medians of the ``rss`` runs' figures, the ``traced`` run's, and every run's values."""
    figures = ("rss_added_mib", "rss_added_pool_released_mib", "peak_rss_added_mib", "arrow_allocated_mib", "seconds")
    first = runs[0]
    return {
        "variant": first["variant"],
        "envs": first["envs"],
        "rows": first["rows"],
        "tables": first["tables"],
        **{f: statistics.median(r[f] for r in runs) for f in figures},
        "traced_retained_mib": traced["traced_retained_mib"],
        "traced_peak_mib": traced["traced_peak_mib"],
        "traced_tables": traced["tables"],
        "peak_reset": all(r["peak_reset"] for r in runs),
        "obs_digests": sorted({r["obs_digest"] for r in runs}),
        "runs": {f: [r[f] for r in runs] for f in figures},
    }


def markdown(results: list[dict[str, Any]]) -> str:
    names = {"shared": "shared (one table per file, current)", "per_env": "per env (previous behaviour)"}
    lines = ["| variant | envs | RSS added (MiB) | RSS added, Arrow pool released (MiB) | peak RSS added (MiB) "
             "| traced retained (MiB) | construction (s) | tables held |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in results:
        lines.append(f"| {names[r['variant']]} | {r['envs']} | {r['rss_added_mib']:.1f} "
                     f"| {r['rss_added_pool_released_mib']:.1f} | {r['peak_rss_added_mib']:.1f} "
                     f"| {r['traced_retained_mib']:.1f} | {r['seconds']:.2f} | {r['tables']} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000, help="rows of the generated file (one image each)")
    p.add_argument("--image-side", type=int, default=64, help="image side in pixels (64: ~12.4 kB of PNG per row)")
    p.add_argument("--envs", default="1,4,16", help="comma-separated numbers of envs built per run")
    p.add_argument("--repeats", type=int, default=3, help="rss runs per (variant, envs): the table gives medians")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--data", type=Path, default=None, help="write the generated file here and keep it (default: temp)")
    p.add_argument(
        "--file", type=Path, default=None, help="benchmark this existing data file instead of generating one"
    )
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.add_argument("--timeout", type=float, default=600, help="seconds per worker process")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--worker-envs", type=int, help=argparse.SUPPRESS)
    p.add_argument("--worker-mode", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--worker-warmup", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(str(args.file), args.worker_warmup, args.worker, args.worker_envs, args.worker_mode)))
        return 0

    counts = [int(k) for k in args.envs.split(",") if k]
    if not counts or min(counts) < 1:
        p.error(f"--envs: expected positive integers, got {args.envs!r}")
    if args.repeats < 1:
        p.error(f"--repeats: expected a positive integer, got {args.repeats}")
    if args.file is not None and args.data is not None:
        p.error("--file benchmarks an existing file, --data names where to write a generated one: pass one")
    with tempfile.TemporaryDirectory(prefix="bench_dataset_") as tmp:
        data = args.file or args.data or Path(tmp) / "vqa.parquet"
        if args.file is None:
            write_parquet(data, args.rows, args.image_side, args.seed)
        warmup = Path(tmp) / "warmup.parquet"
        write_parquet(warmup, 2, args.image_side, args.seed + 1)  # same schema and image size: same code paths
        file_mib = data.stat().st_size / MIB
        print(f"data: {data} ({file_mib:.1f} MiB)", file=sys.stderr, flush=True)
        results, loads = [], [os.getloadavg()[0]]
        for k in counts:
            for variant in VARIANTS:
                runs = [run_worker(data, warmup, variant, k, "rss", args.timeout) for _ in range(args.repeats)]
                traced = run_worker(data, warmup, variant, k, "traced", args.timeout)
                loads.append(os.getloadavg()[0])
                results.append(summarize(runs, traced))
                print(f"{variant} K={k}: RSS +{results[-1]['rss_added_mib']:.1f} MiB, traced "
                      f"{traced['traced_retained_mib']:.1f} MiB, {results[-1]['seconds']:.2f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
    same_obs = len({d for r in results for d in r["obs_digests"]}) == 1
    table = markdown(results)
    print(table)
    print(f"\nfile: {file_mib:.1f} MiB, {results[0]['rows']} rows; medians of {args.repeats} run(s); 1-min load average "
          f"{min(loads):.2f}-{max(loads):.2f}; same observations for the same seeds in every env and variant: "
          f"{same_obs}")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "command": shlex.join([Path(sys.executable).name, *sys.argv]),
            "settings": {"rows": results[0]["rows"], "image_side": None if args.file else args.image_side,
                         "envs": counts, "repeats": args.repeats, "seed": args.seed,
                         "file": str(args.file) if args.file else None, "file_mib": file_mib, "env_kwargs": ENV_KWARGS,
                         "reset_seeds": list(RESET_SEEDS)},
            "machine": {**machine(), "loadavg_1min": loads}, "same_observations": same_obs, "results": results,
            "table": table,
        }, indent=2))  # fmt: skip
    return 0 if same_obs else 1


if __name__ == "__main__":
    sys.exit(main())
