"""Lenient parser for the time spans that models write in answers and dense captions.

Unusual here: it never raises and prefers missing a span to inventing one. The text is read by
a fixed list of recognisers in priority order; each one blanks out what it matched (keeping
offsets) so a later, looser one cannot read the same characters again:

1. JSON lists/objects: ``[[1, 2], [3, 4]]``, ``[{"start": 1, "end": 2, "caption": ..}]``,
   ``{"relevant_windows": [[1, 2]]}``; values may be numbers or time strings.
2. ``<12.3 seconds> ... <15.0 seconds>`` markers joined by a dash/"to"/"and".
3. "from 12.3 to 15 seconds", "between 12.3 and 15.0 s" (units optional after a keyword).
4. "12.3-15.0s", "12.3 - 15.0 seconds", "00:12 - 00:18" (a bare "1.2-3.4" needs a unit or
   clock times or a dense caption line, since it may be anything); "[12.3 - 15.0]".
5. Remaining lone ``<t seconds>`` markers, paired in order (an odd last one is a point).
6. "at 12.3 seconds" / "at 01:02" as a point span (a bare "at 3" is not a time).

Times are seconds, ``mm:ss`` or ``hh:mm:ss.ff``, with an optional unit (s, seconds, min,
hours). A span at the start of a line followed by ``:`` / ``-`` / ``,`` and text is a dense
caption line, e.g. ``From 12.5 to 18.0 seconds: a red circle enters.``; its text becomes the
span's caption. Spans come back in text order, start <= end (swapped if reversed), clamped to
``duration_seconds``; spans starting at or after the end of the video are dropped.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Span:
    """A time span in seconds from the video start, with the caption text if one was given."""

    start_seconds: float
    end_seconds: float
    caption: str | None = None

    def as_tuple(self) -> tuple[float, float]:
        return (self.start_seconds, self.end_seconds)


_CLOCK = r"(?:\d{1,2}:)?\d{1,3}:\d{2}(?:\.\d+)?"
_TIME = rf"(?:{_CLOCK}|\d+(?:\.\d+)?)"
_UNIT = r"(?:seconds?|secs?|s|minutes?|mins?|hours?|hrs?|h)\b"
_CONNECTORS = (
    "and|or|when|while|where|in|on|of|the|a|an|during|then|as|with|before|after|but|so|is|"
    "was|were|it|this|that|into|approximately|roughly|about|long|respectively"
)
# After an unlabelled "from A to B", another word must be a connector: "from 3 to 4 meters"
# or "from 2 to 3 people" are not times.
_NOT_TIME_AFTER = rf"(?!\s*[%$°]|\s*(?!(?:{_CONNECTORS})\b)[a-z])"
_DASH = r"(?:-|–|—|~|to|until|till|through)"


def _t(name: str) -> str:
    return rf"(?P<{name}>{_TIME})(?![.:]?\d)\s*(?P<{name}u>{_UNIT})?"


def _marker(name: str) -> str:
    return rf"<\s*(?P<{name}>{_TIME})\s*(?P<{name}u>{_UNIT})\s*>"  # the unit is required


_MARKER_PAIR = re.compile(rf"{_marker('a')}\s*(?:{_DASH}|and|,)?\s*{_marker('b')}", re.I)
_FROM = re.compile(rf"\bfrom\s+{_t('a')}\s*{_DASH}\s*{_t('b')}(?(bu)|{_NOT_TIME_AFTER})", re.I)
_BETWEEN = re.compile(
    rf"\bbetween\s+{_t('a')}\s*(?:and|&|-|–)\s*{_t('b')}(?(bu)|{_NOT_TIME_AFTER})", re.I
)
_BRACKETED = re.compile(rf"[\[(]\s*{_t('a')}\s*(?:-|–|—|~|to|,)\s*{_t('b')}\s*[\])]", re.I)
_RANGE = re.compile(rf"(?<![\w.:]){_t('a')}\s*{_DASH}\s*{_t('b')}(?![\w.]|:\d)", re.I)
_MARKER = re.compile(_marker("a"), re.I)
_AT = re.compile(rf"\b(?:at|around|about|@)\s+{_t('a')}(?!\w|[.:]\d)", re.I)
_LINE_PREFIX = re.compile(r"^\s*(?:[-*•>]+|\d{1,3}[.)]|\(?[a-z][.)])?\s*[\[(]?\s*$", re.I)
_CAPTION_AFTER = re.compile(r"[ \t]*[\])]?[ \t]*(?:[:\-–—|,]|\s)[ \t]*(?P<c>\S[^\n]*)")
_UNIT_SECONDS = {"h": 3600.0, "hr": 3600.0, "ho": 3600.0, "m": 60.0, "mi": 60.0}


def parse_time(text: str, unit: str | None = None) -> float | None:
    """Seconds for '12.3', '12.3 s', '02:05', '01:02:05.50', '2 min'; None if not a time."""
    try:
        text = text.strip()
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if any(p < 0 for p in parts) or parts[-1] >= 60 or (len(parts) == 3 and parts[1] >= 60):
                return None
            seconds = sum(p * 60.0**i for i, p in enumerate(reversed(parts)))
        else:
            seconds = float(text) * _unit_factor(unit)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _unit_factor(unit: str | None) -> float:
    if not unit:
        return 1.0
    u = unit.lower()
    if u.startswith("s"):
        return 1.0
    return _UNIT_SECONDS.get(u[:2], _UNIT_SECONDS.get(u[:1], 1.0))


def parse_time_string(value: object) -> float | None:
    """A JSON value (number or string like '12.3s', '00:12') as seconds, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) and value >= 0 else None
    if isinstance(value, str):
        m = re.fullmatch(rf"\s*{_t('a')}\s*", value, re.I)
        return parse_time(m["a"], m["au"]) if m else None
    return None


# ----- JSON ----------------------------------------------------------------------------------

_START_KEYS = ("start", "start_seconds", "start_time", "begin", "from", "start_sec", "st")
_END_KEYS = ("end", "end_seconds", "end_time", "stop", "to", "end_sec", "ed")
_PAIR_KEYS = ("timestamp", "timestamps", "span", "window", "time", "segment", "interval")
_LIST_KEYS = (
    "spans",
    "relevant_windows",
    "windows",
    "events",
    "segments",
    "timestamps",
    "answer",
    "results",
    "captions",
    "moments",
)
_CAPTION_KEYS = ("caption", "description", "text", "event", "label", "query", "sentence")


def _json_spans(value: object, depth: int = 0) -> list[tuple[float, float, str | None]]:
    if depth > 6:
        return []
    if isinstance(value, list):
        pair = _pair(value)
        if pair is not None:
            return [(*pair, None)]
        return [s for item in value for s in _json_spans(item, depth + 1)]
    if isinstance(value, dict):
        return _dict_spans(value, depth)
    return []


def _pair(value: list[object]) -> tuple[float, float] | None:
    if len(value) != 2:
        return None
    a, b = parse_time_string(value[0]), parse_time_string(value[1])
    return (a, b) if a is not None and b is not None else None


def _dict_spans(d: dict[str, object], depth: int) -> list[tuple[float, float, str | None]]:
    lower = {str(k).lower(): v for k, v in d.items()}
    caption = next((str(lower[k]) for k in _CAPTION_KEYS if isinstance(lower.get(k), str)), None)
    start = next((lower[k] for k in _START_KEYS if k in lower), None)
    end = next((lower[k] for k in _END_KEYS if k in lower), None)
    a, b = parse_time_string(start), parse_time_string(end)
    if a is not None and b is not None:
        return [(a, b, caption)]
    for key in _PAIR_KEYS:
        if isinstance(lower.get(key), list):
            found = _json_spans(lower[key], depth + 1)
            if found:
                return [(s, e, caption if c is None else c) for s, e, c in found]
    for key in _LIST_KEYS:
        if isinstance(lower.get(key), (list, dict)):
            found = _json_spans(lower[key], depth + 1)
            if found:
                return found
    return []


def _bracket_regions(text: str) -> Iterator[tuple[int, int]]:
    """Outermost balanced ``[...]`` / ``{...}`` regions, in order (strings not special-cased)."""
    stack: list[int] = []
    closing = {"]": "[", "}": "{"}
    for i, ch in enumerate(text):
        if ch in "[{":
            stack.append(i)
        elif ch in closing and stack:
            start = stack.pop()
            if text[start] != closing[ch]:
                stack.clear()
            elif not stack:
                yield start, i + 1


# ----- the scan ------------------------------------------------------------------------------


@dataclass
class _Found:
    offset: int
    start: float
    end: float
    caption: str | None


def parse_spans(text: str, *, duration_seconds: float | None = None) -> list[Span]:
    """All time spans in ``text`` (see module docstring), in order of appearance.

    Args:
        text: a model answer, dense caption lines, or JSON.
        duration_seconds: clamp to ``[0, duration]``; spans starting at/after it are dropped.

    Returns:
        ``Span`` list; ``[]`` for text without spans or for any non-string input.
    """
    if not isinstance(text, str) or not text.strip():
        return []
    work = text  # same length as text; consumed regions are blanked
    found: list[_Found] = []
    work = _scan_json(text, work, found)
    work = _scan_ranges(text, work, found, _MARKER_PAIR, need_unit=False)
    work = _scan_ranges(text, work, found, _FROM, need_unit=False)
    work = _scan_ranges(text, work, found, _BETWEEN, need_unit=False)
    work = _scan_ranges(text, work, found, _BRACKETED, need_unit=False)
    work = _scan_ranges(text, work, found, _RANGE, need_unit=True)
    work = _scan_lone_markers(work, found)
    _scan_points(work, found)
    found.sort(key=lambda f: f.offset)
    return _finish(found, duration_seconds)


def parse_dense_captions(text: str, *, duration_seconds: float | None = None) -> list[Span]:
    """Only the spans that carry a caption (dense caption lines or JSON with a text field)."""
    return [s for s in parse_spans(text, duration_seconds=duration_seconds) if s.caption]


def _blank(work: str, start: int, end: int) -> str:
    return work[:start] + " " * (end - start) + work[end:]


def _scan_json(text: str, work: str, found: list[_Found]) -> str:
    for attempt, (start, end) in enumerate(_bracket_regions(text)):
        if attempt >= 200 or end - start > 1_000_000:
            break
        try:
            value = json.loads(text[start:end])
        except ValueError:
            continue
        spans = _json_spans(value)
        for i, (a, b, caption) in enumerate(spans):
            found.append(_Found(start + i, a, b, caption))
        if spans:
            work = _blank(work, start, end)
    return work


def _scan_ranges(
    text: str, work: str, found: list[_Found], pattern: re.Pattern[str], *, need_unit: bool
) -> str:
    consumed_until = 0  # finditer runs over the unblanked string: skip inside taken captions
    for m in pattern.finditer(work):
        if m.start() < consumed_until:
            continue
        caption, end = _caption_line(text, m.start(), m.end())
        labelled = m["au"] or m["bu"] or (":" in m["a"] and ":" in m["b"])
        if need_unit and not labelled and caption is None:
            continue
        unit_b = m["bu"] or m["au"]
        a = parse_time(m["a"], m["au"] or unit_b)
        b = parse_time(m["b"], unit_b)
        if a is None or b is None:
            continue
        found.append(_Found(m.start(), a, b, caption))
        work = _blank(work, m.start(), end)
        consumed_until = end
    return work


def _caption_line(text: str, start: int, end: int) -> tuple[str | None, int]:
    """(caption, end of consumed text) when the match opens a dense caption line."""
    line_start = text.rfind("\n", 0, start) + 1
    if not _LINE_PREFIX.match(text[line_start:start]):
        return None, end
    line_end = text.find("\n", end)
    line_end = len(text) if line_end < 0 else line_end
    m = _CAPTION_AFTER.match(text[end:line_end])
    if not m:
        return None, end
    caption = m["c"].strip()
    return (caption or None), line_end


def _scan_lone_markers(work: str, found: list[_Found]) -> str:
    markers = list(_MARKER.finditer(work))
    for first, second in zip(markers[::2], markers[1::2] + [None], strict=False):
        a = parse_time(first["a"], first["au"])
        b = a if second is None else parse_time(second["a"], second["au"])
        if a is None or b is None:
            continue
        found.append(_Found(first.start(), a, b, None))
    for m in markers:
        work = _blank(work, m.start(), m.end())
    return work


def _scan_points(work: str, found: list[_Found]) -> None:
    for m in _AT.finditer(work):
        if not (m["au"] or ":" in m["a"]):
            continue
        t = parse_time(m["a"], m["au"])
        if t is not None:
            found.append(_Found(m.start(), t, t, None))


def _finish(found: list[_Found], duration_seconds: float | None) -> list[Span]:
    limit = None
    if duration_seconds is not None and math.isfinite(duration_seconds) and duration_seconds >= 0:
        limit = float(duration_seconds)
    out: list[Span] = []
    seen: set[tuple[float, float, str | None]] = set()
    for f in found:
        start, end = sorted((f.start, f.end))
        if limit is not None:
            if start >= limit and not (start == end == limit):
                log.debug("dropping span [%s, %s] past the video end %s", start, end, limit)
                continue
            end = min(end, limit)
        key = (start, end, f.caption)
        if key not in seen:
            seen.add(key)
            out.append(Span(start, end, f.caption))
    return out
