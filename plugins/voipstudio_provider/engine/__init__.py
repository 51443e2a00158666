"""The engines: what the provider decides, with no Airflow context.

An engine takes a hook and an S3 client and returns plain values; the task bodies in
:mod:`voipstudio_provider.tasks` call it. The engines are in packages by concern, each
importing only its own modules, the ground and the packages below it (ARCHITECTURE.md
draws them; ``tests/test_architecture.py`` checks it):

- the ground, here at the top: :mod:`.layout` (every bucket key), :mod:`.s3objects`
  (checked writes and reads of S3 objects), :mod:`.summaries` (the XCom keys of summaries);
- :mod:`.subjects`: whom a record concerns (phone numbers, the subject index) and what
  holds it (the legal hold, object legal holds);
- :mod:`.exports`: a user's CDRs as CSV;
- :mod:`.archive`: writing and proving archived copies (targets, downloads to S3, proof of
  stored bytes, batches, high-water marks, ledgers);
- :mod:`.evidence`: what a deletion rests on and leaves behind (the bucket probe and
  write-ahead intents, the audit, leases and recovery of dead runs, purge plans,
  manifests, reconciliation, and their readers);
- :mod:`.deletion`: deleting at the source and in the archive (the deleter, retention
  policy, chats, the purge, its approval, masking, erasure).

The module paths of the flat engine of earlier releases (``voipstudio_provider.engine.
proof`` and the like) still import, with a :class:`DeprecationWarning`, until the next
release; :data:`MOVED_MODULES` says where each went.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

#: Each module of earlier releases and the modules that now hold its names.
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "approval": ("deletion.approval",),
    "audit": ("evidence.audit",),
    "batches": ("archive.batches",),
    "cdr_csv": ("exports.cdr_csv",),
    "chats": ("deletion.chats",),
    "coverage": ("evidence.coverage",),
    "deletion_runs": ("evidence.deletion_runs",),
    "erasure": ("deletion.erasure",),
    "erasure_scope": ("deletion.erasure_scope",),
    "highwater": ("archive.highwater",),
    "hold_reach": ("subjects.hold_reach",),
    "leases": ("evidence.leases",),
    "ledger": ("archive.ledger",),
    "manifests": ("evidence.manifests",),
    "masking": ("deletion.masking",),
    "object_holds": ("subjects.object_holds",),
    "phone_numbers": ("subjects.phone_numbers",),
    "plans": ("evidence.plans",),
    "policy": ("subjects.legal_hold", "deletion.retention", "subjects.phone_numbers"),
    "progress": ("archive.progress",),
    "proof": ("archive.proof",),
    "purge": ("deletion.purge",),
    "reconciliation": ("evidence.reconciliation",),
    "recovery": ("evidence.recovery",),
    "stored": ("archive.stored",),
    "subject_index": ("subjects.subject_index",),
    "targets": ("archive.targets",),
    "uploads": ("archive.uploads",),
    # These three old modules share their name with a package; the package answers for
    # them (its ``__getattr__``, :func:`moved_attribute`).
    "archive": ("archive.writer",),
    "evidence": ("evidence.intents",),
    "deletion": ("deletion.deleter",),
}


def _warn(old: str, new: str) -> None:
    # Point the warning at the importing line: past this package's frames, and past
    # importlib's, which the warnings module does not count.
    level, frame = 2, sys._getframe(1)
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(__name__):
            level += 1
        elif not frame.f_code.co_filename.startswith("<frozen importlib"):
            break
        frame = frame.f_back
    warnings.warn(
        f"{old} is deprecated and goes in the next release; import {new} instead",
        DeprecationWarning,
        stacklevel=level,
    )


def _public(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None) or vars(module)
    return [
        name
        for name in names
        if not name.startswith("_") and not isinstance(vars(module).get(name), types.ModuleType)
    ]


def moved_attribute(package: str, name: str) -> object:
    """A name of the earlier module ``package`` (``engine.archive``, ``engine.evidence``,
    ``engine.deletion``), now in one of the package's modules, with a deprecation warning.

    :raises AttributeError: the earlier module had no such name.
    """
    old = package.rpartition(".")[2]
    if not name.startswith("__") and old in MOVED_MODULES:
        (new,) = MOVED_MODULES[old]
        module = importlib.import_module(f"{__name__}.{new}")
        value = vars(module).get(name, module)
        if value is not module and not isinstance(value, types.ModuleType):
            _warn(f"{package}.{name}", f"{module.__name__}.{name}")
            return value
    raise AttributeError(f"module {package!r} has no attribute {name!r}")


class _MovedModule(types.ModuleType):
    """An earlier module path: each name is looked up in the modules that now hold it."""

    def __init__(self, name: str, sources: list[types.ModuleType]) -> None:
        super().__init__(name, f"Deprecated: import from {', '.join(s.__name__ for s in sources)}.")
        self._sources = sources
        self.__all__ = sorted({n for source in sources for n in _public(source)})

    def __getattr__(self, name: str) -> object:
        for source in self._sources:
            if name in vars(source):
                return vars(source)[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.__all__})


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``voipstudio_provider.engine.<old>`` as a :class:`_MovedModule`."""

    def find_spec(self, fullname, path=None, target=None):
        parent, _, old = fullname.rpartition(".")
        # A package of the same name (archive, evidence, deletion) is found before this
        # finder is asked; its ``__getattr__`` answers for the earlier module.
        if parent != __name__ or old not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = [f"{__name__}.{path}" for path in MOVED_MODULES[spec.name.rpartition(".")[2]]]
        _warn(spec.name, " or ".join(new))
        return _MovedModule(spec.name, [importlib.import_module(path) for path in new])

    def exec_module(self, module) -> None:
        """Nothing to run: :meth:`create_module` made the module whole."""


if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModules())
