"""The user's own trainable: ``trainable.target`` resolved into a registry entry.

A target is ``"package.module:attribute"``, importable from the config file's folder, the
working directory or the installed environment, or the name of an entry point in the group
``tunepipe.trainables`` (so an installed package can register a name). The attribute is:

1. a torch model builder ``build(hp, spec) -> torch.nn.Module`` (``framework: torch``), trained
   in tunepipe's torch epoch loop;
2. a Keras model builder ``build(hp, spec) -> keras.Model`` (``framework: tensorflow``), trained
   in the Keras loop;
3. a training function ``train(hp, ctx) -> None`` for anything else (any other framework, or
   none): it runs its own loop and reports through ``ctx``;
4. a class implementing :class:`~trainables.protocol.TrialTrainable`, driven by the adapter.

Every way a target can be wrong (no such module or attribute, a module that raises on import, a
wrong signature, a class without the protocol's methods) is a
:class:`~trainables.errors.UserCodeError` naming the key and the fix.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import inspect
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainables.errors import UserCodeError
from trainables.registry import TRAINABLES, TrainableInfo
from trainables.user_code import TARGET_KEY, code_name

#: Entry-point group an installed package registers its trainables in.
ENTRY_POINT_GROUP = "tunepipe.trainables"
#: Frameworks whose epoch loop trains a user's model builder.
BUILDER_FRAMEWORKS = ("torch", "tensorflow")
#: The protocol's methods a trainable class must have.
PROTOCOL_METHODS = ("setup", "train_epoch", "evaluate", "save", "load")
#: The registry entry that runs a training function.
FUNCTION_FRAMEWORK = "function"


def resolve_target(
    target: Any, framework: str | None, search_paths: Sequence[Path] = ()
) -> TrainableInfo:
    """Return the registry entry that trains ``target``.

    Args:
        target: ``"module:attribute"``, an entry-point name, or (from Python) the function or
            class itself.
        framework: ``torch`` or ``tensorflow`` for a model builder; any other name, or None,
            labels a training function or a trainable class.
        search_paths: Folders to import the module from before the installed environment (the
            config file's folder, the working directory).

    Raises:
        UserCodeError: When the target does not resolve to a usable trainable.

    """
    reference: str | None = None
    search_path: str | None = None
    if isinstance(target, str):
        reference = _entry_point(target) if ":" not in target else target
        code, search_path = _import(reference, search_paths)
    else:
        code = target
    if inspect.isclass(code):
        return _class_entry(code, reference, framework, search_path)
    if not callable(code):
        raise UserCodeError(
            f"{reference or code!r} is a {type(code).__name__}, not a function or a class",
            key=TARGET_KEY,
            fix="name a model builder, a training function or a trainable class",
        )
    if framework in BUILDER_FRAMEWORKS:
        _check_arity(code, "build(hp, spec)")
        base = TRAINABLES[framework]
        return dataclasses.replace(
            base, builder=reference or code, search_path=search_path, user_code=True, models=()
        )
    _check_arity(code, "train(hp, ctx)")
    base = TRAINABLES[FUNCTION_FRAMEWORK]
    return dataclasses.replace(
        base,
        framework=framework or FUNCTION_FRAMEWORK,
        builder=reference or code,
        search_path=search_path,
    )


def _class_entry(
    code: type[Any], reference: str | None, framework: str | None, search_path: str | None
) -> TrainableInfo:
    missing = [name for name in PROTOCOL_METHODS if not callable(getattr(code, name, None))]
    if missing:
        raise UserCodeError(
            f"class {code_name(code)} lacks {', '.join(missing)} of the trainable protocol",
            key=TARGET_KEY,
            fix="implement setup, train_epoch, evaluate, save and load (trainables/protocol.py)",
        )
    declared = getattr(code, "metrics", None)
    metrics = _declared_metrics(declared)
    return TrainableInfo(
        framework=framework or "custom",
        implementation=reference or code,
        models=(),
        hparams=frozenset(),
        metrics=metrics,
        install_hint="install the package that holds the trainable",
        search_path=search_path,
        user_code=True,
    )


def _declared_metrics(declared: Any) -> dict[str, tuple[str, ...]]:
    """Return a class's declared metrics per task (empty: not declared, found by a dry run)."""
    if isinstance(declared, dict):
        return {task: tuple(names) for task, names in declared.items()}
    if isinstance(declared, list | tuple):
        names = tuple(str(name) for name in declared)
        return {"classification": names, "regression": names}
    return {}


def _entry_point(name: str) -> str:
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            return str(entry.value)
    raise UserCodeError(
        f"no trainable {name!r}: it is not package.module:attribute, and no installed package "
        f"registers it in the entry-point group {ENTRY_POINT_GROUP!r}",
        key=TARGET_KEY,
        fix="write package.module:attribute, or install the package that registers the name",
    )


def _import(reference: str, search_paths: Sequence[Path]) -> tuple[Any, str | None]:
    """Import ``module:attribute``; return it and the search path its module came from."""
    module_name, _, attribute = reference.partition(":")
    where = ", ".join(str(path) for path in search_paths) or "nowhere else"
    if not module_name or not attribute:
        raise UserCodeError(
            f"{reference!r} is not package.module:attribute",
            key=TARGET_KEY,
            fix="name the module and the attribute, e.g. models.cnn:build",
        )
    with _on_path(search_paths):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                raise _import_error(reference, exc) from exc
            raise UserCodeError(
                f"cannot import module {module_name!r} (looked in {where} and the installed "
                "packages)",
                key=TARGET_KEY,
                fix="put the module beside the config file, or install its package",
            ) from None
        except Exception as exc:  # the user's module itself failed to import
            raise _import_error(reference, exc) from exc
    if not hasattr(module, attribute):
        raise UserCodeError(
            f"module {module_name!r} has no attribute {attribute!r}",
            key=TARGET_KEY,
            fix=f"name a function or class defined in {module_name}",
        )
    return getattr(module, attribute), _origin(module, search_paths)


def _import_error(reference: str, exc: BaseException) -> UserCodeError:
    return UserCodeError(
        f"importing {reference} raised {type(exc).__name__}: {exc}",
        key=TARGET_KEY,
        fix="fix the module so that it imports",
    )


@contextmanager
def _on_path(paths: Sequence[Path]) -> Iterator[None]:
    added = [str(path) for path in paths if str(path) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for path in added:
            if path in sys.path:
                sys.path.remove(path)


def _origin(module: Any, search_paths: Sequence[Path]) -> str | None:
    """Return the search path a module was found under (None: an installed package)."""
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    located = Path(file).resolve()
    for path in search_paths:
        if located.is_relative_to(path.resolve()):
            return str(path.resolve())
    return None


def _check_arity(code: Any, call: str) -> None:
    try:
        inspect.signature(code).bind(None, None)
    except TypeError:
        raise UserCodeError(
            f"{code_name(code)} cannot be called as {call}",
            key=TARGET_KEY,
            fix=f"give it the signature {call}",
        ) from None
    except ValueError:  # a builtin without a signature: nothing to check
        return
