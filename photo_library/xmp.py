"""XMP sidecars and embedded keywords through ExifTool (PyExifTool keeps ExifTool processes running).

    with ExifTools() as tools, tools.use() as tool:
        current = read_sidecar(tool, path)                             # {} when there is none
        write_sidecar(tool, path, sidecar_changes(current, ["sea", "boat"], "Tagger", version="1.0", sha256=h))

A sidecar keeps everything it held: only the tagger's own entries change. Those are the ``Tagger|...``
``lr:hierarchicalSubject`` and ``Tagger/...`` ``digiKam:TagsList`` entries (the parent name is a setting), and
the ``dc:subject`` keywords the tagger added, which it records, with the model version and the photo's SHA-256,
in its own namespace (``XMP-phototagger``, defined in ``exiftool.config``). A keyword the user had already is
never recorded as the tagger's, so it is never removed.

Only the tagger's own entries are ever sent to ExifTool (``-TAG-=old``, ``-TAG+=new``): a user's keyword is never
re-sent, so it stays byte for byte, and no argument may hold a line break (PyExifTool's stay-open protocol sends
one argument a line and escapes nothing, so a keyword or file name holding ``\\n-if\\n<perl>`` would run code).
Writes go to a temporary copy beside the sidecar, which is fsynced and renamed over it: a crash leaves the old
sidecar or the new one, never half of one.

ExifTool, not hand-written XML: it reads and writes every sidecar and photo format digiKam, darktable and
Lightroom do, with their namespaces, and reads IPTC keywords too.
"""
from __future__ import annotations

import os
import queue
import shutil
import uuid
from contextlib import contextmanager
from glob import escape as glob_escape
from pathlib import Path

CONFIG = Path(__file__).with_name("exiftool.config")
SUBJECT, HIERARCHICAL, TAGS_LIST = "XMP-dc:Subject", "XMP-lr:HierarchicalSubject", "XMP-digiKam:TagsList"
MODEL_VERSION, SOURCE_SHA256, TAGGER_SUBJECTS = ("XMP-phototagger:ModelVersion", "XMP-phototagger:SourceSHA256",
                                                 "XMP-phototagger:Subjects")
TAG_POLICY, TAG_SCORES = "XMP-phototagger:TagPolicy", "XMP-phototagger:TagScores"
SIDECAR_TAGS = (SUBJECT, HIERARCHICAL, TAGS_LIST, MODEL_VERSION, SOURCE_SHA256, TAGGER_SUBJECTS, TAG_POLICY, TAG_SCORES)
LIST_TAGS = (SUBJECT, HIERARCHICAL, TAGS_LIST, TAGGER_SUBJECTS, TAG_SCORES, "IPTC:Keywords")


class XmpError(RuntimeError):
    """ExifTool is missing, or could not read or write a file; the message says which and why."""


class ExifTools:
    """A pool of ``size`` ExifTool processes, started here, in the calling thread: PyExifTool asks Linux to stop
    a process when the thread that started it ends, so processes started in worker threads would die with them.

        with ExifTools(4) as tools, tools.use() as tool:
            read_sidecar(tool, path)
    """

    def __init__(self, size: int = 1):
        import exiftool

        self._free, self._all = queue.Queue(), []
        try:
            for _ in range(max(1, size)):
                tool = exiftool.ExifToolHelper(common_args=["-G1", "-charset", "filename=utf8"],
                                               config_file=str(CONFIG))
                tool.run()
                self._all.append(tool)
                self._free.put(tool)
        except (FileNotFoundError, exiftool.exceptions.ExifToolException) as exc:
            self.close()
            raise XmpError(f"ExifTool is not available ({exc}): install it with `make install-exiftool` "
                           "(Debian: apt-get install libimage-exiftool-perl)") from None

    @contextmanager
    def use(self):
        tool = self._free.get()
        try:
            yield tool
        finally:
            self._free.put(tool)

    def close(self) -> None:
        for tool in self._all:
            tool.terminate()
        self._all.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def read_tags(tool, path: Path, tags) -> dict:
    """``{tag: value}`` for ``tags`` of ``path`` (list tags as lists of strings, always).

    Raises:
        XmpError: ExifTool cannot read the file.
    """
    import exiftool

    check_args([str(path)])
    try:
        found = tool.get_tags([str(path)], list(tags))[0]
    except (exiftool.exceptions.ExifToolException, IndexError) as exc:
        raise XmpError(f"ExifTool cannot read {path}: {str(exc).strip()[:200]}") from None
    out = {}
    for tag in tags:
        value = found.get(tag)
        out[tag] = _as_list(value) if tag in LIST_TAGS else (None if value is None else str(value))
    return out


def read_sidecar(tool, path: Path) -> dict:
    """The sidecar's keyword fields and the tagger's record; ``{}`` when the file does not exist."""
    return read_tags(tool, path, SIDECAR_TAGS) if path.exists() else {}


def scored(tags: list[str], scores: dict[str, float]) -> list[str]:
    """Each tag with its score as the sidecar records it: ``"0.9312 dog"`` (score first: a tag may hold spaces)."""
    return [f"{float(scores[t]):.4f} {t}" for t in tags if t in scores]


def merge_tags(current: dict, tags: list[str], parent: str, *, version: str, sha256: str,
               policy: str | None = None, scores: dict[str, float] | None = None) -> dict:
    """The sidecar's fields once the tagger's old entries are replaced by ``tags`` (see module doc): what
    ``sidecar_changes`` makes ExifTool write, as the whole fields it leaves behind."""
    ours_before = set(current.get(TAGGER_SUBJECTS) or [])
    user_subject = [s for s in current.get(SUBJECT) or [] if s not in ours_before]
    added = [t for t in tags if t not in user_subject]
    def keep(values, sep):
        return [v for v in values or [] if v != parent and not v.startswith(parent + sep)]
    return {SUBJECT: user_subject + added,
            HIERARCHICAL: keep(current.get(HIERARCHICAL), "|") + [f"{parent}|{t}" for t in tags],
            TAGS_LIST: keep(current.get(TAGS_LIST), "/") + [f"{parent}/{t}" for t in tags],
            TAGGER_SUBJECTS: added, MODEL_VERSION: version, SOURCE_SHA256: sha256, TAG_POLICY: policy,
            TAG_SCORES: scored(tags, scores or {})}


def unsafe(value: str) -> bool:
    """Whether ``value`` may not reach ExifTool: PyExifTool's stay-open protocol sends one argument a line, and
    escapes nothing, so a line break in a keyword or a file name would be read as further arguments (``-if`` runs
    Perl)."""
    return any(c in value for c in "\n\r\0")


UNSAFE_NAME = ("its path holds a line break, which ExifTool's protocol would read as further arguments: skipped, "
               "nothing written (rename the file or folder)")


def sidecar_changes(current: dict, tags: list[str], parent: str, *, version: str, sha256: str,
                    policy: str | None = None, scores: dict[str, float] | None = None) -> list[str]:
    """ExifTool's arguments that turn ``current`` into ``merge_tags``'s fields by touching the tagger's own entries
    only: each list item the tagger no longer gives is removed (``-TAG-=item``), each new one added
    (``-TAG+=item``); the user's entries are never sent, so they stay byte for byte whatever they hold. An old
    entry of the tagger's that holds a line break (a hostile sidecar) is left where it is: it cannot be named
    safely.

    Raises:
        XmpError: a new value (a tag name, the parent keyword) holds a line break.
    """
    new = merge_tags(current, tags, parent, version=version, sha256=sha256, policy=policy, scores=scores)
    args = []
    for tag in (SUBJECT, HIERARCHICAL, TAGS_LIST):
        before, after = current.get(tag) or [], new[tag]
        args += [f"-{tag}-={v}" for v in dict.fromkeys(before) if v not in after and not unsafe(v)]
        args += [f"-{tag}+={v}" for v in dict.fromkeys(after) if v not in before]
    # the tagger's own record, rewritten whole (assignments to a list tag in one command make the whole list)
    for tag in (TAGGER_SUBJECTS, TAG_SCORES):
        args += [f"-{tag}={v}" for v in new[tag]] or [f"-{tag}="]
    args += [f"-{MODEL_VERSION}={version}", f"-{SOURCE_SHA256}={sha256}", f"-{TAG_POLICY}={policy or ''}"]
    bad = [a for a in args if unsafe(a)]
    if bad:
        raise XmpError(f"refusing to send ExifTool a value with a line break: {bad[0][:80]!r}")
    return args


def write_sidecar(tool, path: Path, args: list[str]) -> None:
    """Apply ``args`` (``sidecar_changes``) to the sidecar ``path`` (created when missing), atomically; every other
    field stays. Temporary copies a killed run left beside it are removed first.

    Raises:
        XmpError: ExifTool failed, or an argument or the path holds a line break (nothing is sent then).
    """
    import exiftool

    for stale in path.parent.glob(f".{glob_escape(path.name)}.*.tmp.xmp"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.xmp")
    check_args([*args, str(tmp)])
    try:
        if path.exists():
            shutil.copyfile(path, tmp)
        try:
            tool.execute(*args, "-overwrite_original", str(tmp))
        except exiftool.exceptions.ExifToolException as exc:
            raise XmpError(f"ExifTool cannot write {path}: {str(exc).strip()[:200]}") from None
        if not tmp.exists():
            raise XmpError(f"ExifTool wrote no sidecar for {path}")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        tmp.unlink(missing_ok=True)


def check_args(args) -> None:
    """Raise ``XmpError`` unless every argument can go to ExifTool as one line (see ``unsafe``)."""
    bad = [a for a in args if unsafe(str(a))]
    if bad:
        raise XmpError(f"refusing to give ExifTool an argument with a line break: {str(bad[0])[:80]!r}")
