// The IDX file format (MNIST's), read into a tensor.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

namespace finetune {

// Reads an IDX file (the MNIST format), gzip-compressed or not, into a tensor of its stored type.
at::Tensor read_idx(const std::string& path);

}  // namespace finetune
