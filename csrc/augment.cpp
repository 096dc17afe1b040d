// Seeded image augmentation for training batches: random crops of the padded image and horizontal flips.
#include "augment.h"

#include <ATen/ATen.h>

#include "seeding.h"

namespace finetune {

std::vector<at::Tensor> augment_images(const std::vector<at::Tensor>& inputs, int64_t pad, bool flip, int64_t seed,
                                       int64_t epoch, int64_t step) {
  if (pad == 0 && !flip) return inputs;
  auto generator = seeded_generator(mix(mix(mix(static_cast<uint64_t>(seed)) ^ static_cast<uint64_t>(epoch + 1)) ^
                                        static_cast<uint64_t>(step + 1)));
  std::vector<at::Tensor> out;
  for (const auto& x : inputs) {
    if (x.dim() != 4 || !at::isFloatingType(x.scalar_type())) {
      out.push_back(x);
      continue;
    }
    const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
    auto images = x;
    if (pad > 0) {
      const auto padded = at::constant_pad_nd(x, {pad, pad, pad, pad}, 0.0);
      const auto offsets = at::randint(2 * pad + 1, {n, 2}, generator, at::TensorOptions().dtype(at::kLong)).to(at::kCPU);
      const auto* o = offsets.data_ptr<int64_t>();
      std::vector<at::Tensor> crops;
      crops.reserve(n);
      for (int64_t i = 0; i < n; ++i) {
        crops.push_back(padded[i].slice(1, o[2 * i], o[2 * i] + h).slice(2, o[2 * i + 1], o[2 * i + 1] + w));
      }
      images = at::stack(crops);
    }
    if (flip) {
      const auto flipped = at::rand({n}, generator, at::TensorOptions().dtype(at::kFloat)).lt(0.5).to(x.device());
      images = at::where(flipped.view({n, 1, 1, 1}), images.flip({3}), images);
    }
    out.push_back(images);
  }
  return out;
}

}  // namespace finetune
