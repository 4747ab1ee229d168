"""Model answers cached per image content and model version, and (across replicas) who is computing one now."""
from __future__ import annotations

import json
from contextlib import contextmanager

from tagger.meta import utc_now
from tagger.tags import indexed_policy


class PredictionStore:
    """Part of ``SqlStore`` (``photo_store/base.py``): its queries run on the backend's connections and locks."""

    @contextmanager
    def predicting(self, sha: str):
        """Held while this process asks the model server for ``sha``'s tags; yields False when another replica
        holds it. One machine's workers are covered by the gateway's own lock files."""
        yield True

    def wait_predicted(self, sha: str, wait: float) -> None:
        """Return once no replica is asking the model server for ``sha`` (or after ``wait`` seconds)."""

    def cached_prediction(self, sha256: str, model_version: str) -> dict | None:
        """The answer computed for these image bytes by this model version, if any."""
        with self._connect() as db:
            row = self._one(db, "SELECT answer FROM predictions WHERE sha256 = ? AND model_version = ?",
                            (sha256, model_version))
        return json.loads(row["answer"]) if row else None

    def any_prediction(self, model_version: str) -> dict | None:
        """One cached answer of ``model_version`` (which policies its answers carry), if any."""
        with self._connect() as db:
            row = self._one(db, "SELECT answer FROM predictions WHERE model_version = ? LIMIT 1", (model_version,))
        return json.loads(row["answer"]) if row else None

    def indexed_policy(self, model_version: str | None, policy: str | None = None, *, default: str) -> str:
        """Which policy's rows of the tag index (``listing.py``) hold the tags of ``model_version``'s answers under
        ``policy`` (else ``default``): ``tagger.tags.indexed_policy`` of one of its answers; ``*`` when it has none.

        Raises:
            PolicyMissing: ``policy`` was asked for and the version's answers do not carry it.
        """
        return indexed_policy(self.any_prediction(model_version), policy, default=default) if model_version else "*"

    def save_prediction(self, sha256: str, model_version: str, answer: dict) -> None:
        with self._connect() as db:
            self._run(db, "INSERT INTO predictions (sha256, model_version, answer, created_at) VALUES (?, ?, ?, ?)"
                          " ON CONFLICT (sha256, model_version) DO UPDATE SET answer = excluded.answer,"
                          " created_at = excluded.created_at",
                      (sha256, model_version, json.dumps(answer), utc_now(micro=True)))
