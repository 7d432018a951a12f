"""Simulator envs: ManiSkill3 tasks (:mod:`envs.sim.maniskill`), action chunks for any continuous-control env
(:mod:`envs.sim.chunk`) and scripted experts that make demonstrations locally (:mod:`envs.sim.experts`).

Nothing here imports ManiSkill (the ``sim`` extra) until an env is built; the registry names them lazily.

Example:
    >>> import envs
    >>> env = envs.make("maniskill", task="PushCube-v1", obs_mode="state")  # doctest: +SKIP
"""
