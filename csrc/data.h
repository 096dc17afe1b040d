// In-memory datasets, the sampled training subset (stratified or not) and the per-epoch order.
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
// are held as given (numpy memory is shared, not copied); batches are gathered with index_select.
struct Dataset {
  std::vector<at::Tensor> inputs;
  at::Tensor targets;  // int64 class ids (classification) or float (regression)

  Dataset() = default;
  Dataset(std::vector<at::Tensor> inputs, at::Tensor targets);

  int64_t size() const { return targets.size(0); }
  Batch gather(const at::Tensor& indices) const;
  Batch slice(int64_t start, int64_t end) const;
};

// Checks shapes and, for classification, that labels are integer class ids >= 0. `name` names the
// argument in error messages ("train", "val").
void check_dataset(const Dataset& data, const TrainConfig& config, const std::string& name);

// The indices of the training subset used for the whole run: all of them when sample_fraction == 1 and
// sample_size == 0; otherwise a seeded sample. With stratify (classification only) every class keeps
// its share to within one example and no class present in the data is dropped.
at::Tensor sample_indices(const at::Tensor& targets, const TrainConfig& config);

// Examples per class in `targets[indices]` (length = max label + 1).
std::vector<int64_t> class_counts(const at::Tensor& targets, const at::Tensor& indices);

// The order in which `subset` is visited in `epoch`: a permutation drawn from a generator seeded by
// (seed, epoch) alone, so any epoch's order can be recomputed (resume, other ranks) without replay.
at::Tensor epoch_order(const at::Tensor& subset, int64_t seed, int64_t epoch, bool shuffle);

// sampler="balanced": `subset.size(0)` draws with replacement, each example weighted by 1 / its class's count
// in the subset, so every class is drawn equally often on average. Seeded by (seed, epoch) like epoch_order.
at::Tensor balanced_epoch_order(const at::Tensor& targets, const at::Tensor& subset, int64_t seed, int64_t epoch);

// Image augmentation for a training batch of (N, C, H, W) images: a random crop of the image padded by `pad`
// pixels (zeros) on each side, and a horizontal flip with probability 1/2. Seeded by (seed, epoch, step) alone,
// so a resumed run draws the same augmentations. Inputs that are not 4-D floating tensors pass unchanged.
std::vector<at::Tensor> augment_images(const std::vector<at::Tensor>& inputs, int64_t pad, bool flip, int64_t seed,
                                       int64_t epoch, int64_t step);

// Reads an IDX file (the MNIST format), gzip-compressed or not, into a tensor of its stored type.
at::Tensor read_idx(const std::string& path);

}  // namespace finetune
