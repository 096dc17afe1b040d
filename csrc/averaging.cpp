// The weights' exponential moving average (see averaging.h).
#include "averaging.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace finetune {

WeightAverage::WeightAverage(std::vector<at::Tensor> params, double decay) : params_(std::move(params)), decay_(decay) {
  at::NoGradGuard no_grad;
  for (const auto& p : params_) shadow_.push_back(p.detach().clone());
}

void WeightAverage::update() {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) shadow_[i].mul_(decay_).add_(params_[i].detach(), 1.0 - decay_);
}

void WeightAverage::swap() {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    const auto current = params_[i].detach().clone();
    params_[i].detach().copy_(shadow_[i]);
    shadow_[i].copy_(current);
  }
}

}  // namespace finetune
