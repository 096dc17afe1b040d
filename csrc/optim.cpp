// The optimizer registry and parameter-group resolution. Each entry maps TrainConfig fields onto LibTorch's
// option builders, whose updates equal torch.optim's (tests/test_train.py checks each against torch.optim).
#include "optim.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <sstream>

#include <c10/util/Exception.h>
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/rmsprop.h>
#include <torch/optim/sgd.h>

#include "fused_optim.h"

namespace finetune {

namespace {

using State = torch::optim::OptimizerParamState;

// Each optimizer's per-parameter state fields: how to read them into named tensors and write them back.
void put(NamedTensors& out, const std::string& prefix, const char* field, const at::Tensor& t) {
  if (t.defined()) out.emplace_back(prefix + "/" + field, t);
}

at::Tensor get(const std::map<std::string, at::Tensor>& state, const std::string& prefix, const char* field) {
  const auto found = state.find(prefix + "/" + field);
  return found == state.end() ? at::Tensor() : found->second;
}

at::Tensor step_tensor(int64_t step) { return at::scalar_tensor(step, at::kLong); }

template <typename AdamState>
OptimizerEntry::StateFields adam_fields() {
  return {[](State& s, const std::string& p, NamedTensors& out) {
            auto& st = static_cast<AdamState&>(s);
            put(out, p, "step", step_tensor(st.step()));
            put(out, p, "exp_avg", st.exp_avg());
            put(out, p, "exp_avg_sq", st.exp_avg_sq());
            put(out, p, "max_exp_avg_sq", st.max_exp_avg_sq());
          },
          [](const std::string& p, const std::map<std::string, at::Tensor>& state) {
            auto st = std::make_unique<AdamState>();
            st->step(get(state, p, "step").template item<int64_t>());
            st->exp_avg(get(state, p, "exp_avg").clone());
            st->exp_avg_sq(get(state, p, "exp_avg_sq").clone());
            if (get(state, p, "max_exp_avg_sq").defined()) st->max_exp_avg_sq(get(state, p, "max_exp_avg_sq").clone());
            return std::unique_ptr<State>(std::move(st));
          }};
}

OptimizerEntry::StateFields sgd_fields() {
  using torch::optim::SGDParamState;
  return {[](State& s, const std::string& p, NamedTensors& out) {
            put(out, p, "momentum_buffer", static_cast<SGDParamState&>(s).momentum_buffer());
          },
          [](const std::string& p, const std::map<std::string, at::Tensor>& state) {
            auto st = std::make_unique<SGDParamState>();
            st->momentum_buffer(get(state, p, "momentum_buffer").clone());
            return std::unique_ptr<State>(std::move(st));
          }};
}

OptimizerEntry::StateFields rmsprop_fields() {
  using torch::optim::RMSpropParamState;
  return {[](State& s, const std::string& p, NamedTensors& out) {
            auto& st = static_cast<RMSpropParamState&>(s);
            put(out, p, "step", step_tensor(st.step()));
            put(out, p, "square_avg", st.square_avg());
            put(out, p, "momentum_buffer", st.momentum_buffer());
            put(out, p, "grad_avg", st.grad_avg());
          },
          [](const std::string& p, const std::map<std::string, at::Tensor>& state) {
            auto st = std::make_unique<RMSpropParamState>();
            st->step(get(state, p, "step").item<int64_t>());
            st->square_avg(get(state, p, "square_avg").clone());
            if (get(state, p, "momentum_buffer").defined()) st->momentum_buffer(get(state, p, "momentum_buffer").clone());
            if (get(state, p, "grad_avg").defined()) st->grad_avg(get(state, p, "grad_avg").clone());
            return std::unique_ptr<State>(std::move(st));
          }};
}

template <typename Optimizer, typename Options>
OptimizerEntry entry(std::function<Options(const TrainConfig&, double lr, double weight_decay)> options,
                     std::function<void(Options&, double)> set_momentum, std::vector<std::string> settings,
                     OptimizerEntry::StateFields state) {
  OptimizerEntry e;
  e.settings = std::move(settings);
  e.state = std::move(state);
  e.set_momentum = [set_momentum](torch::optim::OptimizerOptions& o, double m) {
    set_momentum(static_cast<Options&>(o), m);
  };
  e.options = [options](const TrainConfig& c, double lr, double wd) {
    return std::make_unique<Options>(options(c, lr, wd));
  };
  e.make = [options](std::vector<torch::optim::OptimizerParamGroup> groups, const TrainConfig& c) {
    return std::make_unique<Optimizer>(std::move(groups), options(c, c.lr, c.weight_decay));
  };
  return e;
}

}  // namespace

const std::map<std::string, OptimizerEntry>& optimizer_registry() {
  using namespace torch::optim;
  static const std::map<std::string, OptimizerEntry> registry = {
      {"sgd", entry<FusedSGD, SGDOptions>([](const TrainConfig& c, double lr, double wd) {
         return SGDOptions(lr).momentum(c.momentum).nesterov(c.nesterov).weight_decay(wd);
       }, [](SGDOptions& o, double m) { o.momentum(m); }, {"momentum", "nesterov"}, sgd_fields())},
      {"adam", entry<FusedAdam, AdamOptions>([](const TrainConfig& c, double lr, double wd) {
         return AdamOptions(lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(wd);
       }, [](AdamOptions& o, double m) { o.betas({m, std::get<1>(o.betas())}); }, {"beta1", "beta2", "eps"},
       adam_fields<AdamParamState>())},
      {"adamw", entry<FusedAdamW, AdamWOptions>([](const TrainConfig& c, double lr, double wd) {
         return AdamWOptions(lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(wd);
       }, [](AdamWOptions& o, double m) { o.betas({m, std::get<1>(o.betas())}); }, {"beta1", "beta2", "eps"},
       adam_fields<AdamWParamState>())},
      {"rmsprop", entry<RMSprop, RMSpropOptions>([](const TrainConfig& c, double lr, double wd) {
         return RMSpropOptions(lr).alpha(c.alpha).eps(c.eps).weight_decay(wd);
       }, [](RMSpropOptions& o, double m) { o.momentum(m); }, {"alpha", "eps"}, rmsprop_fields())},
  };
  return registry;
}

std::vector<std::string> optimizer_names() {
  std::vector<std::string> names;
  for (const auto& item : optimizer_registry()) names.push_back(item.first);
  return names;
}

void check_optimizer_name(const std::string& name) {
  if (optimizer_registry().count(name)) return;
  std::ostringstream known;
  for (const auto& n : optimizer_names()) known << (known.tellp() ? ", " : "") << "'" << n << "'";
  TORCH_CHECK_VALUE(false, "optimizer must be one of [", known.str(), "], got '", name, "'");
}

void check_optimizer_settings(const TrainConfig& c) {
  const TrainConfig defaults;
  const std::vector<std::pair<std::string, bool>> changed = {
      {"momentum", c.momentum != defaults.momentum}, {"nesterov", c.nesterov != defaults.nesterov},
      {"beta1", c.beta1 != defaults.beta1},          {"beta2", c.beta2 != defaults.beta2},
      {"eps", c.eps != defaults.eps},                {"alpha", c.alpha != defaults.alpha}};
  const auto& used = optimizer_registry().at(c.optimizer).settings;
  for (const auto& [field, is_changed] : changed) {
    if (!is_changed || std::find(used.begin(), used.end(), field) != used.end()) continue;
    std::ostringstream users;
    for (const auto& [name, e] : optimizer_registry()) {
      if (std::find(e.settings.begin(), e.settings.end(), field) != e.settings.end()) {
        users << (users.tellp() ? ", " : "") << "'" << name << "'";
      }
    }
    TORCH_CHECK_VALUE(false, field, " is set but optimizer='", c.optimizer, "' does not use it (", field,
                      " applies to ", users.str(), "); remove it, or choose one of those optimizers");
  }
}

std::vector<ParamGroupSpec> resolve_param_groups(const NamedTensors& all,
                                                 const std::function<bool(const std::string&)>& include,
                                                 const TrainConfig& config) {
  // Layers are the distinct modules owning parameters, in model order; the last is the head.
  std::vector<std::string> layers;
  std::map<std::string, size_t> layer_of;
  for (const auto& [name, tensor] : all) {
    const auto module = name.substr(0, name.rfind('.') == std::string::npos ? 0 : name.rfind('.'));
    if (layer_of.emplace(module, layers.size()).second) layers.push_back(module);
  }
  std::vector<ParamGroupSpec> groups;
  for (const auto& [name, tensor] : all) {
    if (!include(name)) continue;
    double multiplier = 1.0;
    for (const auto& [pattern, value] : config.lr_groups) {
      if (name_matches(name, pattern, "lr_groups")) {
        multiplier = value;
        break;
      }
    }
    const auto module = name.substr(0, name.rfind('.') == std::string::npos ? 0 : name.rfind('.'));
    const auto depth = static_cast<double>(layers.size() - 1 - layer_of.at(module));
    multiplier *= std::pow(config.layer_decay, depth);
    const double decay = (tensor.dim() <= 1 && !config.decay_norm_and_bias) ? 0.0 : config.weight_decay;
    auto group = std::find_if(groups.begin(), groups.end(), [&](const ParamGroupSpec& g) {
      return g.lr_multiplier == multiplier && g.weight_decay == decay;
    });
    if (group == groups.end()) {
      groups.push_back(ParamGroupSpec{{}, {}, multiplier, decay});
      group = groups.end() - 1;
    }
    group->names.push_back(name);
    group->params.push_back(tensor);
  }
  return groups;
}

namespace {

std::vector<torch::optim::OptimizerParamGroup> to_param_groups(const std::vector<ParamGroupSpec>& groups,
                                                               const TrainConfig& config) {
  const auto& e = optimizer_registry().at(config.optimizer);
  std::vector<torch::optim::OptimizerParamGroup> out;
  for (const auto& g : groups) {
    out.emplace_back(g.params, e.options(config, config.lr * g.lr_multiplier, g.weight_decay));
  }
  return out;
}

// LibTorch's add_param_group fills a group's option that equals the option's default value (weight_decay 0,
// say) from the optimizer's defaults, so a no-decay group would silently decay. Setting each group's options
// again afterwards makes them exactly what was resolved.
void set_group_options(torch::optim::Optimizer& optimizer, size_t first, const std::vector<ParamGroupSpec>& groups,
                       const TrainConfig& config) {
  const auto& e = optimizer_registry().at(config.optimizer);
  for (size_t g = 0; g < groups.size(); ++g) {
    optimizer.param_groups()[first + g].set_options(
        e.options(config, config.lr * groups[g].lr_multiplier, groups[g].weight_decay));
  }
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const std::vector<ParamGroupSpec>& groups,
                                                        const TrainConfig& config) {
  check_optimizer_name(config.optimizer);
  auto optimizer = optimizer_registry().at(config.optimizer).make(to_param_groups(groups, config), config);
  set_group_options(*optimizer, 0, groups, config);
  return optimizer;
}

void add_param_groups(torch::optim::Optimizer& optimizer, const std::vector<ParamGroupSpec>& groups,
                      const TrainConfig& config) {
  const size_t first = optimizer.param_groups().size();
  for (const auto& group : to_param_groups(groups, config)) optimizer.add_param_group(group);
  set_group_options(optimizer, first, groups, config);
}

NamedTensors optimizer_state(torch::optim::Optimizer& optimizer, const NamedTensors& params, const std::string& name) {
  const auto& fields = optimizer_registry().at(name).state;
  NamedTensors out;
  for (const auto& [name, p] : params) {
    const auto found = optimizer.state().find(p.unsafeGetTensorImpl());
    if (found != optimizer.state().end()) fields.save(*found->second, name, out);
  }
  return out;
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const NamedTensors& params, const NamedTensors& state,
                          const std::string& name) {
  const auto& fields = optimizer_registry().at(name).state;
  std::map<std::string, at::Tensor> by_name(state.begin(), state.end());
  std::set<std::string> owners;
  for (const auto& [key, tensor] : state) owners.insert(key.substr(0, key.rfind('/')));
  for (const auto& [name, p] : params) {
    if (!owners.count(name)) continue;
    owners.erase(name);
    auto loaded = fields.load(name, by_name);
    optimizer.state()[p.unsafeGetTensorImpl()] = std::move(loaded);
  }
  TORCH_CHECK_VALUE(owners.empty(), "optimizer state names parameters the model does not have: ", *owners.begin());
}

}  // namespace finetune
