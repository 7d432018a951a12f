"""Rollout samples and the static viewer page, rendered in headless Chromium (Debian ``chromium``).

Expected overlay coordinates are derived here from the completions and the conventions' definitions (rewards/coords.py
docstring), not from the code under test: Qwen2.5-VL's resized side is ``round(side / 28) * 28`` for an image within
the pixel bounds, Qwen2-VL's coordinates are thousandths of the side.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmrl.types import Batch, Step, Trajectory
from mmrl.viz.rollouts import batch_advantages, encode_png, sample_indices, write_rollouts
from mmrl.viz.viewer import MAX_TEXT, VIEWER_FILE, page_turn, write_viewer

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian `chromium` is not installed (apt-get install chromium)")  # fmt: skip
HOSTILE = "<script>document.body.setAttribute('data-pwned','1')</script><img src=x onerror=\"document.title='pwned'\">"


def image(w: int, h: int, seed: int) -> np.ndarray:
    """A light gradient with a random block and a little noise: distinct per seed, visible in the screenshot."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)  # [H, W, 3]
    img[...] = (190 + 50 * np.arange(w) / w).astype(np.uint8)[None, :, None]  # [W] -> [1, W, 1]
    x, y = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
    img[y : y + h // 3, x : x + w // 3] = rng.integers(0, 160, 3)
    return img + rng.integers(0, 8, img.shape, dtype=np.uint8)


def vlm_step(text: str, img: np.ndarray, action: str, reward: float, info: dict) -> Step:
    return Step({"text": text, "images": (img,)}, action, logp=-1.0, record=None, reward=reward, terminated=True,
                info=info)  # fmt: skip


def trajectories() -> list[Trajectory]:
    """Group 0: two box answers on one screenshot (Qwen2-VL convention), one of them hostile text; group 1: a click
    (Qwen2.5-VL convention); group 2: a two-turn GUI episode; group 3: an MLP episode with array observations."""
    shot, small = image(64, 48, 0), image(100, 50, 1)
    box_cols = {"coordinate_convention": "qwen2_vl", "image_size": [64, 48], "answer": "[10, 20, 40, 44]"}
    box = vlm_step("Find the OK button.", shot, '<think>there</think><answer>{"bbox_2d": [250, 500, 750, 1000]}</answer>',
                   0.8, {"reward_columns": box_cols, "reward_parts": {"iou": 0.7, "format": 1.0}, "bbox": [10, 20, 40, 44],
                         "answer": "[10, 20, 40, 44]", "success": True})  # fmt: skip
    hostile = vlm_step("Find the OK button.", shot, HOSTILE, 0.0,
                       {"reward_columns": box_cols, "reward_parts": {"iou": 0.0, "format": 0.0}, "success": False})  # fmt: skip
    click_cols = {"coordinate_convention": "qwen2_5_vl", "image_size": [100, 50],
                  "answer": {"action": "click", "bbox": [40, 20, 60, 30]}}  # fmt: skip
    click = vlm_step("Click submit.", small, '<answer>{"action": "click", "point": [56, 28]}</answer>', 1.0,
                     {"reward_columns": click_cols, "reward_parts": {"gui_action": 1.0}, "success": True})  # fmt: skip
    turn1 = vlm_step("Tick the box.", image(80, 60, 2), "<answer>click(10, 12)</answer>", 0.0,
                     {"parse_error": None, "steps": 1})  # fmt: skip
    turn1.terminated = False
    turn2 = vlm_step("", image(80, 60, 3), "<answer>click(70, 50)</answer>", 1.0, {"success": True, "steps": 2})
    mlp = [Step(np.array([0.5, -1.0, 2.0], np.float32), np.array([1.0, 0.0]), logp=-0.5, record=None, reward=r)
           for r in (1.0, float("nan"))]  # fmt: skip
    mlp[-1].truncated = True
    return [
        Trajectory([box], group_id=0, info={"success": True}),
        Trajectory([hostile], group_id=0, info={"success": False}),
        Trajectory([click], group_id=1, info={"success": True}),
        Trajectory([turn1, turn2], group_id=2, info={"success": True}),
        Trajectory(mlp, group_id=3),
    ]


ADVANTAGES = [0.5, -0.5, 1.25, [0.3, -0.1], 0.0]


def read_samples(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------- rollouts
def test_rollout_samples_round_trip(tmp_path):
    trajs = trajectories()
    out = write_rollouts(tmp_path, 7, trajs, ADVANTAGES, max_samples=16)
    assert out == tmp_path / "rollouts" / "step_000007"
    rows = read_samples(out)
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4] and all(r["step"] == 7 for r in rows)
    box, hostile, click, multi, mlp = rows
    assert box["return"] == 0.8 and box["success"] is True and box["advantage"] == 0.5 and box["group"] == 0
    assert box["answer"] == "[10, 20, 40, 44]" and box["turns"][0]["target"] == [10, 20, 40, 44]
    assert box["turns"][0]["reward_parts"] == {"iou": 0.7, "format": 1.0}
    assert box["turns"][0]["frame"] == {"coordinate_convention": "qwen2_vl", "image_size": [64, 48]}
    assert hostile["turns"][0]["action"] == HOSTILE
    assert click["turns"][0]["target"] == [40, 20, 60, 30]  # from the GUI action answer's bbox
    assert [t["advantage"] for t in multi["turns"]] == [0.3, -0.1] and multi["advantage"] == pytest.approx(0.1)
    assert [t["reward"] for t in multi["turns"]] == [0.0, 1.0] and multi["return"] == 1.0
    assert multi["turns"][0]["info"] == {"steps": 1}  # None values are left out
    # MLP: numbers, no images; the NaN reward is null (strict JSON), the return too
    assert mlp["turns"][0]["images"] == []
    assert mlp["turns"][0]["arrays"]["obs"] == {"shape": [3], "values": [0.5, -1.0, 2.0]}
    assert mlp["turns"][0]["action"] == {"shape": [2], "values": [1.0, 0.0]}
    assert mlp["turns"][1]["reward"] is None and mlp["return"] is None and mlp["success"] is None
    # each distinct image once, pixels intact
    files = sorted((out / "images").glob("*.png"))
    assert len(files) == 4  # the shared screenshot, the click image, two turns
    assert box["turns"][0]["images"] == hostile["turns"][0]["images"]
    saved = np.asarray(Image.open(out / box["turns"][0]["images"][0]["file"]))
    np.testing.assert_array_equal(saved, trajs[0].steps[0].observation["images"][0])
    assert box["turns"][0]["images"][0]["size"] == [64, 48]


@pytest.mark.parametrize("shape", [(5, 7), (5, 7, 1), (5, 7, 3), (5, 7, 4)])
def test_png_decodes_to_the_same_pixels(shape):
    pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(encode_png(pixels))))  # PIL's decoder, not ours
    np.testing.assert_array_equal(decoded, pixels.reshape(decoded.shape))


def test_sample_keeps_whole_groups():
    trajs = [Trajectory([], group_id=g) for g in (0, 0, 1, 1, 2, 2)]
    assert sample_indices(trajs, 5) == [0, 1, 2, 3]
    assert sample_indices(trajs, 1) == [0]  # no whole group fits: the first trajectories
    with pytest.raises(ValueError, match="2 advantages for 6 trajectories"):
        write_rollouts("unused", 0, trajs, [0.0, 1.0])


def test_batch_advantages_per_turn():
    """[B, L] advantages: per turn the mean over that turn's trained positions (step_ids), by hand."""
    steps = [Step(None, "a", 0.0, None)] * 2
    trajs = [Trajectory(steps[:2]), Trajectory(steps[:1])]
    adv = torch.tensor([[9.0, 1.0, 3.0, 9.0, 4.0, 9.0], [9.0, 2.0, 6.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[0, 1, 1, 0, 1, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.float32)
    step_ids = torch.tensor([[-1, 0, 0, -1, 1, -1], [-1, 0, 0, -1, -1, -1]])
    batch = Batch({}, mask, mask * 0, adv, torch.zeros(2), torch.zeros(2, dtype=torch.long), step_ids=step_ids)
    assert batch_advantages(batch, trajs) == [[2.0, 4.0], [4.0]]
    batch.step_ids = None  # no turn ids: the row's masked mean for every turn
    assert batch_advantages(batch, trajs) == [[8 / 3, 8 / 3], [4.0]]
    # rows are turns (history windows): [B] advantages, episode ids 0, 0, 1
    rows = Batch({}, torch.ones(3, 2), torch.zeros(3, 2), torch.tensor([0.5, -1.0, 2.0]), torch.zeros(3),
                 torch.zeros(3, dtype=torch.long), episode_ids=torch.tensor([0, 0, 1]))  # fmt: skip
    assert batch_advantages(rows, trajs) == [[0.5, -1.0], [2.0]]
    rows.advantages = torch.tensor([[1.0, 3.0], [5.0, 9.0], [-2.0, 0.0]])  # [B, L]; row 1 trains its first position
    rows.mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    rows.step_ids = torch.tensor([[0, 0], [1, -1], [0, 0]])  # each row's positions belong to the turn it holds
    assert batch_advantages(rows, trajs) == [[2.0, 5.0], [-1.0]]


# ------------------------------------------------------------------------------------------------------- viewer
class Dom(HTMLParser):
    """Every start tag with its attributes, and the text inside each element carrying a class."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str | None] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        if tag not in ("img", "input", "br", "meta", "source"):
            self._open.append(a.get("class"))

    def handle_endtag(self, tag):
        if self._open and tag not in ("img", "input", "br", "meta"):
            self._open.pop()

    def handle_data(self, data):
        for cls in filter(None, self._open):
            self.texts.setdefault(cls, []).append(data)

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.tags if t == tag and (cls is None or cls in a.get("class", "").split())]

    def text(self, cls: str) -> str:
        return "".join(self.texts.get(cls, []))


def chromium(url: str, tmp: Path, *args: str) -> str:
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp / 'profile'}", "--allow-file-access-from-files", *args, url]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def coords(attrs: dict[str, str], *keys: str) -> list[float]:
    return [float(attrs[k]) for k in keys]


@needs_chromium
def test_viewer_in_headless_chromium(tmp_path):
    run = tmp_path / "run"
    write_rollouts(run, 7, trajectories(), ADVANTAGES, max_samples=16)
    write_rollouts(run, 9, trajectories()[2:3], [2.0], max_samples=16)
    page = write_viewer(run)
    assert page == run / VIEWER_FILE
    source = page.read_text()
    assert "<script>document.body" not in source and "http://" not in source.replace("http://www.w3.org/2000/svg", "")

    dom_text = chromium(page.as_uri(), tmp_path, "--dump-dom")
    dom = Dom(dom_text)
    cards = dom.find("div", "sample")
    assert [(c["data-step"], c["data-index"]) for c in cards] == [("9", "0")] + [("7", str(i)) for i in range(5)]
    # images: every stored image, by relative path, and the files exist
    srcs = [a["src"] for a in dom.find("img", "obs-image")]
    assert len(srcs) == 6 and all((run / s).is_file() for s in srcs) and srcs[0].startswith("rollouts/step_000009/")
    # overlays, independently: qwen2_vl box [250, 500, 750, 1000] on 64x48 -> x * 64 / 1000, y * 48 / 1000
    boxes = [coords(a, "x", "y", "width", "height") for a in dom.find("rect", "pred-box")]
    assert boxes == [pytest.approx([16.0, 24.0, 32.0, 24.0])]
    gt_click, gt_box = pytest.approx([40, 20, 20, 10]), pytest.approx([10, 20, 30, 24])  # [x, y, w, h] of the answers
    assert [coords(a, "x", "y", "width", "height") for a in dom.find("rect", "gt-box")] == [gt_click, gt_box, gt_box,
                                                                                            gt_click]  # fmt: skip
    # qwen2_5_vl click (56, 28) on 100x50: resized to round(100/28)*28 = 112 by round(50/28)*28 = 56 -> (50, 25);
    # the two-turn episode's pixel clicks stay as written
    points = [coords(a, "cx", "cy") for a in dom.find("circle", "pred-point")]
    assert points == [pytest.approx([50, 25])] * 2 + [pytest.approx([10, 12]), pytest.approx([70, 50])]
    sizes = ["100 50", "64 48", "64 48", "100 50", "80 60", "80 60"]  # the overlays' original pixels
    assert [a["viewbox"] for a in dom.find("svg", "overlay")] == [f"0 0 {s}" for s in sizes]
    # completions as text: the hostile one is shown, escaped, and nothing of it ran
    completions = dom.text("completion")
    assert HOSTILE in completions and '{"bbox_2d": [250, 500, 750, 1000]}' in completions
    assert "&lt;script&gt;" in dom_text and "data-pwned" not in dom_text.replace("data-pwned','1')", "")
    assert "pwned" not in dom_text.split("<title>", 1)[1].split("</title>", 1)[0]
    # rewards per function, advantages, the MLP's numbers
    parts = {a["data-reward"] for a in dom.find("td") if "data-reward" in a}
    assert parts == {"iou", "format", "gui_action"}
    assert "0.700" in dom.text("reward-parts") and "-0.100" in dom.text("advantage")
    assert "[3] 0.5, -1, 2" in dom.text("arrays")
    # the filter and sort controls
    assert dom.find("input", None) and {a.get("id") for a in dom.find("input")} >= {"filter-text", "reward-min",
                                                                                      "reward-max"}  # fmt: skip
    assert {a.get("id") for a in dom.find("select")} == {"step-select", "success-select", "sort-select"}
    assert [a["value"] for a in dom.find("option") if a.get("value", "").isdigit()] == ["7", "9"]

    # filter and sort through the URL fragment: step 7, return >= 0.5, highest return first
    filtered = Dom(chromium(page.as_uri() + "#step=7&min=0.5&sort=reward-desc", tmp_path, "--dump-dom"))
    assert [c["data-return"] for c in filtered.find("div", "sample")] == ["1", "1", "0.8"]
    searched = Dom(chromium(page.as_uri() + "#q=bbox_2d", tmp_path, "--dump-dom"))
    assert [c["data-index"] for c in searched.find("div", "sample")] == ["0"]

    shot = tmp_path / "viewer.png"
    chromium(page.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1200,900", "--hide-scrollbars")
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)  # [900, 1200, 3]
    assert pixels.shape == (900, 1200, 3)
    assert pixels.std() > 10.0  # not blank: text, tables and the random-pixel images


def test_viewer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no rollout samples"):
        write_viewer(tmp_path)
    out = write_rollouts(tmp_path, 1, trajectories()[:1], None, max_samples=4)
    with (out / "samples.jsonl").open("a") as f:
        f.write('{"turns": 5}\nnot json\n')
    page = write_viewer(tmp_path).read_text()
    assert '"skipped": 2' in page


# ---------------------------------------------------------------------------------------------------- with the trainer
@needs_chromium
def test_trainer_batch_to_viewer(tiny_model_path, tmp_path):
    """One real rollout batch (tiny Qwen2.5-VL on synthetic GUI grounding screens, GRPO): the trainer's own
    trajectories and advantages through write_rollouts and the page; the drawn ground truth is the env's box."""
    from mmrl.config import load_config
    from mmrl.trainer.loop import Trainer

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs/gui_grounding.yaml", [
        f"model.path={tiny_model_path}", "model.build_tiny=false", f"train.output_dir={tmp_path}", "train.steps=1",
        "warmup.steps=0", "algo.prompts_per_step=2", "algo.group_size=2", "algo.minibatch_size=4",
        "rollout.max_new_tokens=8", "rollout.batch_size=4",
    ])  # fmt: skip
    trainer = Trainer(cfg, show_progress=False)
    try:
        trajs, _ = trainer.collect_scored()
        batch = trainer.make_batch(trajs)
        trainer.advantage(batch)
    finally:
        trainer.close()
    adv = batch_advantages(batch, trajs)
    for g in {t.group_id for t in trajs}:  # GRPO: within a group, the advantage follows the return around its mean
        members = [(t.reward, a[0]) for t, a in zip(trajs, adv) if t.group_id == g]
        mean = sum(r for r, _ in members) / len(members)
        assert all(a == pytest.approx(0.0, abs=1e-4) if r == mean else (a > 0) == (r > mean) for r, a in members)
    out = write_rollouts(cfg.run_dir, 1, trajs, adv, max_samples=3)  # two whole groups of 2 do not fit: one does
    rows = read_samples(out)
    assert [r["index"] for r in rows] == [0, 1]
    assert rows[0]["turns"][0]["frame"]["coordinate_convention"] == "qwen2_5_vl"
    dom = Dom(chromium(write_viewer(cfg.run_dir).as_uri(), tmp_path, "--dump-dom"))
    assert len(dom.find("img", "obs-image")) == 2
    gt = [coords(a, "x", "y", "width", "height") for a in dom.find("rect", "gt-box")]
    boxes = [trajs[i].info["bbox"] for i in (0, 1)]  # the env's own ground truth, original pixels
    assert gt == [pytest.approx([b[0], b[1], b[2] - b[0], b[3] - b[1]], abs=0.01) for b in boxes]
    shown = "".join(t.steps[0].action for t in trajs[:2]).replace("\r\n", "\n").replace("\r", "\n")  # as HTML parses
    assert dom.text("completion") == shown


def test_page_turn_refuses_what_it_cannot_draw():
    """Unknown conventions leave a note, not a wrong overlay; only write_rollouts' image names are linked; long texts
    are cut for the page."""
    turn = {"images": [{"file": "images/0a1b.png", "size": [100, 50]}, {"file": "javascript:alert(1)", "size": [1, 1]},
                       {"file": "../../secret.png", "size": [1, 1]}],
            "action": "click(5, 5)" + "x" * MAX_TEXT, "frame": {"coordinate_convention": "bogus"}}  # fmt: skip
    out = page_turn(turn, "rollouts/step_000001")
    assert [im["src"] for im in out["images"]] == ["rollouts/step_000001/images/0a1b.png"]
    assert out["images"][0]["shapes"] == [] and "coordinate_convention" in out["note"]
    assert out["action"].endswith("[11 more characters]") and len(out["action"]) < MAX_TEXT + 40
    turn["frame"] = {"coordinate_convention": "normalized"}  # no image_size: the image's own size is the frame
    assert page_turn(turn, "r")["images"][0]["shapes"] == [[500.0, 250.0]]
