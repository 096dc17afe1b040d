// Checks a run's settings against its model and data before the first step: a setting that would match
// nothing or have no effect is an error naming it, never silently ignored.
#pragma once

#include <string>
#include <vector>

#include "config.h"
#include "dataset.h"

namespace finetune {

// `monitor` names a value the run computes: 'train_loss', or 'val_<metric>' for the task's metrics when there
// is validation data. Checked whenever something uses it (early_stopping, restore_best) or it was changed
// from its default.
void check_monitor(const TrainConfig& config, bool has_val);

// The metric names evaluate() reports for the task ("accuracy", "loss", ...), in alphabetical order.
std::vector<std::string> metric_names(const TrainConfig& config);

// augment_crop / augment_flip need image inputs (a floating 4-D tensor, N x C x H x W), and augment_crop is at
// most the image's height and width.
void check_augmentation(const Dataset& data, const TrainConfig& config);

}  // namespace finetune
