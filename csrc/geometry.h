// The step's geometry: how many examples an optimizer step, a rank's share and an epoch take, with every
// product checked for overflow before the loop uses it.
#pragma once

#include <cstdint>

#include "config.h"

namespace finetune {

struct StepGeometry {
  int64_t batch_size = 0;          // examples per micro-batch (forward/backward)
  int64_t rank_step_examples = 0;  // accumulate x batch_size: one rank's share of a step
  int64_t step_examples = 0;       // rank_step_examples x world: one optimizer step
  int64_t epoch_examples = 0;      // examples visited per epoch (drop_last drops the last incomplete batch)
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;         // steps_per_epoch x epochs

  // For a training subset of `train_size` (>= 1) examples over `world` processes. Throws c10::ValueError
  // naming the settings whose product does not fit in 64 bits.
  StepGeometry(int64_t train_size, const TrainConfig& config, int64_t world);

  // The examples order[first:last] of step `s` (0-based in the epoch), and this rank's contiguous share of them.
  struct Span {
    int64_t first, last;            // the whole step
    int64_t mine_first, mine_last;  // this rank's share (may be empty)
  };
  Span step(int64_t s, int64_t rank) const;
};

// a x b, or a c10::ValueError naming what overflowed.
int64_t checked_mul(int64_t a, int64_t b, const char* what);

}  // namespace finetune
