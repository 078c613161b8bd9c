"""Training on retrovec's vector envs: a batched PPO trainer (:mod:`~retrovec.training.ppo`,
extra ``train``), the Stable-Baselines3 adapter (:mod:`~retrovec.training.sb3`) and random
rollouts (:mod:`~retrovec.training.random_rollout`).
"""
