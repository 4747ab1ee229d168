"""Where the runtime state lives: one data folder (``var/`` by default, ``TAGGER_DATA_DIR`` / ``--var``).

    d = DataDir("var")
    d.db, d.images          # var/photos.db (SQLite, WAL), var/images/ab/ab12....jpg (content files)
    d.key_file              # var/run/torchserve/key_file.json (TorchServe's token keys)

Every part that reads or writes there (photo store, gateway, annotation page, jobs, serving) takes its paths from
here, so the layout is written down once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tagger import REPO


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))  # a str is welcome

    # ---- the store: what an acknowledged upload or label is
    @property
    def db(self) -> Path:
        return self.root / "photos.db"           # photos, labels, history, cached predictions

    @property
    def schema_lock(self) -> Path:
        return self.root / "photos.db.lock"      # held while a process sets up or migrates the schema

    @property
    def images(self) -> Path:
        return self.root / "images"              # photo files, named by their SHA-256, written atomically

    # ---- rebuilt when lost
    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"              # thumb/ and view/ JPEGs keyed by SHA-256

    @property
    def cache(self) -> Path:
        return self.root / "cache"               # training's feature and detector-score caches

    # ---- the annotation page's retrain / compare / deploy jobs
    @property
    def jobs(self) -> Path:
        return self.root / "jobs"                # one folder per job: job.json, log, its checkpoint and archive

    # ---- processes: pids, logs, keys
    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def torchserve(self) -> Path:
        return self.run / "torchserve"           # config.properties, key_file.json, logs/, tmp/

    @property
    def key_file(self) -> Path:
        return self.torchserve / "key_file.json"

    @property
    def deployed(self) -> Path:
        return self.torchserve / "deployed.json"  # the version make deploy / rollback chose

    @property
    def gateway(self) -> Path:
        return self.run / "gateway"              # gunicorn.pid, access.log, error.log

    @property
    def locks(self) -> Path:
        return self.run / "locks"                # the SQLite store's photo-file locks (64 stripes)

    @property
    def postgres(self) -> Path:
        return self.run / "postgres"             # make serve-cluster's PostgreSQL: data/, socket/, pgpass, log

    @property
    def prefetch(self) -> Path:
        return self.run / "prefetch"             # one flock per photo whose tags are being computed

    @classmethod
    def of_key_file(cls, key_file: str | Path) -> DataDir:
        """The data folder whose ``key_file`` this is (a job gets the key file's path from the gateway)."""
        key_file = Path(key_file)
        if key_file.parent.name != "torchserve" or key_file.parent.parent.name != "run":
            raise ValueError(f"{key_file} is not <data>/run/torchserve/key_file.json")
        return cls(key_file.parent.parent.parent)


DEFAULT = DataDir(REPO / "var")  # the data folder when none is named (TAGGER_DATA_DIR, --var, --cache-dir)
