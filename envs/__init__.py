"""Environment adapters: each a ``gymnasium.Env`` whose observation dict has ``text`` and ``images``.

Example:
    >>> import envs
    >>> env = envs.make("synthetic_vqa", seed=0)
"""

from envs.registry import check, make, names, register

# Lazy "module:Class" entries: importing ``envs`` imports no env module (and no optional extra).
register("synthetic_vqa", "envs.vqa.synthetic:SyntheticVQAEnv")
register("dataset_vqa", "envs.vqa.dataset:DatasetVQAEnv")
register("gui_grounding", "envs.gui.grounding:GuiGroundingEnv")
register("gui_app", "envs.gui.app:GuiAppEnv")
register("miniwob", "envs.gui.miniwob:MiniWoBEnv")
register("maniskill", "envs.sim.maniskill:ManiSkillEnv")
register("chunked", "envs.sim.chunk:make_chunked")  # any env with a Box action, acting in chunks [H, A]: env=<id>, horizon=H
register("zoom_vqa", "envs.vqa.zoom:ZoomVQAEnv")
register("synthetic_video_vqa", "envs.vqa.video:SyntheticVideoVQAEnv")

__all__ = ["check", "make", "names", "register"]
