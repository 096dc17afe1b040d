// Learning-rate schedules, per optimizer step, equal to torch.optim.lr_scheduler's at every step.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config.h"

namespace finetune {

// "constant", "step", "cosine", "linear", "onecycle".
std::vector<std::string> schedule_names();
void check_schedule(const TrainConfig& config);

// Warm-up length in optimizer steps: config.warmup as steps when >= 1, else as a fraction of total_steps.
int64_t warmup_steps(const TrainConfig& config, int64_t total_steps);

// The learning rate of a parameter group whose base rate is `base_lr`, before optimizer step `step`
// (0-based) of `total_steps`. Equal to PyTorch's schedulers stepped `step` times:
//   constant  base_lr
//   step      StepLR(step_size, gamma)              (step_size in optimizer steps; 0 = one epoch)
//   cosine    CosineAnnealingLR(T_max=total, eta_min=min_lr)
//   linear    LinearLR(start_factor=1, end_factor=min_lr/lr, total_iters=total)
//   onecycle  OneCycleLR(max_lr=base_lr, total_steps=total, pct_start, div_factor=25, final_div_factor=1e4)
// With warm-up W, step t < W gets base_lr * (t + 1) / W (a LambdaLR), and the schedule then runs over the
// remaining total - W steps as if it started at t = W.
double scheduled_lr(const TrainConfig& config, double base_lr, int64_t step, int64_t total_steps,
                    int64_t steps_per_epoch);

// schedule="onecycle" with cycle_momentum: the momentum (sgd, rmsprop) or beta1 (adam, adamw) before step
// `step`, as OneCycleLR sets it: max_momentum falling to base_momentum while the rate rises, then back.
// Empty otherwise: the optimizer keeps its configured momentum.
std::optional<double> scheduled_momentum(const TrainConfig& config, int64_t step, int64_t total_steps);

}  // namespace finetune
