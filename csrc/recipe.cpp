// The recipe in C++ (recipe.h): phases head, full, shrunk and shrunk_low at range-tested rates, the best kept, refit.
#include "recipe.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <optional>
#include <sstream>

#include "lr_finder.h"
#include "sampling.h"
#include "tensor_lists.h"
#include "train.h"

namespace finetune::recipe {

double rate_from_range(const std::vector<double>& lrs, const std::vector<double>& losses, double divisor,
                       double flat_tolerance, int64_t floor_steps) {
  TORCH_CHECK_VALUE(lrs.size() == losses.size(), "rate_from_range: ", lrs.size(), " rates but ", losses.size(),
                    " losses");
  TORCH_CHECK_VALUE(divisor > 0.0, "rate_from_range: divisor must be > 0, got ", divisor);
  TORCH_CHECK_VALUE(flat_tolerance >= 0.0 && flat_tolerance < 1.0,
                    "rate_from_range: flat_tolerance must be in [0, 1), got ", flat_tolerance);
  TORCH_CHECK_VALUE(floor_steps >= 1, "rate_from_range: floor_steps must be >= 1, got ", floor_steps);
  std::vector<double> rates, values;  // a diverged test's last step may be inf or NaN
  for (size_t i = 0; i < lrs.size(); ++i) {
    if (std::isfinite(losses[i])) rates.push_back(lrs[i]), values.push_back(losses[i]);
  }
  TORCH_CHECK_VALUE(!values.empty(), "the learning-rate range test took no step with a finite loss");
  const size_t skip = std::min<size_t>(RANGE_SKIP, values.size() / 2);
  const auto lowest_at = std::min_element(values.begin() + skip, values.end()) - values.begin();
  const double lowest = values[lowest_at];
  // The noise floor: the lowest of the first compared steps, at rates too small to change the model over a few
  // steps -- their spread is the batches'. A lowest loss not clearly below it is noise, not a descent.
  const auto floor_end = values.begin() + std::min(values.size(), skip + static_cast<size_t>(floor_steps));
  const double noise_floor = *std::min_element(values.begin() + skip, floor_end);
  if (lowest < (1.0 - flat_tolerance) * noise_floor) return rates[lowest_at] / divisor;
  size_t plateau_end = skip;  // a flat curve: where the loss leaves the plateau
  for (size_t i = skip; i < values.size(); ++i) {
    if (values[i] <= (1.0 + flat_tolerance) * lowest) plateau_end = i;
  }
  return rates[plateau_end] / divisor;
}

std::pair<at::Tensor, at::Tensor> split_validation(const at::Tensor& targets, const at::Tensor& sample,
                                                   bool classification, int64_t seed, double fraction) {
  auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed) ^ 0x5EEDu);
  // Python's round(): halves to even, as the recipe in Python rounds.
  const auto share = [fraction](int64_t n) { return static_cast<int64_t>(std::nearbyint(fraction * n)); };
  std::vector<at::Tensor> picked;
  if (!classification) {
    const int64_t n = sample.size(0);
    if (n >= 2) {
      const auto order = at::randperm(n, generator, at::kLong);
      picked.push_back(sample.index_select(0, order).slice(0, 0, std::max<int64_t>(1, share(n))));
    }
  } else {
    const auto labels = targets.index_select(0, sample);
    const auto classes = std::get<0>(at::_unique(labels, /*sorted=*/true)).contiguous();
    for (int64_t i = 0; i < classes.size(0); ++i) {
      const auto members = sample.index_select(0, (labels == classes[i]).nonzero().flatten());
      const int64_t n = members.size(0);
      if (n < 2) continue;  // a lone example stays in training
      const int64_t k = std::min(n - 1, std::max<int64_t>(1, share(n)));
      picked.push_back(members.index_select(0, at::randperm(n, generator, at::kLong)).slice(0, 0, k));
    }
  }
  const auto val = picked.empty() ? at::empty({0}, at::kLong) : std::get<0>(at::sort(at::cat(picked)));
  const auto train = sample.index_select(0, at::logical_not(at::isin(sample, val)).nonzero().flatten());
  return {train, val};
}

void shrink_perturb(Model& model, const std::function<bool(const std::string&)>& chosen, int64_t seed) {
  auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(seed));
  c10::NoGradGuard no_grad;
  for (auto& [name, parameter] : model.named_parameters()) {
    if (!parameter.requires_grad() || !chosen(name)) continue;
    parameter.mul_(SHRINK);
    if (parameter.dim() >= 2) {
      const double scale = PERTURB / std::sqrt(static_cast<double>(parameter[0].numel()));  // an init's scale
      const auto noise = at::randn(parameter.sizes(), generator, at::kFloat) * scale;
      parameter.add_(noise.to(parameter.device(), parameter.scalar_type()));
    }
  }
}

namespace {

using State = std::vector<at::Tensor>;  // parameters then buffers (tensor_lists.h)

State copy_state(const Model& model) { return clone_all(tensors_of(named_state(model))); }

void load_state(const Model& model, const State& state) { copy_into(tensors_of(named_state(model)), state); }

std::string epochs(int64_t n) { return std::to_string(n) + (n == 1 ? " epoch" : " epochs"); }

std::string text(double value) {
  std::ostringstream out;
  out << std::setprecision(3) << value;
  return out.str();
}

Dataset take(const Dataset& data, const at::Tensor& indices) {
  auto batch = data.gather(indices);
  return Dataset(batch.inputs, batch.targets, data.mask_input);
}

// One phase the loop trains: its name, most epochs and patience, what it freezes and where it starts.
struct Phase {
  std::string name;
  int64_t epochs, patience;
  StringList freeze;       // parameter names held fixed (the body, in phase head)
  int start = -1;          // the phase whose end it starts from; -1: where the one before it ended
  bool shrink = false;     // the body shrunk and perturbed first
  double divisor = 0.0;    // of the range test's lowest loss; 0: rule 4's for the model
  int early = -1;          // runs only if that phase's best epoch came early (SHRUNK_LOW_GATE); -1: always
  TrainConfig settings;    // as trained (its rate included), for the refit
  int64_t best_epochs = 0;
};

}  // namespace

Outcome run(Model& model, const Dataset& data, const TrainConfig& config, bool pretrained, const std::string& head,
            bool fine_tune_sgd) {
  Outcome out;
  const auto note = [&out](const std::string& what, const std::string& value, const std::string& reason) {
    out.decisions.push_back({what, value, reason});
  };
  const bool classification = config.is_classification();
  TORCH_CHECK_VALUE(!data.streamed(), "the C++ recipe takes examples in memory, got a streamed dataset");

  // Rule 1: a validation slice of the sample, for the recipe's decisions.
  out.sample = sample_indices(data.targets, config);
  const auto [train_idx, val_idx] = split_validation(data.targets, out.sample, classification, config.seed);
  TORCH_CHECK_VALUE(val_idx.size(0) > 0, "the recipe needs a validation slice and the sample of ", out.sample.size(0),
                    " examples has too few per class for one");
  note("validation", std::to_string(val_idx.size(0)) + " examples",
       text(VAL_FRACTION * 100) + "% of each class of the sample, held out for the recipe's decisions");
  const Dataset train_data = take(data, train_idx), val = take(data, val_idx), whole = take(data, out.sample);

  TrainConfig base = config;  // what every phase shares
  base.sample_fraction = 1.0, base.sample_size = 0;
  base.checkpoint_dir = "", base.ema = 0.0, base.distributed = "off";
  base.freeze = {}, base.unfreeze_at = {}, base.lr_groups = {}, base.class_weights = {};
  if (classification) {  // rule 7: balanced class weights past a 3x imbalance
    auto counts = class_counts(data.targets, train_idx);
    counts.resize(std::max<size_t>(counts.size(), data.targets.max().item<int64_t>() + 1), 0);
    int64_t largest = 0, smallest = std::numeric_limits<int64_t>::max(), present = 0, total = 0;
    for (const auto count : counts) {
      if (count == 0) continue;
      largest = std::max(largest, count), smallest = std::min(smallest, count), ++present, total += count;
    }
    const double ratio = static_cast<double>(largest) / static_cast<double>(smallest);
    if (ratio > IMBALANCE_RATIO) {
      for (const auto count : counts) base.class_weights.push_back(count ? double(total) / (present * count) : 0.0);
    }
    note("class_weights", ratio > IMBALANCE_RATIO ? "balanced" : "none",
         "largest/smallest class = " + text(ratio) + " in the training slice (weights past " +
             text(IMBALANCE_RATIO) + ")");
  }

  const auto in_body = [&head](const std::string& name) { return !(name == head || name.rfind(head + ".", 0) == 0); };
  std::vector<Phase> phases;
  if (pretrained) {
    StringList body;
    int64_t size = 0;
    for (const auto& [name, tensor] : model.named_parameters()) {
      size += tensor.numel();
      if (in_body(name)) body.push_back(name);
    }
    TORCH_CHECK_VALUE(body.size() < model.named_parameters().size(), "recipe head '", head,
                      "' names no parameter of the model");
    phases.push_back({"head", HEAD_EPOCHS, HEAD_PATIENCE, body});
    phases.push_back({"full", FULL_EPOCHS, FULL_PATIENCE, {}});
    if (size <= SHRINK_MAX_PARAMS) {  // at recipe.SHRUNK_LR_DIVISORS: the two rules of rule 4
      phases.push_back({"shrunk", FULL_EPOCHS, FULL_PATIENCE, {}, /*start=*/0, /*shrink=*/true, LR_DIVISOR});
      phases.push_back({"shrunk_low", FULL_EPOCHS, FULL_PATIENCE, {}, /*start=*/0, /*shrink=*/true,
                        SCRATCH_LR_DIVISOR, /*early=*/2});
      note("shrunk", "x " + text(SHRINK) + ", noise " + text(PERTURB),
           "more candidates beside full (" + std::to_string(size) + " parameters): from the head phase, the "
           "body shrunk and perturbed (Ash & Adams 2020), at the range test's lowest loss / " + text(LR_DIVISOR) +
           " (shrunk) and / " + text(SCRATCH_LR_DIVISOR) + " (shrunk_low, only if shrunk's best epoch is in the "
           "first " + text(SHRUNK_LOW_GATE * 100) + "% of its schedule)");
    }
  } else {
    phases.push_back({"full", SCRATCH_EPOCHS, SCRATCH_PATIENCE, {}});
  }
  // Rule 4: SGD with momentum fine-tunes a pretrained network (measured on image stories, README); from random
  // weights AdamW, at / 100 SGD barely moves fresh weights.
  const bool sgd = pretrained && fine_tune_sgd;
  const TrainConfig defaults;
  note("optimizer", sgd ? "sgd" : "adamw",
       sgd ? "SGD with momentum " + text(defaults.momentum) + ", weight decay as an L2 penalty: fine-tuning a "
             "pretrained network (README, rule 4)"
           : pretrained ? "AdamW, as asked (the rule before rule 4's SGD)" : "AdamW: training from random weights");

  const State initial = copy_state(model);
  std::vector<State> ends;
  // Phases shrunk and shrunk_low start from the same shrunk weights and the range test reseeds: one curve for both.
  std::optional<LrFinderResult> shrunk_range;
  double best_loss = std::numeric_limits<double>::infinity();
  int kept = 0;
  for (size_t number = 0; number < phases.size(); ++number) {
    auto& phase = phases[number];
    if (phase.early >= 0) {  // shrunk_low: only when shrunk's rate overfit before the cosine had decayed
      const Phase& before = phases[phase.early];
      if (before.best_epochs > SHRUNK_LOW_GATE * before.epochs) {
        note(phase.name, "not run", "phase " + before.name + "'s best epoch (" + std::to_string(before.best_epochs) +
             " of " + std::to_string(before.epochs) + ") is past the first " + text(SHRUNK_LOW_GATE * 100) +
             "% of its schedule");
        ends.emplace_back();  // ends is indexed by phase; a phase not run is never kept or started from
        continue;
      }
    }
    if (phase.start >= 0) load_state(model, ends[phase.start]);
    if (phase.shrink) shrink_perturb(model, in_body, config.seed);

    TrainConfig settings = base;  // rule 4: the optimizer, a range-tested rate, warm-up then cosine, early stopping
    settings.optimizer = sgd ? "sgd" : "adamw", settings.weight_decay = WEIGHT_DECAY;
    settings.momentum = defaults.momentum, settings.nesterov = defaults.nesterov;  // the recipe's, not the caller's
    settings.freeze = phase.freeze;
    settings.layer_decay = pretrained && phase.name != "head" ? LAYER_DECAY : 1.0;
    TrainConfig range = settings;
    range.schedule = "constant", range.warmup = 0.0, range.epochs = 1, range.early_stopping = 0;
    if (phase.shrink && !shrunk_range) {
      shrunk_range = find_lr(model, train_data, range, RANGE_START, RANGE_END, RANGE_STEPS, RANGE_DIVERGE);
    }
    const LrFinderResult found = phase.shrink ? *shrunk_range
                                              : find_lr(model, train_data, range, RANGE_START, RANGE_END,
                                                        RANGE_STEPS, RANGE_DIVERGE);
    const double divisor = phase.divisor > 0.0 ? phase.divisor : pretrained ? LR_DIVISOR : SCRATCH_LR_DIVISOR;
    settings.lr = rate_from_range(found.lrs, found.losses, divisor);
    note(phase.name + ".lr", text(settings.lr),
         "range test (" + std::to_string(found.lrs.size()) + " steps): the lowest loss at " +
             text(settings.lr * divisor) + ", / " + text(divisor));
    settings.epochs = phase.epochs, settings.early_stopping = phase.patience;
    settings.schedule = "cosine", settings.warmup = WARMUP;
    settings.monitor = "val_loss", settings.restore_best = true;

    const auto result = train(model, train_data, &val, settings);
    const Metrics& measured = result.metrics;  // of the restored weights on the slice (the loop's last evaluation)
    const double loss = measured.values.at("loss");
    phase.settings = settings;
    phase.best_epochs = result.best_epoch >= 0 ? result.best_epoch + 1 : static_cast<int64_t>(result.history.size());
    note(phase.name + ".result", epochs(static_cast<int64_t>(result.history.size())) + " run, best " +
         std::to_string(phase.best_epochs) + ", validation loss " + text(loss), "the best epoch's weights, restored");
    ends.push_back(copy_state(model));
    if (loss < best_loss) best_loss = loss, kept = static_cast<int>(number), out.metrics = measured;
  }
  out.kept = phases[kept].name;
  note("kept", out.kept, "the phase with the lowest validation loss (" + text(best_loss) + ")");

  // Rule 6: the kept phase and those it continues, again from the same start on the whole sample, for their best
  // number of epochs (the schedule's length unchanged, so the rate follows the same curve).
  std::vector<int> lineage = {kept};
  while (lineage.front() > 0) {
    const int start = phases[lineage.front()].start;
    lineage.insert(lineage.begin(), start >= 0 ? start : lineage.front() - 1);
  }
  load_state(model, initial);
  std::string names;
  for (const int number : lineage) {
    const auto& phase = phases[number];
    if (phase.shrink) shrink_perturb(model, in_body, config.seed);  // the same draw as before the decision
    TrainConfig refit = phase.settings;
    refit.early_stopping = 0, refit.restore_best = false, refit.monitor = "train_loss";
    TrainHooks hooks;
    hooks.on_epoch_end = [stop_after = phase.best_epochs](const EpochRecord& record) {
      return record.epoch + 1 >= stop_after;
    };
    train(model, whole, nullptr, refit, hooks);
    names += (names.empty() ? "" : ", ") + phase.name + " " + epochs(phase.best_epochs);
  }
  note("refit", names, "on the whole sample (" + std::to_string(out.sample.size(0)) + " examples), validation slice "
       "included; the metrics are those measured on the slice before");
  return out;
}

}  // namespace finetune::recipe
