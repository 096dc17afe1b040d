// Seeded image augmentation for training batches.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace finetune {

// Image augmentation for a training batch of (N, C, H, W) images: a random crop of the image padded by `pad`
// pixels (zeros) on each side, and a horizontal flip with probability 1/2. Seeded by (seed, epoch, step) alone,
// so a resumed run draws the same augmentations. Inputs that are not 4-D floating tensors pass unchanged.
std::vector<at::Tensor> augment_images(const std::vector<at::Tensor>& inputs, int64_t pad, bool flip, int64_t seed,
                                       int64_t epoch, int64_t step);

}  // namespace finetune
