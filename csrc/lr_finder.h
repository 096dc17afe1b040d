// The learning-rate range test (fastai's): a short run with the rate growing exponentially, weights restored.
#pragma once

#include <cstdint>
#include <vector>

#include "config.h"
#include "dataset.h"
#include "models.h"

namespace finetune {

struct LrFinderResult {
  std::vector<double> lrs;
  std::vector<double> losses;           // smoothed (exponential moving average, bias-corrected)
  double suggestion = 0.0;              // the rate where the smoothed loss falls fastest
  bool diverged = false;                // stopped because the loss blew up
};

// fastai-style range test: `num_steps` optimizer steps with the rate growing exponentially from start_lr to
// end_lr, stopping early once the smoothed loss exceeds diverge_factor x its minimum (the minimum from step
// min(num_steps / 10, 10) on, when the smoothing has settled). The model's
// parameters and buffers are restored afterwards.
LrFinderResult find_lr(Model& model, const Dataset& data, const TrainConfig& config, double start_lr, double end_lr,
                       int64_t num_steps, double diverge_factor);

}  // namespace finetune
