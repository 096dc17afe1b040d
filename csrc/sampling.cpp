// The sampled training subset (stratified or not) and each epoch's order, all from seeded generators.
#include "sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <ATen/ATen.h>

#include "seeding.h"

namespace finetune {

namespace {

// How many examples each class contributes to a sample of `k` out of `counts`: every class gets the floor
// or the ceiling of its exact share, and no class present in the data gets zero. The total is k, except
// when k is too small to give each present class one example: then it is the number of classes needed.
std::vector<int64_t> stratified_quota(const std::vector<int64_t>& counts, int64_t k) {
  const int64_t n = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  std::vector<int64_t> quota(counts.size());
  std::vector<std::pair<double, size_t>> remainders;  // (fractional part, class) of classes that may get +1
  int64_t assigned = 0;
  for (size_t c = 0; c < counts.size(); ++c) {
    const double exact = static_cast<double>(counts[c]) * static_cast<double>(k) / static_cast<double>(n);
    quota[c] = static_cast<int64_t>(std::floor(exact));
    if (counts[c] > 0 && quota[c] == 0) {
      quota[c] = 1;  // the ceiling of a share below one: the class is kept
    } else if (counts[c] > quota[c]) {
      remainders.emplace_back(exact - std::floor(exact), c);
    }
    assigned += quota[c];
  }
  // Largest remainder first; ties go to the lower class id so the result is deterministic.
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (size_t i = 0; assigned < k && i < remainders.size(); ++i, ++assigned) quota[remainders[i].second] += 1;
  return quota;
}

}  // namespace

at::Tensor sample_indices(const at::Tensor& targets, const TrainConfig& config) {
  const int64_t n = targets.size(0);
  TORCH_CHECK_VALUE(config.sample_size <= n, "sample_size must be <= the number of training examples (", n,
                    "), got ", config.sample_size);
  const int64_t k = config.sample_size > 0
                        ? config.sample_size
                        : std::max<int64_t>(1, std::llround(config.sample_fraction * static_cast<double>(n)));
  if (k == n) return at::arange(n, at::kLong);

  auto generator = seeded_generator(mix(static_cast<uint64_t>(config.seed)));
  if (!(config.stratify && config.is_classification())) {
    return std::get<0>(at::randperm(n, generator, at::kLong).slice(0, 0, k).sort());
  }
  const auto labels = targets.to(at::kLong).contiguous();
  const auto counts_tensor = at::bincount(labels);
  std::vector<int64_t> counts(counts_tensor.data_ptr<int64_t>(),
                              counts_tensor.data_ptr<int64_t>() + counts_tensor.numel());
  const auto quota = stratified_quota(counts, k);
  std::vector<at::Tensor> picked;
  for (size_t c = 0; c < counts.size(); ++c) {
    if (quota[c] == 0) continue;
    const auto members = (labels == static_cast<int64_t>(c)).nonzero().flatten();
    const auto shuffled = members.index_select(0, at::randperm(members.size(0), generator, at::kLong));
    picked.push_back(shuffled.slice(0, 0, quota[c]));
  }
  return std::get<0>(at::cat(picked).sort());
}

std::vector<int64_t> class_counts(const at::Tensor& targets, const at::Tensor& indices) {
  const auto counts = at::bincount(targets.index_select(0, indices).to(at::kLong)).contiguous();
  return std::vector<int64_t>(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel());
}

namespace {

at::Generator epoch_generator(int64_t seed, int64_t epoch) {
  return seeded_generator(mix(mix(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(epoch + 1)));
}

}  // namespace

at::Tensor epoch_order(const at::Tensor& subset, int64_t seed, int64_t epoch, bool shuffle) {
  if (!shuffle) return subset;
  auto generator = epoch_generator(seed, epoch);
  return subset.index_select(0, at::randperm(subset.size(0), generator, at::kLong));
}

at::Tensor balanced_epoch_order(const at::Tensor& targets, const at::Tensor& subset, int64_t seed, int64_t epoch) {
  const auto labels = targets.index_select(0, subset).to(at::kLong);
  const auto weights = at::bincount(labels).to(at::kDouble).reciprocal().index_select(0, labels);
  auto generator = epoch_generator(seed, epoch);
  return subset.index_select(0, at::multinomial(weights, subset.size(0), /*replacement=*/true, generator));
}

}  // namespace finetune
