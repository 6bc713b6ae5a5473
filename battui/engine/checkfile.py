"""Reading a checkpoint file safely, and saying in one line what a file is when it is not one.

    obj = read_checkpoint_file(path)          # torch.load(weights_only=True) of a checked file
    check_battui_payload(obj, path)           # a battui checkpoint: format, config, weights, data_info

Before torch sees a file, its first bytes say what it is: empty, text (JSON,
YAML, plain), a zip archive (PyTorch's format, or not), a legacy PyTorch pickle,
or another known binary format. torch then reads only plain tensors and
containers (`weights_only=True`): a pickle that needs code (a whole model
object, a malicious payload) is refused without running it. Every failure is a
`UserError` of one line that names what the file is and what to do.
"""

from __future__ import annotations

import codecs
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from battui.errors import UserError

FORMAT = "battui"
PICK = "pass a .pt file written by `battui train` (runs/<name>/checkpoints/best.pt or last.pt)"
FOREIGN = "for checkpoints from other code pass --model NAME --dataset NAME"
# Magic numbers of files people mistake for checkpoints.
_MAGIC = (
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"\x1f\x8b", "a gzip archive"),
    (b"\x7fELF", "a program (ELF binary)"), (b"\x89HDF", "an HDF5 file (Keras .h5?)"),
    (b"\x93NUMPY", "a NumPy .npy array"), (b"%PDF", "a PDF document"), (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ", "an xz archive"), (b"7z\xbc\xaf", "a 7-Zip archive"), (b"ustar", "a tar archive"),
)


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for b in head if b < 32 and b not in (9, 10, 13, 12, 27))
    return controls == 0


def _text_kind(head: bytes) -> str:
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    if text[:1] in ("{", "["):
        return "a JSON file"
    if re.search(r"^\s*[\w.-]+\s*:(\s|$)", text, flags=re.M) or text.startswith("---"):
        return "a YAML or other text file"
    return "a text file"


def _safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    n = int.from_bytes(head[:8], "little")
    return 0 < n < size and head[8:10] in (b'{"', b"{'", b"{ ")


def describe_bytes(path: Path) -> str | None:
    """What the file is when it cannot be a PyTorch checkpoint (None: it may be one)."""
    size = path.stat().st_size
    if size == 0:
        return "empty (0 bytes): its save was probably interrupted"
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return None
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return None  # a pickle: PyTorch's legacy format, or a foreign pickle torch will refuse
    if _safetensors(head, size):
        return "a safetensors file, which battui does not read"
    for magic, what in _MAGIC:
        if head.startswith(magic) or (magic == b"ustar" and head[257:262] == magic):
            return what
    if _looks_like_text(head):
        return f"{_text_kind(head)} ({size} bytes)"
    return f"unrecognised binary data ({size} bytes, starting {head[:4].hex(' ')})"


def _zip_problem(path: Path) -> str | None:
    """Why a zip-headed file is not a readable PyTorch archive (None: it looks whole)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return "a damaged or truncated zip archive (probably cut off while being written or copied)"
    if not any(name.endswith("data.pkl") for name in names):
        return f"a zip archive of {len(names)} file(s), not a PyTorch checkpoint"
    return None


def _refusal(exc: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f" ({found.group(1)})" if found else ""
    return (f"holds pickled Python objects{what} that need code to load, so battui refused to unpickle them "
            "(it loads plain tensors only); re-save the weights with torch.save(model.state_dict(), path)")


def read_checkpoint_file(path: Path, map_location: str | torch.device = "cpu", *, mmap: bool = False) -> Any:
    """`torch.load(weights_only=True)` of a file first checked to be one PyTorch can read."""
    if not path.is_file():
        raise UserError(f"{path} is not a regular file; {PICK}")
    try:
        what = describe_bytes(path)
    except OSError as exc:
        raise UserError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if what is not None:
        raise UserError(f"{path} is {what}, not a PyTorch checkpoint; {PICK}")
    with open(path, "rb") as fh:
        is_zip = fh.read(2) == b"PK"
    if is_zip and (problem := _zip_problem(path)):
        raise UserError(f"{path} is {problem}; {PICK}")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols: the answer below says it all
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap and is_zip)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text or "not an allowed global" in text:
            raise UserError(f"{path} {_refusal(exc)}") from None
        reason = "its pickle data is corrupt"
    except (EOFError, MemoryError, OverflowError) as exc:
        reason = "it ends early (truncated)" if isinstance(exc, EOFError) else "it asks for impossible sizes"
    except Exception as exc:  # noqa: BLE001  (any decoding failure of a damaged file is the same answer)
        text = str(exc).lower()
        reason = ("it ends early (truncated)" if any(w in text for w in ("eof", "truncat", "ran out of input"))
                  else f"its data cannot be decoded ({type(exc).__name__})")
    kind = "PyTorch zip checkpoint" if is_zip else "legacy-format PyTorch file"
    raise UserError(f"{path} is a damaged {kind}: {reason}; {PICK}")


def _tensor_dict(value: Any) -> bool:
    return (isinstance(value, dict) and bool(value)
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()))


def check_battui_payload(ckpt: Any, path: Path) -> None:
    """`ckpt` is a battui checkpoint with a usable config, weights and data_info; else a one-line UserError."""
    from battui.config import config_from_dict
    from battui.methods.plugins import MethodError, describe_record

    if not isinstance(ckpt, dict):
        raise UserError(f"{path} holds a {type(ckpt).__name__}, not a checkpoint dict; {PICK}")
    if ckpt.get("format") != FORMAT:
        if _tensor_dict(ckpt):
            raise UserError(f"{path} is a plain state dict ({len(ckpt)} tensors) without battui's config, "
                            f"not a battui checkpoint; {FOREIGN}")
        for key in ("state_dict", "model", "net", "model_state_dict"):
            if _tensor_dict(ckpt.get(key)):
                raise UserError(f"{path} holds weights under '{key}' but no battui config, so it is not a battui "
                                f"checkpoint; {FOREIGN}")
        keys = ", ".join(repr(k) for k in list(ckpt)[:5]) or "none"
        raise UserError(f"{path} is not a battui checkpoint (a dict with keys {keys}); {PICK}")
    damaged = f"{path} says it is a battui checkpoint but"
    if not isinstance(ckpt.get("config"), dict):
        raise UserError(f"{damaged} has no usable config; it is damaged or was not written by battui; {PICK}")
    if not _tensor_dict(ckpt.get("model")):
        raise UserError(f"{damaged} holds no model weights; it is damaged or was not written by battui; {PICK}")
    try:
        config_from_dict(ckpt["config"])
    except MethodError as exc:  # a method from outside battui that is not installed here (docs/DESIGN.md 3.7)
        where = describe_record(ckpt.get("method_source"))
        raise UserError(f"{path} was trained with a method that is not available here"
                        f"{f' ({where})' if where else ''}: {exc}") from None
    except UserError as exc:
        raise UserError(f"{damaged} its config is unusable ({exc}); {PICK}") from None
    info = ckpt.get("data_info")
    if info is not None and not isinstance(info, dict):
        raise UserError(f"{damaged} its data_info is not a mapping; {PICK}")
    for key in ("num_classes", "in_channels", "image_size"):
        value = (info or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 100_000):
            raise UserError(f"{damaged} its data_info.{key} is {value!r}; {PICK}")
    classes = (info or {}).get("classes")
    if classes is not None and not isinstance(classes, (list, tuple)):
        raise UserError(f"{damaged} its data_info.classes is not a list; {PICK}")
    for key in ("epoch", "batch", "step"):
        value = ckpt.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UserError(f"{damaged} its {key} is {value!r}; {PICK}")
