// Evaluation and prediction: loss and metrics of a model on a data set, and its raw outputs.
#pragma once

#include <functional>
#include <vector>

#include <ATen/core/Tensor.h>

#include "config.h"
#include "dataset.h"
#include "metrics.h"
#include "models.h"
#include "train.h"

namespace finetune {

// Loss and metrics of the model on `data`, in eval mode without autograd, in batches. With `parallel`, each
// rank evaluates a contiguous shard and the metrics come from the ranks' summed counts (every rank gets
// them); a split smaller than the world is evaluated whole on every rank instead.
// `poll`, when given, is called before each batch and may throw to interrupt (Ctrl-C).
Metrics evaluate(Model& model, const Dataset& data, const TrainConfig& config, Parallel* parallel = nullptr,
                 const std::function<void()>& poll = {});

// The model's raw outputs (logits for classification) for `inputs`, in batches, on the CPU; with `mask_input`
// (an attention mask's index) each batch cut to its longest row.
at::Tensor predict(Model& model, const std::vector<at::Tensor>& inputs, const TrainConfig& config,
                   const std::function<void()>& poll = {}, int64_t mask_input = -1);

// The same for the examples [first, last) of `data` (in memory or streamed: the source reads the batches ahead).
at::Tensor predict(Model& model, const Dataset& data, int64_t first, int64_t last, const TrainConfig& config,
                   const std::function<void()>& poll = {});

}  // namespace finetune
