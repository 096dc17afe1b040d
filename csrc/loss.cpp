// The training loss (see loss.h).
#include "loss.h"

#include <optional>

#include <ATen/ATen.h>

namespace finetune {

at::Tensor batch_loss(const at::Tensor& output_in, const at::Tensor& targets, const at::Tensor& class_weights,
                      const at::Tensor& target_scale, const TrainConfig& config, int64_t reduction) {
  auto output = output_in.scalar_type() == at::kBFloat16 ? output_in.to(at::kFloat) : output_in;
  if (config.is_classification()) {
    std::optional<at::Tensor> weights;
    if (class_weights.defined()) {
      // A head wider than the labels: the classes past the weights never occur as targets, and get weight 0
      // (label smoothing then spreads no probability onto them either).
      const int64_t missing = output.size(1) - class_weights.size(0);
      weights = missing > 0 ? at::constant_pad_nd(class_weights, {0, missing}, 0.0) : class_weights;
    }
    return at::cross_entropy_loss(output, targets, weights, reduction, /*ignore_index=*/-100, config.label_smoothing);
  }
  if (target_scale.defined()) {
    // The same values, their gradient divided by scale^2: d/d(output) of ((output - target) / scale)^2.
    const auto kept = output.detach();
    output = kept + (output - kept) / (target_scale * target_scale);
  }
  return at::mse_loss(output.reshape(targets.sizes()), targets.to(output.scalar_type()), reduction);
}

double loss_denominator(const Dataset& data, const at::Tensor& order, int64_t first, int64_t last,
                        const at::Tensor& class_weights_cpu, int64_t outputs_per_example) {
  if (class_weights_cpu.defined()) {
    return class_weights_cpu.index_select(0, data.targets.index_select(0, order.slice(0, first, last))).sum().item<double>();
  }
  return static_cast<double>((last - first) * outputs_per_example);
}

}  // namespace finetune
