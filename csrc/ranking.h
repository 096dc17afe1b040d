// Pairwise ranking (BPR, Rendle et al. 2009): each (user, item) interaction scored against an item drawn at random.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "dataset.h"
#include "metrics.h"
#include "models.h"

namespace finetune {

// The items negatives are drawn from: ids 0 .. the largest item id of `data`'s pairs. Checks that the data is
// one int64 input of (user, item) pairs, shape (N, 2); `name` names the split in the error.
int64_t ranking_items(const Dataset& data, const std::string& name);

// The micro-batch seed of the negatives drawn for (seed, epoch, micro-batch): recomputable, so a resumed run
// and every rank draw the same items. Evaluation draws with epoch -1, the same items at every epoch.
uint64_t negatives_seed(int64_t seed, int64_t epoch, int64_t micro_batch);

// The pairs (B, 2) followed by the same users each with an item drawn uniformly from [0, num_items): (2B, 2).
at::Tensor with_negatives(const at::Tensor& pairs, int64_t num_items, uint64_t seed);

// The BPR loss of a micro-batch of interactions: -log sigmoid(score(u, i) - score(u, j)) with j drawn by `seed`,
// plus the model's own penalty (mf's `reg`) of both pairs scored; reduced by `reduction` (Mean or Sum).
at::Tensor ranking_loss(Model& model, const at::Tensor& pairs, int64_t num_items, uint64_t seed, int64_t reduction);

// loss (mean BPR loss) and auc (the share of interactions scored above their drawn item, ties counting half)
// from the scores of with_negatives' rows (2B); from sums, so shards combine exactly.
Metrics ranking_metrics(const at::Tensor& scores, const SumOverRanks& sum_over_ranks = {});

}  // namespace finetune
