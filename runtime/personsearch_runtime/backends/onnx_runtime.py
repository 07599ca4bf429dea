"""ONNX Runtime backend with explicit execution providers, and IOBinding on the GPU.

On ``cuda`` every run goes through an IOBinding: host inputs become ``OrtValue``s on the
GPU (one upload each), inputs already on the GPU (anything with
``__cuda_array_interface__``, e.g. CuPy arrays) are bound by pointer without a copy, and
outputs are bound to the GPU and copied to the host once, after the run. Without a
binding, ``InferenceSession.run`` would stage inputs and outputs through host buffers
and leave no way to feed device memory.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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
        io_binding: Run through an IOBinding with inputs and outputs on ``device``; None
            (the default) means on ``cuda`` only. On the CPU it changes nothing but the
            call path (used to test it).
    """

    def __init__(
        self,
        *,
        model_path: str | Path,
        device: str = "cpu",
        intra_op_threads: int = 0,
        io_binding: bool | None = None,
    ) -> None:
        import onnxruntime as ort

        self._ort = ort
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
        on_cuda = providers[0] == "CUDAExecutionProvider"
        #: (device type, device id) that IOBinding places inputs and outputs on.
        self.binding_device = (
            ("cuda", int(device.split(":", 1)[1]) if ":" in device else 0) if on_cuda else ("cpu", 0)
        )
        self.io_binding = on_cuda if io_binding is None else bool(io_binding)

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

    def run(self, feed: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the model; see ``Backend.run``.

        Args:
            feed: Input name -> host array (converted to the input's dtype), or, with
                ``io_binding`` on ``cuda``, a C-contiguous device array of the input's dtype
                exposing ``__cuda_array_interface__`` (bound without a copy).

        Returns:
            Output name -> host array.
        """
        expected = {t.name: t for t in self._inputs}
        missing = sorted(set(expected) - set(feed))
        if missing:
            raise PersonSearchError(f"{self.model_path.name}: missing input(s) {', '.join(missing)}")
        arrays: dict[str, Any] = {}
        for name, info in expected.items():
            value = feed[name]
            if hasattr(value, "__cuda_array_interface__"):
                if not (self.io_binding and self.binding_device[0] == "cuda"):
                    raise PersonSearchError(
                        f"{self.model_path.name}: input {name} is a GPU array, but this session runs on "
                        f"{self.device}; pass a host array or create the backend with device='cuda'"
                    )
                arrays[name] = value
                continue
            value = np.asarray(value)
            if value.dtype.name != info.dtype:
                value = value.astype(info.dtype)
            arrays[name] = np.ascontiguousarray(value)
        if not self.io_binding:
            results = self.session.run(None, arrays)
            return {t.name: r for t, r in zip(self._outputs, results, strict=True)}
        return self._run_bound(arrays)

    def _run_bound(self, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """One run through an IOBinding on ``binding_device``; outputs copied to the host once."""
        ort = self._ort
        device_type, device_id = self.binding_device
        binding = self.session.io_binding()
        # OrtValues made from host arrays must outlive the run: the binding only points at them.
        keep_alive = []
        for name, value in arrays.items():
            if isinstance(value, np.ndarray):
                ort_value = ort.OrtValue.ortvalue_from_numpy(value, device_type, device_id)
                keep_alive.append(ort_value)
                binding.bind_ortvalue_input(name, ort_value)
            else:
                dtype, shape, pointer = _device_array(value, name, self._input_dtype(name))
                binding.bind_input(name, device_type, device_id, dtype, shape, pointer)
        for info in self._outputs:
            # ORT allocates each output on the device at the size the run produces.
            binding.bind_output(info.name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        results = binding.copy_outputs_to_cpu()
        return {t.name: np.asarray(r) for t, r in zip(self._outputs, results, strict=True)}

    def _input_dtype(self, name: str) -> str:
        return next(t.dtype for t in self._inputs if t.name == name)


def _device_array(value: Any, name: str, dtype: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Check a ``__cuda_array_interface__`` input and wait for the stream that wrote it.

    Args:
        value: The device array (CuPy or any producer of the interface).
        name: The input's name, for messages.
        dtype: The numpy dtype name the graph expects.

    Returns:
        (dtype, shape, device pointer) for ``IOBinding.bind_input``.

    Raises:
        PersonSearchError: Wrong dtype, or not C-contiguous (no conversion happens on the device).
    """
    iface = value.__cuda_array_interface__
    array_dtype = np.dtype(iface["typestr"])
    shape = tuple(int(d) for d in iface["shape"])
    if array_dtype.name != dtype:
        raise PersonSearchError(f"GPU input {name} is {array_dtype.name}; the graph wants {dtype}")
    strides = iface.get("strides")
    if strides is not None and tuple(strides) != _c_strides(shape, array_dtype.itemsize):
        raise PersonSearchError(f"GPU input {name} must be C-contiguous (e.g. cupy.ascontiguousarray)")
    # Interface v3: a producer's stream that may still be writing the data. ORT reads on
    # its own stream, which knows nothing of that work, so wait for it here.
    stream = iface.get("stream")
    if stream is not None:
        _synchronize_stream(int(stream))
    return array_dtype, shape, int(iface["data"][0])


def _c_strides(shape: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _synchronize_stream(stream: int) -> None:
    """Block until CUDA stream ``stream`` (a handle, or 1/2 for the default streams) is idle."""
    from personsearch_runtime.gpu.cuda_memory import check, cudart

    check(cudart().cudaStreamSynchronize(stream), "cudaStreamSynchronize")
