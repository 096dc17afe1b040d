// The linear probe's solver: L2-regularised multinomial logistic regression by L-BFGS, several fits at once.
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>

namespace finetune {

struct ProbeFit {
  at::Tensor weight;       // [subsets, classes, features], float64
  at::Tensor bias;         // [subsets, classes], float64
  int64_t iterations = 0;  // L-BFGS iterations run (the subsets share them)
};

// One fit per row of `members` [subsets, examples] (which examples each fit sees), each minimising its mean
// (class-weighted) cross-entropy plus |W|^2 / (2 C n) -- scikit-learn's LogisticRegression objective divided by n;
// the bias is not penalised. The fits' objectives are independent and summed, so L-BFGS (strong Wolfe line
// search) stops only when every fit's gradient is within `tolerance`. `start_weight` / `start_bias`, when given,
// are where the fits start (else zeros). python/finetune/probe.py holds the strengths, tolerance and budget.
ProbeFit fit_probe(const at::Tensor& features, const at::Tensor& targets, const at::Tensor& members, int64_t classes,
                   double strength, const std::optional<at::Tensor>& class_weights, double label_smoothing,
                   const std::optional<at::Tensor>& start_weight, const std::optional<at::Tensor>& start_bias,
                   int64_t max_iterations, double tolerance);

}  // namespace finetune
