"""The env side of every backend: one env, the commands it answers, and how errors travel.

A worker process (:mod:`retrovec.core.worker`) and a Ray actor
(:mod:`retrovec.core.ray_backend`) both hold one :class:`EnvServer` and differ only in how
results reach the parent (shared memory and a socket, or Ray's object store). The commands:

=========================  ==========================  ====================================
command                    argument                    result
=========================  ==========================  ====================================
``reset``                  ``(seed, options)``         ``(observation, info)``
``reset-noop``             ``None``                    ``(last observation, {})``: a row of
                                                       a masked reset this env sits out
``reset-after-restart``    ``None``                    ``(observation, info)`` of a
                                                       replacement whose old episode is
                                                       reported as truncated
``step``                   the action                  ``(observation, reward, terminated,
                                                       truncated, info)``, autoreset applied
``call``                   ``(name, args, kwargs)``    what the method returned (or the
                                                       attribute's value)
``setattr``                ``(name, value)``           ``None``
=========================  ==========================  ====================================

Example:
    >>> import gymnasium as gym
    >>> server = EnvServer(gym.make("CartPole-v1"), AutoresetMode.NEXT_STEP)
    >>> observation, info = server.handle("reset", (0, None))
    >>> server.handle("call", ("spec", (), {})).id
    'CartPole-v1'
    >>> len(server.handle("step", 0))
    5
    >>> ok, (error, type_name, message, text) = error_reply(ValueError("bad"))
    >>> ok, type(error).__name__, message
    (False, 'ValueError', 'bad')
"""

from __future__ import annotations

import pickle
import sys
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

from gymnasium import Env
from gymnasium.vector import AutoresetMode

from retrovec.core.autoreset import autoreset_step

__all__ = ["RESERVED_CALLS", "EnvServer", "ErrorPayload", "Restored", "describe", "error_reply"]

#: Methods that ``call`` must not reach (they have their own commands), as in gymnasium.
RESERVED_CALLS = ("reset", "step", "close", "_setattr", "_check_spaces")

#: ``(the exception if it survives pickling, its type name, its message, the traceback)``.
ErrorPayload = tuple[BaseException | None, str, str, str]


class Restored(NamedTuple):
    """What a ``call`` returns when it moved its env to another point of an episode (such
    as ``load_snapshot``, :mod:`retrovec.retro.snapshots`): the server then drops a
    pending autoreset and takes ``observation`` as the env's last observation."""

    observation: Any
    info: dict


def error_reply(error: BaseException) -> tuple[bool, ErrorPayload]:
    """Package an exception so the parent can raise it as its own type.

    The exception object itself travels when it survives a pickle round trip; otherwise
    its type name and message do, and the parent raises a ``RuntimeError`` naming them.
    """
    text = "".join(traceback.format_exception(error))
    portable: BaseException | None = error
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        portable = None
    return False, (portable, type(error).__qualname__, str(error), text)


def describe(env: Env) -> dict[str, Any]:
    """What the parent needs to batch an env: its spaces, metadata and render mode."""
    return {
        "observation_space": env.observation_space,
        "action_space": env.action_space,
        "metadata": dict(env.metadata),
        "render_mode": env.render_mode,
    }


def one_thread_per_library() -> None:
    """A worker is one of many processes: a thread pool in each would oversubscribe the
    cores (OpenCV, used by the preprocessing wrappers, starts one per core by default)."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)


class EnvServer:
    """Answers the commands in the module docstring for one env.

    Args:
        env: The env.
        autoreset_mode: How ``step`` handles episode ends.

    Attributes:
        last_observation: The observation the env last returned (a masked reset's row for
            an env that sits it out).
    """

    def __init__(self, env: Env, autoreset_mode: AutoresetMode) -> None:
        self.env: Env | None = env
        self.autoreset_mode = AutoresetMode(autoreset_mode)
        self.needs_reset = False
        self.last_observation: Any = None
        self._handlers: dict[str, Callable[[Any], Any]] = {
            "reset": self.reset,
            "reset-noop": self.reset_noop,
            "reset-after-restart": self.reset_after_restart,
            "step": self.step,
            "call": self.call,
            "setattr": self.setattr,
        }

    def handle(self, kind: str, argument: Any) -> Any:
        """Run one command; exceptions propagate (the transport turns them into
        :func:`error_reply`)."""
        try:
            handler = self._handlers[kind]
        except KeyError:
            raise ValueError(f"Unknown command {kind!r} for an env server.") from None
        return handler(argument)

    def reset(self, argument: tuple[int | None, dict | None]) -> tuple[Any, dict]:
        seed, options = argument
        observation, info = self.env.reset(seed=seed, options=options)
        self.needs_reset = False
        self.last_observation = observation
        return observation, info

    def reset_noop(self, _: None) -> tuple[Any, dict]:
        return self.last_observation, {}

    def reset_after_restart(self, _: None) -> tuple[Any, dict]:
        """Reset a replacement's env. Its old episode is reported as truncated, so under
        NEXT_STEP the next step is the reset step that follows an episode end."""
        result = self.reset((None, None))
        self.needs_reset = self.autoreset_mode is AutoresetMode.NEXT_STEP
        return result

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        observation, reward, terminated, truncated, info, self.needs_reset = autoreset_step(
            self.env, action, self.autoreset_mode, self.needs_reset
        )
        self.last_observation = observation
        return observation, reward, terminated, truncated, info

    def call(self, argument: tuple[str, tuple, dict]) -> Any:
        name, args, kwargs = argument
        if name in RESERVED_CALLS:
            raise ValueError(
                f"Trying to call function `{name}` with `call`, use `{name}` directly instead."
            )
        attribute = self.env.get_wrapper_attr(name)
        result = attribute(*args, **kwargs) if callable(attribute) else attribute
        if isinstance(result, Restored):  # the episode goes on from a loaded state
            self.needs_reset = False
            self.last_observation = result.observation
        return result

    def setattr(self, argument: tuple[str, Any]) -> None:
        name, value = argument
        self.env.set_wrapper_attr(name, value)

    def close(self) -> None:
        """Close the env (once)."""
        env, self.env = self.env, None
        if env is not None:
            env.close()
