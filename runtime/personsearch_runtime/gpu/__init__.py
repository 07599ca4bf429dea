"""The GPU path: CUDA memory (cuda-python), our RoIAlign compiled with NVRTC, the device pipeline.

Nothing here is imported by ``import personsearch_runtime``; cuda-python and CuPy load
only when a GPU path is used.
"""
