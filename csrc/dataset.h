// In-memory datasets: one or more input tensors and a target tensor, and the checks they must pass.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "config.h"

namespace finetune {

struct Batch {
  std::vector<at::Tensor> inputs;
  at::Tensor targets;
};

// One or more input tensors and one target tensor, all with the same first dimension. The tensors
// are held as given (numpy memory is shared, not copied); batches are gathered by row.
struct Dataset {
  std::vector<at::Tensor> inputs;
  at::Tensor targets;  // int64 class ids (classification) or float (regression)
  // The input that is an attention mask (examples, length), or -1: with one, every batch gathered is cut to its
  // longest row (padding.h). finetune.train sets it where the model gives the same outputs trimmed.
  int64_t mask_input = -1;

  Dataset() = default;
  Dataset(std::vector<at::Tensor> inputs, at::Tensor targets, int64_t mask_input = -1);

  int64_t size() const { return targets.size(0); }
  Batch gather(const at::Tensor& indices) const;
  Batch slice(int64_t start, int64_t end) const;
};

// Checks shapes and, for classification, that labels are integer class ids >= 0. `name` names the
// argument in error messages ("train", "val").
void check_dataset(const Dataset& data, const TrainConfig& config, const std::string& name);

}  // namespace finetune
