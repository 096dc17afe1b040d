// Token batches without their padding: cut to their longest row, and epochs visited in batches of similar lengths.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace finetune {

// Each row's length under an attention mask (N, L): the position after its last non-zero entry, so that a
// left-padded row keeps its whole length and no token the mask marks is ever cut.
at::Tensor sequence_lengths(const at::Tensor& mask);

// The inputs of one batch cut to its longest row: every input shaped (batch, L, ...) like the mask (input
// `mask_input`) is narrowed to the longest row's length. A model whose outputs ignore masked positions gives
// the same outputs for the rows (finetune's check runs it both ways before a run trims).
std::vector<at::Tensor> trim_to_longest(std::vector<at::Tensor> inputs, int64_t mask_input);

// group_by_length (Hugging Face's name and rule): the epoch's order cut into mega-batches of 50 optimizer steps'
// examples, each sorted by length, longest first, so that a batch holds rows of similar lengths and trimming
// cuts more. Still a permutation of `order`, and a function of it: as seeded and resumable as the order itself.
at::Tensor group_by_length(const at::Tensor& order, const at::Tensor& lengths, int64_t step_examples);

}  // namespace finetune
