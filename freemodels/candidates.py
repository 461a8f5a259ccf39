"""Candidate model ids (e.g. from announcements) that the catalog may not list.

A candidate file holds one model id per line; blank lines and ``#`` comments are ignored. Candidates
that the catalog lists are probed like any other model. Those it does not list are never sent to
the chat endpoint: :func:`classify_candidate` names why they cannot be used and which catalog ids
come closest.

Rule
    0. A ``:free`` candidate whose model the catalog lists only under its paid slug (the id without
       ``:free``, e.g. ``minimax/minimax-m2:free`` when only ``minimax/minimax-m2`` is listed) has
       **no free variant** (:attr:`Failure.FREE_VARIANT_ENDED`): the model is on OpenRouter, the id
       is right, only the free offer is gone (or never was). The paid slug is the suggestion.
    1. A candidate that is not a well-formed OpenRouter id (``author/name`` with an optional
       ``:variant``, lower-case letters, digits, ``.``, ``_`` and ``-``; an optional leading ``~``)
       is a **wrong model id** (:attr:`Failure.WRONG_MODEL_ID`), with the closest ids if any.
    2. A well-formed candidate with close catalog ids is a **wrong model id** as well: the model is
       on OpenRouter under another id (a missing author, a missing ``-instruct``, a typo, another
       variant).
    3. A well-formed candidate with no close catalog id is **not on OpenRouter**
       (:attr:`Failure.NO_ENDPOINTS`).

Closeness
    Ids are compared without case and without their variant suffix, by name (the part after the
    author). A catalog id is *close* when it has the same lineage (:func:`family_of` without the
    author: ``llama-3.3-8b`` and ``meta-llama/llama-3.3-8b-instruct:free`` are both ``llama-3.3``)
    or when the names are at least 85 % alike (:class:`difflib.SequenceMatcher` ratio) and carry
    the same version numbers (``claude-5-opus`` is not a misspelt ``claude-3-opus``). Close ids
    are ranked by name likeness (half the score), shared name tokens such as ``8b`` (a quarter),
    lineage (15 %) and author (10 %). Each model is suggested once, under its ``:free`` id when the
    catalog has one (or under the candidate's own variant, when listed).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from functools import lru_cache
from pathlib import Path

from freemodels.errors import ConfigError
from freemodels.failures import Failure
from freemodels.families import family_of, is_size_token, split_variant
from freemodels.secrets import untrusted

__all__ = [
    "CatalogIndex",
    "classify_candidate",
    "is_well_formed",
    "paid_slug_of",
    "read_candidates",
    "suggest_ids",
]

CLOSE_RATIO = 0.85
_WELL_FORMED = re.compile(r"^~?[a-z0-9][a-z0-9._-]*/[a-z0-9][a-z0-9._-]*(?::[a-z0-9._-]+)?$")
_TOKEN_SPLIT = re.compile(r"[-_/]")


def is_well_formed(model_id: str) -> bool:
    """Whether a string has the shape of an OpenRouter model id (``author/name[:variant]``)."""
    return bool(_WELL_FORMED.match(model_id))


def _lineage(base: str) -> str:
    """The family of an id without its author: ``meta-llama/llama-3.3-8b`` -> ``llama-3.3``."""
    return family_of(base.partition("/")[2] if "/" in base else base)


def _tokens(name: str) -> frozenset[str]:
    return frozenset(t for t in _TOKEN_SPLIT.split(name) if t)


def _versions(tokens: frozenset[str]) -> frozenset[str]:
    """The version numbers among a name's tokens (``3.3``, ``v2``, ``k2``), not its sizes."""
    return frozenset(t for t in tokens if any(ch.isdigit() for ch in t) and not is_size_token(t))


def _authors_match(a: str, b: str) -> bool:
    """``meta`` and ``meta-llama``, ``mistral`` and ``mistralai`` count as the same author."""
    return bool(a and b) and (a == b or a.startswith(b) or b.startswith(a))


@dataclass(frozen=True, slots=True)
class _Model:
    """One model of the catalog: every listed id that shares a base (id without variant)."""

    ids: tuple[str, ...]
    author: str
    name: str
    lineage: str
    tokens: frozenset[str]
    versions: frozenset[str]

    def preferred_id(self, variant: str | None) -> str:
        """The candidate's own variant if listed, else the ``:free`` id, else the plain id."""
        by_variant = {split_variant(i.lower())[1]: i for i in self.ids}
        for wanted in (variant, "free", None) if variant else ("free", None):
            if wanted in by_variant:
                return by_variant[wanted]
        return self.ids[0]


@dataclass(frozen=True, slots=True)
class CatalogIndex:
    """Catalog ids prepared for matching; build it once with :meth:`from_ids` for many candidates."""

    ids: frozenset[str]
    models: tuple[_Model, ...]
    by_lower: Mapping[str, str] = field(default_factory=dict)  # lower-cased id -> the catalog's id

    @classmethod
    def from_ids(cls, catalog_ids: Iterable[str]) -> CatalogIndex:
        groups: dict[str, list[str]] = {}
        for model_id in catalog_ids:
            base, _variant = split_variant(model_id.strip().lower())
            groups.setdefault(base, []).append(model_id)
        models = []
        for base, ids in groups.items():
            author, slash, name = base.partition("/")
            if not slash:
                author, name = "", base
            models.append(
                _Model(
                    ids=tuple(ids),
                    author=author.removeprefix("~"),
                    name=name,
                    lineage=_lineage(base),
                    tokens=_tokens(name),
                    versions=_versions(_tokens(name)),
                )
            )
        all_ids = frozenset(i for ids in groups.values() for i in ids)
        by_lower = {i.strip().lower(): i for i in sorted(all_ids)}
        return cls(ids=all_ids, models=tuple(models), by_lower=by_lower)


@lru_cache(maxsize=4)
def _index_of(catalog_ids: tuple[str, ...]) -> CatalogIndex:
    """The index of a catalog, remembered: a run classifies all its candidates against one catalog."""
    return CatalogIndex.from_ids(catalog_ids)


def _as_index(catalog_ids: Sequence[str] | CatalogIndex) -> CatalogIndex:
    if isinstance(catalog_ids, CatalogIndex):
        return catalog_ids
    return _index_of(tuple(catalog_ids))


def suggest_ids(candidate: str, catalog_ids: Sequence[str] | CatalogIndex, *, n: int = 3) -> list[str]:
    """Up to ``n`` catalog ids close to ``candidate``, best first (see the module docstring).

    Returns an empty list when no catalog id is close.
    """
    if n <= 0:
        return []
    index = _as_index(catalog_ids)
    base, variant = split_variant(candidate.strip().lower())
    author, slash, name = base.partition("/")
    if not slash:
        author, name = "", base
    author = author.removeprefix("~")
    if not name:
        return []
    lineage = _lineage(base)
    tokens = _tokens(name)
    versions = _versions(tokens)
    matcher = SequenceMatcher(autojunk=False)
    matcher.set_seq2(name)

    scored: list[tuple[float, int, str]] = []
    for order, model in enumerate(index.models):
        same_lineage = model.lineage == lineage
        if not same_lineage and model.versions != versions:
            continue  # another version number names another model, not a misspelt one
        matcher.set_seq1(model.name)
        if not same_lineage and matcher.real_quick_ratio() < CLOSE_RATIO:
            continue
        if not same_lineage and matcher.quick_ratio() < CLOSE_RATIO:
            continue
        ratio = matcher.ratio()
        if not same_lineage and ratio < CLOSE_RATIO:
            continue
        union = tokens | model.tokens
        shared = len(tokens & model.tokens) / len(union) if union else 0.0
        author_bonus = 1.0 if not author or _authors_match(author, model.author) else 0.0
        score = 0.5 * ratio + 0.25 * shared + 0.15 * same_lineage + 0.10 * author_bonus
        scored.append((-score, order, model.preferred_id(variant)))
    scored.sort()
    return [model_id for _score, _order, model_id in scored[:n]]


def classify_candidate(
    candidate: str, catalog_ids: Sequence[str] | CatalogIndex, *, n: int = 3
) -> tuple[Failure, list[str]]:
    """Why a candidate the catalog does not list cannot be probed, and the closest catalog ids.

    Returns ``(Failure.FREE_VARIANT_ENDED, [paid slug])`` for a ``:free`` id whose model is listed
    only as its paid slug, ``(Failure.WRONG_MODEL_ID, suggestions)`` for a malformed id or one with
    close catalog ids, and ``(Failure.NO_ENDPOINTS, [])`` when nothing in the catalog is close.
    Raises :class:`ValueError` if the catalog lists the candidate: such a candidate is probed, not
    classified.
    """
    index = _as_index(catalog_ids)
    text = candidate.strip()
    if text in index.ids:
        raise ValueError(f"{text!r} is listed in the catalog; probe it instead of classifying it")
    paid = paid_slug_of(text, index)
    if paid is not None:
        return Failure.FREE_VARIANT_ENDED, [paid]
    suggestions = suggest_ids(text, index, n=n)
    if suggestions or not is_well_formed(text):
        return Failure.WRONG_MODEL_ID, suggestions
    return Failure.NO_ENDPOINTS, []


@dataclass(frozen=True, slots=True)
class CandidateOutcome:
    """A candidate id that the catalog does not list, classified without sending it."""

    model_id: str
    failure: Failure
    suggestions: tuple[str, ...]


def classify_unlisted(candidates: Sequence[str], catalog_ids: Sequence[str]) -> list[CandidateOutcome]:
    """The candidates the catalog does not list, each classified (listed ones are probed instead)."""
    index = _as_index(tuple(catalog_ids))
    outcomes = []
    for candidate in candidates:
        if candidate.strip() in index.ids:
            continue
        failure, suggestions = classify_candidate(candidate, index)
        outcomes.append(CandidateOutcome(candidate, failure, tuple(suggestions)))
    return outcomes


def paid_slug_of(candidate: str, catalog_ids: Sequence[str] | CatalogIndex) -> str | None:
    """The listed paid slug of a ``:free`` candidate whose free variant the catalog does not list.

    ``minimax/minimax-m2:free`` -> ``minimax/minimax-m2`` when the catalog lists that id but not the
    ``:free`` one; None otherwise. Case is ignored; the catalog's spelling is returned.
    """
    index = _as_index(catalog_ids)
    text = candidate.strip()
    base, variant = split_variant(text.lower())
    if variant != "free" or text in index.ids:
        return None
    if f"{base}:free" in index.by_lower:
        return None  # the free variant is listed (under another spelling): a wrong id, not a paid one
    return index.by_lower.get(base)


def read_candidates(path: str | Path) -> list[str]:
    """Candidate ids from a file: one per line, ``#`` starts a comment, blank lines are skipped.

    Order is kept and repeated ids are listed once. Raises :class:`ConfigError` when the file is
    missing, unreadable or not UTF-8 text.
    """
    source = Path(path).expanduser()
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"candidates file {source} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"candidates file {source} is a directory") from None
    except UnicodeDecodeError:
        raise ConfigError(f"candidates file {source} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"candidates file {source} cannot be read ({exc.strerror or exc})") from None
    seen: dict[str, None] = {}
    for line in text.splitlines():
        model_id = untrusted(line.partition("#")[0].strip())
        if model_id:
            seen.setdefault(model_id, None)
    return list(seen)
