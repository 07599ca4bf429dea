"""TensorRT backend (TensorRT 10.x / 11.x Python API), kept thin.

Load order: read the sidecar and the plan, check the plan's SHA-256 against the sidecar,
compare the sidecar with this machine (ONNX hash and TensorRT version first, which need
no GPU, then the compute capability), initialise TensorRT's plugin library, and only
then deserialise - a mismatched plan is refused with a message instead of failing
inside TensorRT. The plugin library (``libnvinfer_plugin``) holds ``ROIAlign_TRT``, which
the ONNX parser maps every ``RoiAlign`` node of ``detector.onnx`` and ``query_encoder.onnx``
to; a plan using it cannot be deserialised before the registry knows it.

Running uses the named-tensor API: one execution context per CUDA stream,
``set_optimization_profile_async`` with the profile chosen by batch size,
``set_input_shape``, ``set_tensor_address`` on owned device buffers (cuda-python),
``execute_async_v3``, then the output copies and one stream sync.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from personsearch_runtime.backends import TensorInfo
from personsearch_runtime.backends.engine_sidecar import (
    EngineSidecar,
    build_engine_command,
    check_plan_bytes,
    check_sidecar_device,
    check_sidecar_software,
    choose_profile,
    sidecar_path,
)
from personsearch_runtime.errors import EngineError, PersonSearchError

__all__ = ["TensorRTBackend", "init_trt_plugins", "trt_logger"]

_PLUGIN_LOCK = threading.Lock()
# (tensorrt module, logger) pairs. TensorRT keeps a raw pointer to the logger handed to
# the plugin library, so the logger must live as long as the process: these references
# are what keeps it alive.
_LOGGERS: list[tuple[ModuleType, Any]] = []
_PLUGINS_READY: list[tuple[ModuleType, Any]] = []


def trt_logger(trt: ModuleType) -> Any:
    """Return this process's TensorRT logger (one per ``tensorrt`` module, at WARNING).

    Builders, parsers and runtimes share it, so the plugin library is initialised once.

    Args:
        trt: The imported ``tensorrt`` module.
    """
    with _PLUGIN_LOCK:
        for module, logger in _LOGGERS:
            if module is trt:
                return logger
        logger = trt.Logger(trt.Logger.WARNING)
        _LOGGERS.append((trt, logger))
        return logger


def init_trt_plugins(trt: ModuleType, logger: Any) -> None:
    """Register TensorRT's standard plugins (``ROIAlign_TRT`` among them), once per logger.

    Must run before ``OnnxParser.parse*`` (the parser resolves ``RoiAlign`` to the
    plugin's creator) and before ``Runtime.deserialize_cuda_engine`` (the plan names the
    plugin). Calling it again with the same logger does nothing.

    Args:
        trt: The imported ``tensorrt`` module.
        logger: The ``trt.ILogger`` the plugin library reports through; kept alive here.

    Raises:
        EngineError: ``init_libnvinfer_plugins`` reported failure.
    """
    with _PLUGIN_LOCK:
        if any(module is trt and known is logger for module, known in _PLUGINS_READY):
            return
        if not trt.init_libnvinfer_plugins(logger, ""):
            raise EngineError(
                "TensorRT's plugin library (libnvinfer_plugin) could not be initialised, so engines using "
                "ROIAlign_TRT (the detector and the query encoder) can be neither built nor loaded; "
                'check that the TensorRT libraries are complete (pip install "personsearch[tensorrt]")'
            )
        _PLUGINS_READY.append((trt, logger))


class _Context:
    """One execution context with its stream and buffers (never shared across threads)."""

    def __init__(self, engine: Any, stream: Any, buffers: dict[str, Any]) -> None:
        self.context = engine.create_execution_context()
        self.stream = stream
        self.buffers = buffers
        self.profile = -1
        self.lock = threading.Lock()
        self.keep_alive: dict[str, Any] = {}


class TensorRTBackend:
    """One TensorRT engine.

    Args:
        model_path: The engine file (``X.plan``); its sidecar ``X.plan.json`` must exist.
        onnx_sha256: The bundle's hash of the ONNX file the engine must come from.
        device: ``"cuda"`` or ``"cuda:N"``.
        num_streams: Execution contexts (each with its own stream and buffers); calls from
            different threads use different contexts.
    """

    def __init__(
        self,
        *,
        model_path: str | Path,
        onnx_sha256: str | None = None,
        device: str = "cuda",
        num_streams: int = 1,
    ) -> None:
        import tensorrt as trt

        from personsearch_runtime.gpu.cuda_memory import (
            DeviceBuffer,
            Stream,
            check,
            compute_capability,
            cudart,
        )

        if not device.startswith("cuda"):
            raise PersonSearchError("the TensorRT backend runs on --device cuda only")
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise EngineError(
                f"the TensorRT engine for '{self.model_path.stem}' is missing ({self.model_path}); "
                f"build it with '{build_engine_command(self.model_path)}'"
            )
        # Everything that can be refused without a GPU is, before any CUDA call.
        self.sidecar = EngineSidecar.load(sidecar_path(self.model_path))
        plan = self.model_path.read_bytes()
        check_plan_bytes(self.sidecar, plan, self.model_path)
        check_sidecar_software(self.sidecar, tensorrt_version=trt.__version__, onnx_sha256=onnx_sha256)
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        check(cudart().cudaSetDevice(index), "cudaSetDevice")
        check_sidecar_device(self.sidecar, compute_capability=compute_capability(index))
        self._trt = trt
        self._logger = trt_logger(trt)
        init_trt_plugins(trt, self._logger)
        self._runtime = trt.Runtime(self._logger)
        if self.sidecar.version_compatible:
            self._runtime.engine_host_code_allowed = True
        self.engine = self._runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise EngineError(
                f"TensorRT could not deserialise {self.model_path} (see the log above); rebuild it"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = tuple(self._info(n) for n in names if self._is_input(n))
        self._outputs = tuple(self._info(n) for n in names if not self._is_input(n))
        if self.engine.num_optimization_profiles != len(self.sidecar.profiles):
            raise EngineError(
                f"{self.model_path}: the engine has {self.engine.num_optimization_profiles} "
                "profiles, its sidecar "
                f"{len(self.sidecar.profiles)}; rebuild the engine"
            )
        self._contexts = [
            _Context(self.engine, Stream(), {n: DeviceBuffer() for n in names})
            for _ in range(max(1, num_streams))
        ]
        self._next = 0
        self._pick_lock = threading.Lock()
        self._check = check

    def _is_input(self, name: str) -> bool:
        return self.engine.get_tensor_mode(name) == self._trt.TensorIOMode.INPUT

    def _info(self, name: str) -> TensorInfo:
        dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name))).name
        shape = tuple(int(d) if d >= 0 else None for d in self.engine.get_tensor_shape(name))
        return TensorInfo(name=name, dtype=dtype, shape=shape)

    @classmethod
    def is_available(cls) -> bool:
        """Return True when tensorrt and cuda-python are installed."""
        return (
            importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("cuda") is not None
        )

    def inputs(self) -> tuple[TensorInfo, ...]:
        """Return the engine inputs."""
        return self._inputs

    def outputs(self) -> tuple[TensorInfo, ...]:
        """Return the engine outputs."""
        return self._outputs

    def _acquire(self) -> _Context:
        with self._pick_lock:
            ctx = self._contexts[self._next % len(self._contexts)]
            self._next += 1
        return ctx

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on host arrays; see ``Backend.run``."""
        arrays = {}
        for info in self._inputs:
            if info.name not in feed:
                raise PersonSearchError(f"{self.model_path.name}: missing input {info.name}")
            arrays[info.name] = np.ascontiguousarray(np.asarray(feed[info.name]), dtype=info.dtype)
        profile = choose_profile(self.sidecar.profiles, {k: v.shape for k, v in arrays.items()})
        ctx = self._acquire()
        with ctx.lock:
            context = ctx.context
            if ctx.profile != profile:
                if not context.set_optimization_profile_async(profile, ctx.stream.ptr):
                    raise EngineError(f"{self.model_path.name}: cannot select optimization profile {profile}")
                ctx.profile = profile
            for name, array in arrays.items():
                if not context.set_input_shape(name, array.shape):
                    raise EngineError(
                        f"{self.model_path.name}: shape {array.shape} rejected for input {name}"
                    )
                ctx.buffers[name].upload(array, ctx.stream)
                context.set_tensor_address(name, ctx.buffers[name].ptr)
            results = {}
            for info in self._outputs:
                shape = tuple(context.get_tensor_shape(info.name))
                if any(d < 0 for d in shape):
                    raise EngineError(
                        f"{self.model_path.name}: output {info.name} has a data-dependent "
                        f"shape {shape}; bundles "
                        "use fixed top-K outputs - re-export the bundle"
                    )
                out = np.empty(shape, dtype=info.dtype)
                ctx.buffers[info.name].reserve(out.nbytes)
                context.set_tensor_address(info.name, ctx.buffers[info.name].ptr)
                results[info.name] = out
            if not context.execute_async_v3(ctx.stream.ptr):
                raise EngineError(f"{self.model_path.name}: execute_async_v3 failed (see the TensorRT log)")
            for name, out in results.items():
                ctx.buffers[name].download(out, ctx.stream)
            ctx.stream.synchronize()
        return results

    def run_device(self, feed: Mapping[str, Any], stream: int | None = None) -> dict[str, Any]:
        """Run the engine on CuPy arrays, returning CuPy arrays (no host copies).

        Work is queued on ``stream`` (CuPy's current stream when None), so it orders with
        the kernels around it.

        Args:
            feed: Input name -> C-contiguous CuPy array of the input's dtype.
            stream: CUDA stream handle to queue on (e.g. ``cupy.cuda.Stream.ptr``).

        Returns:
            Output name -> CuPy array.
        """
        import cupy

        arrays = {}
        for info in self._inputs:
            if info.name not in feed:
                raise PersonSearchError(f"{self.model_path.name}: missing input {info.name}")
            arrays[info.name] = cupy.ascontiguousarray(feed[info.name], dtype=info.dtype)
        profile = choose_profile(self.sidecar.profiles, {k: tuple(v.shape) for k, v in arrays.items()})
        stream = cupy.cuda.get_current_stream().ptr if stream is None else int(stream)
        ctx = self._acquire()
        with ctx.lock:
            context = ctx.context
            if ctx.profile != profile:
                if not context.set_optimization_profile_async(profile, stream):
                    raise EngineError(f"{self.model_path.name}: cannot select optimization profile {profile}")
                ctx.profile = profile
            for name, array in arrays.items():
                if not context.set_input_shape(name, tuple(array.shape)):
                    raise EngineError(
                        f"{self.model_path.name}: shape {tuple(array.shape)} rejected for input {name}"
                    )
                context.set_tensor_address(name, array.data.ptr)
            results = {}
            for info in self._outputs:
                shape = tuple(context.get_tensor_shape(info.name))
                if any(d < 0 for d in shape):
                    raise EngineError(
                        f"{self.model_path.name}: output {info.name} has a data-dependent shape {shape}"
                    )
                out = cupy.empty(shape, dtype=info.dtype)
                context.set_tensor_address(info.name, out.data.ptr)
                results[info.name] = out
            if not context.execute_async_v3(stream):
                raise EngineError(f"{self.model_path.name}: execute_async_v3 failed (see the TensorRT log)")
            # Inputs must outlive the queued work; keep them until the next call on this context.
            ctx.keep_alive = arrays
        return results
