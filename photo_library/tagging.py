"""``tag``: every photo of a folder through the gateway, its tags into the XMP sidecar beside it.

    summary = tag_folder(Path("~/Pictures").expanduser(), gateway="http://127.0.0.1:7777")
    summary.failed            # [(path, reason), ...]; the run went on past them

Resumable: a photo whose sidecar records the same SHA-256, the served model version and the tag policy is
skipped, so a run
stopped by Ctrl-C or ``kill -9`` costs, when started again, only what it had left (each sidecar is written
atomically). Originals are only read.
"""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass, field
from pathlib import Path

from photo_library.files import id_name, photos_in, sha256_of, sidecar_path
from photo_library.gateway_client import GatewayClient, PhotoRefused
from photo_library.xmp import (
    MODEL_VERSION,
    SOURCE_SHA256,
    TAG_POLICY,
    UNSAFE_NAME,
    ExifTools,
    XmpError,
    read_sidecar,
    sidecar_changes,
    unsafe,
    write_sidecar,
)


@dataclass
class Summary:
    dry_run: bool = False
    tagged: list = field(default_factory=list)   # (path, tags)
    skipped: list = field(default_factory=list)  # paths whose sidecar is up to date
    failed: list = field(default_factory=list)   # (path, reason)
    planned: list = field(default_factory=list)  # --dry-run: paths that would be tagged

    def line(self) -> str:
        head = f"would tag {len(self.planned)}" if self.dry_run else f"tagged {len(self.tagged)}"
        return f"{head}, skipped {len(self.skipped)} (unchanged), failed {len(self.failed)}"


def tag_one(photo: Path, root: Path, *, client: GatewayClient, tools: ExifTools, version: str | None,
            naming: str, parent: str, dry_run: bool, policy: str | None = None) -> tuple[str, object]:
    """``("tagged", tags)``, ``("skipped", None)``, ``("planned", None)`` or ``("failed", reason)``."""
    if unsafe(str(photo)):
        return "failed", UNSAFE_NAME
    try:
        data = photo.read_bytes()
    except OSError as exc:
        return "failed", f"cannot read the file: {exc.strerror or exc}"
    sha = sha256_of(data)
    side = sidecar_path(photo, naming)
    with tools.use() as tool:
        return _tag_one(photo, root, data, sha, side, tool, client=client, version=version, parent=parent,
                        dry_run=dry_run, policy=policy)


def _tag_one(photo, root, data, sha, side, tool, *, client, version, parent, dry_run, policy):
    try:
        current = read_sidecar(tool, side)
    except XmpError as exc:  # never overwrite a sidecar that cannot be read: it may hold the user's work
        return "failed", f"existing sidecar {side.name} is unreadable, left as it is: {exc}"
    recorded = current.get(TAG_POLICY) or "balanced"  # a sidecar written before tag policies: F1-best tags
    if current and current.get(SOURCE_SHA256) == sha and current.get(MODEL_VERSION) == version and recorded == policy:
        return "skipped", None
    if dry_run:
        return "planned", None
    try:
        info = client.tag(data, id_name(root, photo), photo.name, policy)
    except PhotoRefused as exc:
        return "failed", f"the gateway refused it: {exc}"
    tags = list(info["predict_tags"])
    try:
        write_sidecar(tool, side, sidecar_changes(current, tags, parent, version=str(info["model_version"]),
                                                  sha256=sha, policy=info.get("tag_policy"),
                                                  scores=info.get("scores", {})))
    except (XmpError, OSError) as exc:
        return "failed", f"cannot write {side.name}: {exc}"
    return "tagged", tags


def tag_folder(root: Path, *, gateway: str, naming: str = "ext", parent: str = "Tagger", concurrency: int = 4,
               dry_run: bool = False, progress: bool = True, policy: str | None = None) -> Summary:
    """Tag every photo under ``root`` (see the module docstring).

    Raises:
        photo_library.gateway_client.GatewayDown: the gateway cannot be reached (checked first, and on any call).
        photo_library.xmp.XmpError: ExifTool is missing.
    """
    client = GatewayClient(gateway)
    version, served_policy = client.served()
    policy = policy or served_policy
    photos = photos_in(root)
    summary = Summary(dry_run=dry_run)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(photos), unit="photo", desc="tagging" if not dry_run else "checking")
    with ExifTools(max(1, concurrency)) as tools:  # ExifTool missing: said before any photo
        with cf.ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            futures = {pool.submit(tag_one, p, root, client=client, tools=tools, version=version, naming=naming,
                                   parent=parent, dry_run=dry_run, policy=policy): p for p in photos}
            try:
                for future in cf.as_completed(futures):
                    photo = futures[future]
                    status, value = future.result()  # GatewayDown propagates: the run stops
                    if status == "tagged":
                        summary.tagged.append((photo, value))
                    elif status == "skipped":
                        summary.skipped.append(photo)
                    elif status == "planned":
                        summary.planned.append(photo)
                    else:
                        summary.failed.append((photo, value))
                        if bar is not None:
                            bar.write(f"failed: {photo}: {value}")
                    if bar is not None:
                        bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                if bar is not None:
                    bar.close()
    return summary
