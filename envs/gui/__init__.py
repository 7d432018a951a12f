"""GUI envs without a browser: the text action grammar, grounding on synthetic screens or ScreenSpot-format files, and a
synthetic multi-step app; the MiniWoB++ adapter (a browser, the ``[gui]`` extra) lives beside them.

Example:
    >>> from envs.gui.actions import parse_action
    >>> parse_action('<answer>click(12, 30.5)</answer>')
    GuiAction(kind='click', x=12.0, y=30.5, text=None, key=None, dx=None, dy=None)
"""
