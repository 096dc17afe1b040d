// Optimizers by name, and the parameter groups they train: freezing, per-layer rates, weight-decay rules.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>

#include "config.h"
#include "models.h"
#include "patterns.h"

namespace finetune {

// A set of parameters that share a learning rate and a weight decay.
struct ParamGroupSpec {
  std::vector<std::string> names;
  std::vector<at::Tensor> params;
  double lr_multiplier = 1.0;  // of config.lr, before the schedule
  double weight_decay = 0.0;
};

struct OptimizerEntry {
  // The options of one parameter group.
  std::function<std::unique_ptr<torch::optim::OptimizerOptions>(const TrainConfig&, double lr, double weight_decay)>
      options;
  std::function<std::unique_ptr<torch::optim::Optimizer>(std::vector<torch::optim::OptimizerParamGroup>,
                                                         const TrainConfig&)>
      make;
  // Sets a group's momentum: SGD's and RMSprop's momentum, Adam's and AdamW's beta1 (schedule="onecycle").
  std::function<void(torch::optim::OptimizerOptions&, double)> set_momentum;
  // The TrainConfig fields among momentum, nesterov, beta1, beta2, eps, alpha that this optimizer reads.
  std::vector<std::string> settings;
  // Its per-parameter state as tensors named "<parameter name>/<field>" (checkpoints), and back.
  struct StateFields {
    std::function<void(torch::optim::OptimizerParamState&, const std::string& prefix, NamedTensors& out)> save;
    std::function<std::unique_ptr<torch::optim::OptimizerParamState>(const std::string& prefix,
                                                                     const std::map<std::string, at::Tensor>& state)>
        load;
  } state;
};

// name -> entry; "adam", "adamw", "rmsprop", "sgd".
const std::map<std::string, OptimizerEntry>& optimizer_registry();
std::vector<std::string> optimizer_names();

// Throws c10::ValueError listing the known names when `name` is not one of them.
void check_optimizer_name(const std::string& name);

// A setting of another optimizer (momentum or nesterov with adam, beta1 with sgd, ...) changed from its default
// would have no effect: a c10::ValueError naming it and the optimizers that use it.
void check_optimizer_settings(const TrainConfig& config);

// Groups the parameters `include` accepts, in model order, by (lr multiplier, weight decay):
//   lr multiplier = the first matching lr_groups entry (else 1) x layer_decay ^ depth, where depth counts
//                   modules back from the last one (the head, depth 0) over *all* parameters, so depths stay
//                   fixed as layers are unfrozen;
//   weight decay  = config.weight_decay, or 0 for 1-d parameters (biases, norm weights) unless
//                   decay_norm_and_bias.
std::vector<ParamGroupSpec> resolve_param_groups(const NamedTensors& all,
                                                 const std::function<bool(const std::string&)>& include,
                                                 const TrainConfig& config);

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<ParamGroupSpec>& groups,
                                                        const TrainConfig& config);
void add_param_groups(torch::optim::Optimizer& optimizer, const std::vector<ParamGroupSpec>& groups,
                      const TrainConfig& config);

// The optimizer's per-parameter state as plain tensors named "<parameter name>/<field>" (momentum_buffer,
// exp_avg, exp_avg_sq, square_avg, step, ...), for checkpoints that need no pickle; and back.
// `name` is the optimizer's registry name (config.optimizer).
NamedTensors optimizer_state(torch::optim::Optimizer& optimizer, const NamedTensors& params, const std::string& name);
void load_optimizer_state(torch::optim::Optimizer& optimizer, const NamedTensors& params, const NamedTensors& state,
                          const std::string& name);

}  // namespace finetune
