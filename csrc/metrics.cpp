// Metrics from whole-split outputs; tests/test_metrics.py checks each against scikit-learn.
#include "metrics.h"

#include <algorithm>

#include <ATen/ATen.h>

namespace finetune {

Metrics classification_metrics(const at::Tensor& logits_in, const at::Tensor& targets_in, int64_t topk) {
  const auto logits = logits_in.to(at::kDouble);
  const auto targets = targets_in.to(at::kLong);
  const int64_t n = targets.size(0), classes = logits.size(1);
  Metrics m;
  m.values["loss"] = at::cross_entropy_loss(logits, targets).item<double>();
  const auto predicted = logits.argmax(1);
  m.values["accuracy"] = predicted.eq(targets).sum().item<double>() / static_cast<double>(n);
  const int64_t k = std::min(topk, classes);
  const auto top = std::get<1>(logits.topk(k, /*dim=*/1));
  m.values["top" + std::to_string(k) + "_accuracy"] =
      top.eq(targets.unsqueeze(1)).any(1).sum().item<double>() / static_cast<double>(n);

  m.confusion = at::bincount(targets * classes + predicted, /*weights=*/{}, /*minlength=*/classes * classes)
                    .view({classes, classes});
  const auto confusion = m.confusion.to(at::kDouble);
  const auto true_positive = confusion.diagonal();
  const auto actual = confusion.sum(1), predicted_count = confusion.sum(0);
  const auto present = (actual + predicted_count) > 0;
  // F1 = 2TP / (actual + predicted); classes absent from both targets and predictions are left out,
  // which is what scikit-learn's f1_score(average="macro") does for labels it never sees.
  const auto f1 = (2 * true_positive / (actual + predicted_count).clamp_min(1)).masked_select(present);
  m.values["macro_f1"] = f1.numel() ? f1.mean().item<double>() : 0.0;
  return m;
}

Metrics regression_metrics(const at::Tensor& predictions_in, const at::Tensor& targets_in) {
  const auto targets = targets_in.to(at::kDouble).reshape({targets_in.size(0), -1});
  const auto predictions = predictions_in.to(at::kDouble).reshape(targets.sizes());
  const auto error = predictions - targets;
  Metrics m;
  const double mse = error.pow(2).mean().item<double>();
  m.values["loss"] = mse;
  m.values["rmse"] = std::sqrt(mse);
  m.values["mae"] = error.abs().mean().item<double>();
  // R² per output column, averaged uniformly (scikit-learn's r2_score default for several outputs).
  const auto residual = error.pow(2).sum(0);
  const auto total = (targets - targets.mean(0)).pow(2).sum(0);
  m.values["r2"] = (1 - residual / total).mean().item<double>();
  return m;
}

}  // namespace finetune
