"""The rollout viewer: one static HTML page over a run's rollout samples (:mod:`mmrl.viz.rollouts`).

``write_viewer(run_dir)`` reads every ``run_dir/rollouts/step_*/samples.jsonl`` and writes ``run_dir/viewer.html``: inline
CSS and JavaScript, no network, no server, no library; it opens from disk in any browser and references the stored PNGs
by relative path. The page shows a table per step (samples, mean return, success rate, mean advantage) and a card per
sample, turn by turn: the observation text and images, the completion, the reward per reward function and the advantage.
On each turn's first image an SVG overlay draws the completion's boxes / clicks (``rewards.extract.shapes`` on its answer
region, mapped to original-image pixels with ``rewards.coords`` from the turn's ``coordinate_convention``) and the
ground-truth box / point when known. Filters (text, return range, step, success) and sorting (step, return, advantage)
run in the page; cards are paginated (``PAGE_SIZE``) so thousands of samples stay responsive. The filter state also
reads from the URL fragment (``viewer.html#q=click&sort=reward-desc&step=25``), so a filtered view can be linked.

Model output is untrusted: the samples travel as JSON in a ``<script type="application/json">`` block with ``<``, ``>``
and ``&`` escaped, and the page inserts every string as a text node or an attribute value, never as HTML.

Example:
    >>> write_viewer("runs/quickstart")
    PosixPath('runs/quickstart/viewer.html')
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmrl.viz.rollouts import ROLLOUTS_DIR, SAMPLES_FILE
from rewards.coords import frame_from_row
from rewards.extract import shapes, tagged_region

logger = logging.getLogger(__name__)

VIEWER_FILE = "viewer.html"
PAGE_SIZE = 25  # cards rendered per page: a page of images and overlays draws in well under a frame budget
MAX_TEXT = 20_000  # characters of one text shown in the page (samples.jsonl keeps everything)
_STEP_DIR = re.compile(r"step_(\d+)")
_IMAGE_FILE = re.compile(r"images/[0-9a-f]+\.png")  # what write_rollouts names images: nothing else is linked


def write_viewer(run_dir: str | Path) -> Path:
    """Write ``run_dir/viewer.html`` over every stored rollout sample; returns its path.

    A missing ``run_dir`` or one without rollout samples is a ``FileNotFoundError`` naming it; a malformed line of a
    ``samples.jsonl`` is skipped with a warning naming the file and line (counted in the page).
    """
    run_dir = Path(run_dir)
    root = run_dir / ROLLOUTS_DIR
    files = sorted(root.glob(f"step_*/{SAMPLES_FILE}")) if root.is_dir() else []
    if not files:
        raise FileNotFoundError(f"{run_dir}: no rollout samples (expected {root}/step_*/{SAMPLES_FILE}; the trainer "
                                "writes them every train.rollouts_every steps)")  # fmt: skip
    samples, skipped = [], 0
    for path in files:
        prefix = path.parent.relative_to(run_dir).as_posix()
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                samples.append(page_sample(json.loads(line), prefix))
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                logger.warning("%s:%d: rollout sample skipped (%s)", path, lineno, str(e)[:200])
                skipped += 1
    data = {"run": run_dir.resolve().name, "samples": samples, "skipped": skipped, "page_size": PAGE_SIZE}
    out = run_dir / VIEWER_FILE
    out.write_text(render_page(data), encoding="utf-8")
    return out


def page_sample(sample: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A ``samples.jsonl`` record as the page needs it: image paths relative to the page, texts cut at ``MAX_TEXT``,
    each turn's predicted shapes and ground truth in original-image pixels."""
    step = sample.get("step")
    if not isinstance(step, int):
        m = _STEP_DIR.fullmatch(Path(prefix).name)
        step = int(m.group(1)) if m else 0
    turns = sample["turns"]
    if not isinstance(turns, list):
        raise TypeError("'turns' is not a list")
    answer = sample.get("answer")
    return {
        "step": step,
        "index": int(sample.get("index", 0)),
        "group": sample.get("group"),
        "return": _number(sample.get("return")),
        "success": sample.get("success") if isinstance(sample.get("success"), bool) else None,
        "advantage": _number(sample.get("advantage")),
        "answer": None if answer is None else _cut(answer if isinstance(answer, str) else json.dumps(answer)),
        "turns": [page_turn(t, prefix) for t in turns],
    }


def page_turn(turn: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """One turn for the page; the overlay (predicted shapes, target) sits on the turn's first image."""
    images = []
    for im in turn.get("images") or []:
        if not (isinstance(im, Mapping) and isinstance(im.get("file"), str) and _IMAGE_FILE.fullmatch(im["file"])):
            continue
        w, h = (int(v) for v in im["size"])
        images.append({"src": f"{prefix}/{im['file']}", "w": w, "h": h, "shapes": [], "target": None})
    action = turn.get("action")
    note = None
    if images:
        first = images[0]
        frame = dict(turn.get("frame") or {})
        frame["image_size"] = frame.get("image_size") or [first["w"], first["h"]]
        try:
            fr = frame_from_row(frame)
            first["view"] = list(fr.image_size or (first["w"], first["h"]))  # the SVG viewBox: original pixels
            first["shapes"] = predicted_shapes(action, fr) if isinstance(action, str) else []
        except (ValueError, TypeError) as e:
            note = f"predicted coordinates not drawn: {e}"
        target = turn.get("target")
        if isinstance(target, list) and len(target) in (2, 4) and all(_number(v) is not None for v in target):
            first["target"] = [float(v) for v in target]
    return {
        "text": _cut(str(turn.get("text") or "")),
        "images": images,
        "arrays": {str(k): _array_text(v) for k, v in (turn.get("arrays") or {}).items()},
        "action": _cut(action) if isinstance(action, str) else _array_text(action),
        "reward": _number(turn.get("reward")),
        "parts": {str(k): _number(v) for k, v in (turn.get("reward_parts") or {}).items()},
        "advantage": _number(turn.get("advantage")),
        "info": {str(k): _cut(str(v)) for k, v in (turn.get("info") or {}).items()},
        "note": note,
    }


def predicted_shapes(action: str, frame: Any) -> list[list[float]]:
    """The boxes / points of the completion's answer region (``rewards.extract.tagged_region``, as the rewards read
    it) in original-image pixels (``frame``: a ``rewards.Frame``); non-finite ones are left out."""
    region = tagged_region(action)
    if region is None:
        return []
    out = []
    for s in shapes(region):
        c = frame.to_pixels(s.coords)
        if all(math.isfinite(v) for v in c):
            out.append([round(v, 3) for v in c])
    return out


def render_page(data: dict[str, Any]) -> str:
    """The HTML page with ``data`` embedded as JSON (``<``, ``>``, ``&`` escaped so no string can end the block)."""
    payload = json.dumps(data, allow_nan=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return (_PAGE.replace("__TITLE__", html.escape(f"rollouts: {data['run']}"))
            .replace("__STYLE__", _STYLE).replace("__SCRIPT__", _SCRIPT).replace("__DATA__", payload))  # fmt: skip


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else f"{text[:MAX_TEXT]}\u2026 [{len(text) - MAX_TEXT:,} more characters]"


def _array_text(value: Any) -> str:
    """A stored array (``{"shape", "values"}``) as one line: ``[8] 0.1, 0.2, ...``."""
    if not isinstance(value, Mapping):
        return _cut(json.dumps(value))
    shape = value.get("shape") or []
    values = value.get("values") or []
    total = math.prod(int(v) for v in shape) if shape else len(values)
    text = ", ".join("nan" if v is None else f"{v:.4g}" for v in values)
    more = f", \u2026 ({total - len(values)} more)" if total > len(values) else ""
    return _cut(f"{list(shape)} {text}{more}" + (f" {value['text']}" if value.get("text") else ""))


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>__STYLE__</style>
</head>
<body>
<header>
  <h1>__TITLE__</h1>
  <div id="controls">
    <label>text <input id="filter-text" type="search" placeholder="completion, prompt or answer"></label>
    <label>return &ge; <input id="reward-min" type="number" step="any"></label>
    <label>&le; <input id="reward-max" type="number" step="any"></label>
    <label>step <select id="step-select"><option value="all">all</option></select></label>
    <label>success <select id="success-select"><option value="all">all</option><option value="yes">yes</option>
      <option value="no">no</option></select></label>
    <label>sort <select id="sort-select">
      <option value="step-desc">step (newest)</option><option value="step-asc">step (oldest)</option>
      <option value="reward-desc">return (high)</option><option value="reward-asc">return (low)</option>
      <option value="adv-desc">advantage (high)</option><option value="adv-asc">advantage (low)</option>
    </select></label>
    <button id="prev-page" type="button">&larr;</button><span id="page-info"></span>
    <button id="next-page" type="button">&rarr;</button>
  </div>
</header>
<main>
  <details id="steps"><summary id="steps-summary">per step</summary>
  <table id="step-table"><thead><tr><th>step</th><th>samples</th><th>mean return</th><th>success</th>
    <th>mean advantage</th></tr></thead><tbody></tbody></table></details>
  <p id="skipped"></p>
  <div id="cards"></div>
</main>
<script type="application/json" id="rollout-data">__DATA__</script>
<script>__SCRIPT__</script>
</body>
</html>
"""

_STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1d232b; }
header { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid #d8dce2; padding: 6px 14px; }
h1 { font-size: 15px; margin: 2px 0 6px; }
#controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; }
#controls input[type=number] { width: 70px; }
main { padding: 10px 14px; }
table { border-collapse: collapse; background: #fff; }
th, td { border: 1px solid #d8dce2; padding: 2px 8px; text-align: right; }
#step-table tbody tr { cursor: pointer; }
summary { cursor: pointer; color: #4a5565; margin-bottom: 4px; }
#step-table tbody tr:hover, #step-table tr.active { background: #e7f0ff; }
.sample { background: #fff; border: 1px solid #d8dce2; border-radius: 6px; margin: 10px 0; padding: 8px 10px; }
.sample-head { display: flex; flex-wrap: wrap; gap: 14px; font-weight: 600; }
.ok { color: #17803d; } .fail { color: #b42318; }
.answer { color: #4a5565; margin: 4px 0; }
.turn { border-top: 1px dashed #d8dce2; margin-top: 6px; padding-top: 6px; }
.turn-head { color: #4a5565; margin-bottom: 4px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 4px 0; padding: 6px; border-radius: 4px; max-height: 320px;
  overflow: auto; }
pre.obs-text { background: #f1f3f6; } pre.completion { background: #fff8e6; }
.images { display: flex; flex-wrap: wrap; gap: 8px; }
.imgwrap { position: relative; width: 320px; line-height: 0; }
.imgwrap img { width: 100%; height: auto; image-rendering: pixelated; border: 1px solid #d8dce2; }
svg.overlay { position: absolute; left: 0; top: 0; width: 100%; height: 100%; overflow: visible; }
.pred-box { fill: rgba(230, 60, 40, 0.15); stroke: #e63c28; stroke-width: 2; }
.pred-point { fill: rgba(230, 60, 40, 0.5); stroke: #fff; stroke-width: 1.5; }
.gt-box, .gt-point { fill: none; stroke: #16a34a; stroke-width: 2; stroke-dasharray: 5 3; }
.arrays, .info, .note { color: #4a5565; font-family: ui-monospace, monospace; font-size: 12px; }
table.reward-parts { margin: 4px 0; font-size: 12px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const DATA = JSON.parse(document.getElementById("rollout-data").textContent);
  const SAMPLES = DATA.samples;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const state = { q: "", min: "", max: "", step: "all", success: "all", sort: "step-desc", page: 0 };
  const CONTROLS = { q: "filter-text", min: "reward-min", max: "reward-max", step: "step-select",
    success: "success-select", sort: "sort-select" };

  // every string goes in as a text node or an attribute value: model output is never parsed as HTML
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, String(v));
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    e.setAttribute("vector-effect", "non-scaling-stroke");
    return e;
  }
  const fmt = (v) => (v === null || v === undefined ? "\u2013" : Number(v).toFixed(3));
  const r2 = (v) => Math.round(v * 100) / 100;
  const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);

  function shape(c, kind, radius) {
    const coords = c.map(r2).join(",");
    if (c.length === 4) {
      const x = Math.min(c[0], c[2]), y = Math.min(c[1], c[3]);
      return svg("rect", { class: kind + "-box", x: r2(x), y: r2(y), width: r2(Math.abs(c[2] - c[0])),
        height: r2(Math.abs(c[3] - c[1])), "data-coords": coords });
    }
    return svg("circle", { class: kind + "-point", cx: r2(c[0]), cy: r2(c[1]), r: r2(radius), "data-coords": coords });
  }

  function figure(im) {
    const wrap = el("div", { class: "imgwrap" }, el("img", { class: "obs-image", src: im.src, width: im.w,
      height: im.h, alt: "observation image " + im.w + "x" + im.h }));
    if (im.shapes.length || im.target) {
      const [w, h] = im.view || [im.w, im.h];
      const o = svg("svg", { class: "overlay", viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none" });
      const radius = Math.max(w, h) * 0.03;
      if (im.target) o.append(shape(im.target, "gt", radius * 1.5));
      for (const c of im.shapes) o.append(shape(c, "pred", radius));
      wrap.append(o);
    }
    return wrap;
  }

  function turn(t, k, n) {
    const box = el("div", { class: "turn", "data-turn": k });
    box.append(el("div", { class: "turn-head" }, n > 1 ? "turn " + (k + 1) + "/" + n : "turn",
      " \u00b7 reward ", el("b", { class: "reward" }, fmt(t.reward)),
      " \u00b7 advantage ", el("b", { class: "advantage" }, fmt(t.advantage))));
    if (t.text) box.append(el("pre", { class: "obs-text" }, t.text));
    if (t.images.length) box.append(el("div", { class: "images" }, ...t.images.map(figure)));
    for (const [name, text] of Object.entries(t.arrays)) box.append(el("div", { class: "arrays" }, name + " " + text));
    box.append(el("pre", { class: "completion" }, t.action));
    const parts = Object.entries(t.parts);
    if (parts.length) {
      box.append(el("table", { class: "reward-parts" },
        el("tr", {}, ...parts.map(([name]) => el("th", {}, name))),
        el("tr", {}, ...parts.map(([name, v]) => el("td", { "data-reward": name }, fmt(v))))));
    }
    const info = Object.entries(t.info).map(([k2, v]) => k2 + "=" + v).join("  ");
    if (info) box.append(el("div", { class: "info" }, info));
    if (t.note) box.append(el("div", { class: "note" }, t.note));
    return box;
  }

  function card(s) {
    const ok = s.success === null ? null : s.success ? el("span", { class: "ok" }, "success")
      : el("span", { class: "fail" }, "failure");
    const c = el("div", { class: "sample", "data-step": s.step, "data-index": s.index,
      "data-return": s.return === null ? "" : s.return },
      el("div", { class: "sample-head" }, el("span", {}, "step " + s.step), el("span", {}, "#" + s.index),
        el("span", {}, "group " + s.group), el("span", { class: "return" }, "return " + fmt(s.return)), ok,
        el("span", { class: "advantage" }, "advantage " + fmt(s.advantage))));
    if (s.answer !== null) c.append(el("div", { class: "answer" }, "answer: ", el("code", {}, s.answer)));
    s.turns.forEach((t, k) => c.append(turn(t, k, s.turns.length)));
    return c;
  }

  function haystack(s) {
    if (s._hay === undefined) {
      s._hay = [s.answer || ""].concat(...s.turns.map((t) => [t.text, t.action])).join("\n").toLowerCase();
    }
    return s._hay;
  }
  function bound(text) { const v = parseFloat(text); return Number.isFinite(v) ? v : null; }
  function keep(s) {
    const lo = bound(state.min), hi = bound(state.max);
    if (state.step !== "all" && String(s.step) !== state.step) return false;
    if (lo !== null && !(s.return !== null && s.return >= lo)) return false;
    if (hi !== null && !(s.return !== null && s.return <= hi)) return false;
    if (state.success !== "all" && s.success !== (state.success === "yes")) return false;
    return !state.q || haystack(s).includes(state.q.toLowerCase());
  }
  const KEY = { step: (s) => s.step, reward: (s) => s.return, adv: (s) => s.advantage };
  function order(list) {
    const [name, dir] = state.sort.split("-");
    const key = KEY[name] || KEY.step, sign = dir === "asc" ? 1 : -1;
    return list.sort((a, b) => {
      const x = key(a), y = key(b);
      if (x !== y) {
        if (x === null) return 1;  // unknown values last
        if (y === null) return -1;
        return sign * (x - y);
      }
      return b.step - a.step || a.index - b.index;
    });
  }

  function stepTable() {
    const steps = [...new Set(SAMPLES.map((s) => s.step))].sort((a, b) => a - b);
    const body = $("step-table").tBodies[0];
    for (const step of steps) {
      const ss = SAMPLES.filter((s) => s.step === step);
      const val = (f) => ss.map(f).filter((v) => v !== null);
      const rate = mean(val((s) => (s.success === null ? null : Number(s.success))));
      const row = el("tr", { "data-step": step }, el("td", {}, step), el("td", {}, ss.length),
        el("td", {}, fmt(mean(val((s) => s.return)))), el("td", {}, rate === null ? "\u2013" : fmt(rate)),
        el("td", {}, fmt(mean(val((s) => s.advantage)))));
      row.addEventListener("click", () => { state.step = state.step === String(step) ? "all" : String(step);
        state.page = 0; sync(); render(); });
      body.append(row);
      $("step-select").append(el("option", { value: step }, "step " + step));
    }
    $("steps-summary").textContent = "per step (" + steps.length + " steps, click a row to filter)";
    $("steps").open = steps.length <= 20;  // a long run's table starts folded
  }

  function render() {
    const shown = order(SAMPLES.filter(keep));
    const size = DATA.page_size, pages = Math.max(1, Math.ceil(shown.length / size));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * size, page = shown.slice(first, first + size);
    $("cards").replaceChildren(...page.map(card));
    $("page-info").textContent = shown.length ? (first + 1) + "\u2013" + (first + page.length) + " of " +
      shown.length + " (" + SAMPLES.length + " stored)" : "no sample matches (" + SAMPLES.length + " stored)";
    $("prev-page").disabled = state.page === 0;
    $("next-page").disabled = state.page >= pages - 1;
    for (const tr of $("step-table").tBodies[0].rows) tr.classList.toggle("active", tr.dataset.step === state.step);
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries(state)) if (k === "page" ? v > 0 : v !== "" && v !== "all" && v !== "step-desc")
      p.set(k, k === "page" ? v + 1 : v);
    history.replaceState(null, "", p.toString() ? "#" + p.toString() : location.pathname);
  }
  function sync() { for (const [k, id] of Object.entries(CONTROLS)) $(id).value = state[k]; }

  const hash = new URLSearchParams(location.hash.slice(1));
  for (const k of Object.keys(state)) if (hash.has(k)) state[k] = hash.get(k);
  state.page = Math.max(0, (parseInt(state.page, 10) || 1) - 1);
  stepTable();
  if (![...$("step-select").options].some((o) => o.value === state.step)) state.step = "all";
  if (![...$("sort-select").options].some((o) => o.value === state.sort)) state.sort = "step-desc";
  sync();
  for (const [k, id] of Object.entries(CONTROLS)) {
    $(id).addEventListener("input", () => { state[k] = $(id).value; state.page = 0; render(); });
  }
  $("prev-page").addEventListener("click", () => { state.page -= 1; render(); window.scrollTo(0, 0); });
  $("next-page").addEventListener("click", () => { state.page += 1; render(); window.scrollTo(0, 0); });
  if (DATA.skipped) $("skipped").textContent = DATA.skipped + " malformed sample line(s) skipped (see the log)";
  render();
})();
"""
