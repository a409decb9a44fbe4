"""The batch's memory of finished work: ``manifest.json`` in the output folder.

One entry per tomogram: its input fingerprint, the digest of the settings
it ran with, its outputs, and the probability maps it wrote with their own
fingerprints. A rerun skips a tomogram whose entry matches; a rerun whose
settings changed only after segmentation (thresholds, artifacts, picking)
reuses the maps instead of segmenting again, the slow part of the chain.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import TomosegError
from .io.atomic import write_text
from .session import fingerprint as file_fingerprint  # parameters here name its values

MANIFEST = "manifest.json"


class Manifest:
    def __init__(self, folder: Path):
        self.path = Path(folder) / MANIFEST
        try:
            self.entries: dict = json.loads(self.path.read_text()) if self.path.exists() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            self.entries = None
            reason = str(exc)
        if not isinstance(self.entries, dict):
            raise TomosegError(f"the batch manifest {self.path} is damaged ("
                               f"{reason if self.entries is None else 'not a JSON object'}); "
                               "move it away and run again with --overwrite to process every "
                               "tomogram again (its files no longer count as the batch's).")

    def _entry(self, path: str, fingerprint: str, name: str) -> dict | None:
        entry = self.entries.get(path)
        if entry and entry.get("fingerprint") == fingerprint and entry.get("name") == name:
            return entry
        return None

    def finished(self, path: str, fingerprint: str, digest: str, name: str) -> bool:
        entry = self._entry(path, fingerprint, name)
        return bool(entry and entry["status"] == "done" and entry["settings"] == digest and all(
            (self.path.parent / o).exists() for o in entry["outputs"])
            and all(Path(c).exists() for c in entry.get("copick") or ())  # deleted: redone
            and self._maps_intact(entry))

    def _maps_intact(self, entry: dict) -> bool:
        """The maps an entry wrote are still the ones it wrote (not another run's)."""
        for record in (entry.get("maps") or {}).values():
            try:
                if file_fingerprint(self.path.parent / record["file"]) != record["fingerprint"]:
                    return False
            except OSError:
                return False
        return True

    def names(self, tomograms: list[str], fresh: list[str]) -> dict[str, str]:
        """Output names for this run: a tomogram keeps the name it had in this folder; a new
        one never takes a name another tomogram's outputs already have here (a second run
        of b/t.mrc replaced a/t.mrc's files, and a rerun of a/t called them its own)."""
        recorded = {p: e["name"] for p, e in self.entries.items() if e.get("name")}
        owner: dict[str, str] = {}  # name -> the first path that had it (older manifests
        for path, name in recorded.items():  # could give two tomograms one name)
            owner.setdefault(name, path)
        taken = {name for p, name in recorded.items() if p not in tomograms}
        names = {p: recorded[p] for p in tomograms if p in recorded and owner[recorded[p]] == p}
        taken |= set(names.values())
        for path, name in zip(tomograms, fresh):
            if path in names:
                continue
            candidate, n = name, 2
            while candidate in taken:
                candidate, n = f"{name}_{n}", n + 1
            names[path] = candidate
            taken.add(candidate)
        return names

    def reusable_maps(self, path: str, fingerprint: str, segment_digest: str, name: str
                      ) -> dict[str, str] | None:
        """{feature: map file name} written for this input and these models, untouched since.

        None when any map is missing or changed (size or first/last MiB), or
        when the input, the models or the segmentation settings differ.
        """
        entry = self._entry(path, fingerprint, name)
        maps = (entry or {}).get("maps")
        if not maps or entry.get("segment_settings") != segment_digest \
                or not self._maps_intact(entry):
            return None
        return {feature: record["file"] for feature, record in maps.items()}

    def begin(self, paths: list[str], planned: dict[str, tuple[str, list[str]]]) -> None:
        """Mark the tomograms about to run as running, with their (name, planned outputs):
        a run killed while rewriting their labels and picks left entries saying 'done' with
        the earlier settings, so a rerun skipped them and kept the killed run's files; and a
        run killed before a tomogram's first record left files no entry listed, which the
        rerun refused as another program's."""
        for path in paths:
            name, outputs = planned[path]
            entry = self.entries.get(path) or {"tomogram": path, "name": name, "outputs": []}
            listed = list(dict.fromkeys([*entry.get("outputs", []), *outputs]))
            self.entries[path] = {**entry, "status": "running", "outputs": listed}
        if paths:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_text(self.path, json.dumps(self.entries, indent=1))

    def record(self, result: dict, fingerprint: str, digest: str, segment_digest: str) -> None:
        self.entries[result["tomogram"]] = {**result, "fingerprint": fingerprint,
                                            "settings": digest, "segment_settings": segment_digest}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text(self.path, json.dumps(self.entries, indent=1))
