// SGD, Adam and AdamW whose step is one call of ATen's fused kernel per parameter group.
#pragma once

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
class FusedSGD : public torch::optim::SGD {
 public:
  using SGD::SGD;
  at::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdam : public torch::optim::Adam {
 public:
  using Adam::Adam;
  at::Tensor step(LossClosure closure = nullptr) override;
};

class FusedAdamW : public torch::optim::AdamW {
 public:
  using AdamW::AdamW;
  at::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace finetune
