"""A second form of a graph reads the first form's weights: no second copy on disk.

Both forms are exported from the same modules and optimised the same way, so every weight of the
second is byte-identical to one of the first. Each of the second form's external tensors is
pointed at the equal tensor in the first form's data file (matched by dtype, shape and sha256),
tensors without a twin (small constants of the form's own) are stored inline, and the second
form's own data file is deleted. The forms must sit in one folder: ONNX resolves external data
relative to the graph file.
"""

from __future__ import annotations

import hashlib
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A form's own tensors are a few small constants; more means the two exports diverged.
MAX_OWN_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class SharedWeights:
    shared: int  # tensors now read from the first form's data
    own: int  # tensors stored inline in the form's graph file
    own_bytes: int


def share_weights(form: Path, main: Path) -> SharedWeights:
    """Rewrite `form` (graph + `form.data`) to read `main`'s external data; deletes `form.data`."""
    import onnx

    if form.parent.resolve() != main.parent.resolve():
        raise ValueError(f"{form.name} must sit beside {main.name} to read its external data")
    main_model = onnx.load(str(main), load_external_data=False)
    form_model = onnx.load(str(form), load_external_data=False)
    with _Reader(main.parent) as reader:
        twins = {_key(t, reader.read(t)): list(t.external_data) for t in main_model.graph.initializer
                 if _is_external(t)}
        shared = own = own_bytes = 0
        for tensor in form_model.graph.initializer:
            if not _is_external(tensor):
                continue
            data = reader.read(tensor)
            twin = twins.get(_key(tensor, data))
            del tensor.external_data[:]
            if twin is not None:
                tensor.external_data.extend(twin)
                shared += 1
            else:
                tensor.data_location = onnx.TensorProto.DEFAULT
                tensor.raw_data = data
                own, own_bytes = own + 1, own_bytes + len(data)
    if own_bytes > MAX_OWN_BYTES:
        raise RuntimeError(f"{form.name}: {own_bytes} bytes of weights have no twin in {main.name}")
    onnx.save(form_model, str(form))
    (form.parent / f"{form.name}.data").unlink(missing_ok=True)
    onnx.checker.check_model(str(form))
    return SharedWeights(shared, own, own_bytes)


def _is_external(tensor: Any) -> bool:
    import onnx

    return tensor.data_location == onnx.TensorProto.EXTERNAL


def _key(tensor: Any, data: bytes) -> tuple[int, tuple[int, ...], str]:
    return tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).hexdigest()


class _Reader:
    """Bytes of external tensors, each data file mapped once."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._maps: dict[str, tuple[Any, mmap.mmap]] = {}

    def __enter__(self) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        for file, mapped in self._maps.values():
            mapped.close()
            file.close()

    def read(self, tensor: Any) -> bytes:
        info = {e.key: e.value for e in tensor.external_data}
        location = info["location"]
        if location not in self._maps:
            file = open(self.folder / location, "rb")  # noqa: SIM115 (closed in __exit__)
            self._maps[location] = (file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
        offset = int(info.get("offset", 0))
        return self._maps[location][1][offset : offset + int(info["length"])]
