// Scope guards the loop uses: the model's mode, bf16 autocast. Each restores what it changed when it ends.
#pragma once

#include <ATen/autocast_mode.h>

#include "models.h"

namespace finetune {

// The model in training or eval mode for the scope.
class ModeGuard {
 public:
  ModeGuard(Model& model, bool training) : model_(model), previous_(model.is_training()) { model_.train(training); }
  ~ModeGuard() {
    try {
      model_.train(previous_);
    } catch (...) {  // a destructor must not throw (it may run while an error unwinds); the mode stays as set
    }
  }
  ModeGuard(const ModeGuard&) = delete;
  ModeGuard& operator=(const ModeGuard&) = delete;

 private:
  Model& model_;
  bool previous_;
};

// precision="bf16": autocast on the run's device type for the forward pass and the loss.
class AutocastGuard {
 public:
  AutocastGuard(bool enabled, at::DeviceType type) : enabled_(enabled), type_(type) {
    if (!enabled_) return;
    previous_enabled_ = at::autocast::is_autocast_enabled(type_);
    previous_dtype_ = at::autocast::get_autocast_dtype(type_);
    at::autocast::set_autocast_enabled(type_, true);
    at::autocast::set_autocast_dtype(type_, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastGuard() {
    if (!enabled_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(type_, previous_enabled_);
    at::autocast::set_autocast_dtype(type_, previous_dtype_);
  }
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  bool enabled_;
  at::DeviceType type_;
  bool previous_enabled_ = false;
  at::ScalarType previous_dtype_ = at::kBFloat16;
};

}  // namespace finetune
