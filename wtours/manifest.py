"""Video manifests: a CSV of id, url, license (plus optional facts), validated before any download."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

REQUIRED_COLUMNS = ("id", "url", "license")
OPTIONAL_COLUMNS = ("city", "width", "height", "fps", "notes", "mirrors", "sha256")
DEFAULT_MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "walking_tours.csv"

# Ids become file names and WebDataset key prefixes, so no dots, slashes or spaces.
_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# SPDX-style Creative Commons identifiers (CC-BY-4.0, CC-BY-SA-3.0, CC0-1.0, CC-BY, ...).
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CC_RE = re.compile(r"^(CC0-1\.0|CC-BY(-NC)?(-SA|-ND)?(-[1-4]\.0)?)$", re.IGNORECASE)
NON_CC_LICENSES = ("public-domain", "BSD-3-Clause", "MIT", "youtube-standard", "proprietary", "unknown")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file, the line and every problem."""


@dataclass(frozen=True)
class ManifestEntry:
    """One video of a manifest. `url` is ready for yt-dlp (local paths become file:// URLs); `mirrors`
    are other sources of the same video, tried in order when `url` fails for good; `sha256`, if
    given, is what the downloaded bytes must hash to."""

    id: str
    url: str
    license: str
    city: str = ""
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    notes: str = ""
    line: int = 0
    mirrors: tuple[str, ...] = ()
    sha256: str = ""

    @property
    def sources(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


def is_creative_commons(license_id: str) -> bool:
    """True for a Creative Commons identifier as accepted in manifests (CC-BY-3.0, CC0-1.0, ...)."""
    return bool(_CC_RE.match(license_id.strip()))


def _valid_license(value: str) -> bool:
    return is_creative_commons(value) or value.lower() in {v.lower() for v in NON_CC_LICENSES}


def _resolve_url(raw: str, base: Path) -> str:
    """Keep URLs with a scheme; turn a local path (relative to the manifest) into a file:// URL."""
    parsed = urlparse(raw)
    if parsed.scheme and len(parsed.scheme) > 1:  # 'C:' on Windows is a drive, not a scheme
        return raw
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = base / path
    return path.resolve().as_uri()


def _number(value: str, kind: type, where: str, column: str, problems: list[str]):
    if not value.strip():
        return None
    try:
        number = kind(value)
    except ValueError:
        problems.append(f"{where}: column '{column}' must be a number, got {value!r}")
        return None
    if number <= 0:
        problems.append(f"{where}: column '{column}' must be positive, got {value!r}")
        return None
    return number


def load_manifest(path: str | Path) -> list[ManifestEntry]:
    """Parse and validate a manifest CSV; raise ManifestError naming every bad line at once."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise ManifestError(
                f"{path}:1: missing column(s) {', '.join(missing)}; a manifest needs {', '.join(REQUIRED_COLUMNS)}"
                f" (optional: {', '.join(OPTIONAL_COLUMNS)}), found {', '.join(header) or 'no header'}"
            )
        entries: list[ManifestEntry] = []
        problems: list[str] = []
        seen: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            where = f"{path}:{line}"
            if None in row or any(v is None for v in row.values()):  # DictReader's marks for extra/missing fields
                problems.append(f"{where}: expected {len(header)} fields ({', '.join(header)})")
                continue
            row = {k.strip(): v.strip() for k, v in row.items()}
            vid, url, lic = row.get("id", ""), row.get("url", ""), row.get("license", "")
            if not vid:
                problems.append(f"{where}: empty id")
            elif not _ID_RE.match(vid):
                problems.append(f"{where}: id {vid!r} may only hold letters, digits, '_' and '-' (no dots)")
            elif vid in seen:
                problems.append(f"{where}: duplicate id {vid!r} (first on line {seen[vid]})")
            else:
                seen[vid] = line
            if not url:
                problems.append(f"{where}: empty url for id {vid!r}")
            if not _valid_license(lic):
                problems.append(
                    f"{where}: bad license value {lic!r}; use a Creative Commons id such as CC-BY-4.0 or CC0-1.0,"
                    f" or one of {', '.join(NON_CC_LICENSES)}"
                )
            width = _number(row.get("width", ""), int, where, "width", problems)
            height = _number(row.get("height", ""), int, where, "height", problems)
            fps = _number(row.get("fps", ""), float, where, "fps", problems)
            if url:
                url = _resolve_url(url, path.parent)
            mirrors = tuple(_resolve_url(m.strip(), path.parent) for m in row.get("mirrors", "").split("|") if m.strip())
            sha256 = row.get("sha256", "").lower()
            if sha256 and not _SHA256_RE.match(sha256):
                problems.append(f"{where}: sha256 must be 64 hex digits, got {row.get('sha256')!r}")
            entries.append(ManifestEntry(vid, url, lic, row.get("city", ""), width, height, fps, row.get("notes", ""), line,
                                         mirrors, sha256))
    if problems:
        raise ManifestError("\n".join(problems))
    if not entries:
        raise ManifestError(f"{path}: manifest has a header but no videos")
    return entries


def select(entries: list[ManifestEntry], ids: list[str] | None) -> list[ManifestEntry]:
    """The entries with the given ids, in the order asked (all entries if ids is empty)."""
    if not ids:
        return list(entries)
    by_id = {e.id: e for e in entries}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise ManifestError(f"unknown id(s) {', '.join(unknown)}; the manifest has {', '.join(by_id)}")
    return [by_id[i] for i in dict.fromkeys(ids)]
