// The recipe in C++, for programs that link the core without Python: a model trained with its head first, then
// every layer, at rates from range tests, with early stopping, the best phase kept, refit on the whole sample.
//
// It is rules 1 and 3-6 of the README's "The recipe" for a model whose head is one named layer (the C++ example's
// CNN): a stratified validation slice; phase "head" (the body frozen); phase "full" (every layer, each below the
// head at layer_decay x the rate above) and, for a small model, phases "shrunk" and "shrunk_low" (full again from the
// head phase, the body shrunk and perturbed first, at / 10 and, if that stopped early, / 100) and phase "scratch"
// (the same network with fresh weights, by the from-scratch rules); each phase SGD with momentum (rule 4; AdamW from
// random weights) at the range test's lowest loss / 10, warm-up then cosine, early stopping with the best epoch
// restored; the fine-tuned phase with the lowest validation loss kept -- full over a shrunk phase only if its loss is
// clearly lower (a paired test, FULL_Z) --, or scratch if its loss is clearly lower (the same test); the phases it
// continues run again on the whole sample for their best epochs. From random weights: one phase, / 100, longer.
// python/finetune/recipe.py is the whole recipe (the linear probe on cached features, transformers, recommenders,
// tabular models, what the user gave winning over each choice); the numbers below mirror its constants
// (tests/test_recipe.py checks that they agree, through _C.recipe_constants()), and its lr_from_range calls
// rate_from_range below, so the rate rule is written once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "config.h"
#include "dataset.h"
#include "metrics.h"
#include "models.h"

namespace finetune::recipe {

// X(type, NAME, value): the constants of recipe.py used here, under the same names (their reasons are there).
#define FINETUNE_RECIPE_CONSTANTS(X)         \
  X(double, VAL_FRACTION, 0.2)               \
  X(int64_t, HEAD_EPOCHS, 20)                \
  X(int64_t, HEAD_PATIENCE, 3)               \
  X(int64_t, FULL_EPOCHS, 40)                \
  X(int64_t, FULL_PATIENCE, 8)               \
  X(int64_t, SCRATCH_EPOCHS, 50)             \
  X(int64_t, SCRATCH_PATIENCE, 8)            \
  X(double, LAYER_DECAY, 0.7)                \
  X(double, WARMUP, 0.1)                     \
  X(double, WEIGHT_DECAY, 0.01)              \
  X(int64_t, RANGE_STEPS, 100)               \
  X(int64_t, RANGE_SKIP, 20)                 \
  X(double, FLAT_TOLERANCE, 0.05)            \
  X(int64_t, FLAT_FLOOR_STEPS, 20)           \
  X(double, LR_DIVISOR, 10.0)                \
  X(double, SCRATCH_LR_DIVISOR, 100.0)       \
  X(double, IMBALANCE_RATIO, 3.0)            \
  X(double, CLASS_WEIGHT_CAP, 10.0)          \
  X(double, SHRINK, 0.5)                     \
  X(double, PERTURB, 0.1)                    \
  X(double, SHRUNK_LOW_GATE, 1.0 / 3.0)      \
  X(int64_t, SHRINK_MAX_PARAMS, 5000000)     \
  X(bool, FINE_TUNE_SGD, true)               \
  X(double, EMA, 0.99)                       \
  X(bool, SCRATCH_CANDIDATE, true)           \
  X(double, SCRATCH_Z, 1.645)                \
  X(int64_t, SCRATCH_MIN_VAL, 30)            \
  X(double, FULL_Z, 1.645)

#define FINETUNE_DECLARE_CONSTANT(type, name, value) inline constexpr type name = value;
FINETUNE_RECIPE_CONSTANTS(FINETUNE_DECLARE_CONSTANT)
#undef FINETUNE_DECLARE_CONSTANT

// The range test's span and divergence stop: finetune.find_lr's defaults.
inline constexpr double RANGE_START = 1e-7, RANGE_END = 10.0, RANGE_DIVERGE = 4.0;

// A phase's rate from a range test's (rates, smoothed losses): recipe.lr_from_range. The rate of the lowest
// loss after the first RANGE_SKIP steps, / divisor; on a flat curve (the lowest loss not FLAT_TOLERANCE below the
// lowest of the first FLAT_FLOOR_STEPS compared steps: the batch noise of a model those small rates leave as it
// is) the largest rate whose loss is within FLAT_TOLERANCE of the lowest, / divisor. The last two are arguments so
// that a benchmark can vary them (benchmarks/recipe_variants.py); the recipes pass the constants.
double rate_from_range(const std::vector<double>& lrs, const std::vector<double>& losses, double divisor,
                       double flat_tolerance = FLAT_TOLERANCE, int64_t floor_steps = FLAT_FLOOR_STEPS);

// (training, validation) indices of `sample`: `fraction` of each class (classification) or of the sample held out,
// at least one of a class with two or more examples and never its last one; seeded. recipe.split_validation's rule
// (the draw is LibTorch's, not numpy's, so the slices differ from the Python recipe's for one seed).
std::pair<at::Tensor, at::Tensor> split_validation(const at::Tensor& targets, const at::Tensor& sample,
                                                   bool classification, int64_t seed, double fraction = VAL_FRACTION);

// Shrink and perturb (Ash & Adams 2020) the parameters `chosen`, in place: each x SHRINK, and each matrix or
// kernel plus Gaussian noise of PERTURB / sqrt(fan-in); seeded, so a refit draws the same noise.
void shrink_perturb(Model& model, const std::function<bool(const std::string&)>& chosen, int64_t seed);

// Each example's share of the validation loss evaluate() reports (their mean is that loss), in float64: the
// cross-entropy of its logits for classification, the mean squared error over its outputs for regression; another
// task is an error. recipe.per_example_loss calls this.
at::Tensor per_example_loss(const at::Tensor& outputs, const at::Tensor& targets, const std::string& task);

// How much lower `candidate`'s per-example losses are than `reference`'s on the same examples: the mean difference,
// its standard error and their ratio z (the paired t statistic). z is 0 when nothing differs, +-inf when every
// example differs by the same amount, NaN when a candidate's loss is not finite (a NaN is never >= SCRATCH_Z), and
// +inf when the reference's is not and the candidate's all are (a diverged reference against one that did not).
// recipe.paired_gain calls this.
struct PairedGain {
  double lower_by, standard_error, z;
  int64_t examples;
};
PairedGain paired_gain(const at::Tensor& reference, const at::Tensor& candidate);

struct Decision {
  std::string what, value, reason;
};

struct Outcome {
  std::vector<Decision> decisions;  // every choice with its reason, in order (as result.recipe in Python)
  std::string kept;                 // the phase whose weights were kept
  Metrics metrics;                  // of the kept weights on the validation slice, before the refit
  at::Tensor sample;                // the examples of `data` the returned weights trained on
};

// Runs the recipe on `model` in place. From `config` it takes the task, the sample (sample_fraction, sample_size,
// stratify), batch sizes, the device, seed and topk; the optimizer, rates, schedule, epochs, stopping, freezing and
// class weights are its own. `pretrained`: the model carries trained weights and `head` (a parameter-name prefix,
// "classifier.3") is its head, trained first; otherwise one phase trains every layer from random weights.
// `fine_tune_sgd`: a pretrained model's phases run SGD with momentum 0.9 (rule 4); false: AdamW, the rule before
// it (for a side-by-side measure: finetune_example --fine-tune-optimizer adamw).
// `fresh`: builds the same network with new weights (the example: make_cnn with the model's options), for phase
// "scratch" (a pretrained model's last candidate, kept only if its validation loss is clearly lower, example by
// example: SCRATCH_Z). The recipe seeds the global generator from config.seed for the call and restores it after,
// so a run draws the same fresh weights every time. Empty: no phase scratch (the decisions say so).
Outcome run(Model& model, const Dataset& data, const TrainConfig& config, bool pretrained, const std::string& head,
            bool fine_tune_sgd = FINE_TUNE_SGD, const std::function<Model()>& fresh = {});

}  // namespace finetune::recipe
