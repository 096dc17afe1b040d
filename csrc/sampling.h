// The sampled training subset (stratified or not) and the order each epoch visits it in.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "config.h"

namespace finetune {

// The indices of the training subset used for the whole run: all of them when sample_fraction == 1 and
// sample_size == 0; otherwise a seeded sample. With stratify (classification only) every class keeps
// its share to within one example and no class present in the data is dropped.
at::Tensor sample_indices(const at::Tensor& targets, const TrainConfig& config);

// Examples per class in `targets[indices]` (length = max label + 1).
std::vector<int64_t> class_counts(const at::Tensor& targets, const at::Tensor& indices);

// The order in which `subset` is visited in `epoch`: a permutation drawn from a generator seeded by
// (seed, epoch) alone, so any epoch's order can be recomputed (resume, other ranks) without replay.
at::Tensor epoch_order(const at::Tensor& subset, int64_t seed, int64_t epoch, bool shuffle);

// sampler="balanced": `subset.size(0)` draws with replacement, each example weighted by 1 / its class's count
// in the subset, so every class is drawn equally often on average. Seeded by (seed, epoch) like epoch_order.
at::Tensor balanced_epoch_order(const at::Tensor& targets, const at::Tensor& subset, int64_t seed, int64_t epoch);

}  // namespace finetune
