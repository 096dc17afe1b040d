// The loop. Read top to bottom: check the run, build it, restore it when resuming, then for each epoch unfreeze
// what is due and take its optimizer steps in a fresh seeded order, validate, keep the best, and finish.
// run.cpp has each part; this file is the whole loop.
#include "train.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "forward.h"
#include "patterns.h"
#include "preflight.h"
#include "ranking.h"
#include "run.h"

namespace finetune {

TrainResult train(Model& model, const Dataset& train_data, const Dataset* val_data, const TrainConfig& config,
                  const TrainHooks& hooks, const LoopState* resume) {
  // Everything that can be checked before the first step is: a setting that would do nothing is an error.
  validate(config);
  check_dataset(train_data, config, "train");
  if (val_data) check_dataset(*val_data, config, "val");
  if (config.is_ranking()) {
    ranking_items(train_data, "train");
    if (val_data) ranking_items(*val_data, "val");
  }
  check_monitor(config, val_data != nullptr);
  check_augmentation(train_data, config);
  check_patterns(model.named_parameters(), config);

  model.to(resolve_device(config.device));
  // MKL (in torch's builds with it) starts in "dynamic" mode, free to use fewer threads than asked for a call,
  // which changes its summation order from one run to the next. Setting the thread count, even to the count in
  // force, turns that off (ATen's set_num_threads calls mkl_set_dynamic(false)): seeded runs repeat bit for bit.
  at::set_num_threads(at::get_num_threads());
  // Dropout and any other randomness inside the model draw from the global generator (a stream per rank).
  at::manual_seed(static_cast<uint64_t>(config.seed + (hooks.parallel ? hooks.parallel->rank() : 0)));

  Run run(model, train_data, val_data, config, hooks);
  if (resume) run.restore(*resume);  // the saved weights are already in the model
  run.start();
  while (run.running()) {
    run.begin_epoch();
    while (run.stepping()) run.step();
    run.end_epoch();
  }
  return run.finish();
}

}  // namespace finetune
