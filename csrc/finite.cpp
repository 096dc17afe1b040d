// The NaN/inf guard (see finite.h).
#include "finite.h"

#include <cmath>

#include <ATen/ATen.h>

namespace finetune {

FiniteCheck::FiniteCheck(const at::Device& device)
    : found_(at::zeros({1}, at::TensorOptions().dtype(at::kFloat).device(device))),
      one_(at::ones({1}, at::TensorOptions().dtype(at::kFloat).device(device))) {}

std::pair<double, bool> FiniteCheck::operator()(const at::Tensor& step_loss, const NamedTensors& params) {
  std::vector<at::Tensor> grads, others;
  for (const auto& [name, p] : params) {
    const auto& g = p.grad();
    if (!g.defined()) continue;
    if (g.is_sparse()) others.push_back(g._values());  // nn.Embedding(sparse=True): the rows it touched
    else if (g.scalar_type() == at::kFloat) grads.push_back(g);
    else others.push_back(g);
  }
  found_.zero_();
  if (!grads.empty()) at::_amp_foreach_non_finite_check_and_unscale_(grads, found_, one_);
  bool finite = found_.item<float>() == 0.0f;
  for (const auto& g : others) finite = finite && g.isfinite().all().item<bool>();  // double/half models
  const double loss = step_loss.item<double>();
  return {loss, finite && std::isfinite(loss)};
}

}  // namespace finetune
