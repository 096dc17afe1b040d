// The step's geometry (see geometry.h). Settings are validated ints >= 1, so only overflow can go wrong here.
#include "geometry.h"

#include <algorithm>

#include <c10/util/Exception.h>

namespace finetune {

int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  int64_t out = 0;
  TORCH_CHECK_VALUE(!__builtin_mul_overflow(a, b, &out), what, " = ", a, " x ", b,
                    " does not fit in a 64-bit integer; use smaller values");
  return out;
}

StepGeometry::StepGeometry(int64_t train_size, const TrainConfig& config, int64_t world) {
  batch_size = config.batch_size == 0 ? train_size : std::min(config.batch_size, train_size);
  rank_step_examples = checked_mul(config.accumulate, batch_size, "accumulate x batch_size");
  step_examples = checked_mul(rank_step_examples, world, "accumulate x batch_size x world size");
  // drop_last drops the examples that do not fill a whole micro-batch, so every batch the model sees has
  // batch_size examples (batch norm cannot train on a batch of one). Rank shares start at multiples of
  // batch_size, so with several ranks too no micro-batch is partial. batch_size <= train_size: never empty.
  epoch_examples = config.drop_last ? train_size - train_size % batch_size : train_size;
  steps_per_epoch = epoch_examples / step_examples + (epoch_examples % step_examples != 0);
  total_steps = checked_mul(steps_per_epoch, config.epochs, "steps per epoch x epochs");
}

StepGeometry::Span StepGeometry::step(int64_t s, int64_t rank) const {
  Span span;
  span.first = s * step_examples;
  span.last = std::min(span.first + step_examples, epoch_examples);
  span.mine_first = std::min(span.first + rank * rank_step_examples, span.last);
  span.mine_last = std::min(span.mine_first + rank_step_examples, span.last);
  return span;
}

}  // namespace finetune
