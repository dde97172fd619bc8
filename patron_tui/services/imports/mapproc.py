"""Reading and mapping a big patron file in a second process.

The import's Python work splits in two: reading, fingerprinting and mapping each record
(pure, per record) and deciding and writing (the run thread, against the database). Threads
cannot run the first part beside the second (the GIL), so for a big Full import a spawned
process reads the file itself with `RowReader`, maps it with the same compiled mapping and
sends the chunks down its standard output; the run thread only decides and writes. The pipe's
buffer bounds what is in flight (memory stays flat); the chunks arrive in file order.

The process is a helper, not a writer: it never opens the database. If the run is cancelled
or fails, the run thread kills it; if the whole program is killed, its next write finds the
pipe closed and it exits.
"""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

from patron_tui.services.imports.properties import ImportMapping
from patron_tui.services.imports.records import ImportFileError, Problem, RowReader, line_hasher, row_mapper

# a file at least this big (bytes) is mapped in a second process when the machine has 2+ cores
PROCESS_MIN_BYTES = 4 * 1024 * 1024

_END = b"end"


def map_chunk(mapper, seed: bytes, chunk: list) -> list:
    """Each reader item -> a Problem, (line, fields, problems, fingerprint) for a record with
    problems, or (line, values, None, fingerprint) for a good one: `values` is the tuple of its
    fields in the mapper's `fields` order (every good record carries all of them). Tuples
    cross the pipe and reach the writer's insert for less than dicts."""
    out: list = []
    append = out.append
    hexdigest = line_hasher(seed)
    for item in chunk:
        if item.__class__ is Problem:
            append(item)
            continue
        line, row, raw = item
        fp = hexdigest(raw if raw is not None else "\x1f".join(row).encode("utf-8", "surrogatepass"))
        fields, problems = mapper(row, line)
        append((line, fields, problems, fp) if problems else (line, tuple(fields.values()), None, fp))
    return out


def _frame(out, payload: bytes) -> None:
    out.write(len(payload).to_bytes(8, "little"))
    out.write(payload)


def _child_main() -> int:
    """The child: parameters (one pickle) on stdin, framed pickles of (bytes read, chunk) on
    stdout, then the end marker (or an error tuple)."""
    import sys

    out = sys.stdout.buffer
    try:
        path, mapping_data, encoding, reference, require, seed, chunk_size = pickle.load(sys.stdin.buffer)
        mapping = ImportMapping(**mapping_data)
        reader = RowReader(path, mapping, encoding=encoding)
        reader.open()
        mapper = row_mapper(mapping, reader.columns, reference, require).fn
        chunk: list = []
        for item in reader:
            chunk.append(item)
            if len(chunk) >= chunk_size:
                _frame(out, pickle.dumps((reader.bytes_read, map_chunk(mapper, seed, chunk)), protocol=5))
                chunk = []
        if chunk:
            _frame(out, pickle.dumps((reader.bytes_read, map_chunk(mapper, seed, chunk)), protocol=5))
        _frame(out, _END)
        out.flush()
    except ImportFileError as exc:
        _frame(out, pickle.dumps(("error", exc.path, exc.line, exc.detail, exc.code)))
        out.flush()
    except (BrokenPipeError, OSError):
        return 1   # the run ended (or the program died): nothing to deliver to
    return 0


class MappedChunks:
    """Iterate for mapped chunks (lists as `map_chunk` returns them) from a child process
    (`python -m patron_tui.services.imports.mapproc`: a fresh interpreter, never a fork of
    this threaded one). `bytes_read` follows the child's reading, for progress."""

    def __init__(self) -> None:
        """Start the child now (its interpreter and imports take a few tenths of a second, spent
        while the run prepares); `start(...)` then tells it what to read."""
        import os
        import subprocess
        import sys

        root = str(Path(__file__).resolve().parents[3])   # the folder holding patron_tui/
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        # the child's stderr goes to a file, never to our terminal (the console draws there);
        # its tail explains a child that died
        self._err = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "patron_tui.services.imports.mapproc"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, env=env,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._out = self._proc.stdout
        self.bytes_read = 0

    def start(self, path: str | Path, mapping: ImportMapping, *, encoding: str | None,
              reference: Mapping[str, Collection[str]], require_district_id: bool, seed: bytes,
              chunk_size: int) -> MappedChunks:
        assert self._proc.stdin is not None
        params = (str(path), mapping.model_dump(), encoding, {k: frozenset(v) for k, v in reference.items()},
                  require_district_id, seed, chunk_size)
        try:
            self._proc.stdin.write(pickle.dumps(params, protocol=5))
            self._proc.stdin.close()
        except BrokenPipeError:
            pass   # the child died at once: __iter__ says so
        return self

    def _read(self) -> bytes | None:
        head = self._out.read(8)
        if len(head) < 8:
            return None
        size = int.from_bytes(head, "little")
        data = self._out.read(size)
        return data if len(data) == size else None

    def __iter__(self) -> Iterator[list]:
        try:
            while True:
                data = self._read()
                if data is None:
                    code = self._proc.wait()
                    self._err.seek(0)
                    tail = self._err.read()[-600:].decode("utf-8", "replace").strip().splitlines()
                    raise RuntimeError(f"the import's mapping process ended (exit status {code}) "
                                       f"before the end of the file{': ' + tail[-1] if tail else ''}")
                if data == _END:
                    return
                item: Any = pickle.loads(data)
                if item[0] == "error":
                    _, path, line, detail, code = item
                    raise ImportFileError(path, line, detail, code=code)
                self.bytes_read, chunk = item
                yield chunk
        finally:
            self.close()

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except BrokenPipeError:
                pass
        self._out.close()
        self._proc.wait(timeout=10)
        self._err.close()


if __name__ == "__main__":
    import signal

    # Ctrl+C reaches the whole process group: the importing process decides (it cancels the
    # run and closes our pipe, which ends us); the helper must not die first and fail the run
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(_child_main())


__all__ = ["PROCESS_MIN_BYTES", "MappedChunks", "map_chunk"]
