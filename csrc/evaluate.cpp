// Evaluation and prediction: the model in eval mode, without autograd, in batches.
#include "evaluate.h"

#include <ATen/ATen.h>

#include "forward.h"
#include "guards.h"
#include "padding.h"
#include "ranking.h"
#include "tensor_lists.h"

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
  const Dataset data(inputs, at::zeros({n}), mask_input);  // the targets are not read
  return predict(model, data, 0, n, config, poll);
}

at::Tensor predict(Model& model, const Dataset& data, int64_t first, int64_t last, const TrainConfig& config,
                   const std::function<void()>& poll) {
  TORCH_CHECK_VALUE(last > first, "X is empty (0 examples)");
  std::vector<at::Tensor> batches;
  for (int64_t begin = first; begin < last; begin += config.eval_batch_size) {
    batches.push_back(at::arange(begin, std::min(begin + config.eval_batch_size, last), at::kLong));
  }
  data.plan(batches, /*epoch=*/-1);
  const auto device = resolve_device(config.device);
  model.to(device);
  ModeGuard eval_mode(model, /*training=*/false);
  // NoGradGuard rather than InferenceMode: inference tensors that reach a TorchScript module's cached
  // state break its next training step ("Inference tensors cannot be saved for backward").
  at::NoGradGuard no_autograd;
  std::vector<at::Tensor> outputs;
  for (const auto& indices : batches) {
    if (poll) poll();  // Ctrl-C
    // Rows in memory are sliced (a view, no copy); a source fetches them (the batch cut to its longest row).
    const auto batch = data.streamed() ? data.gather(indices)
                                       : data.slice(indices[0].item<int64_t>(), indices[-1].item<int64_t>() + 1);
    auto inputs = to_device(batch.inputs, device);
    if (!data.streamed() && data.mask_input >= 0) inputs = trim_to_longest(std::move(inputs), data.mask_input);
    AutocastGuard bf16(config.precision == "bf16", device.type());
    outputs.push_back(forward(model, inputs, "evaluation").to(at::kCPU).to(at::kFloat));
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
  const auto outputs = predict(model, data, first, last, config, poll);
  const auto targets = data.targets.slice(0, first, last);
  check_output(outputs, targets, num_labels(data, config), config);
  if (config.is_classification()) return classification_metrics(outputs, targets, config.topk, sum_over_ranks);
  return regression_metrics(outputs, targets, sum_over_ranks);
}

}  // namespace finetune
