// Freezing and gradual unfreezing: which parameters train, from which epoch. Shared by train and find_lr.
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "models.h"

namespace finetune {

// For its lifetime, the parameters matching config.freeze are frozen (requires_grad off, so they get no
// gradient and no optimizer state); unfreeze(epoch) makes trainable those an unfreeze_at entry names for that
// epoch. A parameter the caller set requires_grad=False stays frozen throughout. Every requires_grad flag is
// restored when it ends.
class Freezing {
 public:
  Freezing(NamedTensors params, const TrainConfig& config);
  ~Freezing();
  Freezing(const Freezing&) = delete;
  Freezing& operator=(const Freezing&) = delete;

  bool is_frozen(const std::string& name) const { return trainable_.count(name) == 0; }
  bool any_trainable() const { return !trainable_.empty(); }
  // The parameters unfrozen at `epoch` (none when no unfreeze_at entry is due), now trainable.
  std::set<std::string> unfreeze(int64_t epoch);
  // The trainable parameters' tensors, in model order.
  std::vector<at::Tensor> trainable_tensors() const;

 private:
  NamedTensors params_;
  const TrainConfig& config_;
  std::vector<bool> saved_requires_grad_;
  std::set<std::string> user_trainable_, trainable_;
};

}  // namespace finetune
