// Small operations on lists of tensors the loop and the range test share: a model's whole state, copies.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>

#include "models.h"

namespace finetune {

// Every tensor of the model's state: parameters, then buffers.
inline NamedTensors named_state(const Model& model) {
  auto out = model.named_parameters();
  for (const auto& item : model.named_buffers()) out.push_back(item);
  return out;
}

inline std::vector<at::Tensor> tensors_of(const NamedTensors& named) {
  std::vector<at::Tensor> out;
  for (const auto& [name, t] : named) out.push_back(t);
  return out;
}

inline NamedTensors by_name(const NamedTensors& names, const std::vector<at::Tensor>& tensors) {
  NamedTensors out;
  for (size_t i = 0; i < names.size(); ++i) out.emplace_back(names[i].first, tensors[i]);
  return out;
}

inline std::vector<at::Tensor> clone_all(const std::vector<at::Tensor>& tensors) {
  at::NoGradGuard no_grad;
  std::vector<at::Tensor> out;
  for (const auto& t : tensors) out.push_back(t.detach().clone());
  return out;
}

inline void copy_into(const std::vector<at::Tensor>& destination, const std::vector<at::Tensor>& source) {
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < destination.size(); ++i) destination[i].detach().copy_(source[i]);
}

inline std::vector<at::Tensor> to_device(const std::vector<at::Tensor>& tensors, const at::Device& device) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(t.device() == device ? t : t.to(device, /*non_blocking=*/true));
  return out;
}

// The parameters that received a gradient (what gradient clipping acts on).
inline std::vector<at::Tensor> parameters_with_grad(const NamedTensors& params) {
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : params) {
    if (p.grad().defined()) out.push_back(p);
  }
  return out;
}

}  // namespace finetune
