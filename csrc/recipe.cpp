// The recipe in C++ (recipe.h): phases head, full, shrunk, shrunk_low and scratch at range-tested rates, the best
// kept, refit.
#include "recipe.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/core/Reduction.h>
#include <c10/core/GradMode.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <mutex>
#include <optional>
#include <sstream>

#include "evaluate.h"
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

// The tasks per_example_loss (and so phase scratch's paired test) serves: recipe.PER_EXAMPLE_TASKS.
bool has_per_example_loss(const std::string& task) { return task == "classification" || task == "regression"; }

}  // namespace

at::Tensor per_example_loss(const at::Tensor& outputs, const at::Tensor& targets, const std::string& task) {
  TORCH_CHECK_VALUE(has_per_example_loss(task), "task='", task,
                    "': per-example losses are defined for classification and regression");
  const auto values = outputs.to(at::kDouble);
  if (task == "classification") {
    return at::cross_entropy_loss(values, targets.to(at::kLong), {}, at::Reduction::None);
  }
  const int64_t n = values.size(0);
  return (values.reshape({n, -1}) - targets.to(at::kDouble).reshape({n, -1})).pow(2).mean(1);
}

PairedGain paired_gain(const at::Tensor& reference, const at::Tensor& candidate) {
  TORCH_CHECK_VALUE(reference.numel() == candidate.numel(), "paired_gain: ", reference.numel(),
                    " reference losses but ", candidate.numel(), " candidate losses");
  const auto before = reference.to(at::kDouble).flatten(), after = candidate.to(at::kDouble).flatten();
  const int64_t n = before.numel();
  constexpr double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  if (!at::isfinite(before).all().item<bool>() && at::isfinite(after).all().item<bool>()) return {inf, nan, inf, n};
  const auto differences = before - after;
  const double mean = differences.mean().item<double>();
  const double error = n > 1 ? differences.std().item<double>() / std::sqrt(static_cast<double>(n)) : inf;
  double z = 0.0;
  if (!std::isfinite(mean) || std::isnan(error)) z = nan;
  else if (error > 0) z = mean / error;
  else z = mean > 0 ? inf : mean < 0 ? -inf : 0.0;
  return {mean, error, z, n};
}

namespace {

using State = std::vector<at::Tensor>;  // parameters then buffers (tensor_lists.h)

State copy_state(const Model& model) { return clone_all(tensors_of(named_state(model))); }

void load_state(const Model& model, const State& state) { copy_into(tensors_of(named_state(model)), state); }

std::string epochs(int64_t n) { return std::to_string(n) + (n == 1 ? " epoch" : " epochs"); }

std::string text(double value, int digits = 3) {
  std::ostringstream out;
  out << std::setprecision(digits) << value;
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
  bool reinit = false;     // starts from fresh weights (phase scratch): kept only if clearly better (SCRATCH_Z)
  TrainConfig settings;    // as trained (its rate included), for the refit
  int64_t best_epochs = 0;
  at::Tensor losses;       // each validation example's loss at its end, when phase scratch is compared (paired_gain)
};

// The weights `fresh` builds, drawn from the global generator seeded with `seed` (its state restored after, as
// torch.random.fork_rng does in the Python recipe); checked to be `model`'s network, name by name and shape by shape.
State fresh_weights(const std::function<Model()>& fresh, const Model& model, int64_t seed) {
  struct Restore {  // the generator's state back even if fresh() throws
    at::Generator generator;
    at::Tensor state;
    ~Restore() {
      std::lock_guard<std::mutex> lock(generator.mutex());
      generator.set_state(state);
    }
  } restore{at::detail::getDefaultCPUGenerator(), {}};
  {
    std::lock_guard<std::mutex> lock(restore.generator.mutex());
    restore.state = restore.generator.get_state();
    restore.generator.set_current_seed(static_cast<uint64_t>(seed));
  }
  Model built = fresh();
  const auto ours = named_state(model), theirs = named_state(built);
  TORCH_CHECK_VALUE(ours.size() == theirs.size(), "recipe: fresh() built a network with ", theirs.size(),
                    " tensors of state, the model has ", ours.size());
  for (size_t i = 0; i < ours.size(); ++i) {
    // Only the CPU generator is seeded here: weights drawn on a GPU would differ from run to run.
    TORCH_CHECK_VALUE(theirs[i].second.is_cpu(), "recipe: fresh() must build the network on the CPU (the recipe "
                      "copies its weights to the model's device), got ", theirs[i].first, " on ",
                      theirs[i].second.device());
    TORCH_CHECK_VALUE(ours[i].first == theirs[i].first && ours[i].second.sizes() == theirs[i].second.sizes(),
                      "recipe: fresh() built ", theirs[i].first, " ", theirs[i].second.sizes(), " where the model has ",
                      ours[i].first, " ", ours[i].second.sizes());
  }
  return clone_all(tensors_of(theirs));
}

// Why phase scratch does not run ("": it runs); recipe._scratch_why_not's rules for the models the C++ recipe takes.
std::string scratch_why_not(const Model& model, const TrainConfig& config, bool has_fresh, int64_t validation,
                            int64_t size) {
  if (!has_per_example_loss(config.task)) {
    return "task='" + config.task + "': the paired test that would decide it compares per-example losses, defined "
           "for classification and regression only";
  }
  if (!SCRATCH_CANDIDATE) return "SCRATCH_CANDIDATE is off";
  if (!has_fresh) return "no way to build fresh weights was given (recipe::run's `fresh`)";
  if (validation < SCRATCH_MIN_VAL) {
    return "the validation slice holds " + std::to_string(validation) + " examples, fewer than " +
           std::to_string(SCRATCH_MIN_VAL) + ": too few for the paired test that would decide it";
  }
  for (const auto& [name, parameter] : model.named_parameters()) {
    if (!parameter.requires_grad()) return "parameters the model holds frozen (" + name + ") would be re-drawn";
  }
  if (size > SHRINK_MAX_PARAMS) {
    return "the model has " + std::to_string(size) + " parameters, more than " + std::to_string(SHRINK_MAX_PARAMS);
  }
  return "";
}

}  // namespace

Outcome run(Model& model, const Dataset& data, const TrainConfig& config, bool pretrained, const std::string& head,
            bool fine_tune_sgd, const std::function<Model()>& fresh) {
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
      // scikit-learn's balanced weights, none above CLASS_WEIGHT_CAP x the lightest (the largest class's)
      const double lightest = double(total) / (present * largest);
      for (const auto count : counts) {
        base.class_weights.push_back(count ? std::min(double(total) / (present * count), lightest * CLASS_WEIGHT_CAP)
                                           : 0.0);
      }
    }
    note("class_weights",
         ratio > CLASS_WEIGHT_CAP ? "balanced, capped" : ratio > IMBALANCE_RATIO ? "balanced" : "none",
         "largest/smallest class = " + text(ratio) + " in the training slice (weights past " +
             text(IMBALANCE_RATIO) + ", none above " + text(CLASS_WEIGHT_CAP) + "x the lightest)");
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
    const auto why_not = scratch_why_not(model, config, static_cast<bool>(fresh), val_idx.size(0), size);
    if (why_not.empty()) {
      phases.push_back({"scratch", SCRATCH_EPOCHS, SCRATCH_PATIENCE, {}, /*start=*/-1, /*shrink=*/false,
                        SCRATCH_LR_DIVISOR, /*early=*/-1, /*reinit=*/true});
      note("scratch", "epochs " + std::to_string(SCRATCH_EPOCHS) + ", patience " + std::to_string(SCRATCH_PATIENCE) +
           ", / " + text(SCRATCH_LR_DIVISOR), "a last candidate: the same network with fresh weights, trained from "
           "scratch with AdamW, every layer at one rate -- pretrained weights from a task unlike this one can be "
           "worth less than none; kept only if its validation loss is clearly below the best fine-tuned phase's, "
           "example by example (z >= " + text(SCRATCH_Z, 4) + ")");
    } else {
      note("scratch", "not run", why_not);
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
  if (classification) {
    note("ema", text(EMA), "each phase but the head's evaluated, kept and returned as its weights' moving average "
         "(README, rule 4)");
  }

  const State initial = copy_state(model);
  // Phase scratch is compared with the fine-tune example by example (paired_gain): each phase's per-example losses;
  // and phase full with a shrunk phase (FULL_Z), on a slice the test can read (SCRATCH_MIN_VAL).
  const bool by_pairs = val.size() >= SCRATCH_MIN_VAL;
  const bool fresh_needed = std::any_of(phases.begin(), phases.end(), [](const Phase& phase) { return phase.reinit; });
  const bool paired = fresh_needed || (by_pairs && std::any_of(phases.begin(), phases.end(),
                                                               [](const Phase& phase) { return phase.shrink; }));
  const State fresh_start = fresh_needed ? fresh_weights(fresh, model, config.seed) : State{};
  double shrunk_best = std::numeric_limits<double>::infinity();  // the lowest loss of the shrunk phases run so far
  std::string why_kept = "with the lowest validation loss (";  // how the kept phase won, its loss and ")" after
  std::string not_clearly;
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
    if (phase.reinit) load_state(model, fresh_start);

    TrainConfig settings = base;  // rule 4: the optimizer, a range-tested rate, warm-up then cosine, early stopping
    settings.optimizer = sgd && !phase.reinit ? "sgd" : "adamw", settings.weight_decay = WEIGHT_DECAY;
    settings.momentum = defaults.momentum, settings.nesterov = defaults.nesterov;  // the recipe's, not the caller's
    settings.freeze = phase.freeze;
    settings.layer_decay = pretrained && phase.name != "head" && !phase.reinit ? LAYER_DECAY : 1.0;
    settings.ema = classification && phase.name != "head" ? EMA : 0.0;  // rule 4: the weights' moving average
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
    if (paired) phase.losses = per_example_loss(predict(model, val, 0, val.size(), settings), val.targets, config.task);
    if (phase.reinit) {  // fresh weights replace the fine-tune only when clearly better, example by example
      const auto gain = paired_gain(phases[kept].losses, phase.losses);
      const std::string before = phases[kept].name;
      note(phase.name + ".gain", "z = " + text(gain.z) + " (lower by " + text(gain.lower_by) + ", standard error " +
           text(gain.standard_error) + ", " + std::to_string(gain.examples) + " examples)",
           phase.name + "'s validation loss below " + before + "'s, the fine-tuned phase kept, example by example; "
           "kept only if z >= " + text(SCRATCH_Z, 4) + " (a one-sided paired test at 5%)");
      if (gain.z >= SCRATCH_Z) {
        best_loss = loss, kept = static_cast<int>(number), out.metrics = measured;
        why_kept = "with a validation loss clearly below " + before + "'s, example by example (z = " + text(gain.z) +
                   ", at least " + text(SCRATCH_Z, 4) + "; ";
      } else if (loss < best_loss) {
        not_clearly = "; " + phase.name + "'s is " + text(loss) + ", not clearly lower (z = " + text(gain.z) +
                      "): fresh weights replace the fine-tune only when clearly better";
      }
    } else if (phase.shrink && phases[kept].name == "full" && by_pairs && !(loss >= shrunk_best)) {
      // (shrunk_low competes with full only if it is below shrunk)
      const auto gain = paired_gain(phase.losses, phases[kept].losses);
      note(phase.name + ".full_gain", "z = " + text(gain.z) + " (lower by " + text(gain.lower_by) +
           ", standard error " + text(gain.standard_error) + ", " + std::to_string(gain.examples) + " examples)",
           "full's validation loss below " + phase.name + "'s, example by example; " + phase.name +
           " takes full's place unless z >= " + text(FULL_Z, 4));
      if (!(gain.z >= FULL_Z)) {  // (a NaN z, full's loss not finite: the shrunk phase)
        why_kept = loss < best_loss ? "with the lowest validation loss ("
                                    : "with a validation loss above full's, " + text(best_loss) + ", but not clearly "
                                      "(z = " + text(gain.z) + ", below " + text(FULL_Z, 4) + "): a shrunk phase "
                                      "takes full's place unless full is clearly better (";
        best_loss = loss, kept = static_cast<int>(number), out.metrics = measured;
      }
    } else if (loss < best_loss) {
      best_loss = loss, kept = static_cast<int>(number), out.metrics = measured;
      why_kept = "with the lowest validation loss (";
    }
    if (phase.shrink) shrunk_best = std::min(shrunk_best, loss);
  }
  out.kept = phases[kept].name;
  note("kept", out.kept, std::string(not_clearly.empty() ? "the phase " : "the fine-tuned phase ") + why_kept +
       text(best_loss) + ")" + not_clearly);

  // Rule 6: the kept phase and those it continues, again from the same start on the whole sample, for their best
  // number of epochs (the schedule's length unchanged, so the rate follows the same curve).
  std::vector<int> lineage = {kept};
  while (lineage.front() > 0 && !phases[lineage.front()].reinit) {
    const int start = phases[lineage.front()].start;
    lineage.insert(lineage.begin(), start >= 0 ? start : lineage.front() - 1);
  }
  load_state(model, initial);
  std::string names;
  for (const int number : lineage) {
    const auto& phase = phases[number];
    if (phase.shrink) shrink_perturb(model, in_body, config.seed);  // the same draw as before the decision
    if (phase.reinit) load_state(model, fresh_start);               // the same weights as before the decision
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
