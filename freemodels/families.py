"""Model families: the lineage a model id belongs to.

A *family* groups the models that share one lineage, so that probing can start with one
representative of each family and reports can speak of "Llama 3.3" rather than of every size and
variant of it. The family of an id is ``author/lineage`` (lower case), computed from the id alone:

1. The variant suffix is dropped (``:free``, ``:nitro``, ``:extended``, ``:beta``, ``:thinking``,
   ``:exacto``, ...). Ids of routers and aliases that start with ``~`` keep their whole name
   (``~openai/gpt-latest``); :mod:`freemodels.catalog` also gives every router its own
   ``author/name`` as its family.
2. The name after the author is split into tokens at ``-`` and ``_``. A pair of single digits
   written with a dash is read as one version (``claude-3-5-haiku`` -> ``claude-3.5-haiku``,
   ``jamba-1-5-large`` -> ``jamba-1.5-large``), so both spellings land in one family.
3. These tokens are removed:

   * parameter and context sizes: ``8b``, ``70b``, ``1.5b``, ``1t``, ``a3b``/``a22b`` (active
     parameters), ``e4b`` (effective parameters), ``8x7b`` (mixtures), ``32k``/``128k``, ``moe``;
   * tuning and mode words: ``instruct``, ``chat``, ``it``, ``base``, ``thinking``, ``think``;
   * release-stage words: ``preview``, ``exp``, ``experimental``, ``beta``, ``latest``;
   * weight-format words: ``hf``, ``fp8``, ``fp16``, ``bf16``;
   * date tags: ``2024-11-20``, ``2024-05``, ``08-2024``, ``03-25``, ``20241022``, four-digit
     tags that read as a month and day or a year and month (``0528``, ``2507``, ``1212``), and
     zero-padded build numbers (``001``);
   * version tags written ``v<number>`` that follow a parameter size: they are releases of one model
     (``mistral-7b-instruct-v0.3``, ``nemotron-super-49b-v1.5``). A ``v<number>`` before any size
     names a generation and stays (``deepseek-v3.2``, ``magnum-v4-72b``, ``kat-coder-pro-v2``).

   The first token (the base name) is always kept.
4. Everything else stays, in order. In particular:

   * generation numbers stay (``llama-3.3``, ``gemma-3``, ``qwen3``, ``qwen3.5``), and so do
     spelling differences between them (``qwen-2.5`` and ``qwen2.5`` are the ids' own names);
   * product tiers and specialisations are separate lineages: ``gemini-2.5-flash`` and
     ``gemini-2.5-pro``, ``gpt-4o`` and ``gpt-4o-mini``, ``qwen3`` and ``qwen3-coder``,
     ``llama-3.2`` and ``llama-3.2-vision``;
   * distilled and fine-tuned models are their own lineage, named by what they were built from:
     ``deepseek/deepseek-r1-distill-llama-70b`` -> ``deepseek/deepseek-r1-distill-llama``, which is
     neither ``deepseek/deepseek-r1`` nor ``deepseek/deepseek-r1-distill-qwen``.

Examples::

    meta-llama/llama-3.3-70b-instruct:free  -> meta-llama/llama-3.3
    meta-llama/llama-3.3-8b-instruct:free   -> meta-llama/llama-3.3
    google/gemma-3-27b-it:free              -> google/gemma-3
    qwen/qwen3-235b-a22b-thinking-2507      -> qwen/qwen3
    mistralai/mistral-7b-instruct-v0.1      -> mistralai/mistral
    deepseek/deepseek-r1-0528:free          -> deepseek/deepseek-r1

Ids from other OpenAI-compatible servers: an id without an author gets a family without one; an
id that is a file path (``/models/gemma-3-270m-it-q4_k_m.gguf``, as llama.cpp serves) is read as
its file name without the extension, and quantisation tags (``q4_k_m``, ``iq3_xs``, ``f16``) are
removed like sizes (-> ``gemma-3``).
"""

from __future__ import annotations

import re
from functools import lru_cache

__all__ = ["family_of", "is_size_token", "lineage_tokens", "split_variant"]

_SIZE = re.compile(
    r"""^(?:
        \d+(?:\.\d+)?[bmkt]           # 70b, 1.5b, 135m, 1t, 128k
      | [ae]\d+(?:\.\d+)?b            # a3b (active), e4b (effective)
      | \d+x\d+(?:\.\d+)?b            # 8x7b mixtures
      | moe
    )$""",
    re.VERBOSE,
)
_VERSION_TAG = re.compile(r"^v\d+(?:\.\d+)*$")
_BUILD = re.compile(r"^0\d\d$")
_DIGITS = re.compile(r"^\d+$")
_SEPARATORS = re.compile(r"[-_]")
_MODEL_FILE = re.compile(r"\.(?:gguf|ggml|bin|safetensors)$", re.IGNORECASE)
_QUANTISATION = re.compile(r"(?:(?<=[-_.])|^)(?:i?q\d+(?:_[a-z0-9]+)*|f16|f32)(?=$|[-.])")
_SINGLE_DIGIT = re.compile(r"^\d$")
_DROP_WORDS = frozenset(
    {
        # tuning and mode
        "instruct",
        "chat",
        "it",
        "base",
        "thinking",
        "think",
        # release stage
        "preview",
        "exp",
        "experimental",
        "beta",
        "latest",
        # weight formats
        "hf",
        "fp8",
        "fp16",
        "bf16",
    }
)


def is_size_token(token: str) -> bool:
    """Whether a name token is a parameter or context size (``70b``, ``a3b``, ``8x7b``, ``128k``)."""
    return bool(_SIZE.match(token))


def split_variant(model_id: str) -> tuple[str, str | None]:
    """Split ``author/name:variant`` into ``("author/name", "variant")``; variant None if absent."""
    base, sep, variant = model_id.partition(":")
    return base, (variant if sep and variant else None)


def _is_month(text: str) -> bool:
    return len(text) == 2 and 1 <= int(text) <= 12


def _is_day(text: str) -> bool:
    return len(text) == 2 and 1 <= int(text) <= 31


def _is_year(text: str) -> bool:
    return len(text) == 4 and 2000 <= int(text) <= 2099


def _is_date4(text: str) -> bool:
    """``0528`` (month, day) or ``2507`` (year 2020-2039, month)."""
    head, tail = text[:2], text[2:]
    month_day = _is_month(head) and _is_day(tail)
    year_month = 20 <= int(head) <= 39 and _is_month(tail)
    return month_day or year_month


def _is_date8(text: str) -> bool:
    """``20241022`` (year, month, day)."""
    return _is_year(text[:4]) and _is_month(text[4:6]) and _is_day(text[6:])


def _date_span(tokens: list[str], i: int) -> int:
    """How many tokens from ``tokens[i]`` form a date tag (0 if none)."""
    first = tokens[i]
    if not _DIGITS.match(first):
        return 0
    following = tokens[i + 1 : i + 3]
    nxt = following[0] if following and _DIGITS.match(following[0]) else None
    third = following[1] if len(following) > 1 and _DIGITS.match(following[1]) else None
    if _is_year(first) and nxt is not None and _is_month(nxt):
        return 3 if third is not None and _is_day(third) else 2  # 2024-11-20, 2024-05
    if len(first) == 2 and _is_month(first) and nxt is not None:
        if _is_year(nxt):
            return 2  # 08-2024
        if _is_day(nxt):
            return 2  # 03-25
    if len(first) == 4 and _is_date4(first):
        return 1
    if len(first) == 8 and _is_date8(first):
        return 1
    return 0


def _join_split_versions(tokens: list[str]) -> list[str]:
    """``claude-3-5-haiku`` -> ``claude-3.5-haiku``: a dash between two single digits is a dot."""
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if (
            out
            and not _DIGITS.match(out[-1])
            and _SINGLE_DIGIT.match(token)
            and i + 1 < len(tokens)
            and _SINGLE_DIGIT.match(tokens[i + 1])
        ):
            out.append(f"{token}.{tokens[i + 1]}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def lineage_tokens(name: str) -> list[str]:
    """The tokens of a model name (no author, no variant) that name its lineage, in order."""
    tokens = [t for t in _SEPARATORS.split(name.lower()) if t]
    if not tokens:
        return []
    if any(len(t) == 1 and t.isdigit() for t in tokens):
        tokens = _join_split_versions(tokens)
    kept = [tokens[0]]
    seen_size = bool(_SIZE.match(tokens[0]))
    i = 1
    count = len(tokens)
    while i < count:
        token = tokens[i]
        i += 1
        if token.isalpha():  # the common case: a word, kept unless it is one to drop
            if token == "moe":
                seen_size = True
            elif token not in _DROP_WORDS:
                kept.append(token)
            continue
        if token.isdigit():
            span = _date_span(tokens, i - 1)
            if span:
                i += span - 1
                continue
            if _BUILD.match(token):
                continue
            kept.append(token)
            continue
        if _SIZE.match(token):
            seen_size = True
        elif not (token in _DROP_WORDS or (seen_size and _VERSION_TAG.match(token))):
            kept.append(token)
    return kept


@lru_cache(maxsize=65_536)
def family_of(model_id: str) -> str:
    """The family (lineage) of a model id, e.g. ``meta-llama/llama-3.3`` (see the module doc)."""
    text = model_id.strip()
    if text.startswith("/") or text.count("/") > 1 or _MODEL_FILE.search(text):
        name = _MODEL_FILE.sub("", text.replace("\\", "/").rsplit("/", 1)[-1])
        name = _QUANTISATION.sub("", name.lower())
        return "-".join(lineage_tokens(name)) or name
    base, _variant = split_variant(text)
    if base.startswith("~"):
        return base.lower()
    author, slash, name = base.partition("/")
    if not slash:
        name = _QUANTISATION.sub("", base.lower())
        return "-".join(lineage_tokens(name)) or base.lower()
    lineage = "-".join(lineage_tokens(name)) or name.lower()
    return f"{author.lower()}/{lineage}"
