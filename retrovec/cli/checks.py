"""Every check of the ``retrovec`` commands' input, in one place, run before any command.

:func:`retrovec.cli.main` calls :func:`check_arguments` on the parsed arguments before it
calls the command's handler, so bad input is answered before a worker starts or a file is
written. The checks go by option name (``--game``, ``--state``, ``--device``,
``--resume``, a ``CHECKPOINT``, ``--run-dir``, ``--video``, ``--arg``, ...), so a new
subcommand that takes one of these options is checked the same way without code of its
own (so give an option of another meaning another name; ``--out`` and ``--json`` are
checked for ``bench`` only, where they name a folder and a file). What a subcommand needs
installed it declares with
``set_defaults(requires=[(module, extra), ...])``. A failed check raises
:class:`BadInput`, whose message ``main`` prints as one line
(``retrovec COMMAND: error: MESSAGE``) before it returns exit code 2.

Handlers may raise :class:`BadInput` too, for what can only be judged later (before they
start anything): ``main`` answers it the same way.

Example:
    >>> from retrovec.cli import build_parser
    >>> args = build_parser().parse_args(["run", "--game", "Airstrikr-Genesis-v0"])
    >>> check_arguments(args)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    retrovec.cli.checks.BadInput: Unknown game 'Airstrikr-Genesis-v0'. Did you mean: ...
    >>> parse_field_value("ent_coef", "abc")
    Traceback (most recent call last):
    ...
    retrovec.cli.checks.BadInput: --arg ent_coef=abc: ent_coef takes a number (float), got 'abc'
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
import os
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from retrovec.cli.arguments import install_command, one_line

__all__ = [
    "TRAIN_FLAGS",
    "BadInput",
    "check_arguments",
    "check_checkpoint",
    "check_device",
    "for_the_shell",
    "load_checkpoint_args",
    "parse_field_value",
    "require",
    "train_config",
]


class BadInput(Exception):
    """Input a command cannot run with; ``main`` prints the message and returns 2."""


#: ``retrovec train``'s ``Args`` fields that have a flag of their own, and that flag.
#: ``--arg`` sets every other field; ``progress`` is ``--no-progress``, inverted.
TRAIN_FLAGS: dict[str, str] = {
    "game": "--game",
    "state": "--state",
    "num_envs": "--num-envs",
    "total_timesteps": "--total-timesteps",
    "num_steps": "--num-steps",
    "max_episode_steps": "--max-episode-steps",
    "learning_rate": "--learning-rate",
    "seed": "--seed",
    "device": "--device",
    "run_dir": "--run-dir",
    "checkpoint_every": "--checkpoint-every",
    "resume": "--resume",
    "progress": "--no-progress",
}

#: pip's names of the modules whose import name differs.
_PACKAGES = {"ale_py": "ale-py", "imageio_ffmpeg": "imageio-ffmpeg"}

#: Keys every checkpoint written by ``retrovec train`` holds.
_CHECKPOINT_KEYS = frozenset({"agent", "optimizer", "args", "global_step", "iteration"})


# --------------------------------------------------------------------------- dependencies


def require(module: str, extra: str, what: str | None = None) -> None:
    """Import ``module``, or raise :class:`BadInput` with the command that installs it.

    Args:
        module: What to import, e.g. ``"torch"``.
        extra: The retrovec extra that brings it, e.g. ``"train"``.
        what: Who needs it, when not the command itself (``"--video"``), for the message.

    Example:
        >>> require("json", "train")
        >>> require("no_such_module_xyz", "bench")
        Traceback (most recent call last):
        ...
        retrovec.cli.checks.BadInput: no_such_module_xyz is not installed: pip install 'retrovec[bench]' (from a clone of the repository: pip install -e '.[bench]')
        >>> require("no_such_module_xyz", "video", "--video")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrovec.cli.checks.BadInput: --video needs no_such_module_xyz, which is not installed: ...
    """
    try:
        importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        missing = _PACKAGES.get(missing, missing)
        install = install_command(extra)
        if what is None:
            raise BadInput(f"{missing} is not installed: {install}") from None
        raise BadInput(f"{what} needs {missing}, which is not installed: {install}") from None


def _check_requirements(args: argparse.Namespace) -> None:
    for module, extra in getattr(args, "requires", ()):
        require(module, extra)


# --------------------------------------------------------------------------- --arg FIELD=VALUE


def _field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """``{field: (types...)}`` of a dataclass, ``X | None`` as ``(X, NoneType)``."""
    hints = typing.get_type_hints(cls)
    out = {}
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            out[field.name] = typing.get_args(hint)
        else:
            out[field.name] = (hint,)
    return out


def parse_field_value(name: str, text: str) -> Any:
    """The VALUE of ``--arg NAME=VALUE``, as the type of ``retrovec.training.ppo.Args.NAME``.

    ``none``/``null`` is ``None`` where the field allows it, ``true``/``false`` a bool,
    and ints, floats and strings are read as such; anything else is :class:`BadInput`.

    Example:
        >>> parse_field_value("ent_coef", "0.02"), parse_field_value("target_kl", "none")
        (0.02, None)
        >>> parse_field_value("norm_adv", "False"), parse_field_value("update_epochs", "3")
        (False, 3)
        >>> parse_field_value("update_epochs", "2.5")
        Traceback (most recent call last):
        ...
        retrovec.cli.checks.BadInput: --arg update_epochs=2.5: update_epochs takes an integer, got '2.5'
    """
    from retrovec.training.ppo_args import Args  # no torch: the dataclass only

    kinds = _field_types(Args)[name]
    lowered = text.strip().lower()
    if type(None) in kinds and lowered in ("none", "null"):
        return None
    for kind in kinds:
        if kind is bool and lowered in ("true", "false"):
            return lowered == "true"
        if kind is int:
            try:
                return int(text)
            except ValueError:
                pass
        if kind is float:
            try:
                value = float(text)
            except ValueError:
                continue
            if math.isfinite(value):
                return value
        if kind is str:
            return text
    names = {bool: "true or false", int: "an integer", float: "a number (float)", str: "text"}
    expected = " or ".join(names.get(k, "none") for k in kinds)
    raise BadInput(f"--arg {name}={text}: {name} takes {expected}, got {text!r}")


def train_config(args: argparse.Namespace) -> Any:
    """The ``retrovec.training.ppo.Args`` of ``retrovec train``'s arguments, checked.

    Raises:
        BadInput: ``--arg`` is not ``FIELD=VALUE`` with a field of ``Args`` that has no
            flag of its own, a value is not of the field's type, or ``Args.check`` fails.

    Example:
        >>> from retrovec.cli import build_parser
        >>> args = build_parser().parse_args(["train", "--arg", "ent_coef=0.02"])
        >>> train_config(args).ent_coef
        0.02
        >>> train_config(build_parser().parse_args(["train", "--arg", "num_envs=4"]))
        Traceback (most recent call last):
        ...
        retrovec.cli.checks.BadInput: --arg num_envs=4: num_envs has its own option, use --num-envs
    """
    from retrovec.training.ppo_args import Args

    fields = [field.name for field in dataclasses.fields(Args)]
    values: dict[str, Any] = {
        name: getattr(args, flag.lstrip("-").replace("-", "_"))
        for name, flag in TRAIN_FLAGS.items()
        if name != "progress"
    }
    values["progress"] = not args.no_progress
    for item in args.arg:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or name not in fields:
            others = [field for field in fields if field not in TRAIN_FLAGS]
            raise BadInput(f"--arg wants FIELD=VALUE with FIELD one of {others}; got {item!r}")
        if name in TRAIN_FLAGS:
            raise BadInput(f"--arg {item}: {name} has its own option, use {TRAIN_FLAGS[name]}")
        values[name] = parse_field_value(name, text)
    config = Args(**values)
    try:
        config.check()
    except ValueError as exc:
        raise BadInput(one_line(exc)) from None
    return config


def _check_train_args(args: argparse.Namespace) -> None:
    if getattr(args, "arg", None) is not None:
        train_config(args)


# --------------------------------------------------------------------------- games and states


def for_the_shell(message: str) -> str:
    """A library message for the command line: its ``(in Python: ...)`` asides left out
    (the message names the ``retrovec`` command beside them).

    Example:
        >>> for_the_shell("`retrovec games` (in Python: `retrovec.list_games()`) lists all.")
        '`retrovec games` lists all.'
    """
    return re.sub(r" \(in Python: `[^`]*`\)", "", message)


def _check_game(args: argparse.Namespace) -> None:
    game = getattr(args, "game", None)
    if game is None or getattr(args, "checkpoint", None) is not None:
        return  # evaluate CHECKPOINT plays the checkpoint's game, checked with it
    from stable_retro.data import Integrations

    from retrovec.errors import RetrovecError
    from retrovec.retro.games import list_states, validate_game, validate_state

    inttype = Integrations.ALL if getattr(args, "all", False) else Integrations.DEFAULT
    state = getattr(args, "state", None)
    try:
        if getattr(args, "needs_rom", True):
            validate_game(game, inttype)
        else:
            list_states(game, inttype, strict=True)
        if state is not None:
            validate_state(game, state, inttype)
    except (RetrovecError, ValueError, TypeError) as exc:
        raise BadInput(for_the_shell(one_line(exc))) from None


# --------------------------------------------------------------------- torch: checkpoints, devices


def _existing_file(path: str, what: str) -> None:
    if os.path.isdir(path):
        raise BadInput(f"{what} {path!r} is a folder, not a file")
    if not os.path.exists(path):
        raise BadInput(f"{what} {path!r}: no such file")


def load_checkpoint_args(path: str) -> dict[str, Any]:
    """The ``args`` dict of a ``retrovec train`` checkpoint, read without running pickle.

    Raises:
        BadInput: No such file, a folder, torch missing, or not such a checkpoint.
    """
    _existing_file(path, "checkpoint")
    require("torch", "train", "reading a checkpoint")
    import torch

    try:  # weights_only: tensors and plain values, no code runs while checking
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a checkpoint"
        raise BadInput(
            f"{path!r} is not a checkpoint written by `retrovec train` (torch.load cannot "
            f"read it: {type(exc).__name__})"
        ) from None
    if not isinstance(state, dict) or not _CHECKPOINT_KEYS <= set(state):
        raise BadInput(
            f"{path!r} is not a checkpoint written by `retrovec train` (it lacks "
            f"{sorted(_CHECKPOINT_KEYS - set(state if isinstance(state, dict) else ()))})"
        )
    return dict(state["args"])


def check_checkpoint(path: str, *, game: str | None = None) -> dict[str, Any]:
    """Check a checkpoint, and that its game can run here (or is ``game``, for resuming).

    Returns:
        The checkpoint's ``args`` dict.
    """
    saved = load_checkpoint_args(path)
    saved_game = saved.get("game")
    if game is not None and saved_game != game:
        raise BadInput(
            f"{path!r} was trained on {saved_game!r}, not {game!r}: resume it with "
            f"--game {saved_game}"
        )
    if game is None and saved_game is not None:
        from retrovec.errors import RetrovecError
        from retrovec.retro.games import validate_game, validate_state

        try:
            validate_game(saved_game)
            if saved.get("state") is not None:
                validate_state(saved_game, saved["state"])
        except RetrovecError as exc:
            raise BadInput(f"the checkpoint's game: {for_the_shell(one_line(exc))}") from None
    return saved


def _check_checkpoints(args: argparse.Namespace) -> None:
    if getattr(args, "checkpoint", None) is not None:
        check_checkpoint(args.checkpoint)
    if getattr(args, "resume", None) is not None:
        check_checkpoint(args.resume, game=args.game)


def check_device(name: str) -> None:
    """Check a ``--device`` value: ``auto``, or a torch device that works here.

    Example:
        >>> check_device("cpu")
        >>> check_device("gpu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        retrovec.cli.checks.BadInput: --device gpu is not a torch device: expected auto, cpu, cuda, cuda:N, mps, ...
    """
    if name == "auto":
        return
    require("torch", "train", f"--device {name}")
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise BadInput(
            f"--device {name} is not a torch device: expected auto, cpu, cuda, cuda:N, mps, ..."
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch is built without CUDA" if torch.version.cuda is None else "no GPU found"
            raise BadInput(
                f"--device {name}: CUDA is not available here ({why}; torch "
                f"{torch.__version__}); use --device cpu, or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise BadInput(
                f"--device {name}: there are {torch.cuda.device_count()} CUDA devices "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
        return
    try:
        torch.empty(1, device=device)
    except Exception as exc:  # noqa: BLE001 - any failure: the device cannot be used here
        raise BadInput(f"--device {name} cannot be used here: {one_line(exc)}") from None


def _check_device(args: argparse.Namespace) -> None:
    if getattr(args, "device", None) is not None and not getattr(args, "random", False):
        check_device(args.device)


# --------------------------------------------------------------------------- evaluate, files


def _check_evaluate_mode(args: argparse.Namespace) -> None:
    if not hasattr(args, "random"):
        return
    if (args.checkpoint is None) == (not args.random):
        raise BadInput("give either a CHECKPOINT or --random, not both or neither")
    if args.random and (args.video or args.greedy):
        raise BadInput("--video and --greedy need a CHECKPOINT, not --random")


def _check_output_file(path: str | None, option: str) -> None:
    if path is None:
        return
    if os.path.isdir(path):
        raise BadInput(f"{option} {path!r} is a folder; give a file name")
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise BadInput(f"{option} {path!r}: {parent!r} is a file, not a folder")


def _check_output_dir(path: str | None, option: str) -> None:
    if path is not None and os.path.exists(path) and not os.path.isdir(path):
        raise BadInput(f"{option} {path!r} is a file; give a folder")


def _check_outputs(args: argparse.Namespace) -> None:
    _check_output_dir(getattr(args, "run_dir", None), "--run-dir")
    if args.command == "bench":  # elsewhere --out and --json may mean other things
        _check_output_dir(args.out, "--out")
        _check_output_file(args.json, "--json")
    video = getattr(args, "video", None)
    if video is not None:
        _check_output_file(video, "--video")
        if not video.lower().endswith(".mp4"):
            raise BadInput(f"--video {video!r}: give an .mp4 file name")
        require("imageio", "video", "--video")
        require("imageio_ffmpeg", "video", "--video")
        if getattr(args, "eval_episodes", 1) == 0:
            raise BadInput("--video saves the evaluation: give --eval-episodes N too")


def _check_rom_paths(args: argparse.Namespace) -> None:
    paths = getattr(args, "rom_paths", None)
    if paths is None:
        return
    if not paths:  # ale-py's ROMs
        require("ale_py", "atari", "importing the Atari ROMs without a PATH")
    for path in paths:
        if not os.path.exists(path):
            raise BadInput(f"{path!r}: no such file or folder")


def _check_contenders(args: argparse.Namespace) -> None:
    """Contenders asked for by name (``--contenders``, ``--ray``) must be able to run;
    those of a preset that cannot are skipped with a note instead."""
    asked = [*(getattr(args, "contenders", None) or ())]
    if getattr(args, "ray", False):
        asked.append("retrovec-ray")
    if not asked:
        return
    from retrovec.benchmark import contender_status

    _, skipped = contender_status(asked)
    for label, reason in skipped.items():
        raise BadInput(f"contender {label!r} cannot run here: {reason}")


#: The checks, in the order they run; each looks only at the options it knows.
_CHECKS: tuple[Callable[[argparse.Namespace], None], ...] = (
    _check_evaluate_mode,
    _check_requirements,
    _check_train_args,
    _check_game,
    _check_checkpoints,
    _check_device,
    _check_outputs,
    _check_rom_paths,
    _check_contenders,
)


def check_arguments(args: argparse.Namespace) -> None:
    """Check every option of a parsed command line that can be checked before running.

    Args:
        args: What :func:`retrovec.cli.build_parser` parsed.

    Raises:
        BadInput: The first thing wrong, in one line.
    """
    for check in _CHECKS:
        check(args)
