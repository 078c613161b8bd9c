"""stable-retro in retrovec's workers: games and states (:mod:`~retrovec.retro.games`),
:func:`~retrovec.retro.factory.make`, scenarios evaluated without ``update_ram``
(:mod:`~retrovec.retro.scenario`), worker-side wrappers (:mod:`~retrovec.retro.wrappers`),
multiplayer, recording, replay, video and the Atari ROMs of ale-py.
"""
