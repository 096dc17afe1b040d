// Token batches without their padding (see padding.h).
#include "padding.h"

#include <algorithm>
#include <numeric>

#include <ATen/ATen.h>

namespace finetune {

at::Tensor sequence_lengths(const at::Tensor& mask) {
  TORCH_CHECK_VALUE(mask.dim() == 2, "an attention mask must be (examples, length), got shape ", mask.sizes());
  const auto positions = at::arange(1, mask.size(1) + 1, mask.options().dtype(at::kLong));
  return (mask.ne(0).to(at::kLong) * positions).amax(1);
}

std::vector<at::Tensor> trim_to_longest(std::vector<at::Tensor> inputs, int64_t mask_input) {
  const auto& mask = inputs.at(mask_input);
  const int64_t length = mask.size(1);
  const int64_t longest = std::max<int64_t>(1, sequence_lengths(mask).max().item<int64_t>());
  if (longest == length) return inputs;
  for (auto& input : inputs) {
    if (input.dim() >= 2 && input.size(0) == mask.size(0) && input.size(1) == length) {
      input = input.narrow(1, 0, longest);
    }
  }
  return inputs;
}

at::Tensor group_by_length(const at::Tensor& order, const at::Tensor& lengths, int64_t step_examples) {
  const int64_t n = order.size(0), mega = 50 * std::max<int64_t>(step_examples, 1);
  const auto order_cpu = order.to(at::kCPU).contiguous();
  const auto length_of = lengths.to(at::kCPU).index_select(0, order_cpu).contiguous();
  const auto* index = order_cpu.const_data_ptr<int64_t>();
  const auto* length = length_of.const_data_ptr<int64_t>();
  std::vector<int64_t> position(n);
  std::iota(position.begin(), position.end(), 0);
  for (int64_t begin = 0; begin < n; begin += mega) {
    const int64_t end = std::min(begin + mega, n);
    // Stable: equal lengths keep the seeded order between them.
    std::stable_sort(position.begin() + begin, position.begin() + end,
                     [&](int64_t a, int64_t b) { return length[a] > length[b]; });
  }
  auto grouped = at::empty({n}, order_cpu.options());
  auto* out = grouped.mutable_data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) out[i] = index[position[i]];
  return grouped.to(order.device());
}

}  // namespace finetune
