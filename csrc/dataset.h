// Datasets: input tensors in memory, or examples fetched by index (ExampleSource), with their targets in memory,
// and the checks they must pass.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "config.h"

namespace finetune {

struct Batch {
  std::vector<at::Tensor> inputs;
  at::Tensor targets;
};

// Examples that are not tensors in memory (a torch Dataset, a memory-mapped file, an image folder), fetched by
// index when a batch needs them. finetune/streams.py implements it in Python (bound in bindings.cpp): its workers
// read ahead the batches the loop plans, so the loop still decides everything about order.
class ExampleSource {
 public:
  virtual ~ExampleSource() = default;
  // The inputs of the examples `indices` (int64, 1-D), in that order, one row per index, on the CPU.
  virtual std::vector<at::Tensor> fetch(const at::Tensor& indices) = 0;
  // The batches the loop fetches next, in order (the rest of an epoch on this rank, or an evaluation's): the
  // source may start reading them ahead. A fetch outside the plan is read when asked. `epoch` is the training
  // epoch they are for (a dataset's own augmentation draws from it), or -1 for an evaluation (none).
  virtual void plan(const std::vector<at::Tensor>& batches, int64_t epoch) = 0;
};

// One or more input tensors and one target tensor, all with the same first dimension; or, with `source`, the
// inputs fetched from it by index and the targets in memory (sampling and class counts read them alone). The
// tensors are held as given (numpy memory is shared, not copied); batches are gathered by row.
struct Dataset {
  std::vector<at::Tensor> inputs;  // empty with a source
  std::shared_ptr<ExampleSource> source;
  at::Tensor targets;  // int64 class ids (classification) or float (regression)
  // The input that is an attention mask (examples, length), or -1: with one, every batch gathered is cut to its
  // longest row (padding.h). finetune.train sets it where the model gives the same outputs trimmed.
  int64_t mask_input = -1;

  Dataset() = default;
  Dataset(std::vector<at::Tensor> inputs, at::Tensor targets, int64_t mask_input = -1);
  Dataset(std::shared_ptr<ExampleSource> source, at::Tensor targets, int64_t mask_input = -1);

  int64_t size() const { return targets.size(0); }
  bool streamed() const { return source != nullptr; }
  Batch gather(const at::Tensor& indices) const;
  Batch slice(int64_t start, int64_t end) const;
  // The batches about to be gathered, in order, for training epoch `epoch` or (-1) an evaluation (a source reads
  // them ahead; tensors need no plan).
  void plan(const std::vector<at::Tensor>& batches, int64_t epoch) const;
  // The first example's inputs (one row each): their shapes and dtypes, for checks before the first step.
  std::vector<at::Tensor> example() const;
};

// Checks shapes and, for classification, that labels are integer class ids >= 0. `name` names the
// argument in error messages ("train", "val").
void check_dataset(const Dataset& data, const TrainConfig& config, const std::string& name);

}  // namespace finetune
