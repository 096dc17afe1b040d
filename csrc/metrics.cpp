// Metrics from sums over a split's outputs; tests/test_metrics.py checks each against scikit-learn, and
// tests/test_distributed.py checks that shards on two ranks give the one-process values.
#include "metrics.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>

namespace finetune {

namespace {

at::Tensor summed(const at::Tensor& sums, const SumOverRanks& sum_over_ranks) {
  return sum_over_ranks ? sum_over_ranks(sums) : sums;
}

}  // namespace

Metrics classification_metrics(const at::Tensor& logits_in, const at::Tensor& targets_in, int64_t topk,
                               const SumOverRanks& sum_over_ranks) {
  const auto logits = logits_in.to(at::kDouble);
  const auto targets = targets_in.to(at::kLong);
  const int64_t classes = logits.size(1), k = std::min(topk, classes);
  const auto predicted = logits.argmax(1);
  const auto top = std::get<1>(logits.topk(k, /*dim=*/1));
  const auto local_confusion = at::bincount(targets * classes + predicted, /*weights=*/{}, /*minlength=*/classes * classes);
  // [examples, summed loss, top-k hits, confusion (classes x classes)]: everything else derives from these.
  const auto local = at::cat({at::stack({at::scalar_tensor(static_cast<double>(targets.size(0)), at::kDouble),
                                         at::cross_entropy_loss(logits, targets, {}, at::Reduction::Sum),
                                         top.eq(targets.unsqueeze(1)).any(1).sum().to(at::kDouble)}),
                              local_confusion.to(at::kDouble)});
  const auto sums = summed(local, sum_over_ranks);
  const double n = sums[0].item<double>();

  Metrics m;
  m.confusion = sums.slice(0, 3).round().to(at::kLong).view({classes, classes});
  const auto confusion = sums.slice(0, 3).view({classes, classes});
  const auto true_positive = confusion.diagonal();
  m.values["loss"] = sums[1].item<double>() / n;
  m.values["accuracy"] = true_positive.sum().item<double>() / n;
  // With k at or past the number of classes every example is in its top k: 1.0, nothing measured.
  if (topk < classes) m.values["top" + std::to_string(k) + "_accuracy"] = sums[2].item<double>() / n;
  const auto actual = confusion.sum(1), predicted_count = confusion.sum(0);
  const auto present = (actual + predicted_count) > 0;
  // F1 = 2TP / (actual + predicted); classes absent from both targets and predictions are left out,
  // which is what scikit-learn's f1_score(average="macro") does for labels it never sees.
  const auto f1 = (2 * true_positive / (actual + predicted_count).clamp_min(1)).masked_select(present);
  m.values["macro_f1"] = f1.numel() ? f1.mean().item<double>() : 0.0;
  const auto precision = true_positive / predicted_count.clamp_min(1), recall = true_positive / actual.clamp_min(1);
  // The mean of the recalls of the classes in the targets (scikit-learn's balanced_accuracy_score): what the
  // recipe's class weights (rule 7) trade plain accuracy for, reported beside it.
  const auto recalled = recall.masked_select(actual > 0);
  m.values["balanced_accuracy"] = recalled.numel() ? recalled.mean().item<double>() : 0.0;
  m.precision.assign(precision.data_ptr<double>(), precision.data_ptr<double>() + classes);
  m.recall.assign(recall.data_ptr<double>(), recall.data_ptr<double>() + classes);
  return m;
}

Metrics regression_metrics(const at::Tensor& predictions_in, const at::Tensor& targets_in,
                           const SumOverRanks& sum_over_ranks) {
  const auto targets = targets_in.to(at::kDouble).reshape({targets_in.size(0), -1});
  const auto predictions = predictions_in.to(at::kDouble).reshape(targets.sizes());
  const int64_t columns = targets.size(1);
  // Round 1: [examples, the targets' sum per column] for the mean; round 2 sums squares around that mean,
  // as a two-pass variance does (one round of sum and sum of squares loses digits when the mean is large).
  const auto first = summed(at::cat({at::full({1}, static_cast<double>(targets.size(0)), at::kDouble), targets.sum(0)}),
                            sum_over_ranks);
  const double n = first[0].item<double>();
  const auto mean = first.slice(0, 1) / n;
  const auto error = predictions - targets;
  // Round 2: [absolute error, squared error per column, squares around the mean per column].
  const auto second = summed(at::cat({error.abs().sum().reshape({1}), error.pow(2).sum(0), (targets - mean).pow(2).sum(0)}),
                             sum_over_ranks);
  const auto residual = second.slice(0, 1, 1 + columns), total = second.slice(0, 1 + columns);
  Metrics m;
  const double mse = residual.sum().item<double>() / (n * static_cast<double>(columns));
  m.values["loss"] = mse;
  m.values["rmse"] = std::sqrt(mse);
  m.values["mae"] = second[0].item<double>() / (n * static_cast<double>(columns));
  // R² per output column, averaged uniformly (scikit-learn's r2_score default for several outputs).
  m.values["r2"] = (1 - residual / total).mean().item<double>();
  return m;
}

}  // namespace finetune
