"""The log-prob recompute benchmark runs small: recomputed log-probs equal the sampled ones (checked by the script), and
the expert's work is what each estimator's formula needs: K sequential calls to sample, one batched call to recompute
over N*K rows (Flow-Noise, DDPM: every transition) or N rows (Flow-SDE: the one stochastic step)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("flow_logprob_cost", ROOT / "scripts/bench/flow_logprob_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flow_logprob_cost_bench_small(tmp_path):
    out = tmp_path / "cost.json"
    N, K = 6, 5
    assert _bench().main(["--batch", str(N), "--steps", str(K), "--repeats", "2", "--sizes", "32", "--chunk", "3",
                          "--action-dim", "2", "--state-dim", "4", "--out", str(out)]) == 0  # fmt: skip
    results = {r["sampler"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"flow_noise", "flow_sde", "ddpm"}
    for name, r in results.items():
        assert r["max_logp_error"] <= 1e-5
        assert (r["sample_expert_calls"], r["sample_expert_rows"]) == (K, N * K), name
        assert r["recompute_expert_calls"] == 1, name
        assert r["sample_s"] > 0 and r["recompute_s"] > 0 and r["recompute_backward_s"] > 0
    assert results["flow_noise"]["recompute_expert_rows"] == results["ddpm"]["recompute_expert_rows"] == N * K
    assert results["flow_sde"]["recompute_expert_rows"] == N


def test_a_recompute_that_differs_from_the_sample_fails_the_bench(tmp_path, monkeypatch):
    bench = _bench()
    policy = bench.build("flow_noise", 16, 3, 2, 4, 2)
    original = policy.log_prob
    monkeypatch.setattr(
        policy, "log_prob", lambda batch, with_entropy=False: (original(batch)[0] + 1e-3, *original(batch)[1:])
    )
    try:
        bench.measure(policy, 4, 4, 1, seed=0)
    except SystemExit as e:
        assert "differ" in str(e)
    else:
        raise AssertionError("a wrong recompute passed the check")
