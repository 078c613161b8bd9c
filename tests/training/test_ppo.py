"""retrovec.training.ppo: NEXT_STEP-correct GAE and masks, training, resuming, evaluation, CLI."""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tensorboard")

from retrovec.training.ppo import Args, collect_rollout, compute_gae, load_checkpoint, train


class ThreeSteps(gym.Env):
    """3-step episodes, reward 1 per step; obs = the step count (0 after a reset)."""

    observation_space = gym.spaces.Box(0, 10, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, truncate: bool = False):
        self.truncate = truncate

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        end = self.t == 3
        obs = np.full(1, self.t, np.float32)
        return obs, 1.0, end and not self.truncate, end and self.truncate, {}


class ZeroValueAgent:
    """Action 0, log-prob 0, value 0: the advantages are then plain sums of rewards."""

    def get_action_and_value(self, x, action=None):
        n = x.shape[0]
        return torch.zeros(n, dtype=torch.long), torch.zeros(n), torch.zeros(n), torch.zeros(n)


def rollout(truncate: bool, steps: int = 9):
    envs = gym.vector.SyncVectorEnv(
        [lambda: ThreeSteps(truncate)] * 2, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
    )
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    obs, _ = envs.reset(seed=0)
    try:
        return collect_rollout(
            envs, ZeroValueAgent(), torch.as_tensor(obs), torch.zeros(2), steps, torch.device("cpu")
        )
    finally:
        envs.close()


def test_rollout_marks_next_step_reset_steps_invalid():
    b, next_obs, next_done, episodes = rollout(truncate=False)
    # steps 1-3 episode, step 4 reset step, steps 5-7 episode, step 8 reset step, step 9 ...
    assert b["obs"][:, 0, 0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert b["valid"][:, 0].tolist() == [1, 1, 1, 0, 1, 1, 1, 0, 1]
    assert b["rewards"][:, 0].tolist() == [1, 1, 1, 0, 1, 1, 1, 0, 1]
    assert b["dones"][:, 0].tolist() == [0, 0, 1, 0, 0, 0, 1, 0, 0]
    assert episodes == [(3.0, 3)] * 4  # two per env; the reset steps are not counted


def test_clip_rewards_learns_from_the_sign_and_reports_raw_returns():
    class Scored(ThreeSteps):
        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            return obs, [20.0, 0.0, -5.0][self.t - 1], terminated, truncated, info

    envs = gym.wrappers.vector.RecordEpisodeStatistics(gym.vector.SyncVectorEnv(
        [Scored] * 2, autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP
    ))
    try:
        for clip, expected in ((True, [1, 0, -1, 0]), (False, [20, 0, -5, 0])):
            obs, _ = envs.reset(seed=0)
            b, *_, episodes = collect_rollout(
                envs, ZeroValueAgent(), torch.as_tensor(obs), torch.zeros(2), 4,
                torch.device("cpu"), clip_rewards=clip,
            )
            assert b["rewards"][:, 0].tolist() == expected
            assert episodes == [(15.0, 3)] * 2  # the game's own score either way
    finally:
        envs.close()
    assert Args().clip_rewards  # CleanRL's default


def test_gae_never_crosses_an_episode_end():
    b, *_ = rollout(truncate=False)
    next_values = torch.cat([b["values"][1:], torch.zeros(1, 2)])
    advantages, returns = compute_gae(
        b["rewards"], b["values"], next_values, b["terminations"], b["dones"], 1.0, 1.0
    )
    # gamma = lambda = 1, values 0: the rewards left in the episode. The first step of each
    # episode gets exactly 3: nothing from the reset step or the next episode leaks in.
    # (The reset steps' own advantages are never used: they are masked out of the loss.)
    valid = b["valid"][:, 0].bool()
    assert advantages[:, 0][valid].tolist() == [3, 2, 1, 3, 2, 1, 1]
    assert torch.equal(returns, advantages)


def test_gae_bootstraps_a_truncation_from_the_last_observation_only():
    rewards = torch.tensor([[1.0], [1.0], [0.0], [1.0]])  # ends at step 2; step 3 resets
    values = torch.tensor([[0.5], [0.5], [7.0], [0.25]])  # values[2]: V(last obs of episode)
    next_values = torch.tensor([[0.5], [7.0], [0.25], [0.0]])
    dones = torch.tensor([[0.0], [1.0], [0.0], [0.0]])
    for terminated, bootstrap in ((0.0, 7.0), (1.0, 0.0)):
        terminations = dones * terminated
        advantages, _ = compute_gae(rewards, values, next_values, terminations, dones, 0.5, 1.0)
        step1 = 1.0 + 0.5 * bootstrap - 0.5
        assert advantages[1, 0].item() == pytest.approx(step1)
        assert advantages[0, 0].item() == pytest.approx(1.0 + 0.5 * 0.5 - 0.5 + 0.5 * step1)


def test_args_reject_impossible_settings():
    with pytest.raises(ValueError, match="total_timesteps"):
        Args(num_envs=2, num_steps=8, total_timesteps=8).check()
    with pytest.raises(ValueError, match="num_envs"):
        Args(num_envs=0).check()


def tags(run_dir) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


def test_train_checkpoint_resume_and_evaluate_on_airstriker(tmp_path):
    """Two tiny iterations, a resumed run of two more, then a 2-episode evaluation."""
    from retrovec.cli import main
    from retrovec.training.ppo import evaluate

    run = tmp_path / "run"
    common = ["--num-envs", "2", "--num-steps", "8", "--max-episode-steps", "6", "--device",
              "cpu", "--arg", "num_minibatches=2", "--arg", "update_epochs=1", "--no-progress"]
    assert main(["train", "--total-timesteps", "32", "--run-dir", str(run), *common]) == 0
    first = load_checkpoint(run / "checkpoint.pt")
    assert (first["global_step"], first["iteration"]) == (32, 2)
    assert first["args"]["num_minibatches"] == 2
    assert {"charts/episodic_return", "charts/SPS", "losses/value_loss", "losses/policy_loss",
            "losses/entropy", "losses/approx_kl"} <= tags(run)

    resumed = train(Args(
        num_envs=2, num_steps=8, total_timesteps=64, max_episode_steps=6, num_minibatches=2,
        update_epochs=1, device="cpu", run_dir=str(tmp_path / "resumed"),
        resume=str(run / "checkpoint.pt"), progress=False,
    ))
    assert (resumed["global_step"], resumed["iteration"]) == (64, 4)
    second = load_checkpoint(resumed["checkpoint"])
    assert (second["global_step"], second["iteration"]) == (64, 4)
    changed = any(
        not torch.equal(first["agent"][k], second["agent"][k]) for k in first["agent"]
    )
    assert changed  # the resumed run trained further

    video = tmp_path / "eval.mp4"
    result = evaluate(resumed["checkpoint"], episodes=2, num_envs=2, video=video, device="cpu")
    assert len(result["returns"]) == 2 and result["lengths"] == [6, 6]
    assert result["std"] >= 0 and np.isfinite(result["mean"])
    assert video.stat().st_size > 0


def test_evaluate_command_compares_a_checkpoint_with_random_play(tmp_path, capsys):
    from retrovec.cli import main

    run = tmp_path / "run"
    assert main(["train", "--total-timesteps", "16", "--num-envs", "2", "--num-steps", "8",
                 "--max-episode-steps", "5", "--device", "cpu", "--run-dir", str(run),
                 "--no-progress"]) == 0
    capsys.readouterr()
    checkpoint = str(run / "checkpoint.pt")
    assert main(["evaluate", checkpoint, "--episodes", "2", "--device", "cpu"]) == 0
    assert re.search(r"evaluate: 2 episodes: return -?[\d.]+ \+- [\d.]+ \(returns .*; "
                     r"length 5 agent steps\)", capsys.readouterr().out)
    for bad in ([], [checkpoint, "--random"], ["--random", "--video", "x.mp4"],
                [str(tmp_path / "missing.pt")]):
        assert main(["evaluate", *bad]) == 2
        assert "retrovec evaluate: error:" in capsys.readouterr().err


def test_an_interrupted_run_keeps_its_progress_and_resumes(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the third rollout: the two finished iterations are saved although the
    checkpoint interval was not reached, and a resumed run carries on from there."""
    from retrovec.training import ppo

    calls = []
    real = ppo.collect_rollout

    def interrupted_in_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ppo, "collect_rollout", interrupted_in_the_third)
    args = Args(num_envs=2, num_steps=8, total_timesteps=80, max_episode_steps=6,
                num_minibatches=2, update_epochs=1, device="cpu", checkpoint_every=100,
                run_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(args)
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (saved["global_step"], saved["iteration"]) == (32, 2)
    assert "stopped at step 32 (interrupted); checkpoint saved" in capsys.readouterr().err

    monkeypatch.setattr(ppo, "collect_rollout", real)
    args.resume = str(tmp_path / "run" / "checkpoint.pt")
    assert train(args)["global_step"] == 80


def test_an_error_after_the_start_still_writes_a_checkpoint(tmp_path, monkeypatch, capsys):
    """docs/ppo.md: on any error once training has started, checkpoint.pt is written (here
    in the first rollout, before any iteration finished: the counters are 0)."""
    from retrovec.training import ppo

    def broken(*args, **kwargs):
        raise TypeError("boom")

    monkeypatch.setattr(ppo, "collect_rollout", broken)
    args = Args(num_envs=2, num_steps=8, total_timesteps=32, max_episode_steps=6,
                device="cpu", run_dir=str(tmp_path / "run"), progress=False)
    with pytest.raises(TypeError, match="boom"):
        train(args)
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (saved["global_step"], saved["iteration"]) == (0, 0)
    assert "stopped at step 0 (TypeError); checkpoint saved" in capsys.readouterr().err


def test_a_run_that_cannot_start_writes_nothing(tmp_path):
    """The envs cannot be made: no run directory, no TensorBoard events file."""
    from retrovec.errors import UnknownGameError

    with pytest.raises(UnknownGameError):
        train(Args(game="Nope-Genesis-v0", device="cpu", run_dir=str(tmp_path / "run"),
                   progress=False))
    assert list(tmp_path.iterdir()) == []


def test_training_envs_replace_a_dead_emulator():
    from retrovec.training.ppo import make_envs

    envs = make_envs(Args(num_envs=2, worker_restarts=2))
    try:
        assert (envs.unwrapped.on_worker_failure, envs.unwrapped.max_restarts) == ("restart", 2)
    finally:
        envs.close()
    with pytest.raises(ValueError, match="worker_restarts"):
        Args(worker_restarts=-1).check()


def test_random_policy_baseline_is_measured_like_the_agent():
    from retrovec.training.ppo import evaluate_random

    result = evaluate_random(episodes=2, num_envs=2, max_episode_steps=30, seed=3)
    assert len(result["returns"]) == 2 and len(result["lengths"]) == 2
    assert all(length <= 30 for length in result["lengths"])
    assert result["mean"] == pytest.approx(sum(result["returns"]) / 2)
