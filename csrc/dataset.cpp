// Datasets: batches gathered by index from tensors or fetched from a source, and the checks labels and targets must pass.
#include "dataset.h"

#include <cstring>

#include <ATen/ATen.h>

#include "padding.h"

namespace finetune {

namespace {

// Rows `indices` of `t`. A contiguous CPU tensor's rows are copied byte for byte: on a step's batch,
// index_select's dispatch and parallel setup take ten times the copy (13 us against ~1 us for 32 rows of 64
// floats, 1 thread), a tenth of a small model's step.
at::Tensor take_rows(const at::Tensor& t, const at::Tensor& indices) {
  if (!t.device().is_cpu() || !t.is_contiguous() || !indices.device().is_cpu() || !indices.is_contiguous() ||
      indices.scalar_type() != at::kLong || indices.dim() != 1) {
    return t.index_select(0, indices);
  }
  auto sizes = t.sizes().vec();
  sizes[0] = indices.numel();
  auto out = at::empty(sizes, t.options());
  const int64_t rows = t.size(0);
  const size_t row_bytes = static_cast<size_t>(rows ? t.numel() / rows : 0) * t.element_size();
  const auto* from = static_cast<const char*>(t.const_data_ptr());
  auto* to = static_cast<char*>(out.mutable_data_ptr());
  const auto* index = indices.const_data_ptr<int64_t>();
  for (int64_t i = 0; i < indices.numel(); ++i) {
    TORCH_CHECK_INDEX(index[i] >= 0 && index[i] < rows, "index ", index[i], " out of range for ", rows, " rows");
    std::memcpy(to + i * row_bytes, from + index[i] * row_bytes, row_bytes);
  }
  return out;
}

}  // namespace

Dataset::Dataset(std::vector<at::Tensor> inputs_, at::Tensor targets_, int64_t mask_input_)
    : inputs(std::move(inputs_)), targets(std::move(targets_)), mask_input(mask_input_) {
  TORCH_CHECK_VALUE(!inputs.empty(), "a dataset needs at least one input tensor");
  TORCH_CHECK_VALUE(targets.defined() && targets.dim() >= 1, "targets must be a tensor with a first dimension");
  for (size_t i = 0; i < inputs.size(); ++i) {
    TORCH_CHECK_VALUE(inputs[i].dim() >= 1 && inputs[i].size(0) == targets.size(0), "input ", i,
                      " has ", (inputs[i].dim() ? inputs[i].size(0) : 0), " rows but targets have ",
                      targets.size(0));
  }
  TORCH_CHECK_VALUE(mask_input >= -1 && mask_input < static_cast<int64_t>(inputs.size()), "mask_input must be -1 or "
                    "the index of one of the ", inputs.size(), " inputs, got ", mask_input);
  TORCH_CHECK_VALUE(mask_input < 0 || inputs[mask_input].dim() == 2, "the attention mask (input ", mask_input,
                    ") must be (examples, length), got shape ", mask_input < 0 ? at::IntArrayRef{} : inputs[mask_input].sizes());
}

Dataset::Dataset(std::shared_ptr<ExampleSource> source_, at::Tensor targets_, int64_t mask_input_)
    : source(std::move(source_)), targets(std::move(targets_)), mask_input(mask_input_) {
  TORCH_CHECK_VALUE(source != nullptr, "a streamed dataset needs a source");
  TORCH_CHECK_VALUE(targets.defined() && targets.dim() >= 1, "targets must be a tensor with a first dimension");
  TORCH_CHECK_VALUE(mask_input >= -1, "mask_input must be -1 or the index of an input, got ", mask_input);
}

Batch Dataset::gather(const at::Tensor& indices) const {
  Batch batch;
  if (source) {
    batch.inputs = source->fetch(indices);
    for (const auto& input : batch.inputs) {
      TORCH_CHECK_VALUE(input.dim() >= 1 && input.size(0) == indices.size(0), "a streamed batch of ", indices.size(0),
                        " examples came back with an input of shape ", input.sizes());
    }
  }
  batch.inputs.reserve(inputs.size());
  for (const auto& input : inputs) batch.inputs.push_back(take_rows(input, indices));
  if (mask_input >= 0) batch.inputs = trim_to_longest(std::move(batch.inputs), mask_input);
  batch.targets = take_rows(targets, indices);
  return batch;
}

Batch Dataset::slice(int64_t start, int64_t end) const {
  if (source) return gather(at::arange(start, end, at::kLong));
  Batch batch;
  for (const auto& input : inputs) batch.inputs.push_back(input.slice(0, start, end));
  batch.targets = targets.slice(0, start, end);
  return batch;
}

void Dataset::plan(const std::vector<at::Tensor>& batches, int64_t epoch) const {
  if (source) source->plan(batches, epoch);
}

std::vector<at::Tensor> Dataset::example() const {
  if (source) return source->fetch(at::zeros({1}, at::kLong));
  std::vector<at::Tensor> out;
  for (const auto& input : inputs) out.push_back(input.slice(0, 0, 1));
  return out;
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
