// SGD, Adam and AdamW whose step is one call of ATen's fused kernel per parameter group.
#pragma once

#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

namespace finetune {

// LibTorch's optimizers update each parameter with a few tensor ops, each with its dispatch and, for a scalar
// operand, a scalar tensor to allocate: on a small model that is a fifth of the step. ATen's fused kernels
// (_fused_sgd_, _fused_adam_, _fused_adamw_, the ones torch.optim's fused=True calls) do the whole update in one
// pass per group. Options, state and checkpoints stay LibTorch's; only step() changes. The update is
// torch.optim's (SGD bit for bit, Adam and AdamW to an ulp; tests/test_train.py checks each against it). A
// step with a parameter the kernels do not take (sparse or non-contiguous gradient, a group mixing devices or
// dtypes) runs LibTorch's step instead.
// Each parameter's Adam step count as the float tensor the kernels read, on the parameter's device, advanced for
// a whole group by one _foreach_add_ (as torch.optim's fused=True keeps them) rather than made anew - on a GPU
// a fill kernel per parameter per step. LibTorch's integer count stays the one checkpoints save: a count that
// does not follow the one held (a loaded checkpoint) makes its tensor anew.
class StepCounts {
 public:
  std::vector<at::Tensor> advance(const std::vector<at::Tensor>& params, const std::vector<int64_t>& steps);

 private:
  std::unordered_map<void*, std::pair<int64_t, at::Tensor>> counts_;
};

class FusedSGD : public torch::optim::SGD {
 public:
  using SGD::SGD;
  at::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdam : public torch::optim::Adam {
 public:
  using Adam::Adam;
  at::Tensor step(LossClosure closure = nullptr) override;

 private:
  StepCounts steps_;
};

class FusedAdamW : public torch::optim::AdamW {
 public:
  using AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;

 private:
  StepCounts steps_;
};

}  // namespace finetune
