// Schemas of the personsearch_ops RoIAlign operators and the shared argument checks.
//
// Kernels are registered per dispatch key in cpu/ and cuda/; autograd and fake (meta)
// implementations are registered from Python (personsearch_ops/roi_align.py) with
// torch.library.register_autograd / register_fake.
#include "roi_align.h"

#include <Python.h>
#include <torch/library.h>

namespace personsearch_ops {

bool is_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

void check_features(const at::Tensor& features, const at::Tensor& reference, const char* op_name) {
  TORCH_CHECK(features.dim() == 4, op_name, ": features must be [N, C, H, W], got ", features.dim(),
              " dimensions");
  TORCH_CHECK(at::isFloatingType(features.scalar_type()), op_name,
              ": features must be float32, float16, bfloat16 or float64, got ", features.scalar_type());
  TORCH_CHECK(features.device() == reference.device(), op_name, ": all feature levels must be on one device");
  TORCH_CHECK(features.scalar_type() == reference.scalar_type(), op_name,
              ": all feature levels must have one dtype");
  TORCH_CHECK(features.size(0) == reference.size(0) && features.size(1) == reference.size(1), op_name,
              ": all feature levels must share batch size and channel count, got ", features.sizes(), " and ",
              reference.sizes());
}

void check_pooling_args(int64_t pooled_height, int64_t pooled_width, const char* op_name) {
  TORCH_CHECK(pooled_height > 0 && pooled_width > 0, op_name, ": output size must be positive, got (",
              pooled_height, ", ", pooled_width, ")");
}

void check_rois(const at::Tensor& rois, const at::Tensor& features, int64_t batch, const char* op_name) {
  TORCH_CHECK(rois.dim() == 2 && rois.size(1) == 5, op_name,
              ": rois must be [K, 5] rows (batch_index, x1, y1, x2, y2), got shape ", rois.sizes());
  // float64 features take float64 rois so that no coordinate is rounded to float32 on the way.
  const at::ScalarType roi_type = features.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  TORCH_CHECK(rois.scalar_type() == roi_type, op_name, ": rois must be ", roi_type == at::kDouble ? "float64" : "float32",
              " for ", features.scalar_type(), " features, got ", rois.scalar_type());
  TORCH_CHECK(rois.device() == features.device(), op_name, ": rois are on ", rois.device(),
              " but features are on ", features.device());
  // Reading the indices of a device tensor would copy them to the host and stall the stream on
  // every call (forward and backward), so only host tensors are checked here. The CUDA kernels
  // skip an out-of-range RoI instead (zero output, no gradient): see roi_align_kernels.cuh.
  if (rois.size(0) == 0 || !rois.device().is_cpu()) return;
  // Truncation toward zero, as the kernels read the index.
  const at::Tensor index = rois.select(1, 0).to(at::kLong);
  const at::Tensor bad = (index < 0).logical_or(index >= batch);
  if (bad.any().item<bool>()) {
    const int64_t k = bad.nonzero().select(1, 0)[0].item<int64_t>();
    const double value = rois[k][0].item<double>();
    TORCH_CHECK(false, op_name, ": roi ", k, " has batch index ", value, " but the features hold ", batch,
                " image(s); batch indices must lie in [0, ", batch - 1, "]");
  }
}

}  // namespace personsearch_ops

TORCH_LIBRARY(personsearch_ops, m) {
  m.def(
      "roi_align(Tensor input, Tensor rois, float spatial_scale, int pooled_height, int pooled_width, "
      "int sampling_ratio, bool aligned) -> Tensor");
  m.def(
      "roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned, SymInt batch_size, SymInt channels, "
      "SymInt height, SymInt width, bool channels_last) -> Tensor");
  m.def(
      "multi_level_roi_align(Tensor[] features, Tensor rois, float[] spatial_scales, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned, int k_min, float canonical_scale, "
      "float canonical_level) -> Tensor");
  m.def(
      "multi_level_roi_align_backward(Tensor grad, Tensor rois, float[] spatial_scales, int pooled_height, "
      "int pooled_width, int sampling_ratio, bool aligned, int k_min, float canonical_scale, "
      "float canonical_level, SymInt batch_size, SymInt channels, SymInt[] heights, SymInt[] widths, "
      "bool channels_last) -> Tensor[]");
}

// `import personsearch_ops._C` loads this library, which runs the registrations above; the
// Python module itself is empty.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
