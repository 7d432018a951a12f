"""Regenerate assets/gui/screenspot_fixture/: a small self-made GUI grounding set in ScreenSpot's public format.

Screens are drawn by :mod:`envs.gui.screens` (seeded, so the output is the same every run); each gets two targets.
Two annotation files describe the same targets, one per ``bbox_format`` of :class:`envs.gui.grounding.GuiGroundingEnv`:

- ``screenspot_synthetic.json``: a JSON list, ``bbox`` as ``[left, top, width, height]`` (ScreenSpot v1/v2 style),
  with ``data_type`` and ``data_source``.
- ``screenspot_synthetic_xyxy.jsonl``: JSONL, ``bbox`` as ``[x1, y1, x2, y2]`` (ScreenSpot-Pro style), with ``ui_type``
  and ``platform``.

    python scripts/make_gui_fixtures.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from envs.gui.screens import generate_screen, instruction

OUT = Path(__file__).resolve().parents[1] / "assets" / "gui" / "screenspot_fixture"
SCREENS = [(1, 160, 120), (2, 320, 240), (2, 320, 240), (3, 320, 240), (3, 400, 300), (1, 240, 180)]  # (level, W, H)
TARGETS_PER_SCREEN = 2


def main() -> None:
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    v1, pro = [], []
    for i, (level, width, height) in enumerate(SCREENS):
        rng = np.random.default_rng(1000 + i)
        screen = generate_screen(rng, width, height, level)
        name = f"images/screen_{i}.png"
        Image.fromarray(screen.image).save(OUT / name, optimize=True)
        picks = rng.choice(len(screen.elements), size=min(TARGETS_PER_SCREEN, len(screen.elements)), replace=False)
        for k in sorted(int(p) for p in picks):
            e = screen.elements[k]
            x1, y1, x2, y2 = e.box
            source = ("desktop", "web")[i % 2]
            v1.append({"img_filename": name, "bbox": [x1, y1, x2 - x1, y2 - y1], "instruction": instruction(e),
                       "data_type": e.data_type, "data_source": source})  # fmt: skip
            pro.append({"img_filename": name, "bbox": [x1, y1, x2, y2], "instruction": instruction(e),
                        "ui_type": e.data_type, "platform": source, "img_size": [width, height]})  # fmt: skip
    (OUT / "screenspot_synthetic.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in v1) + "\n]\n")
    (OUT / "screenspot_synthetic_xyxy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pro))
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(v1)} targets on {len(SCREENS)} screens to {OUT} ({size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
