"""The watch's repair of the rotation: the exports without the lost models, and a notice on top of
the executive summary; the measured reports stay as they are.

- :func:`repair_documents` is pure: the run's measured rotation, the models lost now and what the
  docs folder holds in, the new texts of ``rotation.json``, ``litellm-router.yaml`` and
  ``executive-summary.md`` out (only those that change). Each purpose keeps its order without the lost
  models, so the fallbacks move up and the ``models`` cap still holds
  (:func:`freemodels.watch.repaired_rotation`).
  Nothing lost: the exports of the measured rotation, as the run wrote them, and no notice (a model that
  came back is routed to again).
- :func:`write_repair` writes them atomically, and only when ``docs/rotation.json`` is the watched run's:
  exports of another run (another source, an older render) are left alone, and the watch says so.

The notice (``reports/templates/_repair.md.j2``) sits between two HTML comments right under the
summary's title, so the next watch replaces it and a run's own render has none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from freemodels import exports, storage
from freemodels.exports import Repair
from freemodels.settings import OPENROUTER_MODELS_LIMIT
from freemodels.watch import REASON_WORDS, dropped_purposes, repaired_rotation
from tasks.rank import purposes
from tasks.render import EXECUTIVE_SUMMARY, LITELLM_YAML, ROTATION_JSON, environment

NOTICE_START = "<!-- rotation-repair -->"
NOTICE_END = "<!-- /rotation-repair -->"


@dataclass(frozen=True, slots=True)
class RepairOutcome:
    """What the repair decided and wrote."""

    repaired: bool  # the exports name fewer models than the run measured
    written: tuple[Path, ...]  # files written (none when nothing changed or the docs are another run's)
    skipped: str | None = None  # why the docs folder was left alone (one line), or None


def notice_text(repair: Repair, *, measured_on: str, artifact: bool = False) -> str:
    """The executive summary's notice for ``repair`` (Markdown, catalog text escaped)."""
    removed = [
        {"model_id": model_id, "words": REASON_WORDS.get(reason, reason)}
        for model_id, reason, _ in repair.removed
    ]
    text = (
        environment()
        .get_template("_repair.md.j2")
        .render(
            repair=repair,
            removed=removed,
            emptied=list(repair.emptied),
            measured_on=measured_on,
            artifact=artifact,
        )
    )
    return text.rstrip("\n") + "\n"


def with_notice(summary: str, notice: str | None) -> str:
    """``summary`` with its repair notice replaced by ``notice`` (None: removed). The notice goes right
    under the first line (the title), separated by blank lines."""
    start, end = summary.find(NOTICE_START), summary.find(NOTICE_END)
    if start != -1 and end > start:
        before, after = summary[:start], summary[end + len(NOTICE_END) :]
        summary = before.rstrip("\n") + "\n\n" + after.lstrip("\n")
    if notice is None:
        return summary
    title, newline, rest = summary.partition("\n")
    return f"{title}\n\n{notice.rstrip()}\n\n{rest.lstrip(chr(10))}" if newline else f"{title}\n\n{notice}"


def _json_text(document: Mapping[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def repair_documents(
    *,
    rotation: pl.DataFrame,
    lost: Sequence[tuple[str, str, str]],
    current: Mapping[str, str],
    run: Mapping[str, Any],
    watch_id: str,
    on: str,
    models_limit: int = OPENROUTER_MODELS_LIMIT,
) -> tuple[dict[str, str], Repair | None]:
    """The documents to write (relative path -> text; unchanged ones left out) and the repair made.

    ``rotation`` is the run's stored rotation; ``lost`` (model, reason, detail) the members lost now;
    ``current`` what the docs folder holds (``rotation.json``, ``executive-summary.md``); ``run`` the
    run's ``runs`` row. ``rotation.json`` keeps its ``generated_at`` and ``models_limit``.
    """
    document = json.loads(current[ROTATION_JSON])
    limit = int(document.get("models_limit") or models_limit)
    ids = [model_id for model_id, _, _ in lost]
    repaired = repaired_rotation(rotation, ids)
    repair = (
        Repair(
            on=on,
            watch_id=watch_id,
            measured_run_id=str(run["run_id"]),
            removed=tuple(
                (m, r, d) for m, r, d in lost if m in set(rotation.get_column("model_id").to_list())
            ),
            emptied=tuple(dropped_purposes(rotation, repaired)),
        )
        if ids
        else None
    )
    if repair is not None and not repair.removed:
        repair = None
    source = str(run["source"])
    texts = {
        ROTATION_JSON: _json_text(
            exports.rotation_json(
                repaired,
                run_id=str(run["run_id"]),
                source=source,
                generated_at=document.get("generated_at"),
                order=purposes(),
                models_limit=limit,
                repaired=repair,
            )
        ),
        LITELLM_YAML: exports.litellm_router_yaml(
            repaired,
            run_id=str(run["run_id"]),
            source=source,
            base_url=run.get("base_url") or None,
            order=purposes(),
            repaired=repair,
        ),
    }
    summary = current.get(EXECUTIVE_SUMMARY)
    if summary is not None:
        started = run.get("started_at")
        measured_on = started.date().isoformat() if isinstance(started, datetime) else str(started)[:10]
        notice = notice_text(repair, measured_on=measured_on) if repair is not None else None
        texts[EXECUTIVE_SUMMARY] = with_notice(summary, notice)
    changed = {path: text for path, text in texts.items() if current.get(path) != text}
    return changed, repair


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_repair(
    docs_dir: Path,
    *,
    rotation: pl.DataFrame,
    lost: Sequence[tuple[str, str, str]],
    run: Mapping[str, Any],
    watch_id: str,
    on: str,
    models_limit: int = OPENROUTER_MODELS_LIMIT,
) -> RepairOutcome:
    """Repair the exports in ``docs_dir`` when they are the watched run's (see the module docstring)."""
    current = {
        name: text
        for name in (ROTATION_JSON, LITELLM_YAML, EXECUTIVE_SUMMARY)
        if (text := _read(docs_dir / name)) is not None
    }
    exported = current.get(ROTATION_JSON)
    if exported is None:
        return RepairOutcome(bool(lost), (), skipped=f"no {ROTATION_JSON} in {docs_dir}: nothing to repair")
    try:
        shown = json.loads(exported).get("run_id")
    except (ValueError, AttributeError):
        shown = None
    if shown != run["run_id"]:
        return RepairOutcome(
            bool(lost),
            (),
            skipped=f"{docs_dir / ROTATION_JSON} is not the rotation of run {run['run_id']}: left as it is",
        )
    changed, repair = repair_documents(
        rotation=rotation,
        lost=lost,
        current=current,
        run=run,
        watch_id=watch_id,
        on=on,
        models_limit=models_limit,
    )
    written = []
    for name, text in changed.items():
        storage.write_text_atomic(docs_dir / name, text)
        written.append(docs_dir / name)
    return RepairOutcome(repair is not None, tuple(written))
