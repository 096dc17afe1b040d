// The best epoch by config.monitor, and early stopping. The metric's direction is defined here, once.
#pragma once

#include <string>

#include "config.h"
#include "train.h"

namespace finetune {

// Whether smaller values of `monitor` are better (losses and errors) or larger ones (accuracy, F1, R²).
bool lower_is_better(const std::string& monitor);

// The value `monitor` names in an epoch's record ("train_loss", "val_<metric>").
double monitored_value(const EpochRecord& record, const std::string& monitor);

// Records `record` in the state's best-epoch tracking (best_epoch, best_value, best_metrics,
// epochs_without_improvement). Returns whether this epoch is the new best; sets `stop` when early stopping's
// patience has run out.
bool track_best(const EpochRecord& record, const TrainConfig& config, LoopState& state, bool& stop);

}  // namespace finetune
