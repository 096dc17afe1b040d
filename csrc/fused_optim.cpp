// SGD, Adam and AdamW whose step is one call of ATen's fused kernel per parameter group.
#include "fused_optim.h"

#include <ATen/ATen.h>

namespace finetune {

namespace {

using torch::optim::OptimizerParamGroup;

// Whether every parameter with a gradient can go to a fused kernel: dense and contiguous like its gradient,
// and of one device and dtype within its group (the CUDA kernels take a group in one launch).
bool fusable(const std::vector<OptimizerParamGroup>& groups) {
  for (const auto& group : groups) {
    const at::Tensor* first = nullptr;
    for (const auto& p : group.params()) {
      const auto& g = p.grad();
      if (!g.defined()) continue;
      if (g.is_sparse() || !p.is_contiguous() || !g.is_contiguous() || g.scalar_type() != p.scalar_type()) return false;
      if (first && (p.device() != first->device() || p.scalar_type() != first->scalar_type())) return false;
      if (!first) first = &p;
    }
  }
  return true;
}

at::Tensor evaluate(const torch::optim::Optimizer::LossClosure& closure) {
  if (!closure) return {};
  at::AutoGradMode enable_grad(true);
  return closure();
}

// Adam and AdamW share their state and their kernel's signature; `decoupled` picks AdamW's weight decay.
template <typename Options, typename ParamState, typename StateMap>
void adam_step(std::vector<OptimizerParamGroup>& groups, StateMap& state, StepCounts& counts, bool decoupled) {
  for (auto& group : groups) {
    const auto& o = static_cast<const Options&>(group.options());
    std::vector<at::Tensor> params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs;
    std::vector<int64_t> step_counts;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& slot = state[p.unsafeGetTensorImpl()];
      if (!slot) {
        auto fresh = std::make_unique<ParamState>();
        fresh->step(0);
        fresh->exp_avg(at::zeros_like(p));
        fresh->exp_avg_sq(at::zeros_like(p));
        if (o.amsgrad()) fresh->max_exp_avg_sq(at::zeros_like(p));
        slot = std::move(fresh);
      }
      auto& s = static_cast<ParamState&>(*slot);
      s.step(s.step() + 1);  // the kernels read the step count after this step, as a float tensor
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(s.exp_avg());
      exp_avg_sqs.push_back(s.exp_avg_sq());
      if (o.amsgrad()) max_exp_avg_sqs.push_back(s.max_exp_avg_sq());
      step_counts.push_back(s.step());
    }
    if (params.empty()) continue;
    const auto steps = counts.advance(params, step_counts);
    const auto [beta1, beta2] = o.betas();
    if (decoupled) {
      at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, o.lr(), beta1, beta2,
                        o.weight_decay(), o.eps(), o.amsgrad(), /*maximize=*/false);
    } else {
      at::_fused_adam_(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, o.lr(), beta1, beta2,
                       o.weight_decay(), o.eps(), o.amsgrad(), /*maximize=*/false);
    }
  }
}

}  // namespace

std::vector<at::Tensor> StepCounts::advance(const std::vector<at::Tensor>& params, const std::vector<int64_t>& steps) {
  std::vector<at::Tensor> out, following;
  for (size_t i = 0; i < params.size(); ++i) {
    auto& [count, tensor] = counts_[params[i].unsafeGetTensorImpl()];
    if (tensor.defined() && count == steps[i] - 1) {
      following.push_back(tensor);
    } else {
      tensor = at::full({}, static_cast<double>(steps[i]), params[i].options().dtype(at::kFloat));
    }
    count = steps[i];
    out.push_back(tensor);
  }
  if (!following.empty()) at::_foreach_add_(following, 1);
  return out;
}

at::Tensor FusedSGD::step(LossClosure closure) {
  const auto loss = evaluate(closure);  // first: it computes the gradients the check reads
  if (!fusable(param_groups_)) {
    SGD::step();
    return loss;
  }
  at::NoGradGuard no_grad;
  for (auto& group : param_groups_) {
    const auto& o = static_cast<const torch::optim::SGDOptions&>(group.options());
    // A parameter's first step starts its momentum buffer as its gradient (torch.optim's rule), which the
    // kernel does for a whole call: parameters seen before and those seen now for the first time go separately.
    std::vector<at::Tensor> params[2], grads[2], buffers[2];
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      bool first = false;
      if (o.momentum() != 0.0) {
        auto& slot = state_[p.unsafeGetTensorImpl()];
        if (!slot) slot = std::make_unique<torch::optim::SGDParamState>();
        auto& s = static_cast<torch::optim::SGDParamState&>(*slot);
        first = !s.momentum_buffer().defined();
        if (first) s.momentum_buffer(at::empty_like(p));
        buffers[first].push_back(s.momentum_buffer());
      }
      params[first].push_back(p);
      grads[first].push_back(p.grad());
    }
    for (const bool first : {false, true}) {
      if (params[first].empty()) continue;
      at::_fused_sgd_(params[first], grads[first], buffers[first], o.weight_decay(), o.momentum(), o.lr(),
                      o.dampening(), o.nesterov(), /*maximize=*/false, /*is_first_step=*/first);
    }
  }
  return loss;
}

at::Tensor FusedAdam::step(LossClosure closure) {
  const auto loss = evaluate(closure);
  if (!fusable(param_groups_)) {
    Adam::step();
    return loss;
  }
  at::NoGradGuard no_grad;
  adam_step<torch::optim::AdamOptions, torch::optim::AdamParamState>(param_groups_, state_, steps_, /*decoupled=*/false);
  return loss;
}

at::Tensor FusedAdamW::step(LossClosure closure) {
  const auto loss = evaluate(closure);
  if (!fusable(param_groups_)) {
    AdamW::step();
    return loss;
  }
  at::NoGradGuard no_grad;
  adam_step<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(param_groups_, state_, steps_, /*decoupled=*/true);
  return loss;
}

}  // namespace finetune
