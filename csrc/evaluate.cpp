// Evaluation and prediction: the model in eval mode, without autograd, in batches.
#include "evaluate.h"

#include <ATen/ATen.h>

#include "forward.h"
#include "guards.h"
#include "padding.h"
#include "ranking.h"

namespace finetune {

at::Tensor predict(Model& model, const std::vector<at::Tensor>& inputs, const TrainConfig& config,
                   const std::function<void()>& poll, int64_t mask_input) {
  TORCH_CHECK_VALUE(!inputs.empty() && inputs[0].dim() >= 1, "predict needs at least one input tensor");
  const int64_t n = inputs[0].size(0);
  TORCH_CHECK_VALUE(n > 0, "X is empty (0 examples)");
  for (const auto& input : inputs) {
    TORCH_CHECK_VALUE(input.dim() >= 1 && input.size(0) == n, "all inputs must have ", n, " rows, got shape ",
                      input.sizes());
  }
  const auto device = resolve_device(config.device);
  model.to(device);
  ModeGuard eval_mode(model, /*training=*/false);
  // NoGradGuard rather than InferenceMode: inference tensors that reach a TorchScript module's cached
  // state break its next training step ("Inference tensors cannot be saved for backward").
  at::NoGradGuard no_autograd;
  std::vector<at::Tensor> outputs;
  for (int64_t begin = 0; begin < n; begin += config.eval_batch_size) {
    if (poll) poll();  // Ctrl-C
    const int64_t end = std::min(begin + config.eval_batch_size, n);
    std::vector<at::Tensor> batch;
    for (const auto& input : inputs) batch.push_back(input.slice(0, begin, end).to(device));
    if (mask_input >= 0) batch = trim_to_longest(std::move(batch), mask_input);
    AutocastGuard bf16(config.precision == "bf16", device.type());
    outputs.push_back(forward(model, batch, "evaluation").to(at::kCPU).to(at::kFloat));
  }
  return at::cat(outputs);
}

Metrics evaluate(Model& model, const Dataset& data, const TrainConfig& config, Parallel* parallel,
                 const std::function<void()>& poll) {
  check_dataset(data, config, "data");
  const int64_t n = data.size();
  // Every rank holds the whole split; each evaluates the contiguous shard [n*rank/world, n*(rank+1)/world).
  const bool sharded = parallel && parallel->world_size() > 1 && n >= parallel->world_size();
  const int64_t world = sharded ? parallel->world_size() : 1, rank = sharded ? parallel->rank() : 0;
  const int64_t first = n * rank / world, last = n * (rank + 1) / world;
  SumOverRanks sum_over_ranks;
  if (sharded) sum_over_ranks = [parallel](const at::Tensor& sums) { return parallel->sum(sums); };
  if (config.is_ranking()) {
    // The same drawn items at every epoch (epoch -1), drawn for the whole split before it is sharded.
    const auto scored = with_negatives(data.inputs[0], ranking_items(data, "data"), negatives_seed(config.seed, -1, 0));
    const auto mine = at::cat({scored.slice(0, first, last), scored.slice(0, n + first, n + last)});
    return ranking_metrics(predict(model, {mine}, config, poll), sum_over_ranks);
  }
  const auto shard = data.slice(first, last);
  const auto outputs = predict(model, shard.inputs, config, poll, data.mask_input);
  check_output(outputs, shard.targets, num_labels(data, config), config);
  if (config.is_classification()) return classification_metrics(outputs, shard.targets, config.topk, sum_over_ranks);
  return regression_metrics(outputs, shard.targets, sum_over_ranks);
}

}  // namespace finetune
