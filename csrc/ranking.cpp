// Pairwise ranking (see ranking.h).
#include "ranking.h"

#include <ATen/ATen.h>

#include "forward.h"
#include "seeding.h"

namespace finetune {

int64_t ranking_items(const Dataset& data, const std::string& name) {
  TORCH_CHECK_VALUE(!data.streamed(), "task='ranking' draws negatives over every item id, so ", name, "'s (user, item) "
                    "pairs must be an array in memory, not a streamed dataset");
  TORCH_CHECK_VALUE(data.inputs.size() == 1 && data.inputs[0].dim() == 2 && data.inputs[0].size(1) == 2 &&
                        data.inputs[0].scalar_type() == at::kLong,
                    "task='ranking' needs ", name, " to be (user, item) id pairs, one int64 array of shape (N, 2), got ",
                    data.inputs.size(), " input(s), the first of shape ",
                    data.inputs.empty() ? at::IntArrayRef{} : data.inputs[0].sizes(), " and dtype ",
                    data.inputs.empty() ? at::kLong : data.inputs[0].scalar_type());
  const auto items = data.inputs[0].select(1, 1);
  const int64_t lowest = items.min().item<int64_t>();
  TORCH_CHECK_VALUE(lowest >= 0, name, " has item id ", lowest, "; ids must be >= 0");
  return items.max().item<int64_t>() + 1;
}

uint64_t negatives_seed(int64_t seed, int64_t epoch, int64_t micro_batch) {
  // Not augment_images' stream: the constant keeps the two draws of one micro-batch independent.
  return mix(mix(mix(static_cast<uint64_t>(seed) ^ 0x4E454741ULL) ^ static_cast<uint64_t>(epoch + 1)) ^
             static_cast<uint64_t>(micro_batch + 1));
}

at::Tensor with_negatives(const at::Tensor& pairs, int64_t num_items, uint64_t seed) {
  auto generator = seeded_generator(seed);
  auto negatives = pairs.clone();
  negatives.select(1, 1).copy_(at::randint(num_items, {pairs.size(0)}, generator, at::kLong).to(pairs.device()));
  return at::cat({pairs, negatives});
}

namespace {

// (positive scores, negative scores), each (B), from the scores of with_negatives' rows.
std::pair<at::Tensor, at::Tensor> split_scores(const at::Tensor& scores_in, int64_t rows) {
  TORCH_CHECK_VALUE(scores_in.dim() >= 1 && scores_in.size(0) == 2 * rows && scores_in.numel() == 2 * rows,
                    "model output has shape ", scores_in.sizes(), " but task='ranking' needs one score per (user, "
                    "item) pair: (", 2 * rows, ") or (", 2 * rows, ", 1)");
  const auto scores = scores_in.reshape({2, rows}).to(at::kFloat);
  return {scores[0], scores[1]};
}

}  // namespace

at::Tensor ranking_loss(Model& model, const at::Tensor& pairs, int64_t num_items, uint64_t seed, int64_t reduction) {
  const int64_t rows = pairs.size(0);
  const std::vector<at::Tensor> scored{with_negatives(pairs, num_items, seed)};
  const auto [positive, negative] = split_scores(forward(model, scored, "training"), rows);
  auto loss = at::softplus(negative - positive);  // = -log sigmoid(positive - negative), stable for large gaps
  const auto penalty = model.penalty(scored);
  if (penalty.defined()) loss = loss + penalty.reshape({2, rows}).sum(0);
  return reduction == at::Reduction::Sum ? loss.sum() : loss.mean();
}

Metrics ranking_metrics(const at::Tensor& scores, const SumOverRanks& sum_over_ranks) {
  const int64_t rows = scores.size(0) / 2;
  const auto [positive, negative] = split_scores(scores, rows);
  const auto ordered = (positive > negative).to(at::kDouble) + 0.5 * (positive == negative).to(at::kDouble);
  auto sums = at::stack({at::softplus(negative - positive).to(at::kDouble).sum(), ordered.sum(),
                         at::scalar_tensor(static_cast<double>(rows), at::kDouble)});
  if (sum_over_ranks) sums = sum_over_ranks(sums);
  const double n = sums[2].item<double>();
  Metrics metrics;
  metrics.values["loss"] = sums[0].item<double>() / n;
  metrics.values["auc"] = sums[1].item<double>() / n;
  return metrics;
}

}  // namespace finetune
