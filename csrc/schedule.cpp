// Learning-rate schedules as closed forms of PyTorch's schedulers (tests/test_schedule.py compares them).
#include "schedule.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <sstream>

#include <c10/util/Exception.h>

namespace finetune {

namespace {

constexpr double kPi = 3.14159265358979323846;

double cosine_anneal(double start, double end, double pct) { return end + (start - end) / 2.0 * (std::cos(kPi * pct) + 1.0); }

// OneCycleLR's two phases: warm up until pct_start, then anneal. Returns (start, end, progress) weights
// for the phase `step` is in: phase 1 goes from its first value to its peak, phase 2 from the peak on.
struct OneCyclePhase {
  bool first;
  double pct;
};

OneCyclePhase onecycle_phase(const TrainConfig& c, int64_t step, int64_t total) {
  const double phase1_end = c.pct_start * static_cast<double>(total) - 1.0;
  const double phase2_end = static_cast<double>(total) - 1.0;
  const double t = static_cast<double>(step);
  if (t <= phase1_end) return {true, t / phase1_end};
  return {false, (t - phase1_end) / (phase2_end - phase1_end)};
}

double onecycle_lr(const TrainConfig& c, double max_lr, int64_t step, int64_t total) {
  const double initial = max_lr / 25.0, final_lr = initial / 1e4;
  const auto phase = onecycle_phase(c, step, total);
  return phase.first ? cosine_anneal(initial, max_lr, phase.pct) : cosine_anneal(max_lr, final_lr, phase.pct);
}

}  // namespace

namespace {

// The rate after warm-up: step t of `total`, for a group whose base rate is base_lr.
using Decay = std::function<double(const TrainConfig&, double base_lr, int64_t t, int64_t total, int64_t steps_per_epoch)>;

// name -> rate. An unknown name is an error listing these (check_schedule); adding a schedule is one entry here.
const std::map<std::string, Decay>& schedule_registry() {
  static const std::map<std::string, Decay> registry = {
      {"constant", [](const TrainConfig&, double base_lr, int64_t, int64_t, int64_t) { return base_lr; }},
      {"step",
       [](const TrainConfig& c, double base_lr, int64_t t, int64_t, int64_t steps_per_epoch) {
         const int64_t size = c.step_size > 0 ? c.step_size : std::max<int64_t>(steps_per_epoch, 1);
         return base_lr * std::pow(c.gamma, static_cast<double>(t / size));
       }},
      {"cosine",
       [](const TrainConfig& c, double base_lr, int64_t t, int64_t total, int64_t) {
         return c.min_lr + (base_lr - c.min_lr) *
                               (1.0 + std::cos(kPi * static_cast<double>(std::min(t, total)) / static_cast<double>(total))) /
                               2.0;
       }},
      {"linear",
       [](const TrainConfig& c, double base_lr, int64_t t, int64_t total, int64_t) {
         const double end_factor = c.min_lr / c.lr;
         return base_lr * (1.0 + (end_factor - 1.0) * static_cast<double>(std::min(t, total)) / static_cast<double>(total));
       }},
      {"onecycle",
       [](const TrainConfig& c, double base_lr, int64_t t, int64_t total, int64_t) {
         return onecycle_lr(c, base_lr, std::min(t, total - 1), total);
       }},
  };
  return registry;
}

}  // namespace

std::vector<std::string> schedule_names() {
  std::vector<std::string> names;
  for (const auto& item : schedule_registry()) names.push_back(item.first);
  return names;
}

void check_schedule(const TrainConfig& c) {
  const auto names = schedule_names();
  if (std::find(names.begin(), names.end(), c.schedule) == names.end()) {
    std::ostringstream known;
    for (const auto& n : names) known << (known.tellp() ? ", " : "") << "'" << n << "'";
    TORCH_CHECK_VALUE(false, "schedule must be one of [", known.str(), "], got '", c.schedule, "'");
  }
  TORCH_CHECK_VALUE(c.warmup >= 0.0 && std::isfinite(c.warmup), "warmup must be >= 0 (steps, or a fraction < 1), got ",
                    c.warmup);
  TORCH_CHECK_VALUE(c.warmup == 0.0 || c.schedule != "onecycle",
                    "warmup does not combine with schedule='onecycle' (it warms up by itself, see pct_start), got warmup=",
                    c.warmup);
  TORCH_CHECK_VALUE(c.step_size >= 0, "step_size must be >= 0 (0 = one epoch), got ", c.step_size);
  TORCH_CHECK_VALUE(c.gamma > 0.0 && c.gamma <= 1.0, "gamma must be in (0, 1], got ", c.gamma);
  TORCH_CHECK_VALUE(c.min_lr >= 0.0 && c.min_lr <= c.lr, "min_lr must be in [0, lr], got ", c.min_lr);
  TORCH_CHECK_VALUE(c.pct_start > 0.0 && c.pct_start < 1.0, "pct_start must be in (0, 1), got ", c.pct_start);
  TORCH_CHECK_VALUE(c.base_momentum >= 0.0 && c.base_momentum < 1.0, "base_momentum must be in [0, 1), got ",
                    c.base_momentum);
  TORCH_CHECK_VALUE(c.max_momentum >= c.base_momentum && c.max_momentum < 1.0,
                    "max_momentum must be in [base_momentum, 1) = [", c.base_momentum, ", 1), got ", c.max_momentum);
  // A schedule's own setting changed from its default under another schedule would have no effect.
  const TrainConfig d;
  const struct {
    const char* field;
    bool changed;
    std::vector<std::string> schedules;
  } settings[] = {{"step_size", c.step_size != d.step_size, {"step"}},
                  {"gamma", c.gamma != d.gamma, {"step"}},
                  {"min_lr", c.min_lr != d.min_lr, {"cosine", "linear"}},
                  {"pct_start", c.pct_start != d.pct_start, {"onecycle"}},
                  {"cycle_momentum", c.cycle_momentum != d.cycle_momentum, {"onecycle"}},
                  {"base_momentum", c.base_momentum != d.base_momentum, {"onecycle"}},
                  {"max_momentum", c.max_momentum != d.max_momentum, {"onecycle"}}};
  for (const auto& s : settings) {
    if (!s.changed || std::find(s.schedules.begin(), s.schedules.end(), c.schedule) != s.schedules.end()) continue;
    std::ostringstream users;
    for (const auto& name : s.schedules) users << (users.tellp() ? ", " : "") << "'" << name << "'";
    TORCH_CHECK_VALUE(false, s.field, " is set but schedule='", c.schedule, "' does not use it (it applies to schedule ",
                      users.str(), "); remove it, or choose that schedule");
  }
  // "onecycle" sets momentum (sgd) or beta1 (adam, adamw) itself at every step, from base/max_momentum.
  const bool cycled = c.schedule == "onecycle" && c.cycle_momentum;
  TORCH_CHECK_VALUE(!cycled || c.momentum == d.momentum || c.optimizer != "sgd", "momentum=", c.momentum,
                    " has no effect with schedule='onecycle', which cycles momentum between base_momentum and "
                    "max_momentum; set those, or cycle_momentum=False");
  TORCH_CHECK_VALUE(!cycled || c.beta1 == d.beta1 || (c.optimizer != "adam" && c.optimizer != "adamw"), "beta1=",
                    c.beta1, " has no effect with schedule='onecycle', which cycles beta1 between base_momentum and "
                    "max_momentum; set those, or cycle_momentum=False");
}

int64_t warmup_steps(const TrainConfig& c, int64_t total_steps) {
  if (c.warmup >= 1.0) return std::min<int64_t>(static_cast<int64_t>(c.warmup), total_steps);
  return static_cast<int64_t>(std::llround(c.warmup * static_cast<double>(total_steps)));
}

double scheduled_lr(const TrainConfig& c, double base_lr, int64_t step, int64_t total_steps, int64_t steps_per_epoch) {
  const int64_t warmup = warmup_steps(c, total_steps);
  if (step < warmup) return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup);
  const int64_t t = step - warmup, total = std::max<int64_t>(total_steps - warmup, 1);
  const auto found = schedule_registry().find(c.schedule);
  TORCH_CHECK_VALUE(found != schedule_registry().end(), "schedule must be a known name, got '", c.schedule, "'");
  return found->second(c, base_lr, t, total, steps_per_epoch);
}

std::optional<double> scheduled_momentum(const TrainConfig& c, int64_t step, int64_t total_steps) {
  if (c.schedule != "onecycle" || !c.cycle_momentum) return std::nullopt;
  const int64_t total = std::max<int64_t>(total_steps, 1);
  const auto phase = onecycle_phase(c, std::min(step, total - 1), total);
  return phase.first ? cosine_anneal(c.max_momentum, c.base_momentum, phase.pct)
                     : cosine_anneal(c.base_momentum, c.max_momentum, phase.pct);
}

}  // namespace finetune
