// Settings against the model and the data, before the first step (see preflight.h).
#include "preflight.h"

#include <sstream>

#include <ATen/ATen.h>

#include "dataset.h"

namespace finetune {

std::vector<std::string> metric_names(const TrainConfig& config) {
  if (config.is_classification()) {
    return {"accuracy", "balanced_accuracy", "loss", "macro_f1", "top" + std::to_string(config.topk) + "_accuracy"};
  }
  if (config.is_ranking()) return {"auc", "loss"};
  return {"loss", "mae", "r2", "rmse"};
}

void check_monitor(const TrainConfig& config, bool has_val) {
  const bool used = config.early_stopping > 0 || config.restore_best || config.monitor != TrainConfig{}.monitor;
  if (!used || config.monitor == "train_loss") return;
  std::ostringstream known;
  known << "'train_loss'";
  bool found = false;
  for (const auto& metric : metric_names(config)) {
    known << ", 'val_" << metric << "'";
    found = found || config.monitor == "val_" + metric;
  }
  TORCH_CHECK_VALUE(found, "monitor must be one of [", known.str(), "] for task='", config.task, "', got '",
                    config.monitor, "'");
  TORCH_CHECK_VALUE(has_val, "monitor '", config.monitor, "' needs validation data (val=...)",
                    config.early_stopping > 0 || config.restore_best ? " for early_stopping/restore_best" : "",
                    "; without it, monitor='train_loss'");
}

void check_augmentation(const Dataset& data, const TrainConfig& config) {
  if (config.augment_crop == 0 && !config.augment_flip) return;
  const char* setting = config.augment_crop > 0 ? "augment_crop" : "augment_flip";
  const auto example = data.example();
  const at::Tensor* image = nullptr;
  for (const auto& x : example) {
    if (x.dim() == 4 && at::isFloatingType(x.scalar_type())) image = &x;
  }
  std::ostringstream shapes;
  for (const auto& x : example) shapes << (shapes.tellp() ? ", " : "") << x.sizes() << " " << x.scalar_type();
  TORCH_CHECK_VALUE(image != nullptr, setting, " needs image inputs (floating, shaped N x C x H x W), got ",
                    shapes.str());
  const int64_t side = std::min(image->size(2), image->size(3));
  TORCH_CHECK_VALUE(config.augment_crop <= side, "augment_crop=", config.augment_crop,
                    " pads by more than the image's smaller side (", side, " pixels of ", image->sizes(),
                    "); use at most ", side, " (a few pixels is usual)");
}

}  // namespace finetune
