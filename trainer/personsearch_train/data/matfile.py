"""Reading MATLAB ``.mat`` annotation files with clear errors.

The person-search datasets (CUHK-SYSU, PRW) ship their annotations as MATLAB v5
files holding nested struct arrays and cell arrays. ``scipy.io.loadmat`` (with its
defaults, ``squeeze_me=False`` and ``struct_as_record=True``) returns those as
nested numpy arrays: a ``1 x N`` struct array becomes a ``(1, N)`` structured array
whose fields hold objects, a cell array becomes an object array, a MATLAB char
row becomes a ``(1,)`` array of ``str`` and a numeric row a ``(1, k)`` array.

The helpers here turn that nesting into plain Python values and raise
:class:`~personsearch_train.errors.DatasetFormatError` naming the file and the
place inside it whenever the layout is not what the dataset's readers expect.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io

from personsearch_train.errors import DatasetFormatError

__all__ = ["flat", "load_mat", "mat_box", "mat_string", "record_field", "single_record"]


def load_mat(path: Path, variables: Sequence[str], *, require: str = "all") -> dict[str, Any]:
    """Load named variables from a MATLAB v5 file.

    Args:
        path: The ``.mat`` file.
        variables: Variable names to read.
        require: ``"all"``: every name must be present; ``"any"``: at least one of
            them (used for PRW frames, whose boxes are stored under one of three names).

    Returns:
        Mapping from each present variable name to the array ``loadmat`` returns.

    Raises:
        DatasetFormatError: The file is missing, unreadable, a v7.3 (HDF5) file, or
            lacks the required variables.
    """
    if not path.is_file():
        raise DatasetFormatError(f"{path}: file not found. Check the dataset root folder and its layout.")
    try:
        contents = scipy.io.loadmat(str(path), variable_names=list(variables))
    except NotImplementedError as exc:
        # loadmat raises NotImplementedError for HDF5-based v7.3 files.
        raise DatasetFormatError(
            f"{path}: MATLAB v7.3 (HDF5) files are not supported; re-save it in MATLAB with "
            f"save(..., '-v7') ({exc})."
        ) from exc
    except Exception as exc:  # scipy raises ValueError, TypeError, MatReadError... on corrupt files
        raise DatasetFormatError(
            f"{path}: not a readable MATLAB file ({type(exc).__name__}: {exc})."
        ) from exc
    present = {name: contents[name] for name in variables if name in contents}
    if require == "all":
        missing = [name for name in variables if name not in present]
        if missing:
            raise DatasetFormatError(f"{path}: no variable {', '.join(missing)} in this file.")
    elif not present:
        names = list(variables)
        listed = ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]
        raise DatasetFormatError(f"{path}: no variable {listed}.")
    return present


def flat(value: Any) -> np.ndarray:
    """Flatten a loaded MATLAB array (struct array, cell array) to 1-D.

    Args:
        value: Anything ``loadmat`` returned.

    Returns:
        A 1-D numpy array with the same elements in MATLAB's storage order
        (a ``1 x N`` or ``N x 1`` array keeps its element order).
    """
    return np.asarray(value).reshape(-1)


def mat_string(value: Any, where: str) -> str:
    """Extract one string from a loaded MATLAB char array (possibly wrapped in cells).

    Args:
        value: A ``str``, a ``(1,)`` / ``(1, 1)`` array of ``str``, or an object array
            wrapping one of those.
        where: Description of the location, used in error messages (file and field).

    Returns:
        The string.

    Raises:
        DatasetFormatError: ``value`` is not exactly one string.
    """
    if isinstance(value, str):
        return value
    array = np.asarray(value)
    if array.dtype.kind == "U" and array.size == 1:
        return str(array.reshape(-1)[0])
    if array.dtype == object and array.size == 1:
        return mat_string(array.reshape(-1)[0], where)
    raise DatasetFormatError(
        f"{where}: expected one string, found an array of dtype {array.dtype} and shape {array.shape}."
    )


def mat_box(value: Any, where: str) -> np.ndarray | None:
    """Extract a ``(x, y, w, h)`` box from a loaded MATLAB numeric array.

    Args:
        value: A numeric array with 4 elements, or an empty array.
        where: Description of the location for error messages.

    Returns:
        ``[4]`` float64 ``(x, y, w, h)`` exactly as stored, or None for an empty array
        (CUHK-SYSU's way of saying "the person is not in this gallery image").

    Raises:
        DatasetFormatError: The value is not numeric or has a size other than 0 or 4.
    """
    array = np.asarray(value)
    if array.size == 0:
        return None
    if array.dtype.kind not in "biuf" or array.size != 4:
        raise DatasetFormatError(
            f"{where}: expected a box (x, y, w, h) of 4 numbers, found dtype {array.dtype} "
            f"and shape {array.shape}."
        )
    return array.astype(np.float64).reshape(4)


def single_record(value: Any, where: str) -> np.void:
    """Unwrap a ``1 x 1`` MATLAB struct (possibly inside a ``1 x 1`` cell) to its record.

    Args:
        value: What ``loadmat`` returned for the struct.
        where: Description of the location for error messages.

    Returns:
        The numpy record; index it by field name or position.

    Raises:
        DatasetFormatError: ``value`` does not hold exactly one struct.
    """
    array = np.asarray(value)
    if array.dtype == object and array.size == 1:
        return single_record(array.reshape(-1)[0], where)
    if array.dtype.names is None or array.size != 1:
        raise DatasetFormatError(
            f"{where}: expected a 1x1 struct, found dtype {array.dtype} and shape {array.shape}."
        )
    return array.reshape(-1)[0]


def record_field(record: Any, index: int, where: str, *, expected: str) -> Any:
    """Read field ``index`` of a MATLAB struct record by position.

    The reference readers (SeqNet, OIM) read most CUHK-SYSU structs positionally, so
    field order is part of the format; this checks the struct is wide enough.

    Args:
        record: A numpy record (an element of a struct array).
        index: 0-based field position.
        where: Description of the location for error messages.
        expected: Human description of the expected fields, e.g. ``"(imname, nAppear, box)"``.

    Returns:
        The field's value as ``loadmat`` returned it.

    Raises:
        DatasetFormatError: ``record`` is not a struct record or has too few fields.
    """
    names = getattr(getattr(record, "dtype", None), "names", None)
    if names is None or len(names) <= index:
        found = "no fields" if names is None else f"fields {names}"
        raise DatasetFormatError(f"{where}: expected a struct with fields {expected}, found {found}.")
    return record[index]
