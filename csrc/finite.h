// The NaN/inf guard: whether a step's loss and every gradient are finite, in one fused check.
#pragma once

#include <utility>

#include <ATen/core/Tensor.h>

#include "models.h"

namespace finetune {

// The gradients are checked by the one fused op automatic mixed precision uses for this (a multiply by 1.0
// that raises a flag on NaN/inf), so the guard costs one dispatch per step rather than one per parameter.
class FiniteCheck {
 public:
  explicit FiniteCheck(const at::Device& device);
  // (the step's loss as a double, whether it and every gradient of `params` are finite)
  std::pair<double, bool> operator()(const at::Tensor& step_loss, const NamedTensors& params);

 private:
  at::Tensor found_, one_;
};

}  // namespace finetune
