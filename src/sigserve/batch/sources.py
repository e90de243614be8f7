"""What a batch job embeds: SRC turned into a table of inputs, on the driver, before Ray starts.

    folder            photos/                  every image file below it; id = path relative to the folder
    glob              'photos/**/*.jpg'        the matches; id = the path as matched
    manifest          items.parquet|csv|jsonl  one row per image: a path/URL column (--path-column, else the
                                               first of PATH_COLUMNS), an optional id column, and any other
                                               columns, carried through to the output as metadata
    WebDataset shards 'shards/{0000..0099}.tar' tar files whose members sharing a key form one sample;
                      or 'shards/*.tar'        id = "<shard>/<key>"; metadata: shard, key and .json/.txt/.cls

Local paths and object-store URIs that pyarrow can open (s3://, gs://, ...) work alike; manifests may
also hold http(s) URLs. Only names are listed here; the bytes are read on the cluster (read.py).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import posixpath
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from sigserve.batch.schema import DONE, ID, LOCATION, PATH, RESERVED
from sigserve.errors import BatchError
from sigserve.images import IMAGE_EXTENSIONS

MANIFEST_FORMATS = {".parquet": "parquet", ".csv": "csv", ".jsonl": "json", ".ndjson": "json"}
PATH_COLUMNS = ("path", "url", "image", "image_path", "image_url", "file", "filename", "uri")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
TAR_SIDECARS = ("json", "txt", "cls")  # WebDataset members carried as text metadata when present
SHARD, KEY = "shard", "key"
TAR_METADATA = pa.schema([(SHARD, pa.string()), (KEY, pa.string())] + [(ext, pa.string()) for ext in TAR_SIDECARS])


@dataclass
class Source:
    kind: str  # "files": one row per image; "tar": one row per shard
    table: pa.Table  # files: id, path, location, metadata...; tar: shard, location
    metadata: pa.Schema  # the metadata columns each output row carries

    def pending(self, done: set[str]) -> pa.Table:
        """The rows still to do, given the ids an earlier run wrote (resume)."""
        if self.kind == "files":
            return self.table.filter(pc.invert(pc.is_in(self.table[ID], pa.array(sorted(done), pa.string()))))
        return self.table.append_column(DONE, pa.array(_done_keys(self.table[SHARD].to_pylist(), done),
                                                       pa.list_(pa.string())))

    @property
    def total(self) -> int | None:
        """Inputs in SRC, when known before reading (not for tar shards)."""
        return self.table.num_rows if self.kind == "files" else None


def open_source(src: str, path_column: str | None = None, id_column: str | None = None) -> Source:
    src = str(src)
    locations = expand(src)
    if not locations:
        raise BatchError(f"{src}: nothing matches")
    suffix = _suffix(locations[0])
    if suffix in MANIFEST_FORMATS:
        return _manifest(locations, path_column, id_column)
    if locations[0].endswith(TAR_SUFFIXES):
        return Source("tar", pa.table({SHARD: locations, LOCATION: [_absolute(x) for x in locations]}), TAR_METADATA)
    if len(locations) == 1 and _is_dir(locations[0]):
        ids, found = _folder(locations[0])
        return _files(ids, found, found)
    if not glob.has_magic(src) and not _exists(locations[0]):
        raise BatchError(f"{src}: no such file or folder")
    return _files(locations, locations, locations)


# -- listing -----------------------------------------------------------------------------------

def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for a URI (s3://, gs://, file://...) or a local path, and the path in it."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), os.path.abspath(location)


def expand(pattern: str) -> list[str]:
    """Numeric brace ranges ({000..099}) first, then glob wildcards; a plain name stays itself."""
    names = _braces(pattern)
    out: list[str] = []
    for name in names:
        out.extend(_glob(name) if glob.has_magic(name) else [name])
    return out


def _braces(pattern: str) -> list[str]:
    m = re.search(r"\{(\d+)\.\.(\d+)\}", pattern)
    if not m:
        return [pattern]
    lo, hi, width = int(m[1]), int(m[2]), len(m[1])
    return [x for i in range(lo, hi + 1) for x in _braces(pattern[: m.start()] + f"{i:0{width}d}" + pattern[m.end():])]


def _glob(pattern: str) -> list[str]:
    if "://" not in pattern:
        return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
    # Object stores have no glob: list below the last fixed directory and match the rest.
    scheme, rest = pattern.split("://", 1)
    wildcard = re.search(r"[*?\[]", rest)
    fixed = rest[: wildcard.start() if wildcard else len(rest)].rsplit("/", 1)[0]
    fs, base = filesystem(f"{scheme}://{fixed}")
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    found = [f"{scheme}://{fixed}/{posixpath.relpath(i.path, base)}" for i in infos if i.type == pafs.FileType.File]
    return sorted(x for x in found if fnmatch.fnmatchcase(x, pattern))


def _exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _is_dir(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.Directory


def _folder(root: str) -> tuple[list[str], list[str]]:
    """(ids, locations) of the image files below `root`, in a stable order."""
    fs, base = filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    rel = sorted(posixpath.relpath(i.path, base) for i in infos
                 if i.type == pafs.FileType.File and _suffix(i.path) in IMAGE_EXTENSIONS)
    if not rel:
        shards = any(i.path.endswith(TAR_SUFFIXES) for i in infos)
        hint = f" (it holds tar shards: pass '{root.rstrip('/')}/*.tar')" if shards else ""
        raise BatchError(f"{root}: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))}) found{hint}")
    join = (lambda r: f"{root.rstrip('/')}/{r}") if "://" in root else (lambda r: os.path.join(base, r))
    return rel, [join(r) for r in rel]


def _files(ids: list[str], paths: list, locations: list, metadata: pa.Table | None = None) -> Source:
    table = pa.table({ID: ids, PATH: pa.array(paths, pa.string()),
                      LOCATION: [_absolute(x) if x else "" for x in locations]})
    if metadata is None:
        metadata = pa.table({})
    for name in metadata.column_names:
        table = table.append_column(name, metadata[name])
    _check_unique(table[ID])
    return Source("files", table, metadata.schema)


# -- manifests ---------------------------------------------------------------------------------

def _manifest(locations: list[str], path_column: str | None, id_column: str | None) -> Source:
    table = pa.concat_tables([_read_manifest(x) for x in locations], promote_options="default")
    path_column = path_column or next((c for c in PATH_COLUMNS if c in table.column_names), None)
    if path_column not in table.column_names:
        raise BatchError(f"{locations[0]}: no path column (tried {', '.join(PATH_COLUMNS)}; name it with "
                         f"--path-column); columns are {', '.join(table.column_names)}")
    id_column = id_column or (ID if ID in table.column_names else None)
    if id_column is not None and id_column not in table.column_names:
        raise BatchError(f"{locations[0]}: no id column {id_column!r}; columns are {', '.join(table.column_names)}")
    paths = pc.cast(table[path_column], pa.string())
    base = posixpath.dirname(locations[0]) if "://" in locations[0] else os.path.dirname(os.path.abspath(locations[0]))
    resolved = [_beside(base, p) if p else None for p in paths.to_pylist()]
    ids = pc.cast(table[id_column], pa.string()).to_pylist() if id_column else paths.to_pylist()
    ids = [i if i is not None else f"#{n}" for n, i in enumerate(ids)]  # a row without a name: its row number
    metadata = table.drop_columns([c for c in (path_column, id_column) if c])
    clash = sorted(set(metadata.column_names) & RESERVED)
    if clash:
        raise BatchError(f"{locations[0]}: column(s) {', '.join(clash)} would clash with the output's own; rename them")
    return _files(ids, paths.to_pylist(), resolved, metadata)


def _read_manifest(location: str) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    kind = MANIFEST_FORMATS[_suffix(location)]
    fs, path = filesystem(location)
    try:
        with fs.open_input_file(path) as f:
            if kind == "parquet":
                return pq.read_table(f)
            if kind == "json":
                return pajson.read_json(f)
            # Every CSV column as text: inference would turn ids like "0042" into the number 42.
            names = pacsv.open_csv(f).schema.names
            f.seek(0)
            return pacsv.read_csv(f, convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
    except (OSError, pa.ArrowInvalid) as exc:
        raise BatchError(f"{location}: cannot read the manifest: {exc}") from exc


def _beside(base: str, path: str) -> str:
    """A manifest's relative paths are relative to the manifest's own folder."""
    if "://" in path or os.path.isabs(path):
        return path
    return f"{base}/{path}" if "://" in base else os.path.join(base, path)


# -- helpers -----------------------------------------------------------------------------------

def _suffix(location: str) -> str:
    return os.path.splitext(location.rstrip("/"))[1].lower()


def _absolute(location: str) -> str:
    """Workers may run in another folder: local paths travel absolute."""
    return location if "://" in location else os.path.abspath(location)


def _check_unique(ids: pa.ChunkedArray) -> None:
    if pc.count_distinct(ids).as_py() == len(ids):
        return
    counts = pa.table({ID: ids}).group_by(ID).aggregate([(ID, "count")])
    dup = counts.filter(pc.greater(counts[f"{ID}_count"], 1))
    raise BatchError(f"input ids must be unique (resume relies on them): {dup[ID][0].as_py()!r} appears "
                     f"{dup[f'{ID}_count'][0].as_py()} times ({dup.num_rows} duplicated id(s) in all)")


def _done_keys(shards: list[str], done: set[str]) -> list[list[str]]:
    """Per shard, the keys among `done` ids ("<shard>/<key>"; a key may itself hold slashes)."""
    known = {s: i for i, s in enumerate(shards)}
    keys: list[list[str]] = [[] for _ in shards]
    for id_ in done:
        for m in re.finditer("/", id_):
            if id_[: m.start()] in known:
                keys[known[id_[: m.start()]]].append(id_[m.end():])
                break
    return keys
