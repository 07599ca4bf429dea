// CPU kernels of the personsearch_ops RoIAlign operators (single- and multi-level).
//
// Bilinear RoIAlign is separable: for one RoI and channel,
//   out[ph, pw] = sum_y sum_x Wy[ph, y] * Wx[pw, x] * F[y, x]
// where Wy (Wx) holds, per output row (column), 2 * grid taps (two bilinear neighbours per
// sample, each weighted by its bilinear factor / grid). Sample validity (outside [-1, H] or
// [-1, W] -> 0) also factorises, so the same taps reproduce torchvision's kernel exactly up to
// rounding. We evaluate it in two passes:
//   G[ph, x] = sum_y Wy[ph, y] * F[y, x]    over the RoI's column span (contiguous: vectorises)
//   out[ph, pw] = sum_x Wx[pw, x] * G[ph, x]
// which needs far fewer loads than sampling every bin's points separately. Channels-last
// input runs the same passes with the channel as the innermost, contiguous loop.
// Work is split with at::parallel_for over (RoI, channel block) in forward and over channel
// blocks in backward (so no two threads add into the same gradient element).
// Precision: rois are float32 with float32/float16/bfloat16 features and float64 with float64
// features, and every coordinate, level-mapping and tap computation runs in the features'
// accumulation type (float64 for float64), so float64 results agree with torchvision's float64
// kernel to rounding (~1e-15) rather than to float32's ~1e-7.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../roi_align.h"

namespace personsearch_ops {
namespace {

// One feature level as the kernels see it (data pointer typed at dispatch time).
struct Level {
  const void* data;
  void* grad;  // backward only
  int64_t height;
  int64_t width;
  double scale;
};

// Per-RoI plan: which level and image, and where its taps live in the tap arrays.
struct RoiPlan {
  int64_t batch_index;
  int64_t level;
  int64_t y_offset;  // into the y tap arrays; pooled_h * y_taps entries
  int64_t x_offset;  // into the x tap arrays; pooled_w * x_taps entries
  int32_t y_taps;    // taps per output row (2 * grid_h)
  int32_t x_taps;
  int32_t x_lo;  // first feature column any valid tap reads
  int32_t span;  // number of columns from x_lo; 0 means the RoI pools to zeros
};

template <typename A>
struct Plans {
  std::vector<RoiPlan> rois;
  std::vector<int32_t> y_index;  // absolute row per y tap
  std::vector<A> y_weight;
  std::vector<int32_t> x_index;  // column relative to x_lo per x tap
  std::vector<A> x_weight;
};

// The rois' element type for features of type T: float64 for float64 features (so float64
// pooling keeps float64 coordinates end to end), float32 otherwise.
template <typename T>
using roi_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

// torchvision LevelMapper in the rois' dtype (as torchvision computes it on its boxes: float32
// for float32 boxes, float64 for float64 ones).
template <typename R>
int64_t map_level(const R* roi, int64_t num_levels, const LevelMapping& mapping) {
  const R area = (roi[3] - roi[1]) * (roi[4] - roi[2]);
  R level = std::floor(static_cast<R>(mapping.canonical_level) +
                       std::log2(std::sqrt(area) / static_cast<R>(mapping.canonical_scale)) + static_cast<R>(1e-6));
  const R lo = static_cast<R>(mapping.k_min);
  const R hi = static_cast<R>(mapping.k_min + num_levels - 1);
  if (!(level == level)) level = lo;
  level = std::min(std::max(level, lo), hi);
  return static_cast<int64_t>(level) - mapping.k_min;
}

// Grid size per axis, computed exactly as the bin loop does (see roi_align_kernels.cuh).
template <typename A, typename R>
void roi_frame(const R* roi, A scale, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
               bool aligned, A* start_h, A* start_w, A* bin_h, A* bin_w, int* grid_h, int* grid_w) {
  const A offset = aligned ? A(0.5) : A(0);
  *start_w = A(roi[1]) * scale - offset;
  *start_h = A(roi[2]) * scale - offset;
  A roi_w = (A(roi[3]) * scale - offset) - *start_w;
  A roi_h = (A(roi[4]) * scale - offset) - *start_h;
  if (!aligned) {
    roi_w = std::max(roi_w, A(1));
    roi_h = std::max(roi_h, A(1));
  }
  *bin_h = roi_h / A(pooled_h);
  *bin_w = roi_w / A(pooled_w);
  *grid_h = sampling_ratio > 0 ? static_cast<int>(sampling_ratio) : static_cast<int>(std::ceil(roi_h / A(pooled_h)));
  *grid_w = sampling_ratio > 0 ? static_cast<int>(sampling_ratio) : static_cast<int>(std::ceil(roi_w / A(pooled_w)));
}

// Fills the taps of one axis: for each pooled cell p, `grid` samples, two taps each.
// Invalid samples get weight 0 and index 0. Returns the min/max index of valid taps.
template <typename A>
void axis_taps(A start, A bin, int grid, int64_t pooled, int64_t size, int32_t* index, A* weight, int32_t* lo,
               int32_t* hi) {
  const A inv_grid = A(1) / A(grid);
  *lo = INT32_MAX;
  *hi = -1;
  int64_t t = 0;
  for (int64_t p = 0; p < pooled; ++p) {
    for (int i = 0; i < grid; ++i, t += 2) {
      A v = start + A(p) * bin + A(i + 0.5) * bin / A(grid);
      if (v < A(-1) || v > A(size)) {
        index[t] = index[t + 1] = 0;
        weight[t] = weight[t + 1] = A(0);
        continue;
      }
      if (v <= A(0)) v = A(0);
      int32_t low = static_cast<int32_t>(v);
      int32_t high;
      if (low >= size - 1) {
        high = low = static_cast<int32_t>(size - 1);
        v = A(low);
      } else {
        high = low + 1;
      }
      const A l = v - A(low);
      index[t] = low;
      index[t + 1] = high;
      weight[t] = (A(1) - l) * inv_grid;
      weight[t + 1] = l * inv_grid;
      *lo = std::min(*lo, low);
      *hi = std::max(*hi, high);
    }
  }
}

template <typename A, typename R>
Plans<A> make_plans(const at::Tensor& rois, const std::vector<Level>& levels, const LevelMapping* mapping,
                    int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio, bool aligned) {
  const int64_t num_rois = rois.size(0);
  const R* roi_data = rois.data_ptr<R>();
  Plans<A> plans;
  plans.rois.resize(num_rois);
  // Pass 1 (serial, cheap): level, grid sizes and tap-array offsets.
  int64_t y_total = 0;
  int64_t x_total = 0;
  for (int64_t k = 0; k < num_rois; ++k) {
    const R* roi = roi_data + 5 * k;
    RoiPlan& plan = plans.rois[k];
    plan.batch_index = static_cast<int64_t>(roi[0]);
    plan.level = mapping ? map_level(roi, static_cast<int64_t>(levels.size()), *mapping) : 0;
    A sh, sw, bh, bw;
    int gh, gw;
    roi_frame<A>(roi, A(levels[plan.level].scale), pooled_h, pooled_w, sampling_ratio, aligned, &sh, &sw, &bh, &bw,
                 &gh, &gw);
    const bool empty = gh <= 0 || gw <= 0;
    plan.y_taps = empty ? 0 : 2 * gh;
    plan.x_taps = empty ? 0 : 2 * gw;
    plan.y_offset = y_total;
    plan.x_offset = x_total;
    y_total += pooled_h * plan.y_taps;
    x_total += pooled_w * plan.x_taps;
  }
  plans.y_index.resize(y_total);
  plans.y_weight.resize(y_total);
  plans.x_index.resize(x_total);
  plans.x_weight.resize(x_total);
  // Pass 2 (parallel over RoIs): the taps themselves.
  at::parallel_for(0, num_rois, 16, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      RoiPlan& plan = plans.rois[k];
      plan.x_lo = 0;
      plan.span = 0;
      if (plan.y_taps == 0) continue;
      const Level& level = levels[plan.level];
      A sh, sw, bh, bw;
      int gh, gw;
      roi_frame<A>(roi_data + 5 * k, A(level.scale), pooled_h, pooled_w, sampling_ratio, aligned, &sh, &sw, &bh, &bw,
                   &gh, &gw);
      int32_t y_lo, y_hi, x_lo, x_hi;
      axis_taps<A>(sh, bh, gh, pooled_h, level.height, plans.y_index.data() + plan.y_offset,
                   plans.y_weight.data() + plan.y_offset, &y_lo, &y_hi);
      int32_t* xi = plans.x_index.data() + plan.x_offset;
      axis_taps<A>(sw, bw, gw, pooled_w, level.width, xi, plans.x_weight.data() + plan.x_offset, &x_lo, &x_hi);
      if (y_hi < 0 || x_hi < 0) continue;  // every sample outside the map: zeros
      plan.x_lo = x_lo;
      plan.span = x_hi - x_lo + 1;
      const A* xw = plans.x_weight.data() + plan.x_offset;
      for (int64_t t = 0; t < pooled_w * plan.x_taps; ++t) xi[t] = xw[t] == A(0) ? 0 : xi[t] - x_lo;
    }
  });
  return plans;
}

// Channels per work item: small enough to balance RoIs x blocks over threads, large enough to
// amortise the per-RoI set-up and keep the channels-last inner loops long.
int64_t channel_block(int64_t channels, bool nhwc) {
  const int64_t block = nhwc ? 64 : 16;
  return std::min(channels, block);
}

template <typename T>
void forward_kernel(const std::vector<Level>& levels, const Plans<at::opmath_type<T>>& plans, T* out,
                    int64_t channels, int64_t pooled_h, int64_t pooled_w, bool nhwc) {
  using A = at::opmath_type<T>;
  const int64_t num_rois = static_cast<int64_t>(plans.rois.size());
  const int64_t cb = channel_block(channels, nhwc);
  const int64_t blocks = (channels + cb - 1) / cb;
  at::parallel_for(0, num_rois * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> g;
    std::vector<A> acc(cb);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t k = item / blocks;
      const int64_t c0 = (item % blocks) * cb;
      const int64_t c1 = std::min(channels, c0 + cb);
      const RoiPlan& plan = plans.rois[k];
      if (plan.span == 0) continue;  // output is pre-zeroed
      const Level& level = levels[plan.level];
      const int64_t H = level.height, W = level.width, span = plan.span;
      const T* image = static_cast<const T*>(level.data) + plan.batch_index * channels * H * W;
      const int32_t* yi = plans.y_index.data() + plan.y_offset;
      const A* yw = plans.y_weight.data() + plan.y_offset;
      const int32_t* xi = plans.x_index.data() + plan.x_offset;
      const A* xw = plans.x_weight.data() + plan.x_offset;
      if (!nhwc) {
        g.resize(span);
        for (int64_t c = c0; c < c1; ++c) {
          const T* plane = image + c * H * W + plan.x_lo;
          T* o = out + (k * channels + c) * pooled_h * pooled_w;
          for (int64_t ph = 0; ph < pooled_h; ++ph) {
            std::fill(g.begin(), g.end(), A(0));
            A* gp = g.data();
            for (int32_t t = 0; t < plan.y_taps; ++t) {
              const A w = yw[ph * plan.y_taps + t];
              if (w == A(0)) continue;
              const T* row = plane + static_cast<int64_t>(yi[ph * plan.y_taps + t]) * W;
              for (int64_t x = 0; x < span; ++x) gp[x] += w * static_cast<A>(row[x]);
            }
            for (int64_t pw = 0; pw < pooled_w; ++pw) {
              A value = A(0);
              const int64_t base = pw * plan.x_taps;
              for (int32_t t = 0; t < plan.x_taps; ++t) value += xw[base + t] * gp[xi[base + t]];
              o[ph * pooled_w + pw] = static_cast<T>(value);
            }
          }
        }
      } else {
        const int64_t n = c1 - c0;
        g.resize(span * n);
        const T* origin = image + plan.x_lo * channels + c0;
        for (int64_t ph = 0; ph < pooled_h; ++ph) {
          std::fill(g.begin(), g.end(), A(0));
          for (int32_t t = 0; t < plan.y_taps; ++t) {
            const A w = yw[ph * plan.y_taps + t];
            if (w == A(0)) continue;
            const T* row = origin + static_cast<int64_t>(yi[ph * plan.y_taps + t]) * W * channels;
            for (int64_t x = 0; x < span; ++x) {
              const T* px = row + x * channels;
              A* gx = g.data() + x * n;
              for (int64_t c = 0; c < n; ++c) gx[c] += w * static_cast<A>(px[c]);
            }
          }
          for (int64_t pw = 0; pw < pooled_w; ++pw) {
            A* a = acc.data();
            std::fill(a, a + n, A(0));
            const int64_t base = pw * plan.x_taps;
            for (int32_t t = 0; t < plan.x_taps; ++t) {
              const A w = xw[base + t];
              if (w == A(0)) continue;
              const A* gx = g.data() + static_cast<int64_t>(xi[base + t]) * n;
              for (int64_t c = 0; c < n; ++c) a[c] += w * gx[c];
            }
            T* o = out + ((k * pooled_h + ph) * pooled_w + pw) * channels + c0;
            for (int64_t c = 0; c < n; ++c) o[c] = static_cast<T>(a[c]);
          }
        }
      }
    }
  });
}

// Adjoint of forward_kernel. Gradients accumulate in A buffers (one per level, same layout as
// the features); each work item owns a channel block across all RoIs.
template <typename T>
void backward_kernel(const std::vector<Level>& levels, const Plans<at::opmath_type<T>>& plans, const T* grad_out,
                     int64_t channels, int64_t pooled_h, int64_t pooled_w, bool nhwc) {
  using A = at::opmath_type<T>;
  const int64_t num_rois = static_cast<int64_t>(plans.rois.size());
  const int64_t cb = nhwc ? channel_block(channels, true) : 1;
  const int64_t blocks = (channels + cb - 1) / cb;
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<A> g;
    for (int64_t block = begin; block < end; ++block) {
      const int64_t c0 = block * cb;
      const int64_t c1 = std::min(channels, c0 + cb);
      const int64_t n = c1 - c0;
      for (int64_t k = 0; k < num_rois; ++k) {
        const RoiPlan& plan = plans.rois[k];
        if (plan.span == 0) continue;
        const Level& level = levels[plan.level];
        const int64_t H = level.height, W = level.width, span = plan.span;
        A* image = static_cast<A*>(level.grad) + plan.batch_index * channels * H * W;
        const int32_t* yi = plans.y_index.data() + plan.y_offset;
        const A* yw = plans.y_weight.data() + plan.y_offset;
        const int32_t* xi = plans.x_index.data() + plan.x_offset;
        const A* xw = plans.x_weight.data() + plan.x_offset;
        g.resize(span * n);
        for (int64_t ph = 0; ph < pooled_h; ++ph) {
          std::fill(g.begin(), g.end(), A(0));
          // G^T pass: spread each bin's gradient over its columns.
          for (int64_t pw = 0; pw < pooled_w; ++pw) {
            const int64_t base = pw * plan.x_taps;
            for (int32_t t = 0; t < plan.x_taps; ++t) {
              const A w = xw[base + t];
              if (w == A(0)) continue;
              A* gx = g.data() + static_cast<int64_t>(xi[base + t]) * n;
              if (!nhwc) {
                gx[0] += w * static_cast<A>(grad_out[((k * channels + c0) * pooled_h + ph) * pooled_w + pw]);
              } else {
                const T* go = grad_out + ((k * pooled_h + ph) * pooled_w + pw) * channels + c0;
                for (int64_t c = 0; c < n; ++c) gx[c] += w * static_cast<A>(go[c]);
              }
            }
          }
          // Wy^T pass: add the column sums into the rows the taps read.
          for (int32_t t = 0; t < plan.y_taps; ++t) {
            const A w = yw[ph * plan.y_taps + t];
            if (w == A(0)) continue;
            const int64_t y = yi[ph * plan.y_taps + t];
            if (!nhwc) {
              A* row = image + (c0 * H + y) * W + plan.x_lo;
              for (int64_t x = 0; x < span; ++x) row[x] += w * g[x];
            } else {
              A* row = image + (y * W + plan.x_lo) * channels + c0;
              for (int64_t x = 0; x < span; ++x) {
                A* px = row + x * channels;
                const A* gx = g.data() + x * n;
                for (int64_t c = 0; c < n; ++c) px[c] += w * gx[c];
              }
            }
          }
        }
      }
    }
  });
}

at::MemoryFormat format_of(bool nhwc) {
  return nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor forward_impl(const std::vector<at::Tensor>& features, const at::Tensor& rois_in,
                        const std::vector<double>& scales, int64_t pooled_h, int64_t pooled_w, int64_t sampling_ratio,
                        bool aligned, const LevelMapping* mapping, const char* op_name) {
  TORCH_CHECK(!features.empty(), op_name, ": needs at least one feature level");
  TORCH_CHECK(features.size() == scales.size(), op_name, ": got ", features.size(), " feature levels but ",
              scales.size(), " spatial scales");
  const at::Tensor& first = features[0];
  for (const auto& f : features) check_features(f, first, op_name);
  check_pooling_args(pooled_h, pooled_w, op_name);
  check_rois(rois_in, first, first.size(0), op_name);
  const bool nhwc = is_channels_last(first);
  const at::Tensor rois = rois_in.contiguous();
  std::vector<at::Tensor> held;
  std::vector<Level> levels;
  for (size_t l = 0; l < features.size(); ++l) {
    held.push_back(features[l].contiguous(format_of(nhwc)));
    levels.push_back(Level{held.back().data_ptr(), nullptr, held.back().size(2), held.back().size(3), scales[l]});
  }
  const int64_t channels = first.size(1);
  // at::empty honours memory_format (at::zeros ignores it).
  at::Tensor out =
      at::empty({rois.size(0), channels, pooled_h, pooled_w}, first.options().memory_format(format_of(nhwc))).zero_();
  if (rois.size(0) == 0 || channels == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, first.scalar_type(), "personsearch_roi_align_cpu", [&] {
    using A = at::opmath_type<scalar_t>;
    const Plans<A> plans =
        make_plans<A, roi_t<scalar_t>>(rois, levels, mapping, pooled_h, pooled_w, sampling_ratio, aligned);
    forward_kernel<scalar_t>(levels, plans, out.data_ptr<scalar_t>(), channels, pooled_h, pooled_w, nhwc);
  });
  return out;
}

std::vector<at::Tensor> backward_impl(const at::Tensor& grad_in, const at::Tensor& rois_in,
                                      const std::vector<double>& scales, int64_t pooled_h, int64_t pooled_w,
                                      int64_t sampling_ratio, bool aligned, const LevelMapping* mapping,
                                      int64_t batch, int64_t channels, at::IntArrayRef heights,
                                      at::IntArrayRef widths, bool nhwc, const char* op_name) {
  TORCH_CHECK(grad_in.dim() == 4 && grad_in.size(1) == channels && grad_in.size(2) == pooled_h &&
                  grad_in.size(3) == pooled_w,
              op_name, ": grad must be [K, ", channels, ", ", pooled_h, ", ", pooled_w, "], got ", grad_in.sizes());
  check_rois(rois_in, grad_in, batch, op_name);
  const at::Tensor rois = rois_in.contiguous();
  const at::Tensor grad = grad_in.contiguous(format_of(nhwc));
  const auto acc_dtype = grad.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<at::Tensor> buffers;
  std::vector<Level> levels;
  for (size_t l = 0; l < heights.size(); ++l) {
    buffers.push_back(at::empty({batch, channels, heights[l], widths[l]},
                                grad.options().dtype(acc_dtype).memory_format(format_of(nhwc)))
                          .zero_());
    levels.push_back(Level{nullptr, buffers.back().data_ptr(), heights[l], widths[l], scales[l]});
  }
  if (rois.size(0) > 0 && channels > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "personsearch_roi_align_cpu_bwd",
                                    [&] {
                                      using A = at::opmath_type<scalar_t>;
                                      const Plans<A> plans = make_plans<A, roi_t<scalar_t>>(
                                          rois, levels, mapping, pooled_h, pooled_w, sampling_ratio, aligned);
                                      backward_kernel<scalar_t>(levels, plans, grad.data_ptr<scalar_t>(), channels,
                                                                pooled_h, pooled_w, nhwc);
                                    });
  }
  for (auto& b : buffers) b = b.to(grad.scalar_type());
  return buffers;
}

at::Tensor roi_align_cpu(const at::Tensor& input, const at::Tensor& rois, double spatial_scale, int64_t pooled_height,
                         int64_t pooled_width, int64_t sampling_ratio, bool aligned) {
  return forward_impl({input}, rois, {spatial_scale}, pooled_height, pooled_width, sampling_ratio, aligned, nullptr,
                      "personsearch_ops.roi_align");
}

at::Tensor roi_align_backward_cpu(const at::Tensor& grad, const at::Tensor& rois, double spatial_scale,
                                  int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                  int64_t batch_size, int64_t channels, int64_t height, int64_t width,
                                  bool channels_last) {
  const int64_t h[1] = {height};
  const int64_t w[1] = {width};
  return backward_impl(grad, rois, {spatial_scale}, pooled_height, pooled_width, sampling_ratio, aligned, nullptr,
                       batch_size, channels, h, w, channels_last, "personsearch_ops.roi_align_backward")[0];
}

at::Tensor multi_level_roi_align_cpu(at::TensorList features, const at::Tensor& rois, at::ArrayRef<double> scales,
                                     int64_t pooled_height, int64_t pooled_width, int64_t sampling_ratio, bool aligned,
                                     int64_t k_min, double canonical_scale, double canonical_level) {
  const LevelMapping mapping{k_min, canonical_scale, canonical_level};
  return forward_impl(features.vec(), rois, scales.vec(), pooled_height, pooled_width, sampling_ratio, aligned,
                      &mapping, "personsearch_ops.multi_level_roi_align");
}

std::vector<at::Tensor> multi_level_roi_align_backward_cpu(
    const at::Tensor& grad, const at::Tensor& rois, at::ArrayRef<double> scales, int64_t pooled_height,
    int64_t pooled_width, int64_t sampling_ratio, bool aligned, int64_t k_min, double canonical_scale,
    double canonical_level, int64_t batch_size, int64_t channels, at::IntArrayRef heights, at::IntArrayRef widths,
    bool channels_last) {
  TORCH_CHECK(heights.size() == scales.size() && widths.size() == scales.size(),
              "personsearch_ops.multi_level_roi_align_backward: one height, width and scale per level");
  const LevelMapping mapping{k_min, canonical_scale, canonical_level};
  return backward_impl(grad, rois, scales.vec(), pooled_height, pooled_width, sampling_ratio, aligned, &mapping,
                       batch_size, channels, heights, widths, channels_last,
                       "personsearch_ops.multi_level_roi_align_backward");
}

}  // namespace

TORCH_LIBRARY_IMPL(personsearch_ops, CPU, m) {
  m.impl("roi_align", &roi_align_cpu);
  m.impl("roi_align_backward", &roi_align_backward_cpu);
  m.impl("multi_level_roi_align", &multi_level_roi_align_cpu);
  m.impl("multi_level_roi_align_backward", &multi_level_roi_align_backward_cpu);
}

}  // namespace personsearch_ops
