// In-memory datasets: batches gathered by index, and the checks labels and targets must pass.
#include "dataset.h"

#include <ATen/ATen.h>

namespace finetune {

Dataset::Dataset(std::vector<at::Tensor> inputs_, at::Tensor targets_)
    : inputs(std::move(inputs_)), targets(std::move(targets_)) {
  TORCH_CHECK_VALUE(!inputs.empty(), "a dataset needs at least one input tensor");
  TORCH_CHECK_VALUE(targets.defined() && targets.dim() >= 1, "targets must be a tensor with a first dimension");
  for (size_t i = 0; i < inputs.size(); ++i) {
    TORCH_CHECK_VALUE(inputs[i].dim() >= 1 && inputs[i].size(0) == targets.size(0), "input ", i,
                      " has ", (inputs[i].dim() ? inputs[i].size(0) : 0), " rows but targets have ",
                      targets.size(0));
  }
}

Batch Dataset::gather(const at::Tensor& indices) const {
  Batch batch;
  batch.inputs.reserve(inputs.size());
  for (const auto& input : inputs) batch.inputs.push_back(input.index_select(0, indices));
  batch.targets = targets.index_select(0, indices);
  return batch;
}

Batch Dataset::slice(int64_t start, int64_t end) const {
  Batch batch;
  for (const auto& input : inputs) batch.inputs.push_back(input.slice(0, start, end));
  batch.targets = targets.slice(0, start, end);
  return batch;
}

void check_dataset(const Dataset& data, const TrainConfig& config, const std::string& name) {
  TORCH_CHECK_VALUE(data.size() > 0, name, " is empty (0 examples)");
  if (config.is_classification()) {
    TORCH_CHECK_VALUE(data.targets.scalar_type() == at::kLong,
                      name, " labels must be int64 class ids for task='classification', got dtype ",
                      data.targets.scalar_type());
    TORCH_CHECK_VALUE(data.targets.dim() == 1, name, " labels must be one-dimensional, got shape ",
                      data.targets.sizes());
    const int64_t lowest = data.targets.min().item<int64_t>();
    TORCH_CHECK_VALUE(lowest >= 0, name, " labels must be class ids >= 0, got ", lowest);
  } else {
    TORCH_CHECK_VALUE(at::isFloatingType(data.targets.scalar_type()),
                      name, " targets must be floating point for task='regression', got dtype ",
                      data.targets.scalar_type());
  }
}

}  // namespace finetune
