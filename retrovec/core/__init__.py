"""The vector env itself: any gymnasium env, many worker processes (or Ray env runners).

Parent side: :mod:`~retrovec.core.base` (gymnasium's vector API on one
:mod:`~retrovec.core.slots` table; :mod:`~retrovec.core.commands`,
:mod:`~retrovec.core.restart`, :mod:`~retrovec.core.spaces`, :mod:`~retrovec.core.checks`,
:mod:`~retrovec.core.batches`), and two transports: :mod:`~retrovec.core.process_backend`
(with :mod:`~retrovec.core.channel`, :mod:`~retrovec.core.processes`,
:mod:`~retrovec.core.reaper`, :mod:`~retrovec.core.signals`), and on Ray
:mod:`~retrovec.core.ray_runners` (env runners, each hosting a process vector env:
:mod:`~retrovec.core.env_runner`; :mod:`~retrovec.core.runner_placement`,
:mod:`~retrovec.core.runner_transport`, :mod:`~retrovec.core.runner_replies`,
:mod:`~retrovec.core.runner_channel`) and :mod:`~retrovec.core.ray_backend` (one actor per
env, for envs that use Ray themselves). Shared memory: :mod:`~retrovec.core.arena`,
:mod:`~retrovec.core.actions`, :mod:`~retrovec.core.info_columns`,
:mod:`~retrovec.core.infos`. Env side: :mod:`~retrovec.core.server` (both backends),
:mod:`~retrovec.core.worker` (the process), :mod:`~retrovec.core.autoreset`.
``docs/design.md`` draws how they fit.
"""
