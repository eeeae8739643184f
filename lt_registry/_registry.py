"""One generic name -> factory registry, instantiated for losses, mixers and samplers.

Modelled on timm's optimizer registry: a small frozen dataclass per entry, a registry object that knows
aliases, and thin module-level ``register_* / create_* / list_* / is_*`` facades (bottom of this file).
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

__all__ = [
    "Registry", "RegistryEntry", "LOSSES", "MIXERS", "SAMPLERS",
    "register_loss", "create_loss", "list_losses", "is_loss",
    "register_mixer", "create_mixer", "list_mixers", "is_mixer",
    "register_sampler", "create_sampler", "list_samplers", "is_sampler",
]


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


@dataclass(frozen=True)
class RegistryEntry:
    """One registered component: its canonical name, the factory building it, its aliases, and the metadata
    that tables, reports and model cards show: ``label`` (display name, e.g. ``"Bayias"``) and ``order`` (its
    place in the paper's tables; entries without one follow, alphabetically) and ``meta``, further facts for reports (a
dataset's ``hub_dataset`` and model-card ``note``)."""

    name: str
    factory: Callable[..., Any]
    aliases: Tuple[str, ...] = ()
    description: str = ""
    defaults: Dict[str, Any] = field(default_factory=dict)
    label: str = ""
    order: Optional[float] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def sort_key(self) -> Tuple[float, str]:
        return (float("inf") if self.order is None else float(self.order), self.name)


class Registry:
    """Maps names (and aliases) to factories.

    Names are case-insensitive and ``-`` equals ``_``. Unknown names raise a ValueError that names the
    closest matches and every available entry, so a typo on the command line explains itself.
    """

    def __init__(self, kind: str, plural: str = ""):
        self.kind = kind
        self.plural = plural or (kind + "es" if kind.endswith("s") else kind + "s")
        self._entries: Dict[str, RegistryEntry] = {}
        self._aliases: Dict[str, str] = {}

    def register(
        self,
        name: Optional[str] = None,
        *,
        aliases: Iterable[str] = (),
        description: str = "",
        label: str = "",
        order: Optional[float] = None,
        meta: Optional[Dict[str, Any]] = None,
        override: bool = False,
        **defaults: Any,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator: ``@register_loss("focal", aliases=("focal_loss",), label="Focal", order=1)`` on a class
        or a function.

        ``label`` is the name tables, reports and model cards print (default: the registry name); ``order``
        sorts entries as the paper's tables do (unordered entries come last, alphabetically); ``meta`` holds
        further facts reports use (datasets: ``hub_dataset``, ``note`` for the model card). ``defaults``
        are keyword arguments the factory receives unless the caller overrides them, so one class can back
        several entries (``sqrt`` is ``prior_power`` with ``tau=0.5``).
        """

        def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
            key = _normalise(name or factory.__name__)
            alias_keys = tuple(_normalise(a) for a in aliases)
            if not override:
                for k in (key, *alias_keys):
                    if k in self._entries or k in self._aliases:
                        raise ValueError(
                            f"{self.kind} '{k}' is already registered; pass override=True to replace it."
                        )
            doc = description or (factory.__doc__ or "").strip().split("\n")[0]
            self._entries[key] = RegistryEntry(key, factory, alias_keys, doc, dict(defaults), label, order,
                                               dict(meta or {}))
            for a in alias_keys:
                self._aliases[a] = key
            return factory

        return decorator

    def _resolve(self, name: str) -> str:
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a string, got {type(name).__name__}.")
        key = _normalise(name)
        key = self._aliases.get(key, key)
        if key not in self._entries:
            known = sorted([*self._entries, *self._aliases])
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(
                f"Unknown {self.kind} '{name}'.{hint} Available {self.plural}: {', '.join(self.list())}."
            )
        return key

    def get(self, name: str) -> RegistryEntry:
        """The entry for ``name`` (canonical or alias)."""
        return self._entries[self._resolve(name)]

    def label(self, name: str) -> str:
        """Display label of ``name`` (canonical or alias); an unregistered name is shown as it is."""
        return self._entries[self._resolve(name)].display if name in self else str(name)

    def sort_key(self, name: str) -> Tuple[float, str]:
        """Key that sorts names in the paper's table order; unregistered names go last."""
        return self._entries[self._resolve(name)].sort_key if name in self else (float("inf"), str(name))

    def canonical(self, name: str) -> str:
        """The canonical name of ``name`` or of one of its aliases (unknown names raise the usual ValueError)."""
        return self._resolve(name)

    def create(self, name: Any, *args: Any, **kwargs: Any) -> Any:
        """Build ``name`` with the entry's defaults updated by ``kwargs``. Non-strings pass through."""
        if not isinstance(name, str):
            return name  # an already-built component (or any callable) is used as it is
        entry = self.get(name)
        return entry.factory(*args, **{**entry.defaults, **kwargs})

    def list(self, filter: str = "", include_aliases: bool = False) -> List[str]:
        """Sorted canonical names, optionally matched against an fnmatch pattern (``'*mix*'``)."""
        names = list(self._entries) + (list(self._aliases) if include_aliases else [])
        if filter:
            names = fnmatch.filter(names, _normalise(filter))
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _normalise(name)
        return key in self._entries or key in self._aliases

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.list()})"


LOSSES = Registry("loss")
MIXERS = Registry("mixer")
SAMPLERS = Registry("sampler")

register_loss = LOSSES.register
register_mixer = MIXERS.register
register_sampler = SAMPLERS.register


def list_losses(filter: str = "") -> List[str]:
    return LOSSES.list(filter)


def list_mixers(filter: str = "") -> List[str]:
    return MIXERS.list(filter)


def list_samplers(filter: str = "") -> List[str]:
    return SAMPLERS.list(filter)


def is_loss(name: str) -> bool:
    return name in LOSSES


def is_mixer(name: str) -> bool:
    return name in MIXERS


def is_sampler(name: str) -> bool:
    return name in SAMPLERS


def create_loss(name: Any, class_counts: Any = None, **kwargs: Any) -> Any:
    """Build a registered loss: ``create_loss("bayias", class_counts=counts)`` -> ``nn.Module``.

    ``class_counts`` may be a sequence of per-class training counts or a :class:`~lt_registry.ClassPrior`.
    """
    return LOSSES.create(name, class_counts=class_counts, **kwargs)


def create_mixer(name: Any, class_counts: Any = None, **kwargs: Any) -> Any:
    """Build a registered mixer: callable ``mixer(x, y, *, partner=None, generator=None)``."""
    return MIXERS.create(name, class_counts=class_counts, **kwargs)


def create_sampler(name: Any, labels: Any = None, **kwargs: Any) -> Any:
    """Build a registered sampler over training ``labels`` -> ``torch.utils.data.Sampler``."""
    return SAMPLERS.create(name, labels=labels, **kwargs)
