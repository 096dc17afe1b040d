// An exponential moving average of the weights (config.ema), and a guard that swaps it into the model.
#pragma once

#include <optional>
#include <vector>

#include <ATen/core/Tensor.h>

namespace finetune {

class WeightAverage {
 public:
  WeightAverage(std::vector<at::Tensor> params, double decay);
  void update();  // after each optimizer step
  // Exchanges the model's weights with the averaged ones; calling it twice restores the model.
  void swap();

 private:
  std::vector<at::Tensor> params_, shadow_;
  double decay_;
};

// The averaged weights in the model for as long as the guard lives (evaluation, saving), whatever leaves the
// scope: an exception from an interrupted evaluation must not leave the averaged weights in the model.
// Does nothing without an average.
class AveragedWeights {
 public:
  explicit AveragedWeights(std::optional<WeightAverage>& ema) : ema_(ema) {
    if (ema_) ema_->swap();
  }
  ~AveragedWeights() {
    if (ema_) ema_->swap();
  }
  AveragedWeights(const AveragedWeights&) = delete;
  AveragedWeights& operator=(const AveragedWeights&) = delete;

 private:
  std::optional<WeightAverage>& ema_;
};

}  // namespace finetune
