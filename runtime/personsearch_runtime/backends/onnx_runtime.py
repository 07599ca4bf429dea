"""ONNX Runtime backend with explicit execution providers."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from personsearch_runtime.backends import TensorInfo
from personsearch_runtime.errors import BundleError, PersonSearchError

__all__ = ["OnnxRuntimeBackend", "providers_for_device"]

#: ORT's element type strings -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def providers_for_device(device: str, available: Sequence[str]) -> list[str]:
    """Return the explicit provider list for ``device``.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (``"cuda:N"`` selects GPU N through provider options).
        available: ``onnxruntime.get_available_providers()``.

    Raises:
        PersonSearchError: ``cuda`` asked for but the CUDA provider is not installed.
    """
    kind = device.split(":", 1)[0]
    if kind == "cpu":
        return ["CPUExecutionProvider"]
    if kind == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise PersonSearchError(
                "device 'cuda' needs ONNX Runtime's CUDA provider, which this onnxruntime lacks "
                f'(available: {", ".join(available)}); install it with: pip install "personsearch[gpu]" '
                "or use --device cpu"
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise PersonSearchError(f"unknown device {device!r}; use 'cpu' or 'cuda'")


class OnnxRuntimeBackend:
    """One ONNX model in an ``onnxruntime.InferenceSession``.

    Args:
        model_path: The ``.onnx`` file.
        device: ``"cpu"`` or ``"cuda[:N]"``; the provider list is always explicit.
        intra_op_threads: ORT intra-op threads (0 = ORT's default).
    """

    def __init__(self, *, model_path: str | Path, device: str = "cpu", intra_op_threads: int = 0) -> None:
        import onnxruntime as ort

        self.model_path = Path(model_path)
        self.device = device
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        # Without this, ORT logs a warning per session about unused initializers etc.
        options.log_severity_level = 3
        providers = providers_for_device(device, ort.get_available_providers())
        provider_options: list[dict[str, str]] = [{} for _ in providers]
        if providers[0] == "CUDAExecutionProvider" and ":" in device:
            provider_options[0] = {"device_id": device.split(":", 1)[1]}
        try:
            self.session = ort.InferenceSession(
                str(self.model_path),
                sess_options=options,
                providers=providers,
                provider_options=provider_options,
            )
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            raise BundleError(f"ONNX Runtime cannot load {self.model_path}: {exc}") from None
        self._inputs = tuple(self._info(a) for a in self.session.get_inputs())
        self._outputs = tuple(self._info(a) for a in self.session.get_outputs())

    @staticmethod
    def _info(arg: object) -> TensorInfo:
        dtype = _ORT_TYPES.get(arg.type, arg.type)  # type: ignore[attr-defined]
        shape = tuple(d if isinstance(d, (int, str)) else None for d in arg.shape)  # type: ignore[attr-defined]
        return TensorInfo(name=arg.name, dtype=dtype, shape=shape)  # type: ignore[attr-defined]

    @classmethod
    def is_available(cls) -> bool:
        """Return True when onnxruntime is installed."""
        return importlib.util.find_spec("onnxruntime") is not None

    def inputs(self) -> tuple[TensorInfo, ...]:
        """Return the model inputs in graph order."""
        return self._inputs

    def outputs(self) -> tuple[TensorInfo, ...]:
        """Return the model outputs in graph order."""
        return self._outputs

    @property
    def providers(self) -> list[str]:
        """Providers the session actually uses."""
        return list(self.session.get_providers())

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; see ``Backend.run``."""
        expected = {t.name: t for t in self._inputs}
        missing = sorted(set(expected) - set(feed))
        if missing:
            raise PersonSearchError(f"{self.model_path.name}: missing input(s) {', '.join(missing)}")
        arrays = {}
        for name, info in expected.items():
            value = np.asarray(feed[name])
            if value.dtype.name != info.dtype:
                value = value.astype(info.dtype)
            arrays[name] = np.ascontiguousarray(value)
        results = self.session.run(None, arrays)
        return {t.name: r for t, r in zip(self._outputs, results, strict=True)}
