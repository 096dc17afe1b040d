// The best epoch and early stopping (see best.h).
#include "best.h"

#include <sstream>

#include <c10/util/Exception.h>

namespace finetune {

bool lower_is_better(const std::string& monitor) {
  return monitor.find("loss") != std::string::npos || monitor.find("rmse") != std::string::npos ||
         monitor.find("mae") != std::string::npos;
}

double monitored_value(const EpochRecord& record, const std::string& monitor) {
  if (monitor == "train_loss") return record.train_loss;
  const auto found = record.val.find(monitor.substr(4));
  if (monitor.rfind("val_", 0) == 0 && found != record.val.end()) return found->second;
  std::ostringstream known;
  known << "'train_loss'";
  for (const auto& [name, value] : record.val) known << ", 'val_" << name << "'";
  const bool top_k = monitor.rfind("val_top", 0) == 0;  // not reported where k reaches the number of classes
  TORCH_CHECK_VALUE(false, "monitor must be one of [", known.str(), "], got '", monitor, "'",
                    top_k ? " (top-k accuracy is reported only for k below the number of classes)" : "");
}

bool track_best(const EpochRecord& record, const TrainConfig& config, LoopState& state, bool& stop) {
  const double value = monitored_value(record, config.monitor);
  const bool improved = state.best_epoch < 0 ||
                        (lower_is_better(config.monitor) ? value < state.best_value : value > state.best_value);
  if (improved) {
    state.best_epoch = record.epoch;
    state.best_value = value;
    state.best_metrics = record.val;
    state.epochs_without_improvement = 0;
  } else if (config.early_stopping > 0 && ++state.epochs_without_improvement >= config.early_stopping) {
    stop = true;
  }
  return improved;
}

}  // namespace finetune
