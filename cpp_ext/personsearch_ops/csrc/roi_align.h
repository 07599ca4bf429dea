// Shared declarations for the personsearch_ops RoIAlign operators.
//
// The schemas live in roi_align.cpp; kernels register themselves per dispatch key from
// cpu/roi_align_cpu.cpp and cuda/roi_align_cuda.cu. This header holds the argument checks
// both backends run before touching memory, so error messages are identical on CPU and CUDA.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace personsearch_ops {

// Pyramid-level parameters of the multi-level op (torchvision LevelMapper); k_min < 0 never
// occurs for real pyramids, and the single-level op does not use this struct.
struct LevelMapping {
  int64_t k_min;
  double canonical_scale;
  double canonical_level;
};

// True when `t` is [N, C, H, W] stored channels-last (and not also plain contiguous, which
// happens for C == 1 or H == W == 1: those take the NCHW path).
bool is_channels_last(const at::Tensor& t);

// Checks rois ([K, 5]; float64 for float64 features, float32 otherwise; same device as the
// features) and, for CPU tensors only, that every batch index lies in [0, batch); throws
// c10::Error naming the first offending RoI. Device tensors get the shape, dtype and device
// checks alone (no host read-back, so no synchronisation); their kernels skip out-of-range RoIs
// (zero output, no gradient).
void check_rois(const at::Tensor& rois, const at::Tensor& features, int64_t batch, const char* op_name);

// Checks one feature map: 4-D, floating dtype, and (for levels after the first) the same
// device, dtype, batch and channel count as the first.
void check_features(const at::Tensor& features, const at::Tensor& reference, const char* op_name);

// Common pooled-size / sampling checks.
void check_pooling_args(int64_t pooled_height, int64_t pooled_width, const char* op_name);

}  // namespace personsearch_ops
