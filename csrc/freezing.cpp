// Freezing and gradual unfreezing (see freezing.h).
#include "freezing.h"

#include "patterns.h"

namespace finetune {

Freezing::Freezing(NamedTensors params, const TrainConfig& config) : params_(std::move(params)), config_(config) {
  for (const auto& [name, p] : params_) {
    saved_requires_grad_.push_back(p.requires_grad());
    if (p.requires_grad()) user_trainable_.insert(name);
    p.requires_grad_(p.requires_grad() && !matches_any(name, config_.freeze, "freeze"));
    if (p.requires_grad()) trainable_.insert(name);
  }
}

Freezing::~Freezing() {
  for (size_t i = 0; i < params_.size(); ++i) params_[i].second.requires_grad_(saved_requires_grad_[i]);
}

std::set<std::string> Freezing::unfreeze(int64_t epoch) {
  std::set<std::string> unfrozen;
  const auto due = config_.unfreeze_at.find(epoch);
  if (due == config_.unfreeze_at.end()) return unfrozen;
  for (const auto& [name, p] : params_) {
    if (is_frozen(name) && user_trainable_.count(name) && matches_any(name, due->second, "unfreeze_at")) {
      unfrozen.insert(name);
      p.requires_grad_(true);
    }
  }
  trainable_.insert(unfrozen.begin(), unfrozen.end());
  return unfrozen;
}

std::vector<at::Tensor> Freezing::trainable_tensors() const {
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : params_) {
    if (!is_frozen(name)) out.push_back(p);
  }
  return out;
}

}  // namespace finetune
