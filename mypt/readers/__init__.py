"""Input formats: one reader class per format, registered by file suffix.

A reader turns a block of an input file (a byte range; for parquet, row groups) into texts:
pieces of the file's single document (`one_document = True`, e.g. .txt) or whole documents
(e.g. one per JSONL line or parquet row). A damaged file is an InputError naming it
(`Reader.checked_blocks`, `Reader.checked_texts`).
Compression is a layer under any format that allows it (`X.gz`, `X.zst` are read as X
through gzip, zstandard); a compressed file cannot be seeked, so it is one block of work.
Parquet is compressed inside and needs seeking: its blocks are row groups.

To add a format: a new module here with a `mypt.readers.base.Reader` subclass decorated
`@register`, and its import in the registration line at the bottom of this file; the names of
the counts it adds to the clean stats in its `counters` (counter_names).
"""

from __future__ import annotations

import bisect
import errno
import glob
import os
import stat
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet as Set, Iterable, Iterator, Sequence

from mypt.errors import InputError, listed
from mypt.io import file_kind
from mypt.readers.arrow import DICT, STATE, SavedDatasetReader, is_saved_dataset, refuse_dataset_dict
from mypt.readers.base import COMPRESSIONS, READERS, Reader, lookup_error, why_unreadable
from mypt.source_hash import SOURCE_HASH, SOURCE_HASHES, recorded_hash
from mypt.text import WALK_SKIPS, DecodeCounter, display_name, recorded_as, source_place, text_name, wide_text_hint


def suffixes(walked: bool = False) -> list[str]:
    """Every input suffix mypt reads, compressed forms included (`walked`: only those a
    directory given as an input is searched for)."""
    return [s + c for s, cls in READERS.items() if cls.walked or not walked
            for c in ["", *(COMPRESSIONS if cls.compressible else ())]]


def formats_help() -> str:
    """The input formats for a help text, from the registry (so a new format is listed)."""
    forms = [f"{s} = {c.description}" if c.description else s for s, c in READERS.items()]
    packed = [s for s, c in READERS.items() if c.compressible]
    return (f"{', '.join(forms)}, {' or '.join(COMPRESSIONS)} of {' and '.join(packed)}; a directory saved by "
            f"datasets' Dataset.save_to_disk = {SavedDatasetReader.description}")


def counter_names() -> tuple[str, ...]:
    """The names of the counts reading the inputs adds to the clean step's stats: every reader's
    (`Reader.counters`, a saved dataset's too) and what directory walks skipped (WalkSkipped.counts)."""
    readers = [*READERS.values(), SavedDatasetReader]
    return tuple(dict.fromkeys([*(name for cls in readers for name in cls.counters),
                                *(kind.stat for kind in WALK_SKIPS.values())]))


def reader_for(path: Path, *, text_key: str = "text", strict: bool = False,
               any_case: bool = False) -> Reader | None:
    """The reader of `path` by its suffix (None: not a format mypt reads). `text_key` names
    the field of a document's text (JSONL, parquet); `strict` makes a bad record an error;
    `any_case` matches the suffix in any case (`LEAR.TXT`: the corpus inputs; `mypt train
    --input_file` reads any name but lower-case .gz/.jsonl/... as plain text, as it always did)."""
    if is_saved_dataset(path):
        return SavedDatasetReader(path, text_key=text_key, strict=strict)
    name = Path(path).name.lower() if any_case else Path(path).name
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), None)
    inner = name[:-len(compression)] if compression else name
    cls = next((READERS[s] for s in READERS if inner.endswith(s)), None)
    if cls is None or (compression and not cls.compressible):
        return None
    return cls(path, compression, text_key=text_key, strict=strict)


@dataclass
class _Passed:
    """Files of one kind a walk passed over: how many, and the first few names in sorted order
    (a corpus directory may hold millions: their names are not kept)."""

    count: int = 0
    first: list[str] = field(default_factory=list)

    def add(self, path: Path, keep: int = 3) -> None:
        self.count += 1
        name = display_name(path)
        if len(self.first) < keep or name < self.first[-1]:
            bisect.insort(self.first, name)
            del self.first[keep:]


@dataclass
class WalkSkipped:
    """The files directory walks passed over that the user may have meant (the clean step's
    summary names a few): where a walk could surprise. Each file is seen by one walk:
    resolve_inputs walks a directory named twice once, and a named directory inside another
    is left to its own walk."""

    # Of a walked suffix but hidden (a dot file, or in a dot folder): `.ipynb_checkpoints`' stale
    # copies, which sorted first would win dedup over the real file; `.git/description.txt`.
    hidden: _Passed = field(default_factory=_Passed)
    other: _Passed = field(default_factory=_Passed)  # of suffixes the walk does not read (notes.md, a.jsonl)
    # Of a walked suffix but no regular file (a FIFO, a socket, a device), and what could not be read (a
    # folder that cannot be listed, a broken link, a file that may not be read): a corpus smaller than its folder.
    not_regular: _Passed = field(default_factory=_Passed)
    unreadable: _Passed = field(default_factory=_Passed)

    def __bool__(self) -> bool:  # anything passed over
        return any(passed.count for passed in self._kinds().values())

    def _kinds(self) -> dict[str, _Passed]:
        return {"hidden": self.hidden, "other_suffixes": self.other, "not_regular": self.not_regular,
                "unreadable": self.unreadable}

    def _recorded(self) -> dict[str, _Passed]:
        # The first two always (as mypt recorded them before the others were), the others only when met:
        # the metadata of a walk that skipped neither is unchanged.
        return {kind: passed for kind, passed in self._kinds().items()
                if passed.count or kind in ("hidden", "other_suffixes")}

    def names(self) -> dict[str, list[str]]:
        """The first names of each kind, as the metadata records them (`walk_skipped_files`)."""
        return {kind: passed.first for kind, passed in self._recorded().items()}

    def counts(self) -> dict[str, int]:
        """How many of each kind, as the clean stats count them (keys: mypt.text.WALK_SKIPS)."""
        return {WALK_SKIPS[kind].stat: passed.count for kind, passed in self._recorded().items()}


def _identity(path: Path) -> tuple[int, int]:
    return _key(os.stat(path))


def _key(st: os.stat_result) -> tuple[int, int]:
    """A file's identity (two spellings of a path, or a link and its target, are one input)."""
    return st.st_dev, st.st_ino


def resolve_inputs(patterns: Sequence[str], walk_skipped: WalkSkipped | None = None,
                   notices: list[str] | None = None) -> list[Path]:
    """Expand files, directories (searched recursively for text files and saved datasets; what
    the walk passes over is noted in `walk_skipped`) and globs (a path that exists is never a
    glob: named_paths). A file named (not walked) is read whatever its name: `.notes.txt`.

    Returns the sorted, de-duplicated list of inputs (a file named twice, by overlapping globs,
    by another spelling of its path or through a link, is read once): files, and directories saved by
    Dataset.save_to_disk (each one input, mypt.readers.arrow); the sort order is the corpus
    order (by absolute path). A FIFO, socket or device a walk finds is skipped (never opened: a
    FIFO would block), one named is an InputError. What a walk finds but cannot read (a folder it
    cannot list, a broken link, a file it may not read, one removed meanwhile) is skipped too; one
    named is an InputError. What walks skip is counted in `walk_skipped`. `notices` receives a
    line for what was given more than once and one for each kind of skip (text_sources prints them).
    """
    if not patterns:
        raise InputError("no input given: pass --input_files FILE_OR_DIR_OR_GLOB (several allowed)")
    if "" in patterns:
        raise InputError("--input_files: an empty path was given")
    named = [path for pattern in patterns for path in named_paths(pattern)]
    found: dict[tuple[int, int], Path] = {}  # by file identity: `a.txt`, `/abs/a.txt` and a link to it are one input
    # Each directory is walked once, however often and under whatever spelling it was named;
    # one named inside another is walked as named (its hidden files are then inputs), and a file
    # named inside a walked one is that file, not one the walk passed over.
    twice: dict[tuple[int, int], list[Path]] = {}  # the spellings of what was met more than once (files, folders)
    not_regular: list[tuple[Path, int]] = []  # (path, st_mode) of what walks skipped as no regular file
    unreadable: list[tuple[Path, OSError, bool]] = []  # what walks skipped as unreadable, why, and if a folder
    try:  # (an OSError here: a file removed since it was listed, a path too long for the system)
        stats = [os.stat(path) for path in named]  # (each input's one stat: its kind and its identity)
        ids = [_key(st) for st in stats]
        firsts = dict(zip(reversed(ids), reversed(named)))
        for path, key, st in zip(named, ids, stats):
            if not stat.S_ISDIR(st.st_mode):
                _refuse_not_regular(path, st.st_mode)  # (a FIFO or a device: refused)
                _add(found, twice, key, path)
                continue
            if firsts[key] is not path:
                twice.setdefault(key, [firsts[key]]).append(path)
                continue  # named again: walked at its first naming
            for p, walked_key in _walk(path, walk_skipped, elsewhere=firsts.keys() - {key}, not_regular=not_regular,
                                       unreadable=unreadable):
                _add(found, twice, walked_key, p)
    except OSError as e:
        raise lookup_error(e) from None
    if walk_skipped is not None:  # (counted in the clean stats: the corpus is smaller than its folders)
        for p, _ in not_regular:
            walk_skipped.not_regular.add(p)
        for p, _, _ in unreadable:
            walk_skipped.unreadable.add(p)
    if notices is not None:
        notices += _notices(twice, {**firsts, **found}, not_regular, unreadable)
    # By absolute path: the order (which copy dedup keeps) must not depend on how a path was
    # spelled (`/data/b.txt` sorts before `a.txt` as typed).
    return sorted(found.values(), key=os.path.abspath)


def _add(found: dict[tuple[int, int], Path], twice: dict[tuple[int, int], list[Path]], key: tuple[int, int],
         path: Path) -> None:
    """Add the input `path` (of identity `key`) to `found`, once; a spelling met again goes to `twice`."""
    if key in found:
        twice.setdefault(key, [found[key]]).append(path)
    # The same spelling whatever the order of the patterns and of glob's listing.
    found[key] = min(found.get(key, path), path, key=str)


def _notices(twice: dict[tuple[int, int], list[Path]], kept: dict[tuple[int, int], Path],
             not_regular: list[tuple[Path, int]], unreadable: list[tuple[Path, OSError, bool]], most: int = 3
             ) -> list[str]:
    """The lines that say what was given more than once (read once, as `kept` spells it), what
    walks skipped as no regular file, and what they could not read: the first `most` of each, and a
    count of the rest."""
    lines = []
    if twice:
        said = [_spellings(kept[key], twice[key]) for key in sorted(twice, key=lambda k: os.path.abspath(kept[k]))]
        lines.append(f"warning: --input_files: {_count(len(said), 'input')} given more than once, each read once: "
                     + listed(said, most, "; "))
    if not_regular:
        said = [f"{text_name(str(p))}, {file_kind(mode)}" for p, mode in sorted(not_regular)]
        lines.append(f"warning: --input_files: skipped {_count(len(said), 'file')} found by a directory walk that "
                     "mypt does not read, as it reads only regular files (save a stream to a file to read it): "
                     + listed(said, most, "; "))
    if unreadable:  # (a corpus silently smaller: the files of a folder that cannot be listed)
        said = [f"{text_name(str(p))}{' (a folder, with the files in it)' if folder else ''} "
                f"{why_unreadable(p, e, walked=True)}" for p, e, folder in sorted(unreadable, key=lambda u: u[0])]
        lines.append(f"warning: --input_files: skipped {_count(len(said), 'path')} found by a directory walk that "
                     "mypt cannot read: " + listed(said, most, "; "))
    return lines


def _spellings(kept: Path, met: list[Path]) -> str:
    """`kept` and how else it was given: `a.txt (also as link.txt)`, `a.txt (named twice)`."""
    name = text_name(str(kept))
    others = sorted({text_name(str(p)) for p in met} - {name})
    if others:
        return f"{name} (also as {', '.join(others)})"
    return f"{name} (named {'twice' if len(met) == 2 else f'{len(met)} times'})"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("s" if n != 1 else "")


def named_paths(pattern: str) -> list[Path]:
    """What one --input_files value names: the path itself when it exists (a file may be named
    `data[1].txt` or `what?.txt`), else the matches of it as a glob; none is an InputError."""
    if os.path.lexists(pattern) or not glob.has_magic(pattern):
        try:
            os.stat(pattern)
        except OSError as e:  # (not all "does not exist": a permission denied, a link that loops, a name too long)
            raise lookup_error(e) from None
        except ValueError:  # (a NUL in it)
            raise InputError(f"--input_files: {pattern!r} does not exist") from None
        return [Path(pattern)]
    matches = [Path(p) for p in glob.glob(_literal_head(pattern), recursive=True)]
    if not matches:
        raise InputError(f"--input_files: the glob {pattern!r} matches nothing")
    return matches


def _literal_head(pattern: str) -> str:
    """`pattern` with its longest leading folder that exists as named escaped: in `dir[1]/*.txt`
    the folder `dir[1]` is that folder, not a glob of `dir1` (as a whole path that exists is)."""
    parts = pattern.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        head = os.sep.join(parts[:i])
        if glob.has_magic(head) and os.path.isdir(head):
            return glob.escape(head) + os.sep + os.sep.join(parts[i:])
    return pattern


def _walk(directory: Path, skipped: WalkSkipped | None = None,
          elsewhere: Set[tuple[int, int]] = frozenset(), not_regular: list[tuple[Path, int]] | None = None,
          unreadable: list[tuple[Path, OSError, bool]] | None = None) -> list[tuple[Path, tuple[int, int]]]:
    """The inputs of a directory, each with its identity (_key): itself when it is a saved dataset,
    else the files of the walked suffixes, in any case (`LEAR.TXT`), and the saved datasets under
    it (their files are theirs, not walked). Hidden files and folders (`.git`, `.ipynb_checkpoints`)
    are not inputs: what is passed over goes to `skipped` (WalkSkipped). What is named `elsewhere`
    (by identity: in --input_files) is not walked here: a folder has its own walk, a file is an
    input. A FIFO, socket or device of a walked suffix is no input either, found by its stat (each
    file's one stat, which gives its identity too), never opened (a FIFO would block): (path,
    st_mode) goes to `not_regular`. What cannot be read (a folder
    that cannot be listed, a file whose stat fails: a broken link; a file it may not read) is no input:
    (path, error, whether a folder) goes to `unreadable`, except under a hidden folder (never read
    anyway). `directory` itself unreadable, or a path too long for the system, is an OSError."""
    with os.scandir(directory):  # (one it cannot list: said of it, before the looks for a saved dataset's files)
        pass
    refuse_dataset_dict(directory)
    if is_saved_dataset(directory):
        return [(directory, _identity(directory))]
    walked = tuple(suffixes(walked=True))
    skipped = skipped if skipped is not None else WalkSkipped()
    saved, files, first_hidden, pruned = [], [], None, False
    # One pass: a corpus directory may hold millions of files. Hidden folders are walked only to
    # count their text files. Links to folders are followed (a corpus spread over disks: they
    # were passed over unsaid), each folder once: a link back up, or to one walked already, is
    # not walked again (files reached twice are one input by identity: resolve_inputs).
    walked_dirs, unlisted = set(), []
    for root, dirs, names in walk_tree(directory, unlisted):
        here = Path(root)
        walked_dirs.add(_identity(here))
        dirs[:] = [d for d in dirs if not (here / d).is_symlink() or _identity(here / d) not in walked_dirs]
        hidden = _hidden_in(here, directory)
        if not hidden and DICT in names:
            refuse_dataset_dict(here)
        if not hidden and STATE in names and is_saved_dataset(here):
            saved.append(here)
            dirs.clear()  # its files are the dataset's
            continue
        if elsewhere:
            kept = [d for d in dirs if _identity(here / d) not in elsewhere]
            pruned, dirs[:] = pruned or len(kept) < len(dirs), kept
        for name in names:
            text, dot = name.lower().endswith(walked), hidden or name.startswith(".")
            if text and not dot:
                files.append(here / name)
            elif dot and not text:  # (.git/HEAD: nothing anyone meant as text)
                continue
            elif elsewhere and _identity_or_none(here / name) in elsewhere:
                continue  # named: read (or refused) as named, not passed over (a broken link: named nowhere)
            elif dot:
                skipped.hidden.add(here / name)
                first_hidden = first_hidden or here / name  # for the message below
            else:
                skipped.other.add(here / name)
    cannot = [(p, e, True) for p, e in unlisted if not _hidden_in(p, directory)]
    inside, special = [], []  # (path, identity) of regular files; (path, st_mode) of the others
    for p in files:
        try:
            st = os.stat(p)  # (the file's one stat: its kind, then its identity as an input)
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:  # (an error: the user can fix it, and a walk deep down would skip it all)
                raise
            cannot.append((p, e, False))
            continue
        if not stat.S_ISREG(st.st_mode):
            special.append((p, st.st_mode))
        elif os.access(p, os.R_OK):  # (one that may not be opened is skipped as a folder that may not be listed is)
            inside.append((p, _key(st)))
        else:  # (may not be read, or removed since its stat)
            code = errno.EACCES if os.path.lexists(p) else errno.ENOENT
            cannot.append((p, OSError(code, os.strerror(code), os.fspath(p)), False))
    if not_regular is not None:
        not_regular += special
    if unreadable is not None:
        unreadable += cannot
    if not inside and not saved and not pruned:  # (a pruned folder's own walk says it, if need be)
        raise InputError(f"--input_files: the directory {str(directory)!r} holds no text files (looked for "
                         f"{', '.join(walked)} and directories saved by Dataset.save_to_disk)"
                         + (f"; hidden files are not walked ({display_name(first_hidden)}): name them "
                            "in --input_files to read them" if first_hidden else "")
                         + (f"; {display_name(special[0][0])} is {file_kind(special[0][1])}, and mypt reads only "
                            "regular files" if special else "")
                         + (f"; {display_name(cannot[0][0])} {why_unreadable(*cannot[0][:2], walked=True)}"
                            if cannot else ""))
    return inside + [(p, _identity(p)) for p in sorted(saved)]


def _identity_or_none(path: Path) -> tuple[int, int] | None:
    """The identity of `path`; None where its stat fails (a broken link)."""
    try:
        return _identity(path)
    except OSError:
        return None


def _hidden_in(path: Path, directory: Path) -> bool:
    """Whether `path`, under `directory`, is a dot folder or in one (relative to `directory`)."""
    return any(part.startswith(".") for part in path.relative_to(directory).parts)


def walk_tree(top: Path, unlisted: list[tuple[Path, OSError]] | None = None
              ) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk(top, followlinks=True): (folder, its folders, its other names) top-down, in
    os.walk's order, a folder's list of folders pruned by the caller before it goes on; a
    folder under `top` that cannot be listed (permission denied, removed meanwhile) is passed
    over, (path, error) going to `unlisted` for the caller to say (its files would go missing
    unsaid); `top` itself, a path too long for the system, or any without `unlisted`, raises.
    Without recursion: os.walk recursed once per level before Python 3.12 (1,000 nested folders
    raised a RecursionError on 3.11, which CI runs); once requires-python is >= 3.12, os.walk
    (with an onerror) can take this one's place."""
    stack = [os.fspath(top)]
    while stack:
        here = stack.pop()
        dirs, names = [], []
        try:
            with os.scandir(here) as entries:
                for entry in entries:
                    try:
                        is_dir = entry.is_dir()
                    except OSError:  # (as os.path.isdir: not a folder)
                        is_dir = False
                    (dirs if is_dir else names).append(entry.name)
        except OSError as e:
            if unlisted is None or here == os.fspath(top) or e.errno == errno.ENAMETOOLONG:
                raise
            unlisted.append((Path(here), e))
            continue
        yield here, dirs, names
        stack.extend(os.path.join(here, d) for d in reversed(dirs))  # (the first folder is walked next)


def input_bytes(path: Path) -> int:
    """The size an input's source records (metadata `sources[].bytes`): a file's size, or the
    files of a saved dataset together."""
    return _stored(path).current_stamp().size


def input_hash(path: Path, key: str = SOURCE_HASH) -> str:
    """The hash `key` (mypt.source_hash.SOURCE_HASHES) of an input, as a source records it: the
    pieces' (Reader.content_sha256), or an older mypt's plain sha256 (Reader.plain_sha256)."""
    reader = _stored(path)
    reader.stamp = reader.current_stamp()  # the bytes hashed are checked unchanged after
    return reader.content_sha256() if key == SOURCE_HASH else reader.plain_sha256()


class KnownSources:
    """Which source of a dataset (its metadata's `sources`) an input is: the one of its size and
    recorded hash, whatever the names or the working directory of either run (the input is hashed
    only where a source of its size records one); a source an older mypt recorded without a hash
    by its name, relative to the working directory of its run (not recorded: one of `bases`), and size."""

    def __init__(self, sources: list[dict], bases: Iterable[Path]):
        self._by_hash: dict[tuple[int, str, str], list[int]] = {}
        self._by_place: dict[tuple[str, int], list[int]] = {}
        self._hashed: set[tuple[int, str]] = set()  # (size, key): where an input of that size is hashed
        bases = list(bases)
        for i, s in enumerate(sources):
            recorded = recorded_hash(s)
            if recorded is not None:
                self._by_hash.setdefault((s["bytes"], *recorded), []).append(i)
                self._hashed.add((s["bytes"], recorded[0]))
            else:
                for place in recorded_as(s["name"], bases):
                    self._by_place.setdefault((place, s["bytes"]), []).append(i)

    def find(self, path: Path, taken: Set[int] = frozenset()) -> tuple[int, str] | None:
        """(index, how it matched) of the first source not in `taken` that `path` is, else None."""
        size = input_bytes(path)
        for key in SOURCE_HASHES:
            if (size, key) in self._hashed:
                found = [i for i in self._by_hash.get((size, key, input_hash(path, key)), ()) if i not in taken]
                if found:
                    return found[0], "the same bytes"
        found = [i for i in self._by_place.get((source_place(path), size), ()) if i not in taken]
        return (found[0], "same name and size") if found else None


def _stored(path: Path) -> Reader:
    """A reader of the input's files as stored: a saved dataset's, else the file's."""
    return SavedDatasetReader(path) if is_saved_dataset(path) else Reader(path)


def regular_file(path: Path, flag: str = "--input_files") -> Path:
    """`path` when it is a regular file (links followed), else an InputError naming it and
    `flag`. A
    FIFO, /dev/stdin or a device is refused, not read: mypt reads an input more than once (a
    sniff for binary data, then blocks in parallel, then a check that it did not change), and
    /dev/zero would never end."""
    _refuse_not_regular(path, _mode(path, flag), flag)
    return path


def _refuse_not_regular(path: Path, mode: int, flag: str = "--input_files") -> None:
    """regular_file's check, on the st_mode of `path` (as its stat gave it)."""
    if not stat.S_ISREG(mode):
        raise InputError(f"{flag}: {str(path)!r} is {file_kind(mode)}: mypt reads only regular files (it reads "
                         "each input more than once); save the stream to a file and pass that file")


def _mode(path: Path, flag: str = "--input_files") -> int:
    """The st_mode of `path` (links followed), or an InputError naming it and `flag`."""
    try:
        return path.stat().st_mode
    except OSError as e:  # a dangling link, a permission denied on the way, a path too long
        raise lookup_error(e, flag) from None


def text_sources(patterns: Sequence[str], *, text_key: str = "text", strict: bool = False,
                 walk_skipped: WalkSkipped | None = None, cr_ends_lines: bool = False,
                 filter_chars: int | None = None) -> tuple[list[Reader], dict[Path, str | None]]:
    """The readers of the inputs and the files skipped: the one input rule of prepare-dataset
    (its clean step) and train-tokenizer.

    Patterns resolve as `resolve_inputs` says (what walks pass over goes to `walk_skipped`);
    a binary file, or UTF-16/32 text, is skipped (returned second, each with its fix: the
    iconv line of UTF-16/32 text, None for a binary file);
    a format mypt does not read, or inputs that are all binary, is an InputError. Each reader
    carries its file's size and mtime as resolved (`Reader.stamp`), so a file that changes
    while it is read is an error naming it (`Reader.check_unchanged`). `cr_ends_lines` and
    `filter_chars`: how a one-document reader reads its lines (Reader: a lone \r ends one when
    normalizing; a line too long to hold that the line filter would drop is dropped); a JSONL
    line is a document, which the filter does not drop whole."""
    readers, skipped, notices = [], {}, []
    paths = resolve_inputs(patterns, walk_skipped, notices)
    for line in notices:  # (said before the inputs are read: a run may take hours)
        print(line, file=sys.stderr)
    for path in paths:
        reader = reader_for(path, text_key=text_key, strict=strict, any_case=True)
        stamp = reader.current_stamp() if reader is not None else None  # before the first read
        why = (reader or Reader(path)).sniff()
        if why is not None:
            skipped[path] = wide_text_hint(display_name(path), why) if why != "binary" else None
            continue
        if reader is None:
            raise InputError(f"--input_files: {display_name(path)} is not a format mypt reads "
                             f"(suffixes: {', '.join(suffixes())}): if it is plain text, rename it to .txt; "
                             "a pattern that matched it (corpus/*) can be narrowed (corpus/*.txt), or "
                             "name the folder, whose walk skips what mypt does not read")
        reader.stamp = stamp
        if reader.one_document:
            reader.cr_ends_lines, reader.filter_chars = cr_ends_lines, filter_chars
        readers.append(reader)
    if not readers:
        hints = [fix for fix in skipped.values() if fix]
        raise InputError("--input_files: no text to read; binary files skipped: "
                         + ", ".join(map(display_name, skipped)) + "".join(f"; {h}" for h in hints[:3]))
    return readers, skipped


@dataclass
class TextSeen:
    """Whether any text `read_texts` gave was more than blank: inputs of blank lines alone are
    no corpus (no_text_error), told apart from a corpus the filter emptied."""

    any: bool = False


def read_texts(reader: Reader, blocks: Iterable[tuple[int, int]], decoder: DecodeCounter, stats: Counter,
               seen: TextSeen) -> Iterator[str]:
    """The texts of `blocks` of `reader` (checked: Reader.checked_texts), noting in `seen`
    whether one is not blank: the corpus text loop of the clean step (a block a task) and
    train-tokenizer (every block of every input)."""
    for start, end in blocks:
        for text in reader.checked_texts(start, end, decoder, stats):
            seen.any = seen.any or (text != "" and not text.isspace())
            yield text


def named(readers: Sequence[Reader], most: int = 5) -> str:
    """The inputs' names for a message, the first `most` of them and a count of the rest."""
    return listed([display_name(r.path) for r in readers], most)


def no_text_error(readers: Sequence[Reader]) -> InputError:
    """The inputs gave no text at all: empty files (an empty .gz or .zst too), blank lines
    only, or JSONL/parquet documents with empty text. Nothing was filtered, so the message
    does not suggest --no_filter."""
    return InputError(f"--input_files: no text in {named(readers)} (empty, or only blank lines or empty "
                      "documents): check --input_files")


def looks_binary(path: Path) -> bool:
    """A binary file where text was expected (a NUL byte in the first 8 KiB of a text
    format, after decompression): skipped and counted. A compressed file that does not
    decompress is an InputError naming it, not a skip."""
    return (reader_for(path) or Reader(path)).looks_binary()


from mypt.readers import txt, jsonl, parquet  # noqa: E402,F401,I001  (registration, in help-text order)
