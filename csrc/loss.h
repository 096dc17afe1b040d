// The training loss: a micro-batch's loss, and what a step's summed losses are divided by.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "config.h"
#include "dataset.h"

namespace finetune {

// The loss of a micro-batch (cross-entropy with optional class weights and label smoothing, or mean squared
// error), reduced by `reduction` (at::Reduction::Mean or Sum). Class weights shorter than the model's
// output are padded with 0 for the classes past them (they never occur as targets).
//
// `target_scale` (a regression model's Model::target_scale, per output; undefined: none): the mean squared
// error's value stays in the target's units, as evaluation reports it, but its gradient is the standardised
// target's (each error divided by the scale), so a rate serves a target in dollars as it serves a fraction.
at::Tensor batch_loss(const at::Tensor& output, const at::Tensor& targets, const at::Tensor& class_weights,
                      const at::Tensor& target_scale, const TrainConfig& config, int64_t reduction);

// What the summed losses of the examples order[first:last] are divided by to make their mean: their count
// (times outputs per example for regression), or the sum of their class weights.
//
// A step of one micro-batch uses the mean directly. A step of several (accumulate > 1, or several ranks)
// sums each one's loss and divides by the whole step's denominator, so that they add up to exactly the mean
// loss of the large batch they stand for, a last partial group included.
double loss_denominator(const Dataset& data, const at::Tensor& order, int64_t first, int64_t last,
                        const at::Tensor& class_weights_cpu, int64_t outputs_per_example);

}  // namespace finetune
