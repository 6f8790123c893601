"""Reading a weights file (a trial's stored weights, an export's ``model.pt``): a damaged, empty or
planted file is one line naming it, never a traceback, and never loaded beyond plain tensors."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from nas.errors import SettingError


def read_weights(path: Path, name: str, what: str) -> dict[str, Any]:
    """``torch.load`` of tensors and plain data only (``weights_only``); ``name`` is the parameter that
    pointed at the file, ``what`` says what the file is."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's own message advises weights_only=False: the one thing not to do
        raise SettingError(name, f"{what} {path} holds objects a weights file never holds, so it was not loaded; "
                           "replace it with a file this tool wrote") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise SettingError(name, f"{what} {path} is damaged or not a weights file ({first}); replace it with a "
                           "file this tool wrote") from None
    if not isinstance(payload, dict):
        raise SettingError(name, f"{what} {path} holds a {type(payload).__name__}, not weights; replace it with a "
                           "file this tool wrote")
    return payload


def load_into(model: torch.nn.Module, state: Any, name: str, what: str) -> torch.nn.Module:
    """``model.load_state_dict(state)``, a mismatch said in one line (weights of another network)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise SettingError(name, f"{what} do not fit the network they were stored with ({first})") from None
    return model
