// Evaluation metrics computed from a whole split's outputs: classification and regression.
#pragma once

#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace finetune {

struct Metrics {
  std::map<std::string, double> values;  // "loss", "accuracy", "rmse", ...
  at::Tensor confusion;                  // classification: [true class, predicted class] counts
};

// loss (mean cross-entropy), accuracy, top{k}_accuracy (k capped at the number of classes), macro_f1
// (mean over classes present in targets or predictions) and the confusion matrix.
Metrics classification_metrics(const at::Tensor& logits, const at::Tensor& targets, int64_t topk);

// loss (mean squared error), rmse, mae, r2.
Metrics regression_metrics(const at::Tensor& predictions, const at::Tensor& targets);

}  // namespace finetune
