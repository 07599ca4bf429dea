// RoIAlign CUDA kernels for personsearch: plain CUDA C++, no torch headers.
//
// This one file has two consumers:
//   1. nvcc, through csrc/cuda/roi_align_cuda.cu, which wraps the entry points as the
//      personsearch_ops torch op (CUDA dispatch key);
//   2. NVRTC at run time (the torch-free runtime's GPU path), compiled straight from the
//      installed package file  personsearch_ops/csrc/cuda/roi_align_kernels.cuh
//      with options  -std=c++17 -I<CUDA include dir>  (the dir holding cuda_fp16.h and
//      cuda_bf16.h) and --gpu-architecture=sm_XX. Nothing else is needed.
// The file path, the entry-point names and their argument lists are a stable interface: the
// runtime looks them up by name. Change them only together with the runtime loader.
//
// Semantics are torchvision.ops.roi_align's (the Caffe2-derived kernel):
//   * rois are [K, 5] rows (batch_index, x1, y1, x2, y2) in image coordinates (float32 in the
//     entry points; see the dtype notes below);
//   * aligned != 0 subtracts 0.5 from every scaled coordinate and does not clamp the RoI size;
//     aligned == 0 clamps RoI width/height to at least 1 feature pixel;
//   * sampling_ratio > 0 takes that many samples per bin and axis; <= 0 takes
//     ceil(roi_size / pooled_size) (adaptive, per RoI);
//   * a sample outside [-1, H] x [-1, W] contributes 0; otherwise it is clamped to the map;
//   * a bin's value is the mean over its samples (count = max(grid_h * grid_w, 1)).
// A RoI whose batch index b does not truncate into [0, batch), that is unless -1 < b < batch
// (a NaN index included), yields zeros in the forward kernels and adds nothing in the backward
// kernels. The torch op relies on this for CUDA tensors: it rejects such RoIs with an error only
// when the rois are on the CPU, because checking device rois would read them back to the host.
//
// Multi-level entry points map each RoI to a pyramid level in the kernel with torchvision's
// LevelMapper:  level = floor(canonical_level + log2(sqrt(area) / canonical_scale) + 1e-6),
// area = (x2 - x1) * (y2 - y1) in image pixels, clamped to [k_min, k_min + num_levels - 1],
// all in float32. The level table is a device array of int64 [num_levels, 4], one row per
// level, finest first:  { data pointer, height, width, bits }  where `bits` holds the IEEE-754
// float32 bit pattern of that level's spatial scale in its low 32 bits. Every level has the
// same batch size and channel count and the same layout (NCHW or NHWC). The torch op itself
// launches its own (non-extern, C++ template) instantiations that take the same rows by value
// as a kernel argument, ps_roi_align::LevelArgs, so that no table has to be copied to the device
// before each launch; those are not part of the stable interface.
//
// Layouts. "nchw" kernels read features [N, C, H, W] and write output [K, C, PH, PW], one
// thread per output element with pw fastest (as torchvision). "nhwc" kernels read
// channels-last features [N, H, W, C] and write output [K, PH, PW, C] (a channels-last
// [K, C, PH, PW] tensor), one thread per output element with the channel fastest, so a warp
// reads 32 consecutive channels of the same pixel: coalesced. Forward kernels use no atomics.
// Backward kernels add into a zero-initialised gradient buffer of the accumulation type
// (float; double for f64 features) with atomicAdd; the caller casts it to the feature dtype.
//
// Dtype suffixes: f32 (float), f16 (__half), bf16 (__nv_bfloat16), f64 (double). Coordinate
// math and accumulation are float32 for f32/f16/bf16 and float64 for f64. The entry points take
// float32 rois and a float32 spatial scale for every suffix. The device templates below are
// also generic in the rois' type R: the torch op instantiates its f64 kernels with double rois,
// a double spatial scale and double level mapping (not part of the stable interface), so a
// float64 pooling there rounds no coordinate to float32.
//
// Entry points (all `extern "C" __global__`, launch with any 1-D grid; they grid-stride over
// the output, so any block/grid size is correct; 256 threads per block is a good choice):
//
//   ps_roi_align_fwd_{nchw,nhwc}_{sfx}(
//       const T* input, const float* rois, T* output,
//       int num_rois, int batch, int channels, int height, int width,
//       int pooled_h, int pooled_w, float spatial_scale, int sampling_ratio, int aligned)
//
//   ps_multi_level_roi_align_fwd_{nchw,nhwc}_{sfx}(
//       const long long* level_table, int num_levels, int k_min,
//       float canonical_scale, float canonical_level,
//       const float* rois, T* output,
//       int num_rois, int batch, int channels,
//       int pooled_h, int pooled_w, int sampling_ratio, int aligned)
//
//   ps_roi_align_bwd_{nchw,nhwc}_{sfx}(
//       const T* grad_output, const float* rois, A* grad_input,
//       int num_rois, int batch, int channels, int height, int width,
//       int pooled_h, int pooled_w, float spatial_scale, int sampling_ratio, int aligned)
//
//   ps_multi_level_roi_align_bwd_{nchw,nhwc}_{sfx}(
//       const T* grad_output, const long long* grad_table, int num_levels, int k_min,
//       float canonical_scale, float canonical_level,
//       const float* rois,
//       int num_rois, int batch, int channels,
//       int pooled_h, int pooled_w, int sampling_ratio, int aligned)
//
// where A is float (double for f64), grad_output has the forward output's layout, and the
// grad table rows point at A buffers shaped like the matching feature level.

#ifndef PERSONSEARCH_ROI_ALIGN_KERNELS_CUH
#define PERSONSEARCH_ROI_ALIGN_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ps_roi_align {

template <typename T>
struct AccType {
  typedef float type;
};
template <>
struct AccType<double> {
  typedef double type;
};

__device__ __forceinline__ float load_acc(const float* p) { return *p; }
__device__ __forceinline__ double load_acc(const double* p) { return *p; }
__device__ __forceinline__ float load_acc(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float load_acc(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ void store_acc(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_acc(double* p, double v) { *p = v; }
__device__ __forceinline__ void store_acc(__half* p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_acc(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

__device__ __forceinline__ float ceil_acc(float v) { return ceilf(v); }
__device__ __forceinline__ double ceil_acc(double v) { return ceil(v); }
__device__ __forceinline__ float floor_acc(float v) { return floorf(v); }
__device__ __forceinline__ double floor_acc(double v) { return floor(v); }
__device__ __forceinline__ float log2_acc(float v) { return log2f(v); }
__device__ __forceinline__ double log2_acc(double v) { return log2(v); }
__device__ __forceinline__ float sqrt_acc(float v) { return sqrtf(v); }
__device__ __forceinline__ double sqrt_acc(double v) { return sqrt(v); }

// Image of a RoI: its batch index truncated toward zero, or -1 when that is outside [0, batch).
// Compared as a floating value first, so NaN and huge indices (whose conversion to int is
// undefined) are out of range too, rather than whatever the conversion happens to give.
template <typename R>
__device__ __forceinline__ int roi_image(const R* roi, int batch) {
  const R b = roi[0];
  return (b > R(-1) && b < (R)batch) ? (int)b : -1;
}

// Geometry of one RoI on one feature map (the part shared by every output element of it).
template <typename A>
struct RoiGeometry {
  A start_h;
  A start_w;
  A bin_h;
  A bin_w;
  int grid_h;
  int grid_w;
  A count;
};

template <typename A, typename R>
__device__ __forceinline__ RoiGeometry<A> roi_geometry(const R* roi, A scale, int pooled_h,
                                                      int pooled_w, int sampling_ratio, int aligned) {
  RoiGeometry<A> g;
  const A offset = aligned ? A(0.5) : A(0);
  g.start_w = A(roi[1]) * scale - offset;
  g.start_h = A(roi[2]) * scale - offset;
  const A end_w = A(roi[3]) * scale - offset;
  const A end_h = A(roi[4]) * scale - offset;
  A roi_w = end_w - g.start_w;
  A roi_h = end_h - g.start_h;
  if (!aligned) {
    // Legacy mode: malformed or tiny RoIs are forced to one feature pixel.
    roi_w = roi_w > A(1) ? roi_w : A(1);
    roi_h = roi_h > A(1) ? roi_h : A(1);
  }
  g.bin_h = roi_h / A(pooled_h);
  g.bin_w = roi_w / A(pooled_w);
  g.grid_h = sampling_ratio > 0 ? sampling_ratio : (int)ceil_acc(roi_h / A(pooled_h));
  g.grid_w = sampling_ratio > 0 ? sampling_ratio : (int)ceil_acc(roi_w / A(pooled_w));
  const int count = g.grid_h * g.grid_w;
  g.count = A(count > 1 ? count : 1);
  return g;
}

// Bilinear tap positions and weights of one sample; valid == false means "contributes 0".
template <typename A>
struct Taps {
  int y_low, y_high, x_low, x_high;
  A w1, w2, w3, w4;
  bool valid;
};

template <typename A>
__device__ __forceinline__ Taps<A> bilinear_taps(A y, A x, int height, int width) {
  Taps<A> t;
  if (y < A(-1) || y > A(height) || x < A(-1) || x > A(width)) {
    t.valid = false;
    t.y_low = t.y_high = t.x_low = t.x_high = 0;
    t.w1 = t.w2 = t.w3 = t.w4 = A(0);
    return t;
  }
  t.valid = true;
  if (y <= A(0)) y = A(0);
  if (x <= A(0)) x = A(0);
  t.y_low = (int)y;
  t.x_low = (int)x;
  if (t.y_low >= height - 1) {
    t.y_high = t.y_low = height - 1;
    y = A(t.y_low);
  } else {
    t.y_high = t.y_low + 1;
  }
  if (t.x_low >= width - 1) {
    t.x_high = t.x_low = width - 1;
    x = A(t.x_low);
  } else {
    t.x_high = t.x_low + 1;
  }
  const A ly = y - A(t.y_low);
  const A lx = x - A(t.x_low);
  const A hy = A(1) - ly;
  const A hx = A(1) - lx;
  t.w1 = hy * hx;
  t.w2 = hy * lx;
  t.w3 = ly * hx;
  t.w4 = ly * lx;
  return t;
}

// Mean over one bin's samples. `plane` points at element (n, c, 0, 0) of the feature map;
// `pixel_stride` is 1 for NCHW and C for NHWC (the distance between horizontal neighbours).
template <typename T, typename A>
__device__ __forceinline__ A pool_bin(const T* __restrict__ plane, long long pixel_stride, int height,
                                      int width, const RoiGeometry<A>& g, int ph, int pw) {
  A acc = A(0);
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const A y = g.start_h + A(ph) * g.bin_h + A(iy + 0.5) * g.bin_h / A(g.grid_h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const A x = g.start_w + A(pw) * g.bin_w + A(ix + 0.5) * g.bin_w / A(g.grid_w);
      const Taps<A> t = bilinear_taps(y, x, height, width);
      if (!t.valid) continue;
      const long long r_low = (long long)t.y_low * width;
      const long long r_high = (long long)t.y_high * width;
      acc += t.w1 * load_acc(plane + (r_low + t.x_low) * pixel_stride) +
             t.w2 * load_acc(plane + (r_low + t.x_high) * pixel_stride) +
             t.w3 * load_acc(plane + (r_high + t.x_low) * pixel_stride) +
             t.w4 * load_acc(plane + (r_high + t.x_high) * pixel_stride);
    }
  }
  return acc / g.count;
}

// Scatter one bin's gradient onto its samples' taps (the adjoint of pool_bin).
template <typename A>
__device__ __forceinline__ void scatter_bin(A* __restrict__ plane, long long pixel_stride, int height,
                                            int width, const RoiGeometry<A>& g, int ph, int pw, A grad) {
  const A gbin = grad / g.count;
  for (int iy = 0; iy < g.grid_h; ++iy) {
    const A y = g.start_h + A(ph) * g.bin_h + A(iy + 0.5) * g.bin_h / A(g.grid_h);
    for (int ix = 0; ix < g.grid_w; ++ix) {
      const A x = g.start_w + A(pw) * g.bin_w + A(ix + 0.5) * g.bin_w / A(g.grid_w);
      const Taps<A> t = bilinear_taps(y, x, height, width);
      if (!t.valid) continue;
      const long long r_low = (long long)t.y_low * width;
      const long long r_high = (long long)t.y_high * width;
      atomicAdd(plane + (r_low + t.x_low) * pixel_stride, t.w1 * gbin);
      atomicAdd(plane + (r_low + t.x_high) * pixel_stride, t.w2 * gbin);
      atomicAdd(plane + (r_high + t.x_low) * pixel_stride, t.w3 * gbin);
      atomicAdd(plane + (r_high + t.x_high) * pixel_stride, t.w4 * gbin);
    }
  }
}

// Output element coordinates from a flat index, for either output layout.
struct ElementIndex {
  int k, c, ph, pw;
};

template <bool NHWC>
__device__ __forceinline__ ElementIndex split_index(long long index, int channels, int pooled_h,
                                                    int pooled_w) {
  ElementIndex e;
  if (NHWC) {
    e.c = (int)(index % channels);
    index /= channels;
    e.pw = (int)(index % pooled_w);
    index /= pooled_w;
    e.ph = (int)(index % pooled_h);
    e.k = (int)(index / pooled_h);
  } else {
    e.pw = (int)(index % pooled_w);
    index /= pooled_w;
    e.ph = (int)(index % pooled_h);
    index /= pooled_h;
    e.c = (int)(index % channels);
    e.k = (int)(index / channels);
  }
  return e;
}

// Pointer to element (n, c, 0, 0) of a [batch, channels, height, width] map in either layout.
template <bool NHWC, typename P>
__device__ __forceinline__ P* plane_of(P* base, int n, int c, int channels, int height, int width) {
  const long long hw = (long long)height * width;
  if (NHWC) return base + (long long)n * hw * channels + c;
  return base + ((long long)n * channels + c) * hw;
}

// torchvision LevelMapper in the rois' type R throughout (matching torchvision, which computes
// it in its boxes' dtype: float32 for the entry points).
template <typename R>
__device__ __forceinline__ int map_level(const R* roi, int num_levels, int k_min, R canonical_scale,
                                         R canonical_level) {
  const R area = (roi[3] - roi[1]) * (roi[4] - roi[2]);
  R level = floor_acc(canonical_level + log2_acc(sqrt_acc(area) / canonical_scale) + R(1e-6));
  const R lo = (R)k_min;
  const R hi = (R)(k_min + num_levels - 1);
  level = level < lo ? lo : (level > hi ? hi : level);  // also turns -inf (area 0) into k_min
  if (!(level == level)) level = lo;                    // NaN area: first level
  return (int)level - k_min;
}

// `scale` is a double so the by-value table carries a float64 spatial scale to the f64 kernels
// exactly; the float32 kernels convert it to float, which gives back the float they were given.
struct LevelInfo {
  const void* data;
  int height;
  int width;
  double scale;
};

__device__ __forceinline__ LevelInfo read_level(const long long* table, int level) {
  LevelInfo info;
  const long long* row = table + 4 * level;
  info.data = (const void*)row[0];
  info.height = (int)row[1];
  info.width = (int)row[2];
  info.scale = (double)__int_as_float((int)(unsigned int)(row[3] & 0xffffffffLL));
  return info;
}

// Most pyramid levels a by-value level table holds (FPNs have 4 or 5).
#define PS_ROI_ALIGN_MAX_LEVELS 8

// The level table passed by value as a kernel argument: rows [0, num_levels) are used.
struct LevelArgs {
  LevelInfo level[PS_ROI_ALIGN_MAX_LEVELS];
};

// Row `level` of a by-value table, read from the kernel's parameter space (indexed constant
// loads; ptxas reports no local memory for the sm_90 build of these kernels).
__device__ __forceinline__ LevelInfo read_level(const LevelArgs& table, int level) { return table.level[level]; }

template <typename T, bool NHWC, typename R>
__device__ __forceinline__ void forward_single(const T* __restrict__ input, const R* __restrict__ rois,
                                               T* __restrict__ output, int num_rois, int batch, int channels,
                                               int height, int width, int pooled_h, int pooled_w,
                                               typename AccType<T>::type spatial_scale, int sampling_ratio,
                                               int aligned) {
  typedef typename AccType<T>::type A;
  const long long total = (long long)num_rois * channels * pooled_h * pooled_w;
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total; index += stride) {
    const ElementIndex e = split_index<NHWC>(index, channels, pooled_h, pooled_w);
    const R* roi = rois + 5 * (long long)e.k;
    const int n = roi_image(roi, batch);
    A value = A(0);
    if (n >= 0) {
      const RoiGeometry<A> g = roi_geometry<A>(roi, A(spatial_scale), pooled_h, pooled_w, sampling_ratio, aligned);
      const T* plane = plane_of<NHWC>(input, n, e.c, channels, height, width);
      value = pool_bin<T, A>(plane, NHWC ? channels : 1, height, width, g, e.ph, e.pw);
    }
    store_acc(output + index, value);
  }
}

// Table is `const long long*` (the device table of the entry points) or LevelArgs (by value).
template <typename T, bool NHWC, typename R, typename Table>
__device__ __forceinline__ void forward_multi(const Table& level_table, int num_levels, int k_min,
                                              R canonical_scale, R canonical_level,
                                              const R* __restrict__ rois, T* __restrict__ output, int num_rois,
                                              int batch, int channels, int pooled_h, int pooled_w,
                                              int sampling_ratio, int aligned) {
  typedef typename AccType<T>::type A;
  const long long total = (long long)num_rois * channels * pooled_h * pooled_w;
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total; index += stride) {
    const ElementIndex e = split_index<NHWC>(index, channels, pooled_h, pooled_w);
    const R* roi = rois + 5 * (long long)e.k;
    const int n = roi_image(roi, batch);
    A value = A(0);
    if (n >= 0) {
      const LevelInfo lv =
          read_level(level_table, map_level(roi, num_levels, k_min, canonical_scale, canonical_level));
      const RoiGeometry<A> g = roi_geometry<A>(roi, A(lv.scale), pooled_h, pooled_w, sampling_ratio, aligned);
      const T* plane = plane_of<NHWC>((const T*)lv.data, n, e.c, channels, lv.height, lv.width);
      value = pool_bin<T, A>(plane, NHWC ? channels : 1, lv.height, lv.width, g, e.ph, e.pw);
    }
    store_acc(output + index, value);
  }
}

template <typename T, bool NHWC, typename R>
__device__ __forceinline__ void backward_single(const T* __restrict__ grad_output, const R* __restrict__ rois,
                                                typename AccType<T>::type* __restrict__ grad_input, int num_rois,
                                                int batch, int channels, int height, int width, int pooled_h,
                                                int pooled_w, typename AccType<T>::type spatial_scale,
                                                int sampling_ratio, int aligned) {
  typedef typename AccType<T>::type A;
  const long long total = (long long)num_rois * channels * pooled_h * pooled_w;
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total; index += stride) {
    const ElementIndex e = split_index<NHWC>(index, channels, pooled_h, pooled_w);
    const R* roi = rois + 5 * (long long)e.k;
    const int n = roi_image(roi, batch);
    if (n < 0) continue;
    const RoiGeometry<A> g = roi_geometry<A>(roi, A(spatial_scale), pooled_h, pooled_w, sampling_ratio, aligned);
    A* plane = plane_of<NHWC>(grad_input, n, e.c, channels, height, width);
    scatter_bin<A>(plane, NHWC ? channels : 1, height, width, g, e.ph, e.pw, load_acc(grad_output + index));
  }
}

template <typename T, bool NHWC, typename R, typename Table>
__device__ __forceinline__ void backward_multi(const T* __restrict__ grad_output, const Table& grad_table,
                                               int num_levels, int k_min, R canonical_scale,
                                               R canonical_level, const R* __restrict__ rois, int num_rois,
                                               int batch, int channels, int pooled_h, int pooled_w,
                                               int sampling_ratio, int aligned) {
  typedef typename AccType<T>::type A;
  const long long total = (long long)num_rois * channels * pooled_h * pooled_w;
  const long long stride = (long long)blockDim.x * gridDim.x;
  for (long long index = (long long)blockIdx.x * blockDim.x + threadIdx.x; index < total; index += stride) {
    const ElementIndex e = split_index<NHWC>(index, channels, pooled_h, pooled_w);
    const R* roi = rois + 5 * (long long)e.k;
    const int n = roi_image(roi, batch);
    if (n < 0) continue;
    const LevelInfo lv =
        read_level(grad_table, map_level(roi, num_levels, k_min, canonical_scale, canonical_level));
    const RoiGeometry<A> g = roi_geometry<A>(roi, A(lv.scale), pooled_h, pooled_w, sampling_ratio, aligned);
    A* plane = plane_of<NHWC>((A*)lv.data, n, e.c, channels, lv.height, lv.width);
    scatter_bin<A>(plane, NHWC ? channels : 1, lv.height, lv.width, g, e.ph, e.pw, load_acc(grad_output + index));
  }
}

}  // namespace ps_roi_align

// ---- extern "C" entry points (stable names; see the header comment for argument lists) ----

#define PS_ROI_ALIGN_ENTRY_POINTS(T, SFX, LAYOUT, NHWC)                                                       \
  extern "C" __global__ void ps_roi_align_fwd_##LAYOUT##_##SFX(                                               \
      const T* input, const float* rois, T* output, int num_rois, int batch, int channels, int height,        \
      int width, int pooled_h, int pooled_w, float spatial_scale, int sampling_ratio, int aligned) {          \
    ps_roi_align::forward_single<T, NHWC, float>(input, rois, output, num_rois, batch, channels, height,      \
                                                 width, pooled_h, pooled_w, spatial_scale, sampling_ratio,    \
                                                 aligned);                                                    \
  }                                                                                                           \
  extern "C" __global__ void ps_multi_level_roi_align_fwd_##LAYOUT##_##SFX(                                   \
      const long long* level_table, int num_levels, int k_min, float canonical_scale, float canonical_level,  \
      const float* rois, T* output, int num_rois, int batch, int channels, int pooled_h, int pooled_w,        \
      int sampling_ratio, int aligned) {                                                                      \
    ps_roi_align::forward_multi<T, NHWC, float>(level_table, num_levels, k_min, canonical_scale,              \
                                                canonical_level, rois, output, num_rois, batch, channels,     \
                                                pooled_h, pooled_w, sampling_ratio, aligned);                 \
  }                                                                                                           \
  extern "C" __global__ void ps_roi_align_bwd_##LAYOUT##_##SFX(                                               \
      const T* grad_output, const float* rois, ps_roi_align::AccType<T>::type* grad_input, int num_rois,      \
      int batch, int channels, int height, int width, int pooled_h, int pooled_w, float spatial_scale,        \
      int sampling_ratio, int aligned) {                                                                      \
    ps_roi_align::backward_single<T, NHWC, float>(grad_output, rois, grad_input, num_rois, batch, channels,   \
                                                  height, width, pooled_h, pooled_w, spatial_scale,           \
                                                  sampling_ratio, aligned);                                   \
  }                                                                                                           \
  extern "C" __global__ void ps_multi_level_roi_align_bwd_##LAYOUT##_##SFX(                                   \
      const T* grad_output, const long long* grad_table, int num_levels, int k_min, float canonical_scale,    \
      float canonical_level, const float* rois, int num_rois, int batch, int channels, int pooled_h,          \
      int pooled_w, int sampling_ratio, int aligned) {                                                        \
    ps_roi_align::backward_multi<T, NHWC, float>(grad_output, grad_table, num_levels, k_min, canonical_scale, \
                                                 canonical_level, rois, num_rois, batch, channels, pooled_h,  \
                                                 pooled_w, sampling_ratio, aligned);                          \
  }

#define PS_ROI_ALIGN_ALL_LAYOUTS(T, SFX)        \
  PS_ROI_ALIGN_ENTRY_POINTS(T, SFX, nchw, false) \
  PS_ROI_ALIGN_ENTRY_POINTS(T, SFX, nhwc, true)

PS_ROI_ALIGN_ALL_LAYOUTS(float, f32)
PS_ROI_ALIGN_ALL_LAYOUTS(double, f64)
PS_ROI_ALIGN_ALL_LAYOUTS(__half, f16)
PS_ROI_ALIGN_ALL_LAYOUTS(__nv_bfloat16, bf16)

#undef PS_ROI_ALIGN_ALL_LAYOUTS
#undef PS_ROI_ALIGN_ENTRY_POINTS

#endif  // PERSONSEARCH_ROI_ALIGN_KERNELS_CUH
