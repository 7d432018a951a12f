"""VLM policy: behaviour log-probs from generation equal the learner's recompute; vision tokens are never generated."""

from __future__ import annotations

import numpy as np
import torch

from mmrl.policies.vlm import SamplingParams, response_length
from mmrl.types import Step, Trajectory


def _image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _two_turn_trajectories(policy, params):
    """Four two-turn episodes with 0-2 images of different sizes per turn, sampled through ``act`` in one left-padded
    batch per turn (the conversation carried as the episode's state)."""
    rng = np.random.default_rng(1)
    first = [[_image(rng, 56, 56)], [_image(rng, 56, 84), _image(rng, 112, 56)], [], [_image(rng, 70, 40)]]
    obs = [{"text": "How many shapes are there?", "images": tuple(imgs)} for imgs in first]
    trajs = [Trajectory(steps=[], group_id=0) for _ in obs]
    states = [None] * len(obs)
    for _ in range(2):
        actions = policy.act(obs, params, states)
        for o, traj, a in zip(obs, trajs, actions):
            traj.steps.append(Step(o, a.env_action, a.logp, a.record))
        states = [a.state for a in actions]
        obs = [{"text": "Are you sure?", "images": (_image(rng, 56, 56),) if len(f) % 2 else ()} for f in first]
    return [a.state for a in actions], trajs


def test_generation_logprobs_match_recompute(tiny_policy):
    params = SamplingParams(temperature=1.0, max_new_tokens=10)
    convs, trajs = _two_turn_trajectories(tiny_policy, params)
    batch = tiny_policy.collate(trajs)
    inputs, old = batch.model_inputs, batch.old_logp
    for conv, row in zip(convs, inputs["input_ids"]):  # collated ids are the conversation's ids, right-padded
        assert row[: len(conv.ids)].tolist() == conv.ids
    logp, m, _ = tiny_policy.log_prob(batch)
    assert logp.requires_grad
    assert int(m.sum()) == sum(response_length(t) for t in trajs) > 0
    diff = ((logp.detach() - old) * m).abs().max()
    assert float(diff) < 1e-4
    # the recorded log-probs are real log-probs (not zeros): they are negative somewhere
    assert float((old * m).min()) < -1e-3


def test_temperature_is_applied_consistently(tiny_policy):
    tiny_policy.temperature = 0.7
    try:
        _, trajs = _two_turn_trajectories(tiny_policy, SamplingParams(temperature=0.7, max_new_tokens=6))
        batch = tiny_policy.collate(trajs)
        inputs, mask, old = batch.model_inputs, batch.mask, batch.old_logp
        logp, m, _ = tiny_policy.log_prob(inputs)
        assert float(((logp.detach() - old) * mask).abs().max()) < 1e-4
    finally:
        tiny_policy.temperature = 1.0


def test_vision_tokens_are_never_generated(tiny_policy):
    """Bias the LM head towards the vision special tokens: sampling must still never produce them."""
    banned = tiny_policy.suppress_ids
    assert len(banned) == 5

    def boost(module, args, output):
        output[..., banned] += 50.0
        return output

    handle = tiny_policy.model.lm_head.register_forward_hook(boost)
    try:
        conv = tiny_policy.conversation()
        conv.add_user("Describe.", [np.zeros((56, 56, 3), np.uint8)])
        gens = tiny_policy.generate([conv.ids] * 8, [conv.vision] * 8, SamplingParams(max_new_tokens=12))
    finally:
        handle.remove()
    assert all(len(g.ids) == 12 for g in gens)  # nothing stopped early: the boost really made these tokens dominant
    assert not any(t in banned for g in gens for t in g.ids)


def test_greedy_is_deterministic_and_stops_at_eos(tiny_policy):
    conv = tiny_policy.conversation()
    conv.add_user("How many?", [np.full((56, 56, 3), 255, np.uint8)])
    eos = tiny_policy.tokenizer.convert_tokens_to_ids("<|im_end|>")

    def force_eos_after_three(module, args, output):
        if args[0].shape[1] == 1 and force_eos_after_three.calls >= 3:  # decoding steps after the third token
            output[..., eos] += 1e4
        force_eos_after_three.calls += 1
        return output

    force_eos_after_three.calls = 0
    a = tiny_policy.generate([conv.ids], [conv.vision], SamplingParams(temperature=0.0, max_new_tokens=8))[0]
    b = tiny_policy.generate([conv.ids], [conv.vision], SamplingParams(temperature=0.0, max_new_tokens=8))[0]
    assert a.ids == b.ids
    handle = tiny_policy.model.lm_head.register_forward_hook(force_eos_after_three)
    try:
        c = tiny_policy.generate([conv.ids], [conv.vision], SamplingParams(temperature=1.0, max_new_tokens=8))[0]
    finally:
        handle.remove()
    assert c.ids[-1] == eos and len(c.ids) == 4
    assert "<|im_end|>" not in c.text


def test_log_prob_gradient_flows_to_vision_tower(tiny_policy):
    _, trajs = _two_turn_trajectories(tiny_policy, SamplingParams(max_new_tokens=4))
    batch = tiny_policy.collate(trajs)
    inputs, mask = batch.model_inputs, batch.mask
    logp = tiny_policy.log_prob(inputs)[0]
    tiny_policy.model.zero_grad()
    (logp * mask).sum().backward()
    vis = [p.grad for n, p in tiny_policy.model.named_parameters() if "visual" in n and p.grad is not None]
    assert vis and any(float(g.abs().sum()) > 0 for g in vis)
    tiny_policy.model.zero_grad()


def _qwen_mrope_positions(ids: list[int], grids: list[tuple[int, int, int]], pad_id: int, merge: int) -> torch.Tensor:
    """Qwen2.5-VL's multimodal RoPE positions ``[3, T]`` written out from the paper's rule, independently of
    transformers: text tokens advance all three axes by 1; an image run of ``h/merge x w/merge`` pads gets
    ``(start, start + row, start + col)`` and the text after it resumes at ``start + max(h, w) / merge``."""
    pos, out, i, images = 0, [], 0, iter(grids)
    while i < len(ids):
        if ids[i] != pad_id:
            out.append((pos, pos, pos))
            pos, i = pos + 1, i + 1
            continue
        _, h, w = next(images)
        h, w = h // merge, w // merge
        out.extend((pos, pos + r, pos + c) for r in range(h) for c in range(w))
        pos, i = pos + max(h, w), i + h * w
    return torch.tensor(out).T


def test_image_tokens_get_2d_multimodal_rope_positions(tiny_policy):
    """The policy's forward equals the model run with hand-computed 2-D M-RoPE positions, and differs from 1-D ones."""
    _, trajs = _two_turn_trajectories(tiny_policy, SamplingParams(temperature=1.0, max_new_tokens=4))
    inputs = tiny_policy.collate(trajs).model_inputs
    logits, _ = tiny_policy.forward_logits(inputs)
    ids, att = inputs["input_ids"], inputs["attention_mask"]
    B, T = ids.shape
    positions = torch.zeros(3, B, T, dtype=torch.long)
    for b in range(B):
        n = int(att[b].sum())
        grids = [tuple(v.grid_thw.tolist()) for v in inputs["vision"][b]]
        positions[:, b, :n] = _qwen_mrope_positions(ids[b, :n].tolist(), grids, tiny_policy.encoder.image_pad_id,
                                                    tiny_policy.encoder.merge_size)  # fmt: skip
    flat = [v for row in inputs["vision"] for v in row]
    vision = {"pixel_values": torch.cat([v.pixel_values for v in flat]),
              "image_grid_thw": torch.stack([v.grid_thw for v in flat])}  # fmt: skip
    with torch.no_grad():
        ref = tiny_policy.model(input_ids=ids, attention_mask=att, position_ids=positions, **vision).logits[:, :-1]
        flat_pos = (att.cumsum(-1) - 1).clamp(min=0).expand(3, B, T)
        one_d = tiny_policy.model(input_ids=ids, attention_mask=att, position_ids=flat_pos, **vision).logits[:, :-1]
    valid = att[:, 1:].bool()
    keep = [v for v in range(ref.shape[-1]) if v not in tiny_policy.suppress_ids]  # columns outside the policy's support
    ours = logits.detach()[..., keep]
    assert torch.allclose(ours[valid], ref[..., keep][valid], atol=1e-5)
    assert not torch.allclose(ours[valid], one_d[..., keep][valid], atol=1e-3)  # the 2-D positions matter


def test_log_prob_scores_only_from_the_first_response_column(tiny_policy):
    """With a Batch, the LM head runs on positions from the first masked column only; values equal a full pass."""
    _, trajs = _two_turn_trajectories(tiny_policy, SamplingParams(temperature=1.0, max_new_tokens=5))
    batch = tiny_policy.collate(trajs)
    inputs, mask = batch.model_inputs, batch.mask
    head_rows = []
    hook = tiny_policy.model.lm_head.register_forward_hook(lambda m, a, out: head_rows.append(out.shape[1]))
    try:
        logp, m, ent = tiny_policy.log_prob(batch, with_entropy=True)
        full_logp, _, full_ent = tiny_policy.log_prob(inputs, with_entropy=True)  # bare inputs: every position
    finally:
        hook.remove()
    first = int(mask.bool().any(0).nonzero()[0])  # the first column any response token sits in
    T = inputs["input_ids"].shape[1]
    assert first > 0 and head_rows == [T - first, T]
    valid = m.bool()
    torch.testing.assert_close(logp[valid], full_logp[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent[valid], full_ent[valid], atol=1e-5, rtol=1e-5)
    assert (logp[:, :first] == 0).all() and logp.shape == full_logp.shape == mask.shape


def test_the_trained_distribution_is_the_sampled_one(tiny_policy):
    """With the LM head biased towards the (never sampled) vision tokens, behaviour and learner log-probs are those of
    the distribution over the other tokens, computed here from the raw logits with the vision columns dropped."""
    banned = tiny_policy.suppress_ids

    def boost(module, args, output):
        output[..., banned] += 5.0  # a large share of the raw mass sits on tokens the sampler never draws
        return output

    handle = tiny_policy.model.lm_head.register_forward_hook(boost)
    try:
        _, trajs = _two_turn_trajectories(tiny_policy, SamplingParams(temperature=1.0, max_new_tokens=6))
        batch = tiny_policy.collate(trajs)
        inputs, mask, old = batch.model_inputs, batch.mask, batch.old_logp
        logp, m, entropy = tiny_policy.log_prob(inputs, with_entropy=True)
        ids = inputs["input_ids"]
        with torch.no_grad():
            raw = tiny_policy.model(input_ids=ids, attention_mask=inputs["attention_mask"],
                                    **tiny_policy._vision_kwargs(inputs["vision"], ids)).logits[:, :-1]  # fmt: skip
    finally:
        handle.remove()
    keep = [v for v in range(raw.shape[-1]) if v not in banned]
    allowed = torch.log_softmax(raw[..., keep], dim=-1)  # [B, L, V - 5]
    column = {v: j for j, v in enumerate(keep)}
    valid = mask.bool()
    targets = ids[:, 1:]
    ref = torch.zeros_like(mask)
    for b, t in valid.nonzero().tolist():
        ref[b, t] = allowed[b, t, column[int(targets[b, t])]]
    assert float(torch.softmax(raw, -1)[..., banned].sum(-1)[valid].mean()) > 0.5  # the raw mass really moved there
    torch.testing.assert_close(old[valid], ref[valid], atol=1e-4, rtol=1e-4)  # behaviour log-probs (generation)
    torch.testing.assert_close(logp.detach()[valid], ref[valid], atol=1e-4, rtol=1e-4)  # learner recompute
    ref_entropy = -(allowed.exp() * allowed).sum(-1)
    torch.testing.assert_close(entropy.detach()[valid], ref_entropy[valid], atol=1e-4, rtol=1e-4)


def test_a_checkpoints_sampling_defaults_do_not_change_what_is_sampled(tiny_model_path, tmp_path):
    """Real checkpoints ship sampling defaults (Qwen2.5-VL: top_k 1, top_p 0.001, repetition_penalty 1.05) that
    ``generate`` applies to every field it is not given: the tokens would then come from another distribution than the
    one whose log-probs are recorded and trained. Here the checkpoint also bans repeating any token already in the
    context (``no_repeat_ngram_size`` 1, a strong repetition penalty): the policy's samples still reuse prompt tokens
    as often as its own distribution says."""
    import json
    import shutil

    from mmrl.models import load_policy

    path = tmp_path / "with_defaults"
    shutil.copytree(tiny_model_path, path)
    config = json.loads((path / "generation_config.json").read_text())
    config.update({"do_sample": True, "top_k": 1, "top_p": 0.001, "temperature": 0.1, "repetition_penalty": 50.0,
                   "no_repeat_ngram_size": 1})  # fmt: skip
    (path / "generation_config.json").write_text(json.dumps(config))
    policy = load_policy(path, device="cpu")
    torch.manual_seed(0)
    obs = [{"text": "How many shapes are there? Count them all.", "images": ()}] * 32
    actions = policy.act(obs, SamplingParams(temperature=1.0, max_new_tokens=4))
    prompt = set(actions[0].record.prompt_ids)  # the first turn's prompt is the whole context
    new = [t for a in actions for t in a.record.response_ids]
    assert len({tuple(a.record.response_ids) for a in actions}) > 4  # not the argmax every time (top_k 1)
    assert any(t in prompt for t in new)  # prompt tokens are sampled again (no_repeat_ngram_size 1 would ban them)
