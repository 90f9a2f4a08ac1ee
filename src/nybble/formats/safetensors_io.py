"""Reading and writing the safetensors files of a checkpoint directory (never pickle).

Reading (:class:`CheckpointFiles`): one ``model.safetensors`` or a sharded set listed in
``model.safetensors.index.json``. Every file's header is checked against the file size before
anything is read, so a truncated or corrupt file gives a clear error naming it. Tensors are read
shard by shard, one tensor at a time, by positional reads of the tensor's byte range into a fresh
buffer (the header gives the offsets). We do not memory-map the shard: the pages of a mapped shard
that were touched count in the process's RSS until the shard is unmapped, which would add up to a
whole shard to the peak; direct reads keep the peak at what the caller keeps plus one tensor.

Writing (:func:`write_shards`, :func:`atomic_directory`): tensors are written in shards of at most
``max_shard_bytes`` into a temporary sibling directory that is fsynced and renamed over the target
only when everything succeeded.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors.torch import save_file

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
#: bytes of safetensors header length prefix (little-endian u64)
_LEN_BYTES = 8
_MAX_HEADER = 100 * 2**20

_TORCH_DTYPES = {"BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16,
                 "I32": torch.int32, "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16,
                 "F32": torch.float32, "F64": torch.float64, "F8_E4M3": torch.float8_e4m3fn,
                 "F8_E5M2": torch.float8_e5m2}
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


class CheckpointError(ValueError):
    """A checkpoint directory or file that nybble cannot read (message names the file and tensor)."""


def read_header(path: Path) -> dict[str, dict]:
    """Parse and check a safetensors header: ``{name: {"dtype", "shape", "data_offsets"}}``.

    Raises CheckpointError naming ``path`` when the file is shorter than its header says
    (truncated), the header is not valid JSON, or a tensor's byte range is inconsistent.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(_LEN_BYTES)
        if len(head) < _LEN_BYTES:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_HEADER or _LEN_BYTES + n > size:
            raise CheckpointError(f"{path}: truncated or corrupt safetensors file: header of {n} bytes "
                                  f"does not fit in the file's {size} bytes")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        try:
            b, e = info["data_offsets"]
            numel = 1
            for d in info["shape"]:
                numel *= int(d)
            want = numel * _DTYPE_BYTES.get(info["dtype"], 0)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: corrupt safetensors header entry for tensor {name!r}") from None
        if info["dtype"] in _DTYPE_BYTES and e - b != want:
            raise CheckpointError(f"{path}: tensor {name!r} has {e - b} bytes of data but its shape "
                                  f"{info['shape']} and dtype {info['dtype']} need {want}")
        end = max(end, e)
    data = size - _LEN_BYTES - n
    if end > data:
        raise CheckpointError(f"{path}: truncated safetensors file: tensors need {end} bytes of data, "
                              f"the file holds {data} (was the copy or download interrupted?)")
    return header


def _data_bytes(header: dict, path: Path) -> int:
    """Bytes of the data section = file size - 8 - header length (header already validated)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(_LEN_BYTES))
    return path.stat().st_size - _LEN_BYTES - n


class CheckpointFiles:
    """The safetensors files of a checkpoint directory and which tensor lives where.

    ``shapes[name]`` -> tuple shape, ``dtypes[name]`` -> safetensors dtype string,
    ``file_of[name]`` -> Path of its shard. ``iter_shards()`` yields ``(path, [names])`` in file order.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        index = self.directory / INDEX_FILE
        single = self.directory / SINGLE_FILE
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{index}: not a valid safetensors index ({exc!r}); "
                                      "expected a JSON object with a 'weight_map'") from None
            files = sorted(set(weight_map.values()))
        elif single.exists():
            weight_map, files = None, [SINGLE_FILE]
        else:
            others = sorted(p.name for p in self.directory.glob("*.bin")) + \
                sorted(p.name for p in self.directory.glob("*.pt"))
            hint = (f" (found {others[:3]}: pickle-based weights, which nybble never loads; convert them "
                    "to safetensors first)") if others else ""
            raise CheckpointError(f"{self.directory}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.dtypes: dict[str, str] = {}
        self.file_of: dict[str, Path] = {}
        self.files: list[Path] = []
        self._headers: dict[Path, tuple[dict, int]] = {}
        for fname in files:
            path = self.directory / fname
            if not path.exists():
                raise CheckpointError(f"{index}: lists shard {fname} which does not exist")
            header = read_header(path)
            self._headers[path] = (header, path.stat().st_size - _data_bytes(header, path))
            self.files.append(path)
            for name, info in header.items():
                self.shapes[name] = tuple(int(d) for d in info["shape"])
                self.dtypes[name] = info["dtype"]
                self.file_of[name] = path
        if weight_map is not None:
            for name, fname in weight_map.items():
                if name not in self.file_of:
                    raise CheckpointError(f"{index}: tensor {name!r} is listed in {fname} but that file "
                                          "does not contain it")

    def names(self) -> list[str]:
        return list(self.shapes)

    def __contains__(self, name: str) -> bool:
        return name in self.shapes

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    def iter_shards(self) -> Iterator[tuple[Path, list[str]]]:
        for path in self.files:
            yield path, [n for n, p in self.file_of.items() if p == path]

    @contextlib.contextmanager
    def open(self, path: Path):
        """A reader of one shard's tensors (``reader.get(name)``); errors name the file."""
        header, data_start = self._headers[path]
        with open(path, "rb", buffering=0) as f:
            yield _Reader(f, path, header, data_start)

    def get(self, name: str) -> torch.Tensor:
        """Read one tensor (opens its shard); use :meth:`open` for many."""
        if name not in self.file_of:
            raise CheckpointError(f"{self.directory}: tensor {name!r} is missing")
        with self.open(self.file_of[name]) as r:
            return r.get(name)


class _Reader:
    """Reads each tensor's byte range straight into a fresh tensor (positional reads, no mmap), so
    memory holds only the tensors the caller keeps: mapped pages of a whole shard would otherwise
    count in the process's RSS until the shard is closed."""

    def __init__(self, f, path: Path, header: dict, data_start: int):
        self._f, self.path, self._header, self._start = f, path, header, data_start

    def get(self, name: str) -> torch.Tensor:
        info = self._header.get(name)
        if info is None:
            raise CheckpointError(f"{self.path}: tensor {name!r} is not in this file")
        dtype = _TORCH_DTYPES.get(info["dtype"])
        if dtype is None:
            raise CheckpointError(f"{self.path}: tensor {name!r} has dtype {info['dtype']}, which nybble "
                                  f"does not read (known: {', '.join(sorted(_TORCH_DTYPES))})")
        b, e = info["data_offsets"]
        buf = torch.empty(e - b, dtype=torch.uint8)
        view = memoryview(buf.numpy()) if e > b else None
        got = os.preadv(self._f.fileno(), [view], self._start + b) if view is not None else 0
        while view is not None and got < e - b:  # preadv may return short reads for large ranges
            n = os.preadv(self._f.fileno(), [view[got:]], self._start + b + got)
            if n <= 0:
                raise CheckpointError(f"{self.path}: tensor {name!r}: unexpected end of file")
            got += n
        shape = tuple(int(d) for d in info["shape"])
        return buf.view(dtype).reshape(shape)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file in ``path`` and the directory itself."""
    for p in path.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, overwrite: bool = True):
    """Yield a fresh temporary sibling of ``target``; on success fsync it and rename it to ``target``.

    On any exception the temporary directory is removed and an existing ``target`` is untouched.
    An existing ``target`` is replaced only after the new one is complete (renamed aside, then
    removed). ``overwrite=False`` refuses an existing ``target``.
    """
    target = Path(target).absolute()
    if target.exists() and not target.is_dir():
        raise ValueError(f"{target} exists and is not a directory")
    if target.exists() and not overwrite:
        raise ValueError(f"{target} already exists (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700); a checkpoint is a normal directory
    try:
        yield tmp
        fsync_tree(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rmdir(old)
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    return (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())


def write_shards(tensors: Iterable[tuple[str, torch.Tensor]], directory: Path,
                 max_shard_bytes: int | None = None, metadata: dict[str, str] | None = None) -> list[str]:
    """Write ``(name, tensor)`` pairs as ``model.safetensors`` or, when they exceed
    ``max_shard_bytes``, as ``model-0000i-of-0000n.safetensors`` plus ``model.safetensors.index.json``.

    Only one shard's tensors are held at a time (the iterable is consumed lazily). Tensors that
    share storage with one already in the shard are cloned (safetensors refuses shared storage).
    Returns the file names written.
    """
    directory = Path(directory)
    shards: list[dict[str, torch.Tensor]] = []
    written: list[tuple[str, list[str]]] = []
    cur: dict[str, torch.Tensor] = {}
    cur_bytes, storages, total = 0, set(), 0

    def flush():
        nonlocal cur, cur_bytes, storages
        if not cur:
            return
        name = f"part-{len(written):05d}.safetensors"
        save_file(cur, str(directory / name), metadata=metadata)
        written.append((name, list(cur)))
        cur, cur_bytes, storages = {}, 0, set()

    for name, t in tensors:
        t = t.detach().to("cpu")
        if not t.is_contiguous():
            t = t.contiguous()
        nb = t.numel() * t.element_size()
        if max_shard_bytes is not None and cur and cur_bytes + nb > max_shard_bytes:
            flush()
        key = _storage_key(t)
        if key in storages or t.untyped_storage().nbytes() != nb:
            t = t.clone()
            key = _storage_key(t)
        storages.add(key)
        cur[name] = t
        cur_bytes += nb
        total += nb
    flush()
    del shards
    if len(written) <= 1:
        if written:
            os.rename(directory / written[0][0], directory / SINGLE_FILE)
        else:
            save_file({}, str(directory / SINGLE_FILE), metadata=metadata)
        return [SINGLE_FILE]
    n = len(written)
    weight_map, names = {}, []
    for i, (tmpname, keys) in enumerate(written):
        final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        os.rename(directory / tmpname, directory / final)
        names.append(final)
        for k in keys:
            weight_map[k] = final
    (directory / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": total},
                                                    "weight_map": weight_map}, indent=2))
    return names + [INDEX_FILE]
