// CUDA dispatch of the personsearch_ops RoIAlign operators.
//
// The kernels are the device code of roi_align_kernels.cuh, the same torch-free source the
// runtime compiles with NVRTC; this file only checks arguments, picks the layout (channels-last
// features -> the coalesced "nhwc" kernels) and launches. It launches its own instantiations of
// that device code rather than the extern "C" entry points, for two reasons: the multi-level
// kernels take the level table by value (see MultiLevelKernels below), and the float64 kernels
// take float64 rois, spatial scales and level mapping (the entry points' rois and scale are
// float32 for every dtype), so float64 pooling rounds no coordinate to float32.
//
// Nothing here reads device memory back to the host or waits for the device: the batch-index
// check runs on the host for CPU rois only (check_rois), out-of-range RoIs are skipped by the
// kernels, and the level table travels as a kernel argument, so every call only enqueues work
// on the current stream.
// Only c10/cuda headers: ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers that
// a bare CUDA toolkit (runtime + nvcc) does not ship.
#include <ATen/Dispatch.h>
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../roi_align.h"
#include "roi_align_kernels.cuh"

namespace personsearch_ops {
namespace {

// Device types per torch scalar type: the CUDA element type, its accumulation type, and the
// rois' type (float64 for float64 features, float32 otherwise; check_rois enforces it).
template <typename T>
struct Types;

#define PS_DEFINE_TYPES(TORCH_T, CUDA_T, ROI_T)           \
  template <>                                             \
  struct Types<TORCH_T> {                                 \
    using cuda_t = CUDA_T;                                \
    using acc_t = ps_roi_align::AccType<CUDA_T>::type;    \
    using roi_t = ROI_T;                                  \
  };

PS_DEFINE_TYPES(float, float, float)
PS_DEFINE_TYPES(double, double, double)
PS_DEFINE_TYPES(at::Half, __half, float)
PS_DEFINE_TYPES(at::BFloat16, __nv_bfloat16, float)
#undef PS_DEFINE_TYPES

template <typename T, bool NHWC, typename R>
__global__ void single_level_fwd(const T* __restrict__ input, const R* __restrict__ rois, T* __restrict__ output,
                                 int num_rois, int batch, int channels, int height, int width, int pooled_h,
                                 int pooled_w, typename ps_roi_align::AccType<T>::type spatial_scale,
                                 int sampling_ratio, int aligned) {
  ps_roi_align::forward_single<T, NHWC, R>(input, rois, output, num_rois, batch, channels, height, width, pooled_h,
                                           pooled_w, spatial_scale, sampling_ratio, aligned);
}

template <typename T, bool NHWC, typename R>
__global__ void single_level_bwd(const T* __restrict__ grad_output, const R* __restrict__ rois,
                                 typename ps_roi_align::AccType<T>::type* __restrict__ grad_input, int num_rois,
                                 int batch, int channels, int height, int width, int pooled_h, int pooled_w,
                                 typename ps_roi_align::AccType<T>::type spatial_scale, int sampling_ratio,
                                 int aligned) {
  ps_roi_align::backward_single<T, NHWC, R>(grad_output, rois, grad_input, num_rois, batch, channels, height, width,
                                            pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned);
}

template <typename T, typename R>
struct SingleLevelKernels {
  static constexpr auto fwd(bool nhwc) {
    return nhwc ? single_level_fwd<T, true, R> : single_level_fwd<T, false, R>;
  }
  static constexpr auto bwd(bool nhwc) {
    return nhwc ? single_level_bwd<T, true, R> : single_level_bwd<T, false, R>;
  }
};

// Multi-level kernels with the level table in the kernel's parameter space. The table holds
// this call's data pointers, so a table in device memory would need an upload before every
// launch, and a copy from pageable host memory blocks the host until the device has drained
// the stream.
template <typename T, bool NHWC, typename R>
__global__ void multi_level_fwd_by_value(const ps_roi_align::LevelArgs levels, int num_levels, int k_min,
                                         R canonical_scale, R canonical_level, const R* __restrict__ rois,
                                         T* __restrict__ output, int num_rois, int batch, int channels,
                                         int pooled_h, int pooled_w, int sampling_ratio, int aligned) {
  ps_roi_align::forward_multi<T, NHWC, R>(levels, num_levels, k_min, canonical_scale, canonical_level, rois, output,
                                       num_rois, batch, channels, pooled_h, pooled_w, sampling_ratio, aligned);
}

template <typename T, bool NHWC, typename R>
__global__ void multi_level_bwd_by_value(const T* __restrict__ grad_output, const ps_roi_align::LevelArgs levels,
                                         int num_levels, int k_min, R canonical_scale, R canonical_level,
                                         const R* __restrict__ rois, int num_rois, int batch, int channels,
                                         int pooled_h, int pooled_w, int sampling_ratio, int aligned) {
  ps_roi_align::backward_multi<T, NHWC, R>(grad_output, levels, num_levels, k_min, canonical_scale, canonical_level,
                                        rois, num_rois, batch, channels, pooled_h, pooled_w, sampling_ratio,
                                        aligned);
}

template <typename T, typename R>
struct MultiLevelKernels {
  static constexpr auto fwd(bool nhwc) {
    return nhwc ? multi_level_fwd_by_value<T, true, R> : multi_level_fwd_by_value<T, false, R>;
  }
  static constexpr auto bwd(bool nhwc) {
    return nhwc ? multi_level_bwd_by_value<T, true, R> : multi_level_bwd_by_value<T, false, R>;
  }
};

constexpr int kThreads = 256;

int launch_blocks(int64_t total) {
  // Grid-stride kernels: cap the grid, enough blocks to fill every SM many times over.
  const int64_t wanted = (total + kThreads - 1) / kThreads;
  int device = 0;
  int sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t cap = static_cast<int64_t>(sms) * 64;
  return static_cast<int>(std::max<int64_t>(1, std::min(wanted, cap)));
}

at::MemoryFormat format_of(bool nhwc) {
  return nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

void check_level_count(size_t levels, const char* op_name) {
  TORCH_CHECK(levels <= PS_ROI_ALIGN_MAX_LEVELS, op_name, ": the CUDA kernels take at most ",
              PS_ROI_ALIGN_MAX_LEVELS, " pyramid levels, got ", levels);
}

// The level table (rows as documented in roi_align_kernels.cuh) as a by-value kernel argument.
ps_roi_align::LevelArgs level_args(const std::vector<void*>& pointers, at::IntArrayRef heights,
                                   at::IntArrayRef widths, at::ArrayRef<double> scales) {
  TORCH_INTERNAL_ASSERT(pointers.size() <= PS_ROI_ALIGN_MAX_LEVELS);
  ps_roi_align::LevelArgs args{};
  for (size_t l = 0; l < pointers.size(); ++l) {
    args.level[l].data = pointers[l];
    args.level[l].height = static_cast<int>(heights[l]);
    args.level[l].width = static_cast<int>(widths[l]);
    args.level[l].scale = scales[l];
  }
  return args;
}

void check_int_range(int64_t value, const char* what, const char* op_name) {
  TORCH_CHECK(value <= INT32_MAX, op_name, ": ", what, " = ", value, " exceeds the kernels' int32 range");
}

at::Tensor forward_cuda(const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
                        at::ArrayRef<double> scales, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                        bool aligned, const LevelMapping* mapping, const char* op_name) {
  TORCH_CHECK(!features.empty(), op_name, ": needs at least one feature level");
  TORCH_CHECK(features.size() == scales.size(), op_name, ": got ", features.size(), " feature levels but ",
              scales.size(), " spatial scales");
  if (mapping != nullptr) check_level_count(features.size(), op_name);
  const at::Tensor& first = features[0];
  for (const auto& f : features) check_features(f, first, op_name);
  check_pooling_args(pooled_h, pooled_w, op_name);
  check_rois(rois_in, first, first.size(0), op_name);
  c10::cuda::CUDAGuard guard(first.device());
  const bool nhwc = is_channels_last(first);
  const at::Tensor rois = rois_in.contiguous();
  std::vector<at::Tensor> held;
  std::vector<void*> pointers;
  std::vector<int64_t> heights, widths;
  for (const auto& f : features) {
    held.push_back(f.contiguous(format_of(nhwc)));
    pointers.push_back(held.back().data_ptr());
    heights.push_back(f.size(2));
    widths.push_back(f.size(3));
    check_int_range(f.size(2), "height", op_name);
    check_int_range(f.size(3), "width", op_name);
  }
  const int64_t num_rois = rois.size(0), batch = first.size(0), channels = first.size(1);
  check_int_range(num_rois, "number of rois", op_name);
  check_int_range(channels, "channels", op_name);
  at::Tensor out =
      at::empty({num_rois, channels, pooled_h, pooled_w}, first.options().memory_format(format_of(nhwc)));
  const int64_t total = out.numel();
  if (total == 0) return out;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int blocks = launch_blocks(total);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "personsearch_roi_align_cuda", [&] {
    using E = Types<scalar_t>;
    using T = typename E::cuda_t;
    using A = typename E::acc_t;
    using R = typename E::roi_t;
    T* o = reinterpret_cast<T*>(out.data_ptr<scalar_t>());
    if (mapping == nullptr) {
      SingleLevelKernels<T, R>::fwd(nhwc)<<<blocks, kThreads, 0, stream>>>(
          reinterpret_cast<const T*>(pointers[0]), rois.data_ptr<R>(), o, static_cast<int>(num_rois),
          static_cast<int>(batch), static_cast<int>(channels), static_cast<int>(heights[0]),
          static_cast<int>(widths[0]), static_cast<int>(pooled_h), static_cast<int>(pooled_w),
          static_cast<A>(scales[0]), static_cast<int>(sampling_ratio), aligned ? 1 : 0);
    } else {
      MultiLevelKernels<T, R>::fwd(nhwc)<<<blocks, kThreads, 0, stream>>>(
          level_args(pointers, heights, widths, scales), static_cast<int>(features.size()),
          static_cast<int>(mapping->k_min), static_cast<R>(mapping->canonical_scale),
          static_cast<R>(mapping->canonical_level), rois.data_ptr<R>(), o, static_cast<int>(num_rois),
          static_cast<int>(batch), static_cast<int>(channels), static_cast<int>(pooled_h),
          static_cast<int>(pooled_w), static_cast<int>(sampling_ratio), aligned ? 1 : 0);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::vector<at::Tensor> backward_cuda(const at::Tensor& grad_in, const at::Tensor& rois_in,
                                      at::ArrayRef<double> scales, int64_t pooled_h, int64_t pooled_w,
                                      int64_t sampling_ratio, bool aligned, const LevelMapping* mapping,
                                      int64_t batch, int64_t channels, at::IntArrayRef heights,
                                      at::IntArrayRef widths, bool nhwc, const char* op_name) {
  TORCH_CHECK(grad_in.dim() == 4 && grad_in.size(1) == channels && grad_in.size(2) == pooled_h &&
                  grad_in.size(3) == pooled_w,
              op_name, ": grad must be [K, ", channels, ", ", pooled_h, ", ", pooled_w, "], got ", grad_in.sizes());
  TORCH_CHECK(heights.size() == scales.size() && widths.size() == scales.size(), op_name,
              ": one height, width and scale per level");
  if (mapping != nullptr) check_level_count(scales.size(), op_name);
  check_rois(rois_in, grad_in, batch, op_name);
  c10::cuda::CUDAGuard guard(grad_in.device());
  const at::Tensor rois = rois_in.contiguous();
  const at::Tensor grad = grad_in.contiguous(format_of(nhwc));
  const auto acc_dtype = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<at::Tensor> buffers;
  std::vector<void*> pointers;
  for (size_t l = 0; l < heights.size(); ++l) {
    buffers.push_back(at::empty({batch, channels, heights[l], widths[l]},
                                grad.options().dtype(acc_dtype).memory_format(format_of(nhwc)))
                          .zero_());
    pointers.push_back(buffers.back().data_ptr());
  }
  const int64_t total = grad.numel();
  if (total > 0) {
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const int blocks = launch_blocks(total);
    const int num_rois = static_cast<int>(rois.size(0));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "personsearch_roi_align_cuda_bwd",
                                    [&] {
      using E = Types<scalar_t>;
      using T = typename E::cuda_t;
      using A = typename E::acc_t;
      using R = typename E::roi_t;
      const T* g = reinterpret_cast<const T*>(grad.data_ptr<scalar_t>());
      if (mapping == nullptr) {
        SingleLevelKernels<T, R>::bwd(nhwc)<<<blocks, kThreads, 0, stream>>>(
            g, rois.data_ptr<R>(), static_cast<A*>(pointers[0]), num_rois, static_cast<int>(batch),
            static_cast<int>(channels), static_cast<int>(heights[0]), static_cast<int>(widths[0]),
            static_cast<int>(pooled_h), static_cast<int>(pooled_w), static_cast<A>(scales[0]),
            static_cast<int>(sampling_ratio), aligned ? 1 : 0);
      } else {
        MultiLevelKernels<T, R>::bwd(nhwc)<<<blocks, kThreads, 0, stream>>>(
            g, level_args(pointers, heights, widths, scales), static_cast<int>(heights.size()),
            static_cast<int>(mapping->k_min), static_cast<R>(mapping->canonical_scale),
            static_cast<R>(mapping->canonical_level), rois.data_ptr<R>(), num_rois,
            static_cast<int>(batch), static_cast<int>(channels), static_cast<int>(pooled_h),
            static_cast<int>(pooled_w), static_cast<int>(sampling_ratio), aligned ? 1 : 0);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  for (auto& b : buffers) b = b.to(grad.scalar_type());
  return buffers;
}

at::Tensor roi_align_cuda(const at::Tensor& input, const at::Tensor& rois, double spatial_scale,
                          int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  const double scales[1] = {spatial_scale};
  return forward_cuda({input}, rois, scales, pooled_height, pooled_width, sampling_ratio, aligned, nullptr,
                      "personsearch_ops.roi_align");
}

at::Tensor roi_align_backward_cuda(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                   int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                   int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                   bool channels_last) {
  const double scales[1] = {spatial_scale};
  const int64_t h[1] = {height};
  const int64_t w[1] = {width};
  return backward_cuda(grad, rois, scales, pooled_height, pooled_width, sampling_ratio, aligned, nullptr, batch_size,
                       channels, h, w, channels_last, "personsearch_ops.roi_align_backward")[0];
}

at::Tensor multi_level_roi_align_cuda(at::TensorList features, const at::Tensor& rois, at::ArrayRef<double> scales,
                                      int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio,
                                      bool aligned, int64_t k_min, double canonical_scale, double canonical_level) {
  const LevelMapping mapping{k_min, canonical_scale, canonical_level};
  return forward_cuda(features.vec(), rois, scales, pooled_height, pooled_width, sampling_ratio, aligned, &mapping,
                      "personsearch_ops.multi_level_roi_align");
}

std::vector<at::Tensor> multi_level_roi_align_backward_cuda(
    const at::Tensor& grad, const at::Tensor& rois, at::ArrayRef<double> scales, int64_t pooled_height,
    int64_t pooled_width, int64_t sampling_ratio, bool aligned, int64_t k_min, double canonical_scale,
    double canonical_level, int64_t batch_size, int64_t channels, at::IntArrayRef heights, at::IntArrayRef widths,
    bool channels_last) {
  const LevelMapping mapping{k_min, canonical_scale, canonical_level};
  return backward_cuda(grad, rois, scales, pooled_height, pooled_width, sampling_ratio, aligned, &mapping,
                       batch_size, channels, heights, widths, channels_last,
                       "personsearch_ops.multi_level_roi_align_backward");
}

}  // namespace

TORCH_LIBRARY_IMPL(personsearch_ops, CUDA, m) {
  m.impl("roi_align", &roi_align_cuda);
  m.impl("roi_align_backward", &roi_align_backward_cuda);
  m.impl("multi_level_roi_align", &multi_level_roi_align_cuda);
  m.impl("multi_level_roi_align_backward", &multi_level_roi_align_backward_cuda);
}

}  // namespace personsearch_ops
