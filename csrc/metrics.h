// Evaluation metrics for classification and regression, computed from sums that add up across ranks.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

namespace finetune {

struct Metrics {
  std::map<std::string, double> values;  // "loss", "accuracy", "rmse", ...
  at::Tensor confusion;                  // classification: [true class, predicted class] counts
  // classification, per class: TP / predicted and TP / actual, 0 for a class never predicted / absent (as
  // scikit-learn's zero_division=0)
  std::vector<double> precision, recall;
};

// Sums a tensor of per-shard statistics over the ranks of a data-parallel evaluation (each rank holds the
// outputs of its own shard of the split). Left empty, the outputs given are the whole split.
using SumOverRanks = std::function<at::Tensor(const at::Tensor&)>;

// loss (mean cross-entropy), accuracy, top{k}_accuracy (k capped at the number of classes), macro_f1
// (mean over classes present in targets or predictions), balanced_accuracy (the mean recall of the classes in the
// targets), the confusion matrix and per-class precision and recall. Every one of them comes
// from counts and sums (correct, top-k hits, confusion, summed loss), so shards combine exactly.
Metrics classification_metrics(const at::Tensor& logits, const at::Tensor& targets, int64_t topk,
                               const SumOverRanks& sum_over_ranks = {});

// loss (mean squared error), rmse, mae, r2. R² needs the targets' mean first: two rounds of sums.
Metrics regression_metrics(const at::Tensor& predictions, const at::Tensor& targets,
                           const SumOverRanks& sum_over_ranks = {});

}  // namespace finetune
